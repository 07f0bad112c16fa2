//! The `oci` and `dual` archives: an OCI image layout as one tar
//! (`oci-layout`, `index.json`, `blobs/sha256/…`), and for `dual` also
//! Docker's `manifest.json` naming the same blobs, as `docker save`
//! writes since Engine 25 — so one file loads with `docker load`,
//! containerd, podman and skopeo alike.
//!
//! Blob members are named by digest, and a tar header comes before its
//! bytes, so every layer's blob digest and size must be known before the
//! layer is written:
//!
//! - uncompressed store layers: from the digest cache (warm: each store
//!   byte is read once) or from a hashing pass over the layer (cold: read
//!   twice); the streamed bytes are hashed again and must match;
//! - compressed layers and base layers: produced once into a temporary
//!   spool, in parallel across cores, then copied into the archive; but a
//!   compressed store layer whose blob is known (warm cache, digests file)
//!   and at least [`DIRECT`] bytes is compressed straight into the archive
//!   at its turn (its pieces still compress on every core), and the bytes
//!   are hashed on the way and must match: a large image then needs no
//!   temporary space, nor the disk writes that throttled it.
//!
//! The image's referrers (`--sbom`) are blobs of the layout, before
//! `index.json`, but `index.json` lists only the image: skopeo's and
//! podman's `oci-archive:FILE` (containers/image) refuse an index with more
//! than one entry when no name is given ("more than one image in oci,
//! choose an image"), and that is how archives are loaded. The image's
//! entry names its referrers' manifests in the
//! [`artifact::REFERRERS_ANNOTATION`] annotation instead.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use crate::archive::ArchiveWriter;
use crate::blob;
use crate::cache::{Blob, Facts};
use crate::compression::Codec;
use crate::destination::{artifact, oci};
use crate::digest;
use crate::model::{Image, Layer, Subject, Written};
use crate::tar;

/// The least known blob size for which a compressed layer skips the spool.
/// Below it, producing layers side by side into the spool keeps the cores
/// busier than one layer at a time would (each layer's end waits for its
/// last pieces), and a small spool costs little.
const DIRECT: u64 = 16 << 20;

/// How a layer's bytes reach the archive.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Produced earlier into the spool; copied.
    Spooled,
    /// Uncompressed, named from what was known: streamed and hashed.
    Streamed,
    /// Compressed, named from what was known: compressed into the archive.
    Direct,
}

