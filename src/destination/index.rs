//! Several images, one per platform, under one tag: an OCI image index
//! (issue 11). Each platform's image goes through the single-image code
//! paths (its blobs and manifest, not tagged), then the index naming every
//! platform's manifest takes the tag:
//!
//! - `--oci-dir DIR`: the platforms' blobs and manifests, then the index
//!   blob, then `index.json`'s entry for the tag (an image index
//!   descriptor, as `docker save` and skopeo write for multi-platform
//!   images); the layout is valid at every moment;
//! - `--format oci|dual`: the same layout, made in a temporary directory
//!   and then streamed as one tar (members in a fixed order, so the bytes
//!   are deterministic); `dual` adds Docker's `manifest.json` naming the
//!   host platform's image only, since `docker load` takes one platform;
//! - `--push REF`: each platform's blobs and manifest (by digest), then the
//!   index under each tag: OCI image index, or Docker's manifest list with
//!   `--manifest-format docker`.
//!
//! Layers shared between platforms are written or uploaded once: every
//! platform shares the run's [`Known`](crate::cache::Known) facts, so a
//! later platform names a shared layer before reading it and finds it
//! present (in the layout, or with a registry `HEAD`).

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::archive::ArchiveWriter;
use crate::cache::Blob;
use crate::compression::Codec;
use crate::destination::oci::{self, CONTAINERD_NAME, INDEX_MEDIA_TYPE, REF_NAME};
use crate::destination::oci_dir;
use crate::destination::registry::Push;
use crate::model::{Image, Written};
use crate::output::Output;
use crate::reference::Reference;
use crate::registry::{self, Client, ManifestFormat};
use crate::tar;

/// Docker's manifest list media type (`--manifest-format docker`).
pub const DOCKER_LIST_MEDIA_TYPE: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";

/// Operating systems an OCI platform may name (Go's `GOOS` values, which
/// the image spec refers to).
const OSES: &[&str] = &[
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "illumos",
    "ios",
    "js",
    "linux",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
];

/// Architectures (Go's `GOARCH` values) and the variants each may carry;
/// an empty list means any variant is accepted.
const ARCHITECTURES: &[(&str, &[&str])] = &[
    ("386", &[]),
    ("amd64", &["v1", "v2", "v3", "v4"]),
    ("arm", &["v5", "v6", "v7", "v8"]),
    (
        "arm64",
        &[
            "v8", "v8.0", "v8.1", "v8.2", "v8.3", "v8.4", "v8.5", "v8.6", "v8.7", "v8.8", "v8.9",
            "v9", "v9.0", "v9.1", "v9.2", "v9.3", "v9.4", "v9.5",
        ],
    ),
    ("loong64", &[]),
    ("mips", &[]),
    ("mipsle", &[]),
    ("mips64", &[]),
    ("mips64le", &[]),
    ("ppc64", &[]),
    ("ppc64le", &[]),
    ("riscv64", &[]),
    ("s390x", &[]),
    ("wasm", &[]),
];

/// Names people write (Nix's, the kernel's) for OCI architectures, for a
/// helpful error.
const ALIASES: &[(&str, &str)] = &[
    ("x86_64", "amd64"),
    ("x86-64", "amd64"),
    ("aarch64", "arm64"),
    ("i686", "386"),
    ("i386", "386"),
    ("armv7l", "arm (variant v7)"),
    ("armv6l", "arm (variant v6)"),
    ("powerpc64le", "ppc64le"),
];

