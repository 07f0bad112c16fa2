//! Software bills of materials for the image (issue 10): SPDX 2.3 and
//! CycloneDX 1.6 JSON, made from the exact closure the image holds.
//!
//! We already know, when the image streams, every store path in it, its NAR
//! hash and size and references (the reference graph), the layer that holds
//! it (and that layer's diff_id), and the image's digests and tags. The
//! SBOM lists exactly that, plus what the Nix function passes from `meta`
//! (`pname`, `version`, `meta.license`, `meta.homepage`,
//! `meta.description`) in the conf's `sbom` object.
//!
//! The modules, in data-flow order:
//!
//! * [`model`]: the input ([`SbomInput`]), built by
//!   [`SbomInput::from_graph`] or by [`load_input`] from the files a conf
//!   names;
//! * [`name`] (`builtins.parseDrvName`) and [`hash`] (Nix base-32 and SRI
//!   to hex) turn Nix's spellings into what the formats take;
//! * `resolve` works out the facts both formats write, and the warnings;
//! * [`mod@spdx`] and [`mod@cyclonedx`] write the documents; `uuid` names them.
//!
//! Library code never prints: every function returns its warnings (a path
//! missing from the graph, an unparsable name, a malformed hash), each one
//! line, and the document still lists everything that is known. Output is
//! deterministic: the same input gives the same bytes.
//!
//! # Examples
//!
//! ```
//! use std::collections::BTreeMap;
//! use stream_layered_image::nix::GraphEntry;
//! use stream_layered_image::sbom::{self, ImageIdentity, Layer, LayerKind, SbomFormat, SbomInput};
//!
//! let hello = "/nix/store/8wv0ajg6blqskxsynzn76bdh8rq334qh-hello-2.12.1".to_owned();
//! let graph = vec![GraphEntry {
//!     path: hello.clone(),
//!     nar_hash: Some("sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s".into()),
//!     nar_size: 1024,
//!     references: vec![hello.clone()],
//! }];
//! let image = ImageIdentity {
//!     name: "hello".into(),
//!     image_id: format!("sha256:{}", "ab".repeat(32)),
//!     tags: vec!["hello:latest".into()],
//!     ..Default::default()
//! };
//! let layers = vec![Layer { diff_id: format!("sha256:{}", "cd".repeat(32)), kind: LayerKind::Store(vec![hello]) }];
//! let input = SbomInput::from_graph(image, layers, &graph, &BTreeMap::new());
//! let (json, warnings) = sbom::render(SbomFormat::CycloneDx, &input);
//! assert!(warnings.is_empty());
//! assert!(String::from_utf8(json).unwrap().contains("pkg:nix/hello@2.12.1"));
//! ```
#![warn(missing_docs)]

pub mod cyclonedx;
pub mod hash;
pub mod model;
pub mod name;
mod resolve;
pub mod spdx;
mod uuid;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use cyclonedx::cyclonedx;
pub use model::{ImageIdentity, Layer, LayerKind, License, PackageMeta, SbomInput, StorePath};
pub use spdx::spdx;

/// The tool name written into both formats.
const TOOL: &str = "stream-layered-image";

/// An SBOM format (`--sbom spdx|cyclonedx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum SbomFormat {
    /// SPDX 2.3 JSON.
    Spdx,
    /// CycloneDX 1.6 JSON.
    #[value(name = "cyclonedx")]
    CycloneDx,
}

impl SbomFormat {
    /// The media type: the OCI artifact's `artifactType` and layer type.
    pub fn media_type(self) -> &'static str {
        match self {
            SbomFormat::Spdx => "application/spdx+json",
            SbomFormat::CycloneDx => "application/vnd.cyclonedx+json",
        }
    }

    /// The usual file name ending: `.spdx.json`, `.cdx.json`.
    pub fn extension(self) -> &'static str {
        match self {
            SbomFormat::Spdx => "spdx.json",
            SbomFormat::CycloneDx => "cdx.json",
        }
    }

    /// The name on the command line and in the conf.
    pub fn name(self) -> &'static str {
        match self {
            SbomFormat::Spdx => "spdx",
            SbomFormat::CycloneDx => "cyclonedx",
        }
    }

    fn parse(s: &str) -> Option<SbomFormat> {
        match s {
            "spdx" => Some(SbomFormat::Spdx),
            "cyclonedx" => Some(SbomFormat::CycloneDx),
            _ => None,
        }
    }
}

