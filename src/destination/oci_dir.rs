//! `--oci-dir DIR`: an OCI image layout directory, written or added to.
//!
//! Order keeps the layout valid at every moment: blobs first (each into a
//! temporary file beside its final name, renamed when complete), then
//! `index.json` replaced atomically, gaining or replacing the entry for
//! this tag. A blob the layout already holds is not written again when its
//! digest is known before reading (warm cache, digests file); it is checked
//! against its name instead, so a damaged layout is reported, not trusted.
//!
//! The image's referrers (`--sbom`: artifact manifests whose `subject` is
//! the image manifest) are listed in `index.json` as untagged entries with
//! their `artifactType`, as `oras attach --oci-layout` does, so `DIR:TAG`
//! still names only the image. A referrer entry of ours lives as long as
//! its subject is listed: writing a tag anew drops the SBOM entries of the
//! image it named before, and the same SBOM is never listed twice.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use crate::blob;
use crate::cache::{self, Blob};
use crate::compression::Codec;
use crate::destination::artifact::{self, Referrer};
use crate::destination::oci::{self, REF_NAME};
use crate::destination::oci_archive::bytes_blob;
use crate::model::{Image, Layer, Subject, Written};
use crate::sbom::SbomFormat;
use clap::ValueEnum;

/// Largest `index.json` / `oci-layout` read from an existing layout.
const MAX_INDEX: u64 = 16 << 20;

/// Writes `img` into the layout at `dir` with layers compressed by `codec`.
/// Its SBOMs (when asked for) are attached as referrers of the image.
pub fn write(img: &Image, dir: &Path, codec: Codec) -> Result<Written> {
    let (written, blobs) = write_blobs(img, dir, codec)?;
    let layout = Layout::open(dir)?;
    let subject = Subject {
        image_id: &blobs.config.digest,
        manifest: &blobs.manifest,
        media_type: oci::MANIFEST_MEDIA_TYPE,
        layers: &written.layers,
    };
    let referrers = artifact::referrers(img, &subject)?;
    for r in &referrers {
        img.reporter.step(&format!(
            "{} attached as {}",
            r.artifact_type, r.manifest_blob.digest
        ));
        layout.put_bytes(artifact::EMPTY)?;
        layout.put_bytes(&r.bytes)?;
        layout.put_bytes(&r.manifest)?;
    }
    let mut entry = oci::image_entry(&blobs.manifest, img.repo_tag)?;
    artifact::annotate_entry(&mut entry, &referrers);
    layout.add_to_index(entry, &referrers)?;
    Ok(written)
}

/// The config and manifest blobs of an image written into a layout.
pub struct ImageBlobs {
    /// The image configuration.
    pub config: Blob,
    /// The image manifest.
    pub manifest: Blob,
}

/// Writes `img`'s layers, config and manifest into the layout at `dir`
/// without naming it in `index.json`: a multi-platform image index names
/// it instead ([`tag_blob`]).
pub fn write_blobs(img: &Image, dir: &Path, codec: Codec) -> Result<(Written, ImageBlobs)> {
    let layout = Layout::open(dir)?;
    let n = img.layers.len();
    let mut layers: Vec<Option<Layer>> = vec![None; n];
    blob::produce_base(
        img,
        codec,
        &mut |_| layout.temp_blob(),
        &mut |i, layer, tmp| {
            layout.persist(tmp, &layer.blob)?;
            layers[i] = Some(layer);
            Ok(())
        },
    )?;
    let own: Vec<(usize, Layer, bool)> = (img.base_count()..n)
        .into_par_iter()
        .map(|i| -> Result<(usize, Layer, bool)> {
            if let Some(layer) = known_present(img, i, codec, &layout)? {
                img.reporter.step(&format!(
                    "{}: already in {}",
                    img.describe(i),
                    dir.display()
                ));
                return Ok((i, layer, false));
            }
            let (layer, tmp) = blob::produce(img, i, codec, layout.temp_blob()?)?;
            layout.persist(tmp, &layer.blob)?;
            Ok((i, layer, true))
        })
        .collect::<Result<_>>()?;
    let mut new_layers = 0;
    for (i, layer, new) in own {
        layers[i] = Some(layer);
        new_layers += usize::from(new);
    }
    let layers: Vec<Layer> = layers.into_iter().flatten().collect();
    if layers.len() != n {
        bail!("internal: {} of {n} layers produced", layers.len());
    }
    let config = img.config_json(&layers);
    let config_blob = layout.put_bytes(&config)?;
    let manifest = oci::manifest_bytes(&config_blob, &layers)?;
    let manifest_blob = layout.put_bytes(&manifest)?;
    let written = Written {
        layers,
        new_layers,
        bytes: 0,
        image_id: config_blob.digest.clone(),
        manifest_digest: Some(manifest_blob.digest.clone()),
        notes: Vec::new(),
        detail: None,
    };
    let blobs = ImageBlobs {
        config: config_blob,
        manifest: manifest_blob,
    };
    Ok((written, blobs))
}