/// One image's platform, from its conf's `os`, `architecture`, `variant`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `os`.
    pub os: String,
    /// `architecture`.
    pub architecture: String,
    /// `variant`, if any.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform, checked against the OCI (Go) names.
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Result<Platform> {
        let p = Platform {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.filter(|v| !v.is_empty()).map(str::to_owned),
        };
        if !OSES.contains(&os) {
            bail!("platform {p}: unknown os {os:?} (OCI platforms use Go's names, e.g. linux)");
        }
        let Some((_, variants)) = ARCHITECTURES.iter().find(|(a, _)| *a == architecture) else {
            let hint = ALIASES
                .iter()
                .find(|(alias, _)| *alias == architecture)
                .map(|(_, oci)| format!("; OCI calls it {oci}"))
                .unwrap_or_default();
            bail!("platform {p}: unknown architecture {architecture:?} (OCI platforms use Go's names: amd64, arm64, arm, 386, ppc64le, s390x, riscv64, …{hint})");
        };
        if let Some(v) = &p.variant {
            if !variants.is_empty() && !variants.contains(&v.as_str()) {
                bail!(
                    "platform {p}: unknown variant {v:?} for {architecture} (known: {})",
                    variants.join(", ")
                );
            }
        }
        Ok(p)
    }

    /// What two platforms are compared by: arm64 means arm64/v8 and amd64
    /// means amd64/v1, as containerd normalises them, so `arm64` and
    /// `arm64/v8` are the same platform.
    fn normal(&self) -> (String, String, String) {
        let variant = match (self.architecture.as_str(), self.variant.as_deref()) {
            ("arm64", None) => "v8",
            ("amd64", None) => "v1",
            (_, v) => v.unwrap_or(""),
        };
        (
            self.os.clone(),
            self.architecture.clone(),
            variant.to_owned(),
        )
    }

    /// The `platform` object of an index entry.
    pub fn to_json(&self) -> Value {
        let mut p = json!({ "architecture": self.architecture, "os": self.os });
        if let Some(v) = &self.variant {
            p["variant"] = json!(v);
        }
        p
    }

    /// True when this is the platform of the machine we run on (for the
    /// dual archive's `manifest.json`).
    fn is_host(&self) -> bool {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
            "powerpc64" => "ppc64",
            "s390x" => "s390x",
            "riscv64" => "riscv64",
            "loongarch64" => "loong64",
            other => other,
        };
        self.os == std::env::consts::OS && self.architecture == arch
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Checks that no two of `platforms` (one per conf, named by `confs`) are
/// the same platform.
pub fn check_distinct(platforms: &[Platform], confs: &[PathBuf]) -> Result<()> {
    let shown = |k: usize| {
        confs
            .get(k)
            .map(|c| c.display().to_string())
            .unwrap_or_default()
    };
    for (i, p) in platforms.iter().enumerate() {
        if let Some(j) = platforms[..i].iter().position(|q| q.normal() == p.normal()) {
            bail!(
                "confs {} and {} are both for platform {p}: an image index holds one image per platform",
                shown(j),
                shown(i)
            );
        }
    }
    Ok(())
}

/// Where the index goes.
pub enum Target {
    /// An OCI image layout directory (`--oci-dir`).
    OciDir {
        /// The directory.
        dir: PathBuf,
        /// Per-layer compression.
        codec: Codec,
    },
    /// An `oci` or `dual` archive.
    Archive {
        /// Also Docker's `manifest.json` (the host platform's image).
        dual: bool,
        /// Per-layer compression.
        codec: Codec,
        /// Where it goes.
        output: Box<Output>,
    },
    /// A registry (`--push`).
    Push(Box<Push>),
}

/// What writing the index did.
pub struct IndexWritten {
    /// Each platform's image, in conf order.
    pub images: Vec<Written>,
    /// `sha256:<hex>` of the image index.
    pub index_digest: String,
    /// Lines for stdout: `PLATFORM sha256:<manifest>` per platform, then
    /// `REF@sha256:<index>` per pushed reference or `index sha256:<index>`.
    pub notes: Vec<String>,
}

/// Writes `images` (one per platform, `platforms` in the same order) and
/// their index to `target`.
pub fn write(images: &[Image], platforms: &[Platform], target: Target) -> Result<IndexWritten> {
    if images.is_empty() || images.len() != platforms.len() {
        bail!(
            "internal: {} images for {} platforms",
            images.len(),
            platforms.len()
        );
    }
    let (images_written, index_digest, tail) = match target {
        Target::OciDir { dir, codec } => {
            let (written, _, index) = to_dir(images, platforms, &dir, codec)?;
            let tail = vec![format!("index {}", index.digest)];
            (written, index.digest, tail)
        }
        Target::Archive {
            dual,
            codec,
            output,
        } => {
            let (written, index) = to_archive(images, platforms, dual, codec, *output)?;
            let tail = vec![format!("index {index}")];
            (written, index, tail)
        }
        Target::Push(push) => to_registry(images, platforms, *push)?,
    };
    let mut notes: Vec<String> = platforms
        .iter()
        .zip(&images_written)
        .map(|(p, w)| format!("{p} {}", w.manifest_digest.as_deref().unwrap_or("")))
        .collect();
    notes.extend(tail);
    Ok(IndexWritten {
        images: images_written,
        index_digest,
        notes,
    })
}

