//! CycloneDX 1.6 JSON (<https://cyclonedx.org/docs/1.6/json/>), written
//! from our own serde types: the CycloneDX crates on offer stop at older
//! versions.
//!
//! `metadata.component` is the image (type `container`, its manifest digest
//! as SHA-256 hash, `pkg:oci` URL when the manifest digest is known, image
//! ID and tags as properties). `components` holds one `file` component per
//! layer (its diff_id as SHA-256 hash) and one `library` component per
//! store path, with nixpkgs' property taxonomy (`nix:store_path`,
//! `nix:narinfo:store_path`, `nix:narinfo:nar_hash`, `nix:narinfo:nar_size`,
//! `nix:narinfo:references`; see nixpkgs' `doc/interoperability/
//! cyclonedx.md`) and ours (`stream-layered-image:layer:*`) for the layer.
//! `dependencies` follows the references; the image depends on its layers
//! and on the store paths nothing else refers to.
//!
//! Deterministic: fixed field order, components sorted (layers in image
//! order, then store paths by path), `timestamp` only from the image's
//! `created`, `serialNumber` derived from the image digest and the
//! document's content, `cdx:reproducible` when the image's times are fixed.

use serde::Serialize;

use super::model::SbomInput;
use super::resolve::{resolve, sha256_of_digest, Resolved};
use super::{document_uuid, to_json, TOOL};

/// Our own property namespace (CycloneDX property taxonomy syntax).
const NS: &str = "stream-layered-image";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bom {
    bom_format: &'static str,
    spec_version: &'static str,
    serial_number: String,
    version: u32,
    metadata: Metadata,
    components: Vec<Component>,
    dependencies: Vec<Dependency>,
}

#[derive(Serialize)]
struct Metadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<String>,
    tools: Tools,
    component: Component,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    properties: Vec<Property>,
}

#[derive(Serialize)]
struct Tools {
    components: Vec<Component>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct Component {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(rename = "bom-ref", skip_serializing_if = "Option::is_none")]
    bom_ref: Option<String>,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hashes: Vec<Hash>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    licenses: Vec<LicenseChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    purl: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    external_references: Vec<ExternalReference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    properties: Vec<Property>,
}

#[derive(Serialize)]
struct Hash {
    alg: &'static str,
    content: String,
}

/// One element of `licenses`: a list of named licences, or one expression.
#[derive(Serialize)]
#[serde(untagged)]
enum LicenseChoice {
    License { license: NamedLicense },
    Expression { expression: String },
}

#[derive(Serialize)]
struct NamedLicense {
    name: String,
}

#[derive(Serialize)]
struct ExternalReference {
    #[serde(rename = "type")]
    kind: &'static str,
    url: String,
}