/// Stores `bytes` (an image index) as a blob of the layout at `dir`, then
/// makes `entry` of it the `index.json` entry for its tag.
pub fn tag_blob(
    dir: &Path,
    bytes: &[u8],
    entry: impl FnOnce(&Blob) -> Result<oci_spec::image::Descriptor>,
) -> Result<Blob> {
    let layout = Layout::open(dir)?;
    let blob = layout.put_bytes(bytes)?;
    layout.add_to_index(entry(&blob)?, &[])?;
    Ok(blob)
}

/// Layer `i` as a blob the layout already holds, when its digest for
/// `codec` is known before reading.
fn known_present(img: &Image, i: usize, codec: Codec, layout: &Layout) -> Result<Option<Layer>> {
    let Some(facts) = img.known_facts(i).filter(|f| f.size != 0) else {
        return Ok(None);
    };
    let Some(blob) = facts.blob(codec) else {
        return Ok(None);
    };
    if !layout.has_blob(&blob)? {
        return Ok(None);
    }
    Ok(Some(Layer {
        diff_id: facts.diff_id,
        blob,
        codec,
        history: img.layers[i].history.clone(),
    }))
}

/// An opened, checked OCI image layout directory.
struct Layout {
    dir: PathBuf,
    blobs: PathBuf,
    index: Value,
}