/// The image index (OCI, or Docker's manifest list) over each platform's
/// manifest `(media type, blob)`: compact JSON, keys in the specs' order.
pub fn index_bytes(
    media_type: &str,
    platforms: &[Platform],
    manifests: &[(String, Blob)],
) -> Result<Vec<u8>> {
    let entries: Vec<Value> = platforms
        .iter()
        .zip(manifests)
        .map(|(p, (media, blob))| {
            json!({
                "mediaType": media,
                "digest": blob.digest,
                "size": blob.size,
                "platform": p.to_json(),
            })
        })
        .collect();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "manifests": entries,
    });
    oci::canonical_bytes(&index)
}

/// `index.json`'s entry naming the image index as `repo_tag` (the OCI ref
/// name and containerd's full name, as for a single image).
fn index_entry(index: &Blob, repo_tag: &str) -> Result<oci_spec::image::Descriptor> {
    let r = Reference::parse(repo_tag)?;
    let mut d = oci::descriptor(INDEX_MEDIA_TYPE, index)?;
    let tag = r.tag_or_latest().to_owned();
    d.set_annotations(Some(
        [
            (CONTAINERD_NAME.to_owned(), format!("{}:{tag}", r.name())),
            (REF_NAME.to_owned(), tag),
        ]
        .into_iter()
        .collect(),
    ));
    Ok(d)
}

/// Every platform into the layout at `dir`, then the index under the tag.
fn to_dir(
    images: &[Image],
    platforms: &[Platform],
    dir: &Path,
    codec: Codec,
) -> Result<(Vec<Written>, Vec<oci_dir::ImageBlobs>, Blob)> {
    let mut written = Vec::new();
    let mut blobs = Vec::new();
    for (img, p) in images.iter().zip(platforms) {
        img.reporter.step(&format!("Platform {p}"));
        let (w, b) = oci_dir::write_blobs(img, dir, codec)?;
        written.push(w);
        blobs.push(b);
    }
    let manifests: Vec<(String, Blob)> = blobs
        .iter()
        .map(|b| (oci::MANIFEST_MEDIA_TYPE.to_owned(), b.manifest.clone()))
        .collect();
    let bytes = index_bytes(INDEX_MEDIA_TYPE, platforms, &manifests)?;
    let repo_tag = images[0].repo_tag;
    let index = oci_dir::tag_blob(dir, &bytes, |b| index_entry(b, repo_tag))?;
    Ok((written, blobs, index))
}

/// The layout made in a temporary directory, then streamed as one tar.
fn to_archive(
    images: &[Image],
    platforms: &[Platform],
    dual: bool,
    codec: Codec,
    output: Output,
) -> Result<(Vec<Written>, String)> {
    let temp = tempfile::Builder::new()
        .prefix("sli-index-")
        .tempdir()
        .context("cannot create a temporary directory for the image layout")?;
    let dir = temp.path();
    let (mut written, blobs, index) = to_dir(images, platforms, dir, codec)?;
    let mtime = images[0].owner.mtime;
    let mut aw = ArchiveWriter::new(output);
    aw.bytes_member("oci-layout", oci::OCI_LAYOUT, mtime)?;
    // Conf order, each platform's layers then config then manifest, each
    // blob once: the same inputs give the same bytes.
    let mut seen = HashSet::new();
    let mut order: Vec<Blob> = Vec::new();
    for (w, b) in written.iter().zip(&blobs) {
        let own = w.layers.iter().map(|l| l.blob.clone());
        for blob in own.chain([b.config.clone(), b.manifest.clone()]) {
            if seen.insert(blob.digest.clone()) {
                order.push(blob);
            }
        }
    }
    order.push(index.clone());
    for blob in &order {
        let name = oci::blob_path(&blob.digest);
        let path = dir.join(&name);
        let mut f = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        aw.member_header(&name, blob.size, mtime)?;
        aw.copy_exact(&mut f, blob.size, &path)?;
        aw.write_zeros(tar::padding(blob.size))?;
    }
    let index_json = dir.join("index.json");
    let bytes = std::fs::read(&index_json)
        .with_context(|| format!("cannot read {}", index_json.display()))?;
    aw.bytes_member("index.json", &bytes, mtime)?;
    if dual {
        // docker load takes one image per tag: the one this machine runs,
        // else the first conf's.
        let host = platforms
            .iter()
            .position(Platform::is_host)
            .unwrap_or_else(|| {
                images[0].reporter.warn(&format!(
                    "--format dual: no image for this machine's platform; manifest.json lists {}'s",
                    platforms[0]
                ));
                0
            });
        let docker = oci::docker_manifest_bytes(
            &blobs[host].config,
            images[host].repo_tag,
            &written[host].layers,
        );
        aw.bytes_member("manifest.json", &docker, mtime)?;
    }
    let end = tar::end_len(aw.offset());
    aw.write_zeros(end)?;
    let total = aw.offset();
    aw.finish()?.commit()?;
    if let Some(first) = written.first_mut() {
        first.bytes = total;
    }
    Ok((written, index.digest))
}