/// Streams the OCI archive (or, with `dual`, the dual archive) of `img`
/// with layers compressed by `codec` into `out`; returns `out`.
pub fn write<W: Write + Send + 'static>(
    img: &Image,
    out: W,
    codec: Codec,
    dual: bool,
) -> Result<(W, Written)> {
    let n = img.layers.len();
    let spool = tempfile::Builder::new()
        .prefix("sli-spool-")
        .tempdir()
        .context("cannot create a temporary directory for compressed layers")?;
    let spool_path = |i: usize| spool.path().join(i.to_string());
    let mut layers: Vec<Option<Layer>> = vec![None; n];
    let mut routes = vec![Route::Spooled; n];

    blob::produce_base(
        img,
        codec,
        &mut |i| create(&spool_path(i)),
        &mut |i, layer, _| {
            layers[i] = Some(layer);
            Ok(())
        },
    )?;
    let own: Vec<(usize, Layer, Route)> = (img.base_count()..n)
        .into_par_iter()
        .map(|i| -> Result<(usize, Layer, Route)> {
            if codec == Codec::None {
                if let Some(layer) = known_uncompressed(img, i) {
                    return Ok((i, layer, Route::Streamed));
                }
                // Cold: a hashing pass names the blob; the bytes are read
                // again when streamed.
                let (layer, _) = blob::produce(img, i, codec, std::io::sink())?;
                return Ok((i, layer, Route::Streamed));
            }
            if let Some(layer) = known_compressed(img, i, codec).filter(|l| l.blob.size >= DIRECT) {
                return Ok((i, layer, Route::Direct));
            }
            let (layer, _) = blob::produce(img, i, codec, create(&spool_path(i))?)?;
            Ok((i, layer, Route::Spooled))
        })
        .collect::<Result<_>>()?;
    for (i, layer, route) in own {
        layers[i] = Some(layer);
        routes[i] = route;
    }
    let layers: Vec<Layer> = layers.into_iter().flatten().collect();
    if layers.len() != n {
        bail!("internal: {} of {n} layers produced", layers.len());
    }

    let config = img.config_json(&layers);
    let config_blob = bytes_blob(&config);
    let manifest = oci::manifest_bytes(&config_blob, &layers)?;
    let manifest_blob = bytes_blob(&manifest);
    let subject = Subject {
        image_id: &config_blob.digest,
        manifest: &manifest_blob,
        media_type: oci::MANIFEST_MEDIA_TYPE,
        layers: &layers,
    };
    // Made before a byte is written: a failing SBOM leaves no archive.
    let referrers = artifact::referrers(img, &subject)?;
    let mut entry = oci::image_entry(&manifest_blob, img.repo_tag)?;
    artifact::annotate_entry(&mut entry, &referrers);
    let index = oci::index_bytes(&[entry])?;

    let mtime = img.owner.mtime;
    let mut aw = ArchiveWriter::new(out);
    aw.bytes_member("oci-layout", oci::OCI_LAYOUT, mtime)?;
    let mut seen = HashSet::new();
    let mut streamed = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        // Identical produced blobs are written once. A layer named from
        // what was known is always streamed, even when its digest repeats:
        // streaming is what verifies the name.
        if !seen.insert(l.blob.digest.clone()) && routes[i] == Route::Spooled {
            continue;
        }
        img.reporter.step(&format!(
            "Adding {} as {}{}",
            img.describe(i),
            oci::blob_path(&l.blob.digest),
            if routes[i] == Route::Direct {
                " (known blob, compressed in place)"
            } else {
                ""
            }
        ));
        aw.member_header(&oci::blob_path(&l.blob.digest), l.blob.size, mtime)?;
        match routes[i] {
            Route::Spooled => {
                let path = spool_path(i);
                let mut f = File::open(&path)
                    .with_context(|| format!("spooled layer {}: cannot open", path.display()))?;
                aw.copy_exact(&mut f, l.blob.size, &path)?;
            }
            Route::Direct => {
                // Produced here, hashed on the way: a blob that is not what
                // its name says is an error (and drops the entry) before the
                // archive ends.
                let start = aw.offset();
                blob::produce_into(img, i, None, codec, &mut Member(&mut aw))?;
                if aw.offset() - start != l.blob.size {
                    bail!(
                        "internal: {} wrote {} bytes for a {}-byte member",
                        img.describe(i),
                        aw.offset() - start,
                        l.blob.size
                    );
                }
            }
            Route::Streamed => {
                let prepared = blob::prepare(img, i)?;
                if prepared.size() != l.blob.size {
                    blob::settle(
                        img,
                        i,
                        &Facts {
                            diff_id: String::new(),
                            size: prepared.size(),
                            ..Facts::default()
                        },
                    )?;
                }
                aw.begin_hashed()?;
                blob::stream_tar(img, prepared, &mut aw)?;
                aw.end_hashed()?;
                img.reporter.progress(l.blob.size, true);
                streamed.push(i);
            }
        }
        aw.write_zeros(tar::padding(l.blob.size))?;
    }
    img.reporter.step("Adding manifests...");
    aw.bytes_member(&oci::blob_path(&config_blob.digest), &config, mtime)?;
    aw.bytes_member(&oci::blob_path(&manifest_blob.digest), &manifest, mtime)?;
    if !referrers.is_empty() {
        let empty = artifact::empty_blob();
        aw.bytes_member(&oci::blob_path(&empty.digest), artifact::EMPTY, mtime)?;
        for r in &referrers {
            img.reporter.step(&format!(
                "Adding {} as {}",
                r.artifact_type,
                oci::blob_path(&r.manifest_blob.digest)
            ));
            aw.bytes_member(&oci::blob_path(&r.blob.digest), &r.bytes, mtime)?;
            aw.bytes_member(&oci::blob_path(&r.manifest_blob.digest), &r.manifest, mtime)?;
        }
    }
    aw.bytes_member("index.json", &index, mtime)?;
    if dual {
        let docker = oci::docker_manifest_bytes(&config_blob, img.repo_tag, &layers);
        aw.bytes_member("manifest.json", &docker, mtime)?;
    }
    // The streamed layers were named before their bytes were read: their
    // digests must be what the name promised, before the archive ends.
    for (i, d) in streamed.iter().zip(aw.digests()?) {
        let learnt = Facts {
            diff_id: digest::diff_id(&d),
            size: layers[*i].blob.size,
            ..Facts::default()
        };
        blob::settle(img, *i, &learnt)?;
    }
    let end = tar::end_len(aw.offset());
    aw.write_zeros(end)?;
    let bytes = aw.offset();
    let out = aw.finish()?;
    img.reporter.step("Done.");
    let written = Written {
        new_layers: n - img.base_count(),
        layers,
        bytes,
        image_id: config_blob.digest,
        manifest_digest: Some(manifest_blob.digest),
        notes: Vec::new(),
        detail: None,
    };
    Ok((out, written))
}

/// Layer `i` uncompressed, from facts known before reading (warm cache,
/// digests file, the customisation layer's checksum).
pub fn known_uncompressed(img: &Image, i: usize) -> Option<Layer> {
    let f = img.known_facts(i).filter(|f| f.size != 0)?;
    Some(Layer {
        blob: Blob {
            digest: f.diff_id.clone(),
            size: f.size,
        },
        diff_id: f.diff_id,
        codec: Codec::None,
        history: img.layers[i].history.clone(),
    })
}

/// Store layer `i` compressed by `codec`, from facts known before reading.
fn known_compressed(img: &Image, i: usize, codec: Codec) -> Option<Layer> {
    let (used, blob) = img.known_blob(i, codec).filter(|(c, _)| *c == codec)?;
    let f = img.known_facts(i)?;
    Some(Layer {
        blob,
        diff_id: f.diff_id,
        codec: used,
        history: img.layers[i].history.clone(),
    })
}

/// The archive as an `io::Write`, for a layer compressed straight into its
/// member.
struct Member<'a, W: Write>(&'a mut ArchiveWriter<W>);

impl<W: Write> Write for Member<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(buf).map_err(io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The digest and size of a small in-memory blob (config, manifest).
pub fn bytes_blob(bytes: &[u8]) -> Blob {
    Blob {
        digest: format!("sha256:{}", digest::sha256_hex(bytes)),
        size: bytes.len() as u64,
    }
}

fn create(path: &PathBuf) -> Result<File> {
    File::create(path).with_context(|| format!("cannot create {}", Path::new(path).display()))
}
