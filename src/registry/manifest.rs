//! Manifests (distribution spec, "Pushing manifests"): the standard image
//! manifest built from digests ([`build`]), `PUT` (checking the
//! registry's `Docker-Content-Digest`), `HEAD` and `GET`, and the blobs an
//! image manifest already at a tag names ([`Client::listed_blobs`]).

use anyhow::Result;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::transport::{Req, Resp};
use super::{BlobDigest, Client};
use crate::digest::is_sha256_digest;

/// Registries must accept manifests of at least 4 MiB (OCI distribution
/// spec); we read no more.
pub const MANIFEST_CAP: u64 = 4 * 1024 * 1024;

/// Which manifest media types to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ManifestFormat {
    /// `application/vnd.oci.image.manifest.v1+json` (the default).
    Oci,
    /// Docker's schema 2, `application/vnd.docker.distribution.manifest.v2+json`.
    Docker,
}

impl ManifestFormat {
    /// The manifest's media type.
    pub fn manifest_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => "application/vnd.oci.image.manifest.v1+json",
            ManifestFormat::Docker => "application/vnd.docker.distribution.manifest.v2+json",
        }
    }

    /// The config blob's media type.
    pub fn config_media_type(self) -> &'static str {
        match self {
            ManifestFormat::Oci => "application/vnd.oci.image.config.v1+json",
            ManifestFormat::Docker => "application/vnd.docker.container.image.v1+json",
        }
    }

    /// A layer's media type for `compression` (`gzip`, `zstd` or `none`).
    /// Docker's schema 2 has no zstd type; the OCI one is used then, as
    /// docker and containerd do.
    pub fn layer_media_type(self, compression: &str) -> &'static str {
        match (self, compression) {
            (ManifestFormat::Docker, "gzip") => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            (ManifestFormat::Docker, "none") => "application/vnd.docker.image.rootfs.diff.tar",
            (_, "gzip") => "application/vnd.oci.image.layer.v1.tar+gzip",
            (_, "zstd") => "application/vnd.oci.image.layer.v1.tar+zstd",
            _ => "application/vnd.oci.image.layer.v1.tar",
        }
    }
}

/// The standard image manifest for a config and layers, compact JSON in
/// the spec's key order: `schemaVersion`, `mediaType`, `config`, `layers`.
pub fn build(
    format: ManifestFormat,
    config: &BlobDigest,
    layers: &[(&str, &BlobDigest)],
) -> Vec<u8> {
    let descriptor = |media: &str, b: &BlobDigest| json!({ "mediaType": media, "digest": b.digest, "size": b.size });
    let m = json!({
        "schemaVersion": 2,
        "mediaType": format.manifest_media_type(),
        "config": descriptor(format.config_media_type(), config),
        "layers": layers.iter().map(|(m, b)| descriptor(m, b)).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&m).expect("JSON of strings and numbers")
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

const ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// The image manifest types (no index, no list): what [`Client::listed_blobs`] asks for.
const IMAGE_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// The image manifest at a tag, as [`Client::listed_blobs`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The manifest's digest (`sha256:<hex>` of the bytes received, which
    /// the registry's `Docker-Content-Digest` confirmed when it sent one).
    pub digest: String,
    /// Every blob it names with a sha256 digest: the config, then the layers.
    pub blobs: Vec<BlobDigest>,
}

/// A manifest `PUT` the registry refused because a blob it names is not in
/// the repository (`BLOB_UNKNOWN`, `MANIFEST_BLOB_UNKNOWN`): the error line,
/// as a type a push can recognise ([`anyhow::Error::downcast_ref`]).
#[derive(Debug)]
pub struct BlobUnknown(pub String);

impl std::fmt::Display for BlobUnknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BlobUnknown {}

/// Whether a distribution error body names a missing blob.
fn names_unknown_blob(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<Code>,
    }
    #[derive(Deserialize)]
    struct Code {
        #[serde(default)]
        code: String,
    }
    serde_json::from_slice::<Errors>(body).is_ok_and(|e| {
        e.errors
            .iter()
            .any(|c| matches!(c.code.as_str(), "BLOB_UNKNOWN" | "MANIFEST_BLOB_UNKNOWN"))
    })
}

/// The media type of an answer (`Content-Type` without parameters), if any.
fn content_type(resp: &Resp) -> Option<&str> {
    resp.header("content-type")
        .map(|t| t.split(';').next().unwrap_or("").trim())
        .filter(|t| !t.is_empty())
}

