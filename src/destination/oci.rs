//! What the OCI forms share: the image manifest, the index entry naming an
//! image, `oci-layout`, and (for the dual archive) Docker's
//! `manifest.json` pointing at the same blobs, as `docker save` writes them
//! since Engine 25.
//!
//! Types are `oci-spec`'s. Its annotations are a `HashMap`, whose order
//! changes from run to run, so every document passes through
//! [`canonical_bytes`], which sorts annotation keys: same inputs, same
//! bytes, same digests.

use std::collections::HashMap;

use anyhow::{Context, Result};
use oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType};
use serde_json::Value;

use crate::cache::Blob;
use crate::model::Layer;
use crate::reference::Reference;

/// `oci-layout`'s content.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
/// containerd's annotation for the full image name (with tag).
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation for the tag in an image layout.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The OCI image config media type.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// The OCI image manifest media type.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The OCI image index media type.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// `blobs/sha256/<hex>` for a `sha256:<hex>` digest.
pub fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

/// The OCI image manifest for a config blob and layers.
pub fn manifest_bytes(config: &Blob, layers: &[Layer]) -> Result<Vec<u8>> {
    let layer_descs = layers
        .iter()
        .map(|l| descriptor(l.codec.oci_media_type(), &l.blob))
        .collect::<Result<Vec<_>>>()?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(CONFIG_MEDIA_TYPE, config)?)
        .layers(layer_descs)
        .build()
        .context("internal: cannot build the image manifest")?;
    canonical_bytes(&manifest)
}

/// A descriptor of `media_type` for `blob`.
pub fn descriptor(media_type: &str, blob: &Blob) -> Result<Descriptor> {
    let digest = blob
        .digest
        .parse::<oci_spec::image::Digest>()
        .with_context(|| format!("internal: bad digest {}", blob.digest))?;
    Ok(Descriptor::new(
        MediaType::from(media_type),
        blob.size,
        digest,
    ))
}

/// The index entry naming the image: the manifest descriptor with
/// containerd's full name and the OCI ref name (the tag).
pub fn image_entry(manifest: &Blob, repo_tag: &str) -> Result<Descriptor> {
    let r = Reference::parse(repo_tag)?;
    let mut d = descriptor(MANIFEST_MEDIA_TYPE, manifest)?;
    let tag = r.tag_or_latest().to_owned();
    let annotations = HashMap::from([
        (CONTAINERD_NAME.to_owned(), format!("{}:{tag}", r.name())),
        (REF_NAME.to_owned(), tag),
    ]);
    d.set_annotations(Some(annotations));
    Ok(d)
}

/// `index.json` listing `entries`.
pub fn index_bytes(entries: &[Descriptor]) -> Result<Vec<u8>> {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": entries,
    });
    canonical_bytes(&index)
}

/// Docker's `manifest.json` for the dual archive: the config and layers
/// named by their blob paths, as `docker save` writes since Engine 25.
pub fn docker_manifest_bytes(config: &Blob, repo_tag: &str, layers: &[Layer]) -> Vec<u8> {
    let layers: Vec<String> = layers.iter().map(|l| blob_path(&l.blob.digest)).collect();
    let m = serde_json::json!([{
        "Config": blob_path(&config.digest),
        "RepoTags": [repo_tag],
        "Layers": layers,
    }]);
    serde_json::to_vec(&m).unwrap_or_default()
}

/// Serialises `doc` compactly with every `annotations` object's keys sorted.
pub fn canonical_bytes<T: serde::Serialize>(doc: &T) -> Result<Vec<u8>> {
    let mut v = serde_json::to_value(doc).context("internal: cannot serialise")?;
    sort_annotations(&mut v);
    serde_json::to_vec(&v).context("internal: cannot serialise")
}

fn sort_annotations(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "annotations" {
                    if let Value::Object(a) = child {
                        a.sort_keys();
                    }
                }
                sort_annotations(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(sort_annotations),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::Codec;

    fn blob(n: u8, size: u64) -> Blob {
        Blob {
            digest: format!("sha256:{}", crate::digest::hex(&[n; 32])),
            size,
        }
    }

    #[test]
    fn manifest_and_index_shapes() {
        let layers = [Layer {
            diff_id: blob(1, 0).digest,
            blob: blob(2, 10),
            codec: Codec::Gzip,
            history: vec![],
        }];
        let m: Value =
            serde_json::from_slice(&manifest_bytes(&blob(3, 5), &layers).unwrap()).unwrap();
        assert_eq!(m["schemaVersion"], 2);
        assert_eq!(m["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(m["config"]["mediaType"], CONFIG_MEDIA_TYPE);
        assert_eq!(m["layers"][0]["mediaType"], Codec::Gzip.oci_media_type());
        assert_eq!(m["layers"][0]["size"], 10);
        let e = image_entry(&blob(4, 7), "hello:1").unwrap();
        let bytes = index_bytes(&[e]).unwrap();
        for _ in 0..20 {
            let again = index_bytes(&[image_entry(&blob(4, 7), "hello:1").unwrap()]).unwrap();
            assert_eq!(again, bytes, "annotation order is stable");
        }
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains(r#""annotations":{"io.containerd.image.name":"docker.io/library/hello:1","org.opencontainers.image.ref.name":"1"}"#), "{text}");
        let d: Value =
            serde_json::from_slice(&docker_manifest_bytes(&blob(3, 5), "hello:1", &layers))
                .unwrap();
        assert_eq!(d[0]["Layers"][0], blob_path(&blob(2, 0).digest));
    }
}