/// The document in `format`, and the warnings (see [`spdx()`] and
/// [`cyclonedx()`]; both give the same warnings for the same input).
pub fn render(format: SbomFormat, input: &SbomInput) -> (Vec<u8>, Vec<String>) {
    match format {
        SbomFormat::Spdx => spdx(input),
        SbomFormat::CycloneDx => cyclonedx(input),
    }
}

/// Pairs `--sbom FORMAT` with `--sbom-out FILE`, both repeatable: the n-th
/// file gets the n-th format, so their counts must match. With no
/// `--sbom-out` at all, the formats only go where the destination carries
/// them (OCI layouts, registries) and the list is empty.
///
/// # Errors
///
/// A one-line message when the counts differ, a format repeats, or two
/// formats would write one file.
pub fn pair_outputs(
    formats: &[SbomFormat],
    outs: &[PathBuf],
) -> Result<Vec<(SbomFormat, PathBuf)>> {
    for (i, f) in formats.iter().enumerate() {
        if formats[..i].contains(f) {
            bail!("--sbom {} is given twice", f.name());
        }
    }
    if outs.is_empty() {
        return Ok(Vec::new());
    }
    if outs.len() != formats.len() {
        bail!(
            "--sbom-out is given {} times for {} --sbom formats; give one --sbom-out FILE per --sbom FORMAT, in the same order",
            outs.len(),
            formats.len()
        );
    }
    for (i, o) in outs.iter().enumerate() {
        if outs[..i].contains(o) {
            bail!("--sbom-out {} is given twice", o.display());
        }
    }
    Ok(formats.iter().copied().zip(outs.iter().cloned()).collect())
}

/// What the conf's `sbom` object holds (written by the Nix function): the
/// formats `passthru.sbom` builds, and metadata per store path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfSbom {
    /// The Nix `sbom` argument: the formats to attach by default.
    pub formats: Vec<SbomFormat>,
    /// Metadata from `contents`, config-referenced derivations and
    /// `sbomPackages`, by store path.
    pub meta: BTreeMap<String, PackageMeta>,
}

impl ConfSbom {
    /// Reads the `sbom` object of a conf file; a conf without one gives
    /// the default (no formats, no metadata).
    ///
    /// Parts of the object with the wrong shape are skipped with a warning
    /// (the image streamed fine; its SBOM should not fail on a `meta`).
    ///
    /// # Errors
    ///
    /// When the conf cannot be read or is not JSON (one line naming it).
    pub fn load(conf: &Path) -> Result<(ConfSbom, Vec<String>)> {
        let bytes =
            fs::read(conf).with_context(|| format!("conf {}: cannot read", conf.display()))?;
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("conf {}: is not valid JSON", conf.display()))?;
        Ok(ConfSbom::from_conf_value(&value))
    }

    /// As [`ConfSbom::load`], from the conf's parsed JSON.
    pub fn from_conf_value(conf: &serde_json::Value) -> (ConfSbom, Vec<String>) {
        let mut out = ConfSbom::default();
        let mut warnings = Vec::new();
        let Some(sbom) = conf.get("sbom").filter(|v| !v.is_null()) else {
            return (out, warnings);
        };
        let w = |warnings: &mut Vec<String>, what: String| {
            warnings.push(format!("conf `sbom`: {what}"))
        };
        match sbom.get("formats") {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Array(list)) => {
                for f in list {
                    match f.as_str().and_then(SbomFormat::parse) {
                        Some(f) if !out.formats.contains(&f) => out.formats.push(f),
                        Some(_) => {}
                        None => w(
                            &mut warnings,
                            format!("`formats`: {f} is not \"spdx\" or \"cyclonedx\"; skipped"),
                        ),
                    }
                }
            }
            Some(other) => w(
                &mut warnings,
                format!("`formats` is {other}, not a list; skipped"),
            ),
        }
        let packages = match sbom.get("packages") {
            None | Some(serde_json::Value::Null) => &[][..],
            Some(serde_json::Value::Array(list)) => list.as_slice(),
            Some(_) => {
                w(
                    &mut warnings,
                    "`packages` is not a list; skipped".to_owned(),
                );
                &[][..]
            }
        };
        for (i, p) in packages.iter().enumerate() {
            let Some(path) = p.get("path").and_then(|v| v.as_str()) else {
                w(
                    &mut warnings,
                    format!("`packages` entry {i} has no `path` string; skipped"),
                );
                continue;
            };
            let mut text = |key: &str| -> Option<String> {
                match p.get(key) {
                    None | Some(serde_json::Value::Null) => None,
                    Some(serde_json::Value::String(s)) => Some(s.clone()),
                    Some(_) => {
                        w(
                            &mut warnings,
                            format!("{path}: `{key}` is not a string; skipped"),
                        );
                        None
                    }
                }
            };
            let meta = PackageMeta {
                name: text("pname"),
                version: text("version"),
                homepage: text("homepage"),
                description: text("description"),
                licenses: Vec::new(),
            };
            let licenses = licenses_of(p.get("license"), path, &mut warnings);
            let entry = out.meta.entry(path.to_owned()).or_default();
            // A path given twice (in `contents` and `sbomPackages`): the
            // first value of each field wins.
            entry.name = entry.name.take().or(meta.name);
            entry.version = entry.version.take().or(meta.version);
            entry.homepage = entry.homepage.take().or(meta.homepage);
            entry.description = entry.description.take().or(meta.description);
            if entry.licenses.is_empty() {
                entry.licenses = licenses;
            }
        }
        let warnings = warnings
            .iter()
            .map(|w| crate::escape::one_line(w))
            .collect();
        (out, warnings)
    }
}

