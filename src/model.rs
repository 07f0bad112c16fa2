//! The typed image model every destination writes from.
//!
//! An [`Image`] is everything the image is made of, opened and checked:
//! its layers as [`LayerSpec`]s (where the bytes come from, the history
//! comment, and the [`LayerKey`] under which facts about the bytes may be
//! known before reading them), the config's fields and the tag. A
//! destination turns the specs into written [`Layer`]s (diff_id, blob
//! digest, size and media type) and writes the config and manifest it
//! needs; the config bytes are the same for every destination, so the image
//! ID is too.
#![warn(missing_docs)]

use anyhow::Result;
use serde_json::Value;

use crate::base_image::BaseImage;
use crate::cache::{Blob, Facts, Known, LayerKey};
use crate::compression::Codec;
use crate::customisation::Customisation;
use crate::image::{self, ImageMeta, IsoTime, LayerInfo};
use crate::progress::Reporter;
use crate::tar::Owner;

/// Where a layer's bytes come from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// The base image's layer at this index, stored bytes passed through.
    Base(usize),
    /// These store paths, walked into a tar in this order.
    Store(Vec<String>),
    /// The customisation layer's `layer.tar`.
    Customisation,
}

/// One layer before it is written.
#[derive(Debug, Clone)]
pub struct LayerSpec {
    /// Where the bytes come from.
    pub origin: Origin,
    /// The paths of its history comment (`store paths: [...]`).
    pub history: Vec<String>,
    /// Names its bytes for the digest cache ([`LayerKey`] says how, per
    /// kind of layer).
    pub key: Option<LayerKey>,
    /// The sum of its store paths' NAR sizes, where the reference graph
    /// gives them: close to its tar size, known without reading the store.
    pub nar_size: Option<u64>,
}

/// One layer as written.
#[derive(Debug, Clone)]
pub struct Layer {
    /// `sha256:<hex>` of the uncompressed tar (the config's diff_id).
    pub diff_id: String,
    /// The blob as the destination stores it.
    pub blob: Blob,
    /// How the blob is compressed.
    pub codec: Codec,
    /// The paths of its history comment.
    pub history: Vec<String>,
}

/// The image to write: layers, config fields, tag, and what is known.
pub struct Image<'a> {
    /// The Nix store directory.
    pub store_dir: &'a str,
    /// The base image, if any.
    pub base: Option<&'a BaseImage>,
    /// Every layer in image order: base, store, customisation.
    pub layers: Vec<LayerSpec>,
    /// The checked customisation layer.
    pub customisation: &'a Customisation,
    /// Owner and mtime of every store layer entry.
    pub owner: &'a Owner,
    /// The config's `created`.
    pub created: &'a IsoTime,
    /// The config's `architecture`.
    pub architecture: &'a str,
    /// The config's `variant`, if any.
    pub variant: Option<&'a str>,
    /// The config's `os`.
    pub os: &'a str,
    /// The config's `config` object (Env merged with the base's).
    pub config: &'a Value,
    /// `NAME:TAG` the image loads as.
    pub repo_tag: &'a str,
    /// Facts known before reading (cache, digests file).
    pub known: &'a Known,
    /// Where progress goes.
    pub reporter: &'a dyn Reporter,
    /// Makes the artifacts attached to the image (its SBOMs), once the
    /// image manifest is known: destinations that can carry OCI referrers
    /// (layouts, archives, registries) call it; the others never do.
    pub attach: Option<&'a Attach<'a>>,
}

/// The image a destination wrote, as an artifact attached to it names it:
/// what [`Attach`] gets once the image manifest's digest is known.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'s> {
    /// `sha256:<hex>` of the image configuration: the image ID.
    pub image_id: &'s str,
    /// The image manifest's digest and size.
    pub manifest: &'s Blob,
    /// The image manifest's media type (OCI, or Docker's schema 2 in a
    /// registry told `--manifest-format docker`).
    pub media_type: &'s str,
    /// The written layers, in image order (their diff_ids are the config's).
    pub layers: &'s [Layer],
}

/// One artifact to attach to the image as an OCI referrer: a manifest
/// whose `artifactType` and single layer are of `media_type`, whose config
/// is the empty descriptor, and whose `subject` is the image manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// The blob's media type, also the manifest's `artifactType`
    /// (`application/spdx+json`).
    pub media_type: String,
    /// The blob's bytes.
    pub bytes: Vec<u8>,
    /// The artifact manifest's annotations (copied into the index entries
    /// that list it, as the referrers API does).
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// Makes the artifacts for an image once its manifest is known; called at
/// most once per destination (a push to several repositories shares one
/// manifest digest per manifest format).
pub type Attach<'a> = dyn Fn(&Subject) -> Result<Vec<Artifact>> + Sync + 'a;