#[derive(Serialize)]
struct Property {
    name: String,
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Dependency {
    #[serde(rename = "ref")]
    reference: String,
    depends_on: Vec<String>,
}

fn prop(name: &str, value: impl Into<String>) -> Property {
    Property {
        name: name.to_owned(),
        value: value.into(),
    }
}

fn sha256(hex: Option<String>) -> Vec<Hash> {
    hex.map(|content| Hash {
        alg: "SHA-256",
        content,
    })
    .into_iter()
    .collect()
}

/// The bom-ref of the image component.
const IMAGE_REF: &str = "image";

fn layer_ref(i: usize) -> String {
    format!("layer-{}", i + 1)
}

/// The CycloneDX 1.6 JSON document for `input`, and the warnings about
/// what was missing or malformed (the document still lists everything it
/// knows).
pub fn cyclonedx(input: &SbomInput) -> (Vec<u8>, Vec<String>) {
    let r = resolve(input);
    let mut bom = bom(&r);
    let digest = r
        .image
        .manifest_digest
        .as_deref()
        .unwrap_or(&r.image.image_id);
    let uuid = document_uuid("cyclonedx", digest, &to_json(&bom));
    bom.serial_number = format!("urn:uuid:{uuid}");
    let mut warnings = r.warnings;
    let bytes = to_json(&bom);
    if bytes.is_empty() {
        warnings.push("CycloneDX: the document could not be serialised".to_owned());
    }
    (bytes, warnings)
}

fn bom(r: &Resolved) -> Bom {
    let image = r.image;
    let mut image_props = vec![prop(&format!("{NS}:image:id"), image.image_id.clone())];
    if let Some(m) = &image.manifest_digest {
        image_props.push(prop(&format!("{NS}:image:manifest_digest"), m.clone()));
    }
    image_props.extend(
        image
            .tags
            .iter()
            .map(|t| prop(&format!("{NS}:image:tag"), t.clone())),
    );
    let image_component = Component {
        kind: "container",
        bom_ref: Some(IMAGE_REF.into()),
        name: if image.name.is_empty() {
            r.image_ref.clone()
        } else {
            image.name.clone()
        },
        version: image
            .tags
            .first()
            .and_then(|t| t.rsplit_once(':'))
            .map(|(_, tag)| tag.to_owned())
            .filter(|t| !t.is_empty() && !t.contains('/')),
        hashes: sha256(image.manifest_digest.as_deref().and_then(sha256_of_digest)),
        purl: super::oci_purl(image),
        properties: image_props,
        ..Default::default()
    };

    let mut components = Vec::with_capacity(r.layers.len() + r.packages.len());
    for (i, l) in r.layers.iter().enumerate() {
        components.push(Component {
            kind: "file",
            bom_ref: Some(layer_ref(i)),
            name: format!("{} layer {}", r.image_ref, i + 1),
            hashes: sha256(l.sha256.clone()),
            properties: vec![
                prop(&format!("{NS}:layer:index"), (i + 1).to_string()),
                prop(&format!("{NS}:layer:diff_id"), l.diff_id),
                prop(&format!("{NS}:layer:kind"), l.kind),
            ],
            ..Default::default()
        });
    }
    for p in &r.packages {
        let s = p.store;
        let mut properties = vec![
            prop("nix:store_path", s.path.clone()),
            prop("nix:narinfo:store_path", s.path.clone()),
        ];
        if let Some(h) = &s.nar_hash {
            properties.push(prop("nix:narinfo:nar_hash", h.clone()));
        }
        if let Some(n) = s.nar_size {
            properties.push(prop("nix:narinfo:nar_size", n.to_string()));
        }
        if let Some(refs) = &s.references {
            let mut refs: Vec<&str> = refs.iter().map(String::as_str).collect();
            refs.sort_unstable();
            refs.dedup();
            properties.push(prop("nix:narinfo:references", refs.join(" ")));
        }
        if let Some(l) = p.layer {
            properties.push(prop(&format!("{NS}:layer:index"), (l + 1).to_string()));
            properties.push(prop(&format!("{NS}:layer:diff_id"), r.layers[l].diff_id));
        }
        let licenses = match &p.license {
            None => Vec::new(),
            // An expression needs SPDX ids; licences without one are
            // listed by name instead (the schema allows one form or the other).
            Some(l) if l.all_spdx => vec![LicenseChoice::Expression {
                expression: l.expression.clone(),
            }],
            Some(l) => l
                .names
                .iter()
                .map(|n| LicenseChoice::License {
                    license: NamedLicense { name: n.clone() },
                })
                .collect(),
        };
        components.push(Component {
            kind: "library",
            bom_ref: Some(s.path.clone()),
            name: p.name.clone(),
            version: p.version.clone(),
            description: p.description.map(str::to_owned),
            hashes: sha256(p.sha256.clone()),
            licenses,
            purl: Some(p.purl.clone()),
            external_references: p
                .homepage
                .map(|url| ExternalReference {
                    kind: "website",
                    url: url.to_owned(),
                })
                .into_iter()
                .collect(),
            properties,
        });
    }

    let mut image_deps: Vec<String> = (0..r.layers.len()).map(layer_ref).collect();
    image_deps.extend(r.roots.iter().map(|&i| r.packages[i].store.path.clone()));
    let mut dependencies = vec![Dependency {
        reference: IMAGE_REF.into(),
        depends_on: image_deps,
    }];
    dependencies.extend((0..r.layers.len()).map(|i| Dependency {
        reference: layer_ref(i),
        depends_on: Vec::new(),
    }));
    dependencies.extend(r.packages.iter().map(|p| {
        Dependency {
            reference: p.store.path.clone(),
            depends_on: p
                .depends_on
                .iter()
                .map(|&j| r.packages[j].store.path.clone())
                .collect(),
        }
    }));

    Bom {
        bom_format: "CycloneDX",
        spec_version: "1.6",
        serial_number: String::new(),
        version: 1,
        metadata: Metadata {
            timestamp: r.created.clone(),
            tools: Tools {
                components: vec![Component {
                    kind: "application",
                    name: TOOL.into(),
                    version: Some(env!("CARGO_PKG_VERSION").into()),
                    ..Default::default()
                }],
            },
            component: image_component,
            properties: if image.reproducible {
                vec![prop("cdx:reproducible", "true")]
            } else {
                Vec::new()
            },
        },
        components,
        dependencies,
    }
}
