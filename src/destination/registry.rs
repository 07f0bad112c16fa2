//! `--push REF`: the image straight into a registry, no daemon, no skopeo.
//!
//! Each layer becomes a blob source for the registry client: its
//! compressed digest, when known before reading (digest cache, `--digests`
//! file), lets the push `HEAD` (or mount) it and skip it without reading a
//! store byte; otherwise its bytes are produced, compressed and hashed
//! while they upload. Base layers are spooled first (their blob digest is
//! only known after reading them). The config is built once every layer is
//! in the registry (its diff_ids are then all known), and the manifest is
//! put last, only after every blob is there.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::blob;
use crate::compression::Codec;
use crate::model::{Destination, Image, Layer, Written};
use crate::reference::Reference;
use crate::registry::{
    self, BlobDigest, BlobSource, ConfigSpec, Event, ManifestFormat, ManifestSpec, Outcome,
    PushPlan,
};

/// Pushes the image to one or more references.
pub struct Push {
    /// Where (repeatable `--push`).
    pub refs: Vec<Reference>,
    /// How to talk to registries.
    pub options: registry::Options,
    /// Repositories of the same registry to mount layers from.
    pub mount_from: Vec<String>,
    /// OCI or Docker schema 2 manifests.
    pub format: ManifestFormat,
    /// Layer compression (gzip unless told otherwise).
    pub codec: Codec,
    /// Also write the manifest digest here.
    pub digest_file: Option<PathBuf>,
}

impl Destination for Push {
    fn write(self: Box<Self>, img: &Image) -> Result<Written> {
        let n = img.layers.len();
        let spool = tempfile::Builder::new()
            .prefix("sli-push-")
            .tempdir()
            .context("cannot create a temporary directory for base layers")?;
        let spool_path = |i: usize| spool.path().join(i.to_string());
        let mut base: Vec<Option<Layer>> = vec![None; n];
        blob::produce_base(
            img,
            self.codec,
            &mut |i| {
                let p = spool_path(i);
                File::create(&p).with_context(|| format!("cannot create {}", p.display()))
            },
            &mut |i, layer, _| {
                base[i] = Some(layer);
                Ok(())
            },
        )?;
        let format = self.format;
        let codec = self.codec;
        let mut sources = Vec::with_capacity(n);
        for (i, spooled) in base.iter().enumerate() {
            let source = match spooled {
                Some(layer) => {
                    let path = spool_path(i);
                    BlobSource::new(format.layer_media_type(layer.codec.name()), move |w| {
                        let mut f = File::open(&path)
                            .with_context(|| format!("cannot open {}", path.display()))?;
                        std::io::copy(&mut f, w).context("cannot send a base layer")?;
                        Ok(())
                    })
                    .known(BlobDigest {
                        digest: layer.blob.digest.clone(),
                        size: layer.blob.size,
                    })
                }
                None => {
                    let source = BlobSource::new(format.layer_media_type(codec.name()), move |w| {
                        blob::produce_into(img, i, codec, w).map(|_| ())
                    });
                    let known = img
                        .known_facts(i)
                        .filter(|f| f.size != 0)
                        .and_then(|f| f.blob(codec));
                    match known {
                        Some(b) => source.known(BlobDigest {
                            digest: b.digest,
                            size: b.size,
                        }),
                        None => source,
                    }
                }
            };
            sources.push(source);
        }
        // Once every layer is in the registry, every diff_id is known: from
        // the base image, the checksum, the cache, or the upload just done.
        let final_layers = |results: &[registry::LayerResult]| -> Result<Vec<Layer>> {
            results
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let Some(f) = img.known_facts(i) else {
                        bail!(
                            "internal: no diff_id for {} after pushing it",
                            img.describe(i)
                        );
                    };
                    Ok(Layer {
                        diff_id: f.diff_id,
                        blob: crate::cache::Blob {
                            digest: r.digest.digest.clone(),
                            size: r.digest.size,
                        },
                        codec: base[i].as_ref().map_or(codec, |l| l.codec),
                        history: img.layers[i].history.clone(),
                    })
                })
                .collect()
        };
        let plan = PushPlan {
            layers: sources,
            config: ConfigSpec::Build(Box::new(|results| {
                Ok(img.config_json(&final_layers(results)?))
            })),
            manifest: ManifestSpec::Standard(format),
        };
        let say = |r: &Reference, e: &Event| match e {
            Event::Uploading { layer, .. } => img.reporter.step(&format!(
                "{}: uploading to {} ({})",
                img.describe(*layer),
                r.name(),
                codec.name()
            )),
            Event::Blob {
                layer: Some(layer),
                digest,
                outcome,
            } => {
                let how = match outcome {
                    Outcome::Present => "already there",
                    Outcome::Mounted => "mounted",
                    Outcome::Uploaded => "uploaded",
                };
                img.reporter.step(&format!(
                    "{}: {how} as {}",
                    img.describe(*layer),
                    digest.digest
                ));
                if *outcome == Outcome::Uploaded {
                    img.reporter.progress(digest.size, true);
                }
            }
            Event::Blob { layer: None, .. } => {}
            Event::Manifest { reference, digest } => img
                .reporter
                .step(&format!("{}:{reference}: manifest {digest}", r.name())),
        };
        let pushed = registry::push_all(&self.refs, &plan, &self.options, &self.mount_from, &say)?;
        let Some((_, first)) = pushed.first() else {
            bail!("--push: no reference given");
        };
        let layers = final_layers(&first.layers)?;
        let config = img.config_json(&layers);
        let mut notes = Vec::new();
        for r in &self.refs {
            let digest = pushed
                .iter()
                .find(|(p, _)| p.registry == r.registry && p.repository == r.repository)
                .map(|(_, rep)| rep.manifest_digest.clone())
                .unwrap_or_default();
            let mut shown = r.clone();
            shown.digest = None;
            notes.push(format!("{shown}@{digest}"));
        }
        if let Some(path) = &self.digest_file {
            let mut f = File::create(path)
                .with_context(|| format!("--digest-file {}: cannot create", path.display()))?;
            writeln!(f, "{}", first.manifest_digest)
                .with_context(|| format!("--digest-file {}: cannot write", path.display()))?;
        }
        let (present, mounted, uploaded, bytes) = pushed.iter().fold((0, 0, 0, 0), |a, (_, r)| {
            (
                a.0 + r.blobs_present,
                a.1 + r.blobs_mounted,
                a.2 + r.blobs_uploaded,
                a.3 + r.bytes_uploaded,
            )
        });
        Ok(Written {
            new_layers: first
                .layers
                .iter()
                .filter(|l| l.outcome == Outcome::Uploaded)
                .count(),
            layers,
            bytes,
            image_id: format!("sha256:{}", crate::digest::sha256_hex(&config)),
            manifest_digest: Some(first.manifest_digest.clone()),
            notes,
            detail: Some(format!(
                "pushed: {present} blob{} present, {mounted} mounted, {uploaded} uploaded",
                if present == 1 { "" } else { "s" }
            )),
        })
    }
}