impl Image<'_> {
    /// The facts known for layer `i` before reading it: a base layer's
    /// cached facts, else its diff_id alone; the customisation layer's
    /// diff_id and size; a store layer's cached facts.
    pub fn known_facts(&self, i: usize) -> Option<Facts> {
        let spec = &self.layers[i];
        let cached = spec.key.as_ref().and_then(|k| self.known.get(k));
        match spec.origin {
            Origin::Base(b) => self.base.map(|base| {
                let diff_id = &base.layers()[b].diff_id;
                match cached.filter(|c| c.diff_id == *diff_id) {
                    Some(c) => c,
                    None => Facts {
                        diff_id: diff_id.clone(),
                        ..Facts::default()
                    },
                }
            }),
            Origin::Customisation => Some(Facts {
                diff_id: self.customisation.diff_id.clone(),
                size: self.customisation.size,
                blobs: cached.map(|c| c.blobs).unwrap_or_default(),
                stored: None,
            }),
            Origin::Store(_) => cached,
        }
    }

    /// The diff_ids known before reading: Some for every layer whose
    /// uncompressed digest is known (base, customisation, cached store).
    pub fn known_diff_ids(&self) -> Vec<Option<String>> {
        (0..self.layers.len())
            .map(|i| self.known_facts(i).map(|f| f.diff_id))
            .collect()
    }

    /// The blob layer `i` has for a destination asking for `codec`, with
    /// the codec it really has (a base layer stored compressed passes
    /// through as stored), when known before reading.
    pub fn known_blob(&self, i: usize, codec: Codec) -> Option<(Codec, Blob)> {
        self.known_facts(i)
            .filter(|f| f.size != 0)
            .and_then(|f| f.blob_as(codec))
    }

    /// Number of base layers.
    pub fn base_count(&self) -> usize {
        self.base.map_or(0, |b| b.layers().len())
    }

    /// The image configuration bytes for these written layers (their
    /// diff_ids in order); its sha256 is the image ID.
    pub fn config_json(&self, layers: &[Layer]) -> Vec<u8> {
        let infos: Vec<LayerInfo> = layers
            .iter()
            .map(|l| LayerInfo {
                diff_id: l.diff_id.clone(),
                paths: l.history.clone(),
                member: String::new(),
            })
            .collect();
        self.config_json_from(&infos)
    }

    /// [`Image::config_json`] from the docker-archive's layer records.
    pub fn config_json_from(&self, infos: &[LayerInfo]) -> Vec<u8> {
        let meta = ImageMeta {
            created: self.created,
            architecture: self.architecture,
            variant: self.variant,
            os: self.os,
            config: self.config,
        };
        image::config_json(&meta, infos)
    }

    /// Layer `i`'s position as nixpkgs counts it (from 1), for messages.
    pub fn describe(&self, i: usize) -> String {
        let spec = &self.layers[i];
        match &spec.origin {
            Origin::Base(_) => format!("base layer {}", i + 1),
            Origin::Customisation => format!("layer {} (customisation)", i + 1),
            Origin::Store(paths) => format!(
                "layer {} ({} store path{})",
                i + 1,
                paths.len(),
                if paths.len() == 1 { "" } else { "s" }
            ),
        }
    }
}

/// What a destination did, for the summary line.
#[derive(Debug, Clone)]
pub struct Written {
    /// The layers, in image order.
    pub layers: Vec<Layer>,
    /// Layers whose bytes this run wrote (not skipped).
    pub new_layers: usize,
    /// Bytes written to the output.
    pub bytes: u64,
    /// `sha256:<hex>` of the config.
    pub image_id: String,
    /// `sha256:<hex>` of the manifest, where the destination writes one.
    pub manifest_digest: Option<String>,
    /// Lines for stdout when done (`Loaded image: …`, `REF@sha256:…`).
    pub notes: Vec<String>,
    /// What the summary line should add (`pushed: 3 blobs present, …`).
    pub detail: Option<String>,
}

/// A destination: somewhere an image can be written.
pub trait Destination {
    /// Writes `image`; returns what was written.
    fn write(self: Box<Self>, image: &Image) -> Result<Written>;
}

/// The layer specs of an image in order: the base image's layers, one per
/// store layer, then the customisation layer. `nar_hash` gives a store
/// path's NAR hash when the reference graph has it (it pins the bytes
/// across machines in the layer's key); `nar_sizes`, parallel to
/// `store_layers` or empty, their NAR sizes.
#[allow(clippy::too_many_arguments)]
pub fn layer_specs(
    base: Option<&BaseImage>,
    store_layers: &[Vec<String>],
    nar_sizes: &[u64],
    customisation: &Customisation,
    customisation_dir: &str,
    store_dir: &str,
    owner: &Owner,
    nar_hash: &dyn Fn(&str) -> Option<String>,
) -> Vec<LayerSpec> {
    let mut specs = Vec::new();
    if let Some(b) = base {
        use std::os::unix::ffi::OsStrExt;
        let path = b.path().as_os_str().as_bytes();
        for (i, l) in b.layers().iter().enumerate() {
            specs.push(LayerSpec {
                origin: Origin::Base(i),
                history: vec![l.member.clone()],
                key: Some(LayerKey::base(
                    path,
                    b.file_size(),
                    i,
                    &l.member,
                    &l.diff_id,
                )),
                nar_size: None,
            });
        }
    }
    for (i, paths) in store_layers.iter().enumerate() {
        specs.push(LayerSpec {
            origin: Origin::Store(paths.clone()),
            history: paths.clone(),
            key: Some(LayerKey::store(paths, nar_hash, store_dir, owner)),
            nar_size: nar_sizes.get(i).copied(),
        });
    }
    specs.push(LayerSpec {
        origin: Origin::Customisation,
        history: vec![customisation_dir.to_owned()],
        key: Some(LayerKey::diff_id(&customisation.diff_id)),
        nar_size: None,
    });
    specs
}