/// nixpkgs' `meta.license`: a licence attribute set, a string, or a list
/// of either.
fn licenses_of(
    value: Option<&serde_json::Value>,
    path: &str,
    warnings: &mut Vec<String>,
) -> Vec<License> {
    use serde_json::Value;
    let items: Vec<&Value> = match value {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list.iter().collect(),
        Some(one) => vec![one],
    };
    let mut out = Vec::new();
    for item in items {
        match item {
            Value::String(s) => out.push(License {
                spdx_id: None,
                name: Some(s.clone()),
            }),
            Value::Object(map) => {
                let get = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_owned);
                out.push(License {
                    spdx_id: get("spdxId"),
                    name: get("fullName").or_else(|| get("shortName")),
                });
            }
            other => warnings.push(format!(
                "conf `sbom`: {path}: licence {other} is neither a string nor a licence set; skipped"
            )),
        }
    }
    out
}

/// Builds the SBOM input for an image that has been written: reads the
/// reference graph (`conf.layering.graph`; `None` for a conf with
/// `store_layers`, whose paths are then listed without NAR hashes or
/// dependencies, each with a warning) and the conf's `sbom` metadata.
///
/// `layers` are every layer in image order with their diff_ids (base,
/// store with its paths, customisation).
///
/// # Errors
///
/// When the graph or the conf cannot be read or parsed (one line naming it).
pub fn load_input(
    conf: &Path,
    graph: Option<&Path>,
    layers: Vec<Layer>,
    image: ImageIdentity,
) -> Result<(SbomInput, Vec<String>)> {
    let entries = match graph {
        Some(g) => crate::nix::load_graph(g)?,
        None => Vec::new(),
    };
    let (meta, warnings) = ConfSbom::load(conf)?;
    Ok((
        SbomInput::from_graph(image, layers, &entries, &meta.meta),
        warnings,
    ))
}

/// The image's layers for [`load_input`], from its diff_ids in image order
/// (the config's `rootfs.diff_ids`): `base_count` base-image layers, one
/// per entry of `store_layers`, then the customisation layer.
///
/// # Errors
///
/// When the counts do not add up (a caller's bug, named in one line).
pub fn image_layers(
    diff_ids: &[String],
    base_count: usize,
    store_layers: &[Vec<String>],
) -> Result<Vec<Layer>> {
    let want = base_count + store_layers.len() + 1;
    if diff_ids.len() != want {
        bail!(
            "SBOM: the image has {} diff_ids, but {base_count} base + {} store + 1 customisation layers",
            diff_ids.len(),
            store_layers.len()
        );
    }
    Ok(diff_ids
        .iter()
        .enumerate()
        .map(|(i, diff_id)| Layer {
            diff_id: diff_id.clone(),
            kind: if i < base_count {
                LayerKind::Base
            } else if i - base_count < store_layers.len() {
                LayerKind::Store(store_layers[i - base_count].clone())
            } else {
                LayerKind::Customisation
            },
        })
        .collect())
}