/// The blobs an image manifest's `bytes` name (config, then layers), or
/// why they are not an image manifest we can read. `media_type` is what
/// the registry said it is.
pub fn parse_listed(media_type: Option<&str>, bytes: &[u8]) -> Result<Vec<BlobDigest>, String> {
    #[derive(Deserialize)]
    struct Descriptor {
        digest: String,
        size: u64,
    }
    // Only what is used is built; every other field is skipped unparsed.
    #[derive(Deserialize)]
    struct ImageManifest {
        #[serde(rename = "schemaVersion")]
        schema_version: u64,
        #[serde(rename = "mediaType", default)]
        media_type: Option<String>,
        config: Descriptor,
        layers: Vec<Descriptor>,
        #[serde(default)]
        manifests: Option<serde::de::IgnoredAny>,
    }
    let image_types = [
        ManifestFormat::Oci.manifest_media_type(),
        ManifestFormat::Docker.manifest_media_type(),
    ];
    if let Some(t) = media_type.filter(|t| !image_types.contains(t)) {
        return Err(format!("it is a {t}, not an image manifest"));
    }
    let m: ImageManifest =
        serde_json::from_slice(bytes).map_err(|e| format!("it is not an image manifest ({e})"))?;
    if m.schema_version != 2 || m.manifests.is_some() {
        return Err("it is not a schema 2 image manifest".into());
    }
    if let Some(t) = m.media_type.as_deref().filter(|t| !image_types.contains(t)) {
        return Err(format!("it says it is a {t}, not an image manifest"));
    }
    Ok(std::iter::once(m.config)
        .chain(m.layers)
        .filter(|d| is_sha256_digest(&d.digest))
        .map(|d| BlobDigest {
            digest: d.digest,
            size: d.size,
        })
        .collect())
}

impl Client {
    /// `PUT /v2/NAME/manifests/REFERENCE` (a tag or a digest) with
    /// `media_type`; returns the manifest's digest. A registry that
    /// answers with another `Docker-Content-Digest` is an error.
    pub fn put_manifest(&self, reference: &str, media_type: &str, bytes: &[u8]) -> Result<String> {
        self.put_manifest_as(Some(reference), media_type, bytes, "manifest")
            .map(|(digest, _)| digest)
    }

    /// `PUT` of manifest `bytes` under `reference` (its own digest when
    /// `None`), checked against the registry's `Docker-Content-Digest`;
    /// returns the digest and whether the answer carried `OCI-Subject`
    /// (the registry has the referrers API). `kind` names it in errors.
    pub(super) fn put_manifest_as(
        &self,
        reference: Option<&str>,
        media_type: &str,
        bytes: &[u8],
        kind: &str,
    ) -> Result<(String, bool)> {
        let digest = digest_of(bytes);
        let reference = reference.unwrap_or(&digest);
        let what = format!("putting {kind} {digest} as {reference}");
        let mut req = Req::new(
            "PUT",
            format!("/v2/{}/manifests/{reference}", self.t.repository),
        );
        req.headers.push(("content-type", media_type.to_owned()));
        req.body = Some(bytes);
        let resp = self.t.call(&what, &req)?;
        if !matches!(resp.status, 200 | 201 | 202 | 204) {
            let e = self.t.unexpected(&what, &resp);
            if matches!(resp.status, 400 | 404) && names_unknown_blob(&resp.body) {
                return Err(anyhow::Error::new(BlobUnknown(format!("{e:#}"))));
            }
            return Err(e);
        }
        if let Some(d) = resp.header("docker-content-digest") {
            if d != digest {
                return Err(self.t.fail(
                    &what,
                    format!("the registry says it stored {d}, not the manifest we sent"),
                ));
            }
        }
        let api = resp.header("oci-subject").is_some();
        Ok((digest, api))
    }

    /// `HEAD /v2/NAME/manifests/REFERENCE`: the digest, `None` if absent.
    pub fn head_manifest(&self, reference: &str) -> Result<Option<String>> {
        let what = format!("checking manifest {reference}");
        let mut req = Req::new(
            "HEAD",
            format!("/v2/{}/manifests/{reference}", self.t.repository),
        );
        req.headers.push(("accept", ACCEPT.into()));
        let resp = self.t.call(&what, &req)?;
        match resp.status {
            200 => Ok(resp.header("docker-content-digest").map(str::to_owned)),
            404 => Ok(None),
            _ => Err(self.t.unexpected(&what, &resp)),
        }
    }

    /// `GET /v2/NAME/manifests/REFERENCE`: `(media type, bytes)`, `None`
    /// if absent. Bytes fetched by digest are checked against it.
    pub fn get_manifest(&self, reference: &str) -> Result<Option<(String, Vec<u8>)>> {
        let what = format!("getting manifest {reference}");
        Ok(self
            .fetch_manifest(&what, reference, ACCEPT)?
            .map(|(resp, _)| {
                let media = resp.header("content-type").unwrap_or("").to_owned();
                (media, resp.body)
            }))
    }

    /// The one manifest `GET` behind [`Self::get_manifest`] and
    /// [`Self::listed_blobs`]: `accept` as asked, the body capped at
    /// [`MANIFEST_CAP`], and bytes fetched by digest checked against it.
    /// Returns the response and the body's digest; `None` on a 404.
    fn fetch_manifest(
        &self,
        what: &str,
        reference: &str,
        accept: &str,
    ) -> Result<Option<(Resp, String)>> {
        let mut req = Req::new(
            "GET",
            format!("/v2/{}/manifests/{reference}", self.t.repository),
        );
        req.headers.push(("accept", accept.into()));
        req.cap = MANIFEST_CAP + 1;
        let resp = self.t.call(what, &req)?;
        match resp.status {
            200 => {}
            404 => return Ok(None),
            _ => return Err(self.t.unexpected(what, &resp)),
        }
        if resp.body.len() as u64 > MANIFEST_CAP {
            return Err(self.t.fail(what, "the manifest is larger than 4 MiB"));
        }
        let digest = digest_of(&resp.body);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(self.t.fail(what, "the bytes do not match the digest"));
        }
        Ok(Some((resp, digest)))
    }
}

