//! The image's OCI referrers (issue 10): each artifact [`Image::attach`]
//! makes (an SBOM) becomes an image manifest in the image-spec 1.1
//! artifact form: `artifactType` and its one layer of the artifact's media
//! type, the empty descriptor as `config`, and `subject` naming the image
//! manifest.
//!
//! Every destination that carries referrers (the layout directory, the
//! `oci`/`dual` archives, registries) builds them here, so an SBOM's
//! artifact manifest has the same bytes and digest wherever it lands.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use crate::cache::Blob;
use crate::destination::oci::{self, MANIFEST_MEDIA_TYPE};
use crate::destination::oci_archive::bytes_blob;
use crate::model::{Image, Subject};

/// The empty descriptor's media type (image-spec 1.1): the `config` of an
/// artifact that has none.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The empty descriptor's content: `{}`, 2 bytes; stored like any blob,
/// since consumers may fetch it.
pub const EMPTY: &[u8] = b"{}";
/// The annotation on the image's index entry (`index.json`) listing the
/// digests of its referrers' manifests, comma-separated: the way to them
/// in an archive, whose `index.json` lists only the image.
pub const REFERRERS_ANNOTATION: &str = "io.stream-layered-image.referrers";

/// One referrer of the image, built.
#[derive(Debug, Clone)]
pub struct Referrer {
    /// The artifact's media type: the manifest's `artifactType` and its
    /// layer's `mediaType`.
    pub artifact_type: String,
    /// The artifact blob (the SBOM).
    pub blob: Blob,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// The artifact manifest's bytes.
    pub manifest: Vec<u8>,
    /// The artifact manifest as a blob.
    pub manifest_blob: Blob,
    /// The artifact manifest's annotations.
    pub annotations: BTreeMap<String, String>,
}

impl Referrer {
    /// The descriptor listing the artifact manifest in an image index
    /// (`index.json`, the referrers tag's index): with its `artifactType`
    /// and the manifest's annotations, as the referrers API lists it.
    pub fn descriptor(&self) -> Value {
        let mut d = json!({
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": self.manifest_blob.digest,
            "size": self.manifest_blob.size,
            "artifactType": self.artifact_type,
        });
        if !self.annotations.is_empty() {
            d["annotations"] = json!(self.annotations);
        }
        d
    }
}

/// The empty descriptor's blob.
pub fn empty_blob() -> Blob {
    bytes_blob(EMPTY)
}

/// The referrers of the image `subject` describes: none unless the image
/// has an [`Image::attach`].
///
/// # Errors
///
/// What making the artifacts fails with (an SBOM's graph unreadable).
pub fn referrers(img: &Image, subject: &Subject) -> Result<Vec<Referrer>> {
    let Some(attach) = img.attach else {
        return Ok(Vec::new());
    };
    let empty = empty_blob();
    let mut out = Vec::new();
    for a in attach(subject)? {
        let blob = bytes_blob(&a.bytes);
        let mut m = Map::new();
        m.insert("schemaVersion".into(), json!(2));
        m.insert("mediaType".into(), json!(MANIFEST_MEDIA_TYPE));
        m.insert("artifactType".into(), json!(a.media_type));
        m.insert(
            "config".into(),
            json!({"mediaType": EMPTY_MEDIA_TYPE, "digest": empty.digest, "size": empty.size}),
        );
        m.insert(
            "layers".into(),
            json!([{"mediaType": a.media_type, "digest": blob.digest, "size": blob.size}]),
        );
        m.insert(
            "subject".into(),
            json!({
                "mediaType": subject.media_type,
                "digest": subject.manifest.digest,
                "size": subject.manifest.size,
            }),
        );
        if !a.annotations.is_empty() {
            m.insert("annotations".into(), json!(a.annotations));
        }
        let manifest = oci::canonical_bytes(&Value::Object(m))
            .context("internal: cannot serialise an artifact manifest")?;
        out.push(Referrer {
            artifact_type: a.media_type,
            manifest_blob: bytes_blob(&manifest),
            manifest,
            blob,
            bytes: a.bytes,
            annotations: a.annotations,
        });
    }
    Ok(out)
}

/// Adds [`REFERRERS_ANNOTATION`] to the image's index entry when it has
/// referrers.
pub fn annotate_entry(entry: &mut oci_spec::image::Descriptor, referrers: &[Referrer]) {
    if referrers.is_empty() {
        return;
    }
    let list: Vec<&str> = referrers
        .iter()
        .map(|r| r.manifest_blob.digest.as_str())
        .collect();
    let mut annotations = entry.annotations().clone().unwrap_or_default();
    annotations.insert(REFERRERS_ANNOTATION.to_owned(), list.join(","));
    entry.set_annotations(Some(annotations));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_descriptor_is_the_specs() {
        let e = empty_blob();
        assert_eq!(e.size, 2);
        assert_eq!(
            e.digest,
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }
}