impl Layout {
    /// Opens `dir` (created when missing; an existing one must be an OCI
    /// layout, or empty).
    fn open(dir: &Path) -> Result<Layout> {
        let shown = dir.display();
        match fs::metadata(dir) {
            Ok(m) if !m.is_dir() => bail!("OCI layout {shown}: is not a directory"),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::create_dir_all(dir)
                .with_context(|| format!("OCI layout {shown}: cannot create"))?,
            Err(e) => return Err(e).with_context(|| format!("OCI layout {shown}")),
        }
        let layout_file = dir.join("oci-layout");
        let index_file = dir.join("index.json");
        let index = if layout_file.exists() {
            let v = read_json(&layout_file)
                .with_context(|| format!("OCI layout {shown}: oci-layout"))?;
            if !v.get("imageLayoutVersion").is_some_and(Value::is_string) {
                bail!("OCI layout {shown}: oci-layout has no imageLayoutVersion");
            }
            let index = read_json(&index_file)
                .with_context(|| format!("OCI layout {shown}: index.json"))?;
            if !index.get("manifests").is_some_and(Value::is_array) {
                bail!("OCI layout {shown}: index.json has no `manifests` list");
            }
            index
        } else {
            let mut entries =
                fs::read_dir(dir).with_context(|| format!("OCI layout {shown}: cannot read"))?;
            if entries.next().is_some() {
                bail!("OCI layout {shown}: is not empty and has no oci-layout file (not an OCI layout)");
            }
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": oci::INDEX_MEDIA_TYPE,
                "manifests": [],
            })
        };
        let blobs = dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs)
            .with_context(|| format!("OCI layout {shown}: cannot create blobs/sha256"))?;
        if !layout_file.exists() {
            // A new layout is complete (an empty index) before it is named
            // one, so a later open (the image index after each platform's
            // blobs) or an interrupted run finds a valid layout.
            let empty = oci::canonical_bytes(&index)?;
            cache::write_atomically(dir, "index.json", &empty)
                .with_context(|| format!("OCI layout {shown}"))?;
            cache::write_atomically(dir, "oci-layout", oci::OCI_LAYOUT)
                .with_context(|| format!("OCI layout {shown}"))?;
        }
        Ok(Layout {
            dir: dir.to_owned(),
            blobs,
            index,
        })
    }

    fn blob_file(&self, blob: &Blob) -> PathBuf {
        self.blobs.join(blob.digest.trim_start_matches("sha256:"))
    }

    /// True when the layout holds `blob`; an error when it holds a file by
    /// that name whose content does not match it.
    fn has_blob(&self, blob: &Blob) -> Result<bool> {
        let path = self.blob_file(blob);
        let meta = match fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e).with_context(|| format!("OCI layout blob {}", path.display())),
        };
        let bad = |why: String| {
            anyhow::anyhow!(
                "OCI layout {}: blob {} does not match its name ({why})",
                self.dir.display(),
                blob.digest
            )
        };
        if !meta.is_file() {
            return Err(bad("not a regular file".into()));
        }
        if meta.len() != blob.size {
            return Err(bad(format!("{} bytes, expected {}", meta.len(), blob.size)));
        }
        let mut f = File::open(&path)
            .with_context(|| format!("OCI layout blob {}: cannot open", path.display()))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(k) => h.update(&buf[..k]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("OCI layout blob {}: cannot read", path.display())
                    })
                }
            }
        }
        let actual = crate::digest::diff_id(&h.finalize().into());
        if actual != blob.digest {
            return Err(bad(format!("its content is {actual}")));
        }
        Ok(true)
    }

    /// A temporary file beside the blobs, removed unless persisted.
    fn temp_blob(&self) -> Result<NamedTempFile> {
        cache::temp_file_in(&self.blobs)
            .with_context(|| format!("OCI layout {}: cannot write", self.dir.display()))
    }

    /// Gives a complete temporary blob its name.
    fn persist(&self, tmp: NamedTempFile, blob: &Blob) -> Result<()> {
        tmp.as_file()
            .sync_all()
            .with_context(|| format!("OCI layout {}: cannot write", self.dir.display()))?;
        tmp.persist(self.blob_file(blob)).with_context(|| {
            format!(
                "OCI layout {}: cannot write {}",
                self.dir.display(),
                blob.digest
            )
        })?;
        Ok(())
    }

    /// Stores a small blob unless present.
    fn put_bytes(&self, bytes: &[u8]) -> Result<Blob> {
        let blob = bytes_blob(bytes);
        if !self.has_blob(&blob)? {
            let mut tmp = self.temp_blob()?;
            tmp.write_all(bytes)
                .with_context(|| format!("OCI layout {}: cannot write", self.dir.display()))?;
            self.persist(tmp, &blob)?;
        }
        Ok(blob)
    }

    /// Replaces `index.json` with one where `entry` takes the place of any
    /// entry with the same tag, followed by the image's `referrers`; SBOM
    /// entries whose subject is no longer listed go.
    fn add_to_index(
        mut self,
        entry: oci_spec::image::Descriptor,
        referrers: &[Referrer],
    ) -> Result<()> {
        let tag = entry
            .annotations()
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .cloned();
        let entry = serde_json::to_value(&entry).context("internal: cannot serialise")?;
        let mut list = match self.index.get_mut("manifests").map(Value::take) {
            Some(Value::Array(list)) => list,
            _ => Vec::new(),
        };
        list.retain(|m| m["annotations"][REF_NAME].as_str() != tag.as_deref());
        list.push(entry);
        let ours = |m: &Value| {
            m["artifactType"].as_str().is_some_and(|t| {
                SbomFormat::value_variants()
                    .iter()
                    .any(|f| f.media_type() == t)
            })
        };
        let listed: HashSet<String> = list
            .iter()
            .filter(|m| !ours(m))
            .filter_map(|m| m["digest"].as_str().map(str::to_owned))
            .collect();
        let adding: HashSet<&str> = referrers
            .iter()
            .map(|r| r.manifest_blob.digest.as_str())
            .collect();
        list.retain(|m| {
            if !ours(m) {
                return true;
            }
            let digest = m["digest"].as_str().unwrap_or_default();
            // An entry whose manifest cannot be read is left as it is: not
            // ours to judge.
            let subject = self.subject_of(digest);
            !adding.contains(digest) && subject.is_none_or(|s| listed.contains(&s))
        });
        list.extend(referrers.iter().map(Referrer::descriptor));
        self.index["manifests"] = Value::Array(list);
        let bytes = oci::canonical_bytes(&self.index)?;
        cache::write_atomically(&self.dir, "index.json", &bytes)
            .with_context(|| format!("OCI layout {}", self.dir.display()))
    }
}

impl Layout {
    /// The `subject` digest of the manifest blob `digest`, if it can be
    /// read and has one.
    fn subject_of(&self, digest: &str) -> Option<String> {
        let hex = digest.strip_prefix("sha256:")?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let m = read_json(&self.blobs.join(hex)).ok()?;
        m["subject"]["digest"].as_str().map(str::to_owned)
    }
}

/// A JSON file of an existing layout, read with a size cap.
fn read_json(path: &Path) -> Result<Value> {
    let f = File::open(path).context("cannot open")?;
    let mut bytes = Vec::new();
    f.take(MAX_INDEX + 1)
        .read_to_end(&mut bytes)
        .context("cannot read")?;
    if bytes.len() as u64 > MAX_INDEX {
        bail!("is over {} MiB", MAX_INDEX >> 20);
    }
    serde_json::from_slice(&bytes).context("is corrupt (not JSON)")
}