impl Client {
    /// `GET /v2/NAME/manifests/REFERENCE` (a tag or a digest) asking for an
    /// image manifest only (OCI or Docker schema 2), read up to
    /// [`MANIFEST_CAP`]: the blobs it names, which the registry holds in
    /// this repository (it accepts a manifest only once every blob it names
    /// is there). `Ok(None)` when there is no such manifest; `Err` (one
    /// line) when the answer is anything else than such a manifest: an
    /// index or list, too large, unparsable, or bytes that do not match the
    /// registry's `Docker-Content-Digest` or the digest asked for.
    pub fn listed_blobs(&self, reference: &str) -> Result<Option<Listed>> {
        let what = format!("getting manifest {reference}");
        let Some((resp, digest)) = self.fetch_manifest(&what, reference, IMAGE_ACCEPT)? else {
            return Ok(None);
        };
        if let Some(d) = resp.header("docker-content-digest") {
            if d != digest {
                return Err(self.t.fail(
                    &what,
                    format!("the bytes hash to {digest}, but the registry says {d}"),
                ));
            }
        }
        let blobs =
            parse_listed(content_type(&resp), &resp.body).map_err(|e| self.t.fail(&what, e))?;
        Ok(Some(Listed { digest, blobs }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_manifest() {
        let c = BlobDigest {
            digest: "sha256:c".into(),
            size: 2,
        };
        let l = BlobDigest {
            digest: "sha256:l".into(),
            size: 3,
        };
        let m = build(
            ManifestFormat::Oci,
            &c,
            &[(ManifestFormat::Oci.layer_media_type("gzip"), &l)],
        );
        assert_eq!(
            String::from_utf8(m).unwrap(),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:c","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:l","size":3}]}"#
        );
        let m = build(ManifestFormat::Docker, &c, &[]);
        assert!(String::from_utf8(m)
            .unwrap()
            .contains("vnd.docker.container.image.v1+json"));
        assert_eq!(
            ManifestFormat::Docker.layer_media_type("zstd"),
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
    }

    #[test]
    fn listed_blobs_of_image_manifests_only() {
        let (c, l) = (
            format!("sha256:{}", "c".repeat(64)),
            format!("sha256:{}", "1".repeat(64)),
        );
        let blob = |d: &str, size| BlobDigest {
            digest: d.to_owned(),
            size,
        };
        for format in [ManifestFormat::Oci, ManifestFormat::Docker] {
            let m = build(
                format,
                &blob(&c, 2),
                &[(format.layer_media_type("gzip"), &blob(&l, 3))],
            );
            let want = vec![blob(&c, 2), blob(&l, 3)];
            assert_eq!(
                parse_listed(Some(format.manifest_media_type()), &m).unwrap(),
                want
            );
            // No Content-Type: the body's own mediaType decides.
            assert_eq!(parse_listed(None, &m).unwrap(), want);
            assert!(parse_listed(Some("application/vnd.oci.image.index.v1+json"), &m).is_err());
        }
        // An OCI manifest may omit mediaType; digests of other algorithms are left out.
        let m = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{c}","size":2}},"layers":[{{"digest":"sha512:ab","size":1}},{{"digest":"{l}","size":3}}]}}"#
        );
        assert_eq!(parse_listed(None, m.as_bytes()).unwrap().len(), 2);
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"digest":"{c}","size":2}}]}}"#
        );
        assert!(parse_listed(None, index.as_bytes()).is_err());
        let both = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{c}","size":2}},"layers":[],"manifests":[]}}"#
        );
        assert!(parse_listed(None, both.as_bytes()).is_err());
        let list = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","config":{{"digest":"{c}","size":2}},"layers":[]}}"#
        );
        assert!(parse_listed(None, list.as_bytes()).is_err());
        assert!(parse_listed(None, b"{not json").is_err());
        assert!(parse_listed(
            None,
            br#"{"schemaVersion":1,"config":{"digest":"x","size":1},"layers":[]}"#
        )
        .is_err());
    }

    #[test]
    fn unknown_blob_errors() {
        assert!(names_unknown_blob(
            br#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:x"}]}"#
        ));
        assert!(names_unknown_blob(
            br#"{"errors":[{"code":"MANIFEST_INVALID"},{"code":"BLOB_UNKNOWN"}]}"#
        ));
        assert!(!names_unknown_blob(
            br#"{"errors":[{"code":"MANIFEST_INVALID"}]}"#
        ));
        assert!(!names_unknown_blob(b"oops"));
    }
}