/// Each platform pushed by digest, then the index under every reference.
fn to_registry(
    images: &[Image],
    platforms: &[Platform],
    mut push: Push,
) -> Result<(Vec<Written>, String, Vec<String>)> {
    push.untagged = true;
    let digest_file = push.digest_file.take();
    let mut written = Vec::new();
    let mut manifests = Vec::new();
    for (img, p) in images.iter().zip(platforms) {
        img.reporter.step(&format!("Platform {p}"));
        let (w, reports) = push.push_image(img)?;
        let Some((_, first)) = reports.first() else {
            bail!("--push: no reference given");
        };
        manifests.push((
            first.manifest_media_type.clone(),
            Blob {
                digest: first.manifest_digest.clone(),
                size: first.manifest_size,
            },
        ));
        written.push(w);
    }
    let media_type = match push.format {
        ManifestFormat::Oci => INDEX_MEDIA_TYPE,
        ManifestFormat::Docker => DOCKER_LIST_MEDIA_TYPE,
    };
    let bytes = index_bytes(media_type, platforms, &manifests)?;
    let digest = registry::manifest::digest_of(&bytes);
    let mut notes = Vec::new();
    for r in &push.refs {
        let reference = match (&r.tag, &r.digest) {
            (Some(tag), _) => tag.clone(),
            (None, Some(d)) if *d != digest => {
                bail!("--push {r}: the image index is {digest}, not {d}")
            }
            (None, Some(d)) => d.clone(),
            (None, None) => "latest".to_owned(),
        };
        let client = Client::new(r, &push.options)?;
        client.put_manifest(&reference, media_type, &bytes)?;
        images[0]
            .reporter
            .step(&format!("{}:{reference}: image index {digest}", r.name()));
        let mut shown = r.clone();
        shown.digest = None;
        notes.push(format!("{shown}@{digest}"));
    }
    if let Some(path) = &digest_file {
        std::fs::write(path, format!("{digest}\n"))
            .with_context(|| format!("--digest-file {}: cannot write", path.display()))?;
    }
    Ok((written, digest, notes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_are_checked_and_compared_normalised() {
        let arm = Platform::new("linux", "arm64", Some("v8")).unwrap();
        assert_eq!(arm.to_string(), "linux/arm64/v8");
        let bare = Platform::new("linux", "arm64", None).unwrap();
        assert_eq!(bare.normal(), arm.normal());
        let e = Platform::new("linux", "x86_64", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("OCI calls it amd64"), "{e}");
        assert!(Platform::new("linux", "arm", Some("v9")).is_err());
        assert!(Platform::new("Linux", "amd64", None).is_err());
        let confs = [PathBuf::from("a.json"), PathBuf::from("b.json")];
        let e = check_distinct(&[arm, bare], &confs)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.json and b.json"), "{e}");
    }

    #[test]
    fn index_shape_is_stable() {
        let amd = Platform::new("linux", "amd64", None).unwrap();
        let arm = Platform::new("linux", "arm64", Some("v8")).unwrap();
        let blob = |c: char| Blob {
            digest: format!("sha256:{}", c.to_string().repeat(64)),
            size: 7,
        };
        let m = vec![
            (oci::MANIFEST_MEDIA_TYPE.to_owned(), blob('a')),
            (oci::MANIFEST_MEDIA_TYPE.to_owned(), blob('b')),
        ];
        let bytes = index_bytes(INDEX_MEDIA_TYPE, &[amd, arm], &m).unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with(r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aaaa"#), "{text}");
        assert!(
            text.contains(r#""platform":{"architecture":"arm64","os":"linux","variant":"v8"}"#),
            "{text}"
        );
    }
}
