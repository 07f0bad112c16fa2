//! Manifests (distribution spec, "Pushing manifests"): the standard image
//! manifest built from digests ([`build`]), `PUT` (checking the
//! registry's `Docker-Content-Digest`), `HEAD` and `GET`.

use anyhow::Result;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::transport::Req;
use super::{BlobDigest, Client};

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
            return Err(self.t.unexpected(&what, &resp));
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
        let mut req = Req::new(
            "GET",
            format!("/v2/{}/manifests/{reference}", self.t.repository),
        );
        req.headers.push(("accept", ACCEPT.into()));
        req.cap = MANIFEST_CAP + 1;
        let resp = self.t.call(&what, &req)?;
        match resp.status {
            200 => {}
            404 => return Ok(None),
            _ => return Err(self.t.unexpected(&what, &resp)),
        }
        if resp.body.len() as u64 > MANIFEST_CAP {
            return Err(self.t.fail(&what, "the manifest is larger than 4 MiB"));
        }
        if reference.starts_with("sha256:") && digest_of(&resp.body) != reference {
            return Err(self.t.fail(&what, "the bytes do not match the digest"));
        }
        let media = resp.header("content-type").unwrap_or("").to_owned();
        Ok(Some((media, resp.body)))
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
}
