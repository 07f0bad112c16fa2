//! What an SBOM describes: the image (its digests, tags and layers) and, per
//! store path in it, what Nix knows (NAR hash and size, references) and
//! what the Nix function passed from `meta` (name, version, licenses,
//! homepage, description). Both formats ([`super::spdx()`],
//! [`super::cyclonedx()`]) are written from an [`SbomInput`]; nothing here
//! knows about either format.

use std::collections::{BTreeMap, HashMap};

use crate::nix::GraphEntry;

/// The image the SBOM describes: its root element.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageIdentity {
    /// The repository the image loads as: `name` of `name:tag`
    /// (`registry.example/team/app`).
    pub name: String,
    /// `sha256:<hex>` of the image manifest, when the destination has one
    /// (OCI layout, registry); a docker-archive has none.
    pub manifest_digest: Option<String>,
    /// `sha256:<hex>` of the image configuration: the image ID.
    pub image_id: String,
    /// Every `name:tag` the image carries, in the caller's order.
    pub tags: Vec<String>,
    /// The image's `created` time, in seconds since the epoch: the SBOM's
    /// creation time. `None` writes none where the format allows it
    /// (CycloneDX) and the epoch where it requires one (SPDX).
    pub created_unix: Option<i64>,
    /// Whether the SBOM's bytes depend only on the build (no `"now"` times):
    /// recorded in CycloneDX as `cdx:reproducible`.
    pub reproducible: bool,
    /// OCI `architecture` (`amd64`), for the image's package URL.
    pub architecture: Option<String>,
}

/// Where a layer comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerKind {
    /// A layer of the `fromImage` base image, copied as it was.
    Base,
    /// A store layer holding these store paths.
    Store(Vec<String>),
    /// The customisation layer (`contents`, `extraCommands`, …).
    Customisation,
}

/// One layer of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// `sha256:<hex>` of the uncompressed layer tarball.
    pub diff_id: String,
    /// Base, store (with its paths) or customisation.
    pub kind: LayerKind,
}

/// A licence as nixpkgs' `meta.license` describes one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct License {
    /// The SPDX licence identifier (nixpkgs' `spdxId`), when it has one.
    pub spdx_id: Option<String>,
    /// A human name (`fullName` or `shortName`), for licences without one.
    pub name: Option<String>,
}

/// Metadata from Nix that overrides or adds to what the store path tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageMeta {
    /// `pname`: replaces the name parsed from the store path.
    pub name: Option<String>,
    /// `version`: replaces the version parsed from the store path.
    pub version: Option<String>,
    /// `meta.license`, in nixpkgs' order; all of them apply.
    pub licenses: Vec<License>,
    /// `meta.homepage` (an http or https URL).
    pub homepage: Option<String>,
    /// `meta.description`.
    pub description: Option<String>,
}

/// One store path in the image.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorePath {
    /// The store path, `/nix/store/<hash>-<name>`.
    pub path: String,
    /// The NAR hash as Nix writes it (`sha256:<base32>` or SRI).
    pub nar_hash: Option<String>,
    /// The NAR size in bytes, as the reference graph gives it.
    pub nar_size: Option<u64>,
    /// Its references as Nix lists them (a self-reference is allowed);
    /// `None` when the reference graph does not know the path.
    pub references: Option<Vec<String>>,
    /// Index in [`SbomInput::layers`] of the layer that holds it.
    pub layer: Option<usize>,
    /// What Nix's `pname`, `version` and `meta` say about it.
    pub meta: PackageMeta,
}

/// Everything an SBOM is written from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SbomInput {
    /// The image: the documents' described root.
    pub image: ImageIdentity,
    /// Every layer, in image order (base, store, customisation).
    pub layers: Vec<Layer>,
    /// The store paths in the image, in any order (written sorted by path).
    /// A path listed twice is written once, with a warning.
    pub store_paths: Vec<StorePath>,
}

impl SbomInput {
    /// Builds the input from the reference graph the image was layered
    /// from, the image's layers and Nix's metadata (keyed by store path).
    ///
    /// Every store path of a [`LayerKind::Store`] layer becomes one
    /// [`StorePath`]; one that `graph` does not list keeps `references:
    /// None` (the formats warn and write what is known). Graph entries
    /// that no layer holds (the excluded base JSON and customisation layer
    /// paths) are left out: they are not in the image.
    pub fn from_graph(
        image: ImageIdentity,
        layers: Vec<Layer>,
        graph: &[GraphEntry],
        meta: &BTreeMap<String, PackageMeta>,
    ) -> SbomInput {
        let by_path: HashMap<&str, &GraphEntry> =
            graph.iter().map(|e| (e.path.as_str(), e)).collect();
        let mut store_paths = Vec::new();
        for (index, layer) in layers.iter().enumerate() {
            let LayerKind::Store(paths) = &layer.kind else {
                continue;
            };
            for path in paths {
                let entry = by_path.get(path.as_str());
                store_paths.push(StorePath {
                    path: path.clone(),
                    nar_hash: entry.and_then(|e| e.nar_hash.clone()),
                    nar_size: entry.map(|e| e.nar_size),
                    references: entry.map(|e| e.references.clone()),
                    layer: Some(index),
                    meta: meta.get(path).cloned().unwrap_or_default(),
                });
            }
        }
        SbomInput {
            image,
            layers,
            store_paths,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a-1.0";
    const B: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b-2.0";
    const X: &str = "/nix/store/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx-base.json";

    #[test]
    fn from_graph_keeps_layers_and_marks_unknown_paths() {
        let graph = vec![
            GraphEntry {
                path: A.into(),
                nar_hash: Some("sha256:h".into()),
                nar_size: 5,
                references: vec![A.into()],
            },
            GraphEntry {
                path: X.into(),
                nar_hash: None,
                nar_size: 1,
                references: vec![A.into()],
            },
        ];
        let layers = vec![
            Layer {
                diff_id: "sha256:base".into(),
                kind: LayerKind::Base,
            },
            Layer {
                diff_id: "sha256:one".into(),
                kind: LayerKind::Store(vec![A.into(), B.into()]),
            },
        ];
        let meta = BTreeMap::from([(
            A.to_owned(),
            PackageMeta {
                name: Some("alpha".into()),
                ..Default::default()
            },
        )]);
        let input = SbomInput::from_graph(ImageIdentity::default(), layers, &graph, &meta);
        assert_eq!(
            input.store_paths.len(),
            2,
            "the excluded base JSON is not in the image"
        );
        let a = &input.store_paths[0];
        assert_eq!(
            (a.path.as_str(), a.nar_hash.as_deref(), a.nar_size, a.layer),
            (A, Some("sha256:h"), Some(5), Some(1))
        );
        assert_eq!(a.meta.name.as_deref(), Some("alpha"));
        let b = &input.store_paths[1];
        assert_eq!(
            (b.references.as_ref(), b.nar_size, b.layer),
            (None, None, Some(1))
        );
    }
}
