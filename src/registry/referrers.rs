//! Referrers (distribution spec 1.1): a manifest whose `subject` names
//! another manifest (an SBOM of an image) is one of its referrers.
//!
//! A registry with the referrers API lists them itself
//! (`GET /v2/NAME/referrers/DIGEST`) and says so by answering the manifest
//! `PUT` with an `OCI-Subject` header. Without it (Debian's
//! docker-registry 2.8), the pushing client keeps the list: an image index
//! tagged by the referrers tag schema, `sha256-<hex of the subject>`,
//! holding a descriptor of each referrer with its `artifactType` and
//! annotations. [`Client::put_referrer`] pushes the manifest and tells
//! which case it is; [`Client::add_to_referrers_tag`] keeps the list.
//!
//! The tag is read, changed and written back without a lock (Debian's
//! registry has no conditional `PUT`): two clients attaching to the same
//! image at the same moment can lose one entry, as the spec warns.

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::manifest::MANIFEST_CAP;
use super::Client;

/// The OCI image index media type: the referrers tag's content.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

/// The referrers tag of `digest` (`sha256:<hex>` → `sha256-<hex>`): the
/// algorithm cut to 32 characters, `-`, the encoded part cut to 64 with
/// characters a tag cannot hold replaced by `-`.
///
/// # Errors
///
/// When `digest` has no `algorithm:` part.
pub fn referrers_tag(digest: &str) -> Result<String> {
    let Some((alg, enc)) = digest.split_once(':') else {
        bail!("{digest:?} is not a digest (no algorithm)");
    };
    let clean = |s: &str, n: usize| -> String {
        s.chars()
            .take(n)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    Ok(format!("{}-{}", clean(alg, 32), clean(enc, 64)))
}

impl Client {
    /// `PUT /v2/NAME/manifests/DIGEST` of a manifest with a `subject`;
    /// returns its digest, and whether the registry has the referrers API
    /// (it answered with `OCI-Subject`). When it has not, the caller keeps
    /// the list with [`Client::add_to_referrers_tag`].
    pub fn put_referrer(&self, media_type: &str, bytes: &[u8]) -> Result<(String, bool)> {
        self.put_manifest_as(None, media_type, bytes, "referrer manifest")
    }

    /// Adds `descriptor` (of a manifest whose subject is `subject`) to the
    /// image index under `subject`'s referrers tag, creating it when
    /// absent; `false` when it was listed already (nothing is written).
    ///
    /// # Errors
    ///
    /// When the tag holds something other than an image index (it is not
    /// overwritten), or the registry fails.
    pub fn add_to_referrers_tag(&self, subject: &str, descriptor: &Value) -> Result<bool> {
        let tag = referrers_tag(subject)?;
        let what = format!("updating the referrers tag {tag}");
        let mut index = match self.get_manifest(&tag)? {
            None => json!({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []}),
            Some((media_type, bytes)) => {
                let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
                let is_index = |v: &Value| {
                    v["manifests"].is_array()
                        && (media_type == INDEX_MEDIA_TYPE
                            || v["mediaType"].as_str() == Some(INDEX_MEDIA_TYPE))
                };
                match parsed {
                    Some(v) if is_index(&v) => v,
                    _ => {
                        return Err(self.t.fail(
                            &what,
                            format!(
                                "the tag holds {}, not an image index; not overwriting it",
                                if media_type.is_empty() {
                                    "a document of unknown type"
                                } else {
                                    media_type.as_str()
                                }
                            ),
                        ))
                    }
                }
            }
        };
        let digest = descriptor["digest"].as_str().unwrap_or_default();
        let Some(list) = index["manifests"].as_array_mut() else {
            return Err(self.t.fail(&what, "internal: no manifests list"));
        };
        if list.iter().any(|m| m["digest"].as_str() == Some(digest)) {
            return Ok(false);
        }
        list.push(descriptor.clone());
        let bytes =
            serde_json::to_vec(&index).map_err(|e| self.t.fail(&what, format!("internal: {e}")))?;
        if bytes.len() as u64 > MANIFEST_CAP {
            return Err(self.t.fail(
                &what,
                "the referrers index would exceed 4 MiB, more than registries must accept",
            ));
        }
        self.put_manifest(&tag, INDEX_MEDIA_TYPE, &bytes)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_schema() {
        let hex = "a".repeat(64);
        assert_eq!(
            referrers_tag(&format!("sha256:{hex}")).unwrap(),
            format!("sha256-{hex}")
        );
        assert_eq!(
            referrers_tag(&format!("sha512:{}", "b".repeat(128))).unwrap(),
            format!("sha512-{}", "b".repeat(64))
        );
        // The spec's own example.
        assert_eq!(
            referrers_tag("test+algorithm+using+algorithm+separators+and+lots+of+characters+to+excercise+overall+truncation:alsoSome=InTheEncodedSectionToShowHyphenReplacementAndLotsAndLotsOfCharactersToExcerciseEncodedTruncation").unwrap(),
            "test-algorithm-using-algorithm-s-alsoSome-InTheEncodedSectionToShowHyphenReplacementAndLotsAndLot"
        );
        assert!(referrers_tag("nodigest").is_err());
    }
}