impl ImageIdentity {
    /// The identity of an image loaded as `repo_tag` (`name:tag`; the name
    /// may hold a registry with a port, `host:5000/app:1`) with this image
    /// ID; the other fields are left for the caller.
    pub fn for_repo_tag(repo_tag: &str, image_id: &str) -> ImageIdentity {
        let name = match repo_tag.rsplit_once(':') {
            Some((name, tag)) if !tag.contains('/') => name,
            _ => repo_tag,
        };
        ImageIdentity {
            name: name.to_owned(),
            image_id: image_id.to_owned(),
            tags: vec![repo_tag.to_owned()],
            ..Default::default()
        }
    }
}

/// Writes each requested SBOM to its file (atomically: a temporary file
/// beside it, renamed into place), and returns the warnings, each once.
///
/// Call after the image is written, with `outputs` from [`pair_outputs`]
/// and the input from [`load_input`].
///
/// # Errors
///
/// When a file cannot be written (one line naming it).
pub fn write_sbom_files(
    outputs: &[(SbomFormat, PathBuf)],
    input: &SbomInput,
) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    for (i, (format, path)) in outputs.iter().enumerate() {
        let (bytes, w) = render(*format, input);
        // Both formats warn alike: keep the first format's warnings.
        if i == 0 {
            warnings = w;
        }
        write_atomic(path, &bytes).with_context(|| {
            format!(
                "--sbom-out {}: writing the {} SBOM",
                path.display(),
                format.name()
            )
        })?;
    }
    Ok(warnings)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let written = fs::write(&tmp, bytes).and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written
}

/// Pretty JSON with a final newline; empty if serde fails (it cannot for
/// these types, which hold only strings, numbers and lists).
fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            bytes
        }
        Err(_) => Vec::new(),
    }
}

/// The document's UUID: version 5, in a name space of our own, named by
/// the format, the image digest and the SHA-256 of the document written
/// without it. Same image and content, same id; any change, another.
fn document_uuid(format: &str, image_digest: &str, content: &[u8]) -> String {
    let ns = uuid::v5(
        &uuid::NAMESPACE_URL,
        concat!(env!("CARGO_PKG_REPOSITORY"), "/sbom").as_bytes(),
    );
    let ns = uuid::bytes(&ns).unwrap_or(uuid::NAMESPACE_URL);
    let content_hash = crate::digest::hex(&Sha256::digest(content));
    uuid::v5(
        &ns,
        format!("{format}\n{image_digest}\n{content_hash}").as_bytes(),
    )
}

/// `pkg:oci/<name>@sha256%3A<hex>?…` for the image, when its manifest
/// digest is known (the purl `oci` type's version is the manifest digest).
fn oci_purl(image: &ImageIdentity) -> Option<String> {
    use resolve::percent;
    let digest = image.manifest_digest.as_deref()?;
    resolve::sha256_of_digest(digest)?;
    let last = image.name.rsplit('/').next().filter(|n| !n.is_empty())?;
    let mut qualifiers = Vec::new();
    if let Some(a) = image.architecture.as_deref().filter(|a| !a.is_empty()) {
        qualifiers.push(format!("arch={}", percent(a)));
    }
    if image.name.contains('/') {
        qualifiers.push(format!("repository_url={}", percent(&image.name)));
    }
    if let Some((_, tag)) = image.tags.first().and_then(|t| t.rsplit_once(':')) {
        if !tag.is_empty() && !tag.contains('/') {
            qualifiers.push(format!("tag={}", percent(tag)));
        }
    }
    let mut purl = format!(
        "pkg:oci/{}@{}",
        percent(&last.to_ascii_lowercase()),
        percent(digest)
    );
    if !qualifiers.is_empty() {
        purl.push('?');
        purl.push_str(&qualifiers.join("&"));
    }
    Some(purl)
}

#[cfg(test)]
mod tests;
