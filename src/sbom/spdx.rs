//! SPDX 2.3 JSON (<https://spdx.github.io/spdx-spec/v2.3/>), written from
//! our own serde types: the SPDX crates on offer stop at older versions.
//!
//! The document DESCRIBES one package for the image
//! (`primaryPackagePurpose` CONTAINER); the image CONTAINS one package per
//! layer (ARCHIVE, its diff_id as SHA256 checksum); each store layer
//! CONTAINS one package per store path it holds, and each store path
//! DEPENDS_ON the store paths it references. A store path package carries
//! its `pkg:nix` package URL, the NAR's SHA-256 as checksum, the store path
//! as `packageFileName`, and its NAR size and layer in `comment` (SPDX 2.3
//! has no free-form properties).
//!
//! Deterministic: fields in a fixed order, packages sorted by store path,
//! relationships in a fixed order, `created` from the image's `created`
//! (the epoch without one: SPDX requires the field), and a
//! `documentNamespace` ending in a UUID derived from the image digest and
//! the document's own content.

use serde::Serialize;

use super::model::SbomInput;
use super::resolve::{id_chars, percent, resolve, sha256_of_digest, Resolved};
use super::{document_uuid, to_json, TOOL};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    spdx_version: &'static str,
    data_license: &'static str,
    #[serde(rename = "SPDXID")]
    spdx_id: &'static str,
    name: String,
    document_namespace: String,
    creation_info: CreationInfo,
    packages: Vec<Package>,
    relationships: Vec<Relationship>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    has_extracted_licensing_infos: Vec<ExtractedLicense>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreationInfo {
    created: String,
    creators: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Package {
    #[serde(rename = "SPDXID")]
    spdx_id: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_info: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    package_file_name: Option<String>,
    download_location: &'static str,
    files_analyzed: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checksums: Vec<Checksum>,
    #[serde(skip_serializing_if = "Option::is_none")]
    homepage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    license_concluded: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    license_declared: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    copyright_text: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    external_refs: Vec<ExternalRef>,
    primary_package_purpose: &'static str,
}

#[derive(Serialize)]
struct Checksum {
    algorithm: &'static str,
    #[serde(rename = "checksumValue")]
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExternalRef {
    reference_category: &'static str,
    reference_type: &'static str,
    reference_locator: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Relationship {
    spdx_element_id: String,
    relationship_type: &'static str,
    related_spdx_element: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExtractedLicense {
    license_id: String,
    extracted_text: String,
    name: String,
}

const IMAGE_ID: &str = "SPDXRef-Image";

/// The SPDX 2.3 JSON document for `input`, and the warnings about what was
/// missing or malformed (the document still lists everything it knows).
pub fn spdx(input: &SbomInput) -> (Vec<u8>, Vec<String>) {
    let r = resolve(input);
    let mut doc = document(&r);
    let digest = r
        .image
        .manifest_digest
        .as_deref()
        .unwrap_or(&r.image.image_id);
    let uuid = document_uuid("spdx", digest, &to_json(&doc));
    doc.document_namespace = format!(
        "{}/spdx/{}-{uuid}",
        env!("CARGO_PKG_REPOSITORY"),
        percent(&r.image_ref)
    );
    let mut warnings = r.warnings;
    let bytes = to_json(&doc);
    if bytes.is_empty() {
        warnings.push("SPDX: the document could not be serialised".to_owned());
    }
    (bytes, warnings)
}

fn document(r: &Resolved) -> Document {
    let image = r.image;
    let mut packages = Vec::with_capacity(1 + r.layers.len() + r.packages.len());
    let mut relationships = vec![Relationship {
        spdx_element_id: "SPDXRef-DOCUMENT".into(),
        relationship_type: "DESCRIBES",
        related_spdx_element: IMAGE_ID.into(),
    }];

    let tag_version = image
        .tags
        .first()
        .and_then(|t| t.rsplit_once(':'))
        .map(|(_, tag)| tag)
        .filter(|t| !t.is_empty() && !t.contains('/'));
    let manifest_hex = image.manifest_digest.as_deref().and_then(sha256_of_digest);
    let mut image_comment = format!("Container image; image ID {}", image.image_id);
    if let Some(m) = &image.manifest_digest {
        image_comment.push_str(&format!("; manifest digest {m}"));
    }
    if !image.tags.is_empty() {
        image_comment.push_str(&format!("; tags {}", image.tags.join(", ")));
    }
    image_comment.push_str(&format!("; {} layers", r.layers.len()));
    packages.push(Package {
        spdx_id: IMAGE_ID.into(),
        name: if image.name.is_empty() {
            r.image_ref.clone()
        } else {
            image.name.clone()
        },
        version_info: tag_version.map(str::to_owned),
        package_file_name: None,
        download_location: "NOASSERTION",
        files_analyzed: false,
        checksums: manifest_hex
            .map(|hex| Checksum {
                algorithm: "SHA256",
                value: hex,
            })
            .into_iter()
            .collect(),
        homepage: None,
        license_concluded: None,
        license_declared: None,
        copyright_text: None,
        description: None,
        comment: Some(image_comment),
        external_refs: super::oci_purl(image)
            .map(|purl| ExternalRef {
                reference_category: "PACKAGE-MANAGER",
                reference_type: "purl",
                reference_locator: purl,
            })
            .into_iter()
            .collect(),
        primary_package_purpose: "CONTAINER",
    });

    let layer_id = |i: usize| format!("SPDXRef-Layer-{}", i + 1);
    for (i, l) in r.layers.iter().enumerate() {
        let what = match l.kind {
            "base" => "a layer of the base image (fromImage)".to_owned(),
            "customisation" => "the customisation layer (contents, extraCommands)".to_owned(),
            _ => format!(
                "store layer holding {} store paths",
                r.packages.iter().filter(|p| p.layer == Some(i)).count()
            ),
        };
        packages.push(Package {
            spdx_id: layer_id(i),
            name: format!("{} layer {}", r.image_ref, i + 1),
            version_info: None,
            package_file_name: None,
            download_location: "NOASSERTION",
            files_analyzed: false,
            checksums: l
                .sha256
                .clone()
                .map(|hex| Checksum {
                    algorithm: "SHA256",
                    value: hex,
                })
                .into_iter()
                .collect(),
            homepage: None,
            license_concluded: None,
            license_declared: None,
            copyright_text: None,
            description: None,
            comment: Some(format!(
                "OCI layer {} of {}, diff_id {}: {what}",
                i + 1,
                r.layers.len(),
                l.diff_id
            )),
            external_refs: Vec::new(),
            primary_package_purpose: "ARCHIVE",
        });
        relationships.push(Relationship {
            spdx_element_id: IMAGE_ID.into(),
            relationship_type: "CONTAINS",
            related_spdx_element: layer_id(i),
        });
    }

    let ids = package_ids(r);
    for (p, id) in r.packages.iter().zip(&ids) {
        let mut comment = format!("Nix store path {}", p.store.path);
        if let Some(size) = p.store.nar_size {
            comment.push_str(&format!("; NAR size {size} bytes"));
        }
        if let Some(h) = &p.store.nar_hash {
            comment.push_str(&format!("; NAR hash {h}"));
        }
        match p.layer {
            Some(l) => comment.push_str(&format!(
                "; in layer {} (diff_id {})",
                l + 1,
                r.layers[l].diff_id
            )),
            None => comment.push_str("; in no known layer"),
        }
        packages.push(Package {
            spdx_id: id.clone(),
            name: p.name.clone(),
            version_info: p.version.clone(),
            package_file_name: Some(p.store.path.clone()),
            download_location: "NOASSERTION",
            files_analyzed: false,
            checksums: p
                .sha256
                .clone()
                .map(|hex| Checksum {
                    algorithm: "SHA256",
                    value: hex,
                })
                .into_iter()
                .collect(),
            homepage: p.homepage.map(str::to_owned),
            license_concluded: Some("NOASSERTION"),
            license_declared: p.license.as_ref().map(|l| l.expression.clone()),
            copyright_text: Some("NOASSERTION"),
            description: p.description.map(str::to_owned),
            comment: Some(comment),
            external_refs: vec![ExternalRef {
                reference_category: "PACKAGE-MANAGER",
                reference_type: "purl",
                reference_locator: p.purl.clone(),
            }],
            primary_package_purpose: "LIBRARY",
        });
        relationships.push(Relationship {
            spdx_element_id: p.layer.map_or_else(|| IMAGE_ID.to_owned(), layer_id),
            relationship_type: "CONTAINS",
            related_spdx_element: id.clone(),
        });
    }
    for (p, id) in r.packages.iter().zip(&ids) {
        for &j in &p.depends_on {
            relationships.push(Relationship {
                spdx_element_id: id.clone(),
                relationship_type: "DEPENDS_ON",
                related_spdx_element: ids[j].clone(),
            });
        }
    }

    Document {
        spdx_version: "SPDX-2.3",
        data_license: "CC0-1.0",
        spdx_id: "SPDXRef-DOCUMENT",
        name: r.image_ref.clone(),
        document_namespace: String::new(),
        creation_info: CreationInfo {
            created: r.created.clone().unwrap_or_else(|| "1970-01-01T00:00:00Z".into()),
            creators: vec![format!("Tool: {TOOL}-{}", env!("CARGO_PKG_VERSION"))],
        },
        packages,
        relationships,
        has_extracted_licensing_infos: r
            .license_refs
            .iter()
            .map(|(id, name)| ExtractedLicense {
                license_id: id.clone(),
                extracted_text: format!(
                    "The licence named {name:?} in the package's Nix meta.license (no SPDX identifier)."
                ),
                name: name.clone(),
            })
            .collect(),
    }
}

/// `SPDXRef-Nix-<hash>-<name>` per package: stable across builds of the
/// same closure; a clash (only possible with odd names) gets a suffix.
fn package_ids(r: &Resolved) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    r.packages
        .iter()
        .map(|p| {
            let base = p.store.path.rsplit('/').next().unwrap_or_default();
            let stem = format!("SPDXRef-Nix-{}", id_chars(base));
            let mut id = stem.clone();
            let mut n = 2;
            while !seen.insert(id.clone()) {
                id = format!("{stem}-{n}");
                n += 1;
            }
            id
        })
        .collect()
}
