//! `--push REF`: the image straight into a registry, no daemon, no skopeo.
//!
//! Each layer becomes a blob source for the registry client: its
//! compressed digest, when known before reading (digest cache, `--digests`
//! file), lets the push skip it without reading a store byte: it is
//! present when the manifest the tag already holds lists it, else a `HEAD`
//! (or a mount) finds it; otherwise its bytes are produced, compressed and hashed
//! while they upload. Base layers are named the same way when their facts
//! are known (a base layer stored compressed keeps its own codec and media
//! type); otherwise, or once one must be uploaded, every base layer is
//! spooled in one pass over the base image. The config is built once every layer is
//! in the registry (its diff_ids are then all known), and the manifest is
//! put last, only after every blob is there.
//!
//! The image's referrers (`--sbom`) follow the image in each repository:
//! their blobs, then their manifests by digest; where the registry has no
//! referrers API, the referrers tag (`sha256-<hex>`) lists them.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};

use crate::blob::{self, Prepared};
use crate::cache::Blob;
use crate::compression::Codec;
use crate::destination::artifact::{self, Referrer};
use crate::model::{Destination, Image, Layer, Origin, Subject, Written};
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
    /// Put the manifest by its digest only, not under the references' tags
    /// (one platform of an image index, which takes the tags).
    pub untagged: bool,
}

impl Destination for Push {
    fn write(self: Box<Self>, img: &Image) -> Result<Written> {
        self.push_image(img).map(|(written, _)| written)
    }
}

impl Push {
    /// Pushes `img`; returns what was written and each repository's report.
    pub fn push_image(
        &self,
        img: &Image,
    ) -> Result<(Written, Vec<(Reference, registry::PushReport)>)> {
        let n = img.layers.len();
        let format = self.format;
        let codec = self.codec;
        let spool = BaseSpool::new(img, codec)?;
        // Base layers known before reading (cache, digests file) are named
        // without opening their data; otherwise they are spooled first
        // (their blob digest is only known after reading them).
        let known_base: Vec<Option<(Codec, Blob)>> = (0..img.base_count())
            .map(|i| img.known_blob(i, codec))
            .collect();
        let base: Vec<(Codec, Blob)> = if known_base.iter().all(Option::is_some) {
            known_base.into_iter().flatten().collect()
        } else {
            spool
                .layers()?
                .into_iter()
                .flatten()
                .map(|l| (l.codec, l.blob))
                .collect()
        };
        if base.len() != img.base_count() {
            bail!(
                "internal: {} of {} base layers produced",
                base.len(),
                img.base_count()
            );
        }
        let layer_codec = |i: usize| base.get(i).map_or(codec, |(c, _)| *c);
        let sized = sized(img, base.len(), codec);
        let mut sources = Vec::with_capacity(n);
        for (i, (hint, prepared)) in sized.iter().enumerate() {
            let source = match base.get(i) {
                Some((used, blob)) => {
                    let spool = &spool;
                    BlobSource::new(format.layer_media_type(used.name()), move |w| {
                        let path = spool.blob(i)?;
                        let mut f = File::open(&path)
                            .with_context(|| format!("cannot open {}", path.display()))?;
                        std::io::copy(&mut f, w).context("cannot send a base layer")?;
                        Ok(())
                    })
                    .known(BlobDigest {
                        digest: blob.digest.clone(),
                        size: blob.size,
                    })
                    .size_hint(blob.size)
                }
                None => {
                    let media_type = format.layer_media_type(codec.name());
                    let source = BlobSource::hashed(media_type, move |w| {
                        // The walk done for its size, once; without it (or on
                        // a retry) the layer is walked while it streams.
                        let prepared = prepared.lock().unwrap_or_else(|e| e.into_inner()).take();
                        let l = blob::produce_into(img, i, prepared, codec, w)?;
                        Ok(BlobDigest {
                            digest: l.blob.digest,
                            size: l.blob.size,
                        })
                    })
                    .size_hint(*hint);
                    match img.known_blob(i, codec) {
                        Some((_, b)) => source.known(BlobDigest {
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
                        codec: layer_codec(i),
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
            // What this cache pushed there before: a new tag's push learns
            // from it which blobs the repository holds.
            earlier: Some(Box::new(|registry, repository| {
                img.known.pushed(registry, repository)
            })),
        };
        let say = |r: &Reference, e: &Event| match e {
            Event::Uploading { layer, .. } => img.reporter.step(&format!(
                "{}: uploading to {} ({})",
                img.describe(*layer),
                r.name(),
                layer_codec(*layer).name()
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
            Event::Listed {
                reference,
                digest,
                blobs,
            } => img.reporter.step(&format!(
                "{}{}{reference}: holds manifest {digest}; its {blobs} blobs need no check",
                r.name(),
                if reference.starts_with("sha256:") {
                    '@'
                } else {
                    ':'
                }
            )),
            Event::Recheck { reason } => img.reporter.step(&format!(
                "{}: a blob the previous manifest listed is gone ({reason}); checking every blob",
                r.name()
            )),
            Event::Manifest { reference, digest } => {
                // Untagged (one platform of an index): put by its digest.
                let sep = if reference.starts_with("sha256:") {
                    '@'
                } else {
                    ':'
                };
                img.reporter
                    .step(&format!("{}{sep}{reference}: manifest {digest}", r.name()))
            }
        };
        let push_all = if self.untagged {
            registry::push_all_untagged
        } else {
            registry::push_all
        };
        let pushed = push_all(&self.refs, &plan, &self.options, &self.mount_from, &say)?;
        let Some((_, first)) = pushed.first() else {
            bail!("--push: no reference given");
        };
        for (r, report) in &pushed {
            img.known
                .record_pushed(&r.registry, &r.repository, &report.manifest_digest);
        }
        let layers = final_layers(&first.layers)?;
        let config = img.config_json(&layers);
        let image_id = format!("sha256:{}", crate::digest::sha256_hex(&config));
        if img.attach.is_some() {
            let manifest = Blob {
                digest: first.manifest_digest.clone(),
                size: first.manifest_size,
            };
            let subject = Subject {
                image_id: &image_id,
                manifest: &manifest,
                media_type: &first.manifest_media_type,
                layers: &layers,
            };
            // Every repository got the same manifest bytes: one set of
            // referrers serves them all.
            let referrers = artifact::referrers(img, &subject)?;
            for (r, _) in &pushed {
                attach_referrers(img, r, &self.options, &manifest.digest, &referrers)?;
            }
        }
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
        let written = Written {
            new_layers: first
                .layers
                .iter()
                .filter(|l| l.outcome == Outcome::Uploaded)
                .count(),
            layers,
            bytes,
            image_id,
            manifest_digest: Some(first.manifest_digest.clone()),
            notes,
            detail: Some(format!(
                "pushed: {present} blob{} present, {mounted} mounted, {uploaded} uploaded",
                if present == 1 { "" } else { "s" }
            )),
        };
        Ok((written, pushed))
    }
}

/// The base layers as blobs in a temporary directory, made by one pass over
/// the base image the first time any is needed (every base layer then,
/// checked against what was known and recorded).
struct BaseSpool<'i, 'a> {
    img: &'i Image<'a>,
    codec: Codec,
    dir: tempfile::TempDir,
    /// The layers once made, or why they could not be.
    made: Mutex<Option<Result<Vec<Option<Layer>>, String>>>,
}

impl<'i, 'a> BaseSpool<'i, 'a> {
    fn new(img: &'i Image<'a>, codec: Codec) -> Result<BaseSpool<'i, 'a>> {
        let dir = tempfile::Builder::new()
            .prefix("sli-push-")
            .tempdir()
            .context("cannot create a temporary directory for base layers")?;
        Ok(BaseSpool {
            img,
            codec,
            dir,
            made: Mutex::new(None),
        })
    }

    fn path(&self, i: usize) -> PathBuf {
        self.dir.path().join(i.to_string())
    }

    /// Every base layer (None for the others), made on the first call.
    fn layers(&self) -> Result<Vec<Option<Layer>>> {
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        if made.is_none() {
            let mut layers = vec![None; self.img.layers.len()];
            let result = blob::produce_base(
                self.img,
                self.codec,
                &mut |i| {
                    let p = self.path(i);
                    File::create(&p).with_context(|| format!("cannot create {}", p.display()))
                },
                &mut |i, layer, _| {
                    layers[i] = Some(layer);
                    Ok(())
                },
            );
            *made = Some(result.map(|()| layers).map_err(|e| format!("{e:#}")));
        }
        match made.as_ref() {
            Some(Ok(layers)) => Ok(layers.clone()),
            Some(Err(e)) => Err(anyhow::anyhow!("{e}")),
            None => bail!("internal: base layers not made"),
        }
    }

    /// Base layer `i`'s blob file, made if it was not yet.
    fn blob(&self, i: usize) -> Result<PathBuf> {
        self.layers()?;
        Ok(self.path(i))
    }
}

/// Pushes `referrers` of the manifest `subject` to `reference`'s
/// repository: the empty config and each artifact blob unless present,
/// then each artifact manifest by digest, then (without the referrers API)
/// its entry in the referrers tag's index.
fn attach_referrers(
    img: &Image,
    reference: &Reference,
    options: &registry::Options,
    subject: &str,
    referrers: &[Referrer],
) -> Result<()> {
    if referrers.is_empty() {
        return Ok(());
    }
    let client = registry::Client::new(reference, options)?;
    let put_blob = |blob: &Blob, bytes: &[u8]| -> Result<()> {
        if client.blob_exists(&blob.digest)? {
            return Ok(());
        }
        client.upload(Some(&blob.digest), &|w| {
            w.write_all(bytes)?;
            Ok(None)
        })?;
        Ok(())
    };
    let empty = artifact::empty_blob();
    put_blob(&empty, artifact::EMPTY)?;
    for r in referrers {
        put_blob(&r.blob, &r.bytes)?;
        let (digest, api) =
            client.put_referrer(crate::destination::oci::MANIFEST_MEDIA_TYPE, &r.manifest)?;
        let how = if api {
            "listed by the registry's referrers API".to_owned()
        } else {
            client.add_to_referrers_tag(subject, &r.descriptor())?;
            format!("listed in tag {}", registry::referrers_tag(subject)?)
        };
        img.reporter.step(&format!(
            "{}: {} attached as {digest}, {how}",
            reference.name(),
            r.artifact_type
        ));
    }
    Ok(())
}

/// About the tar size of each store and customisation layer whose blob is
/// not known yet, so the push uploads the largest first, and the walk of
/// each layer sized here, kept for its producer. 0 for the others, and for
/// a layer that cannot be sized: producing it reports why.
///
/// The size is the layer's NAR size where the graph gives it. Otherwise
/// it takes a walk of the layer's metadata (no contents read; in
/// parallel), tens of milliseconds on a closure of thousands of files,
/// all before the first byte is sent. So the layer of the most store
/// paths is not sized: it goes first, walked while it streams. It is the
/// one worth starting at once (nixpkgs' auto-layer puts all of the
/// closure the other layers leave in its last layer, by far the largest),
/// and were another larger, it still starts with the next free job.
///
/// A layer walked here keeps its walk for its producer (largest first,
/// while they hold at most [`KEPT_WALKS`] bytes of entries), which then
/// sends its first bytes at once instead of walking its files again.
fn sized(img: &Image, base_count: usize, codec: Codec) -> Vec<(u64, Mutex<Option<Prepared>>)> {
    use rayon::prelude::*;
    let unknown = |i: usize| i >= base_count && img.known_blob(i, codec).is_none();
    let lead = (0..img.layers.len())
        .filter(|&i| unknown(i) && img.layers[i].nar_size.is_none())
        .filter_map(|i| match &img.layers[i].origin {
            Origin::Store(paths) => Some((paths.len(), std::cmp::Reverse(i))),
            _ => None,
        })
        .max()
        .map(|(_, std::cmp::Reverse(i))| i);
    let mut sized: Vec<(u64, Option<Prepared>)> = (0..img.layers.len())
        .into_par_iter()
        .map(|i| {
            if !unknown(i) {
                return (0, None);
            }
            if let Some(size) = img.layers[i].nar_size {
                return (size, None);
            }
            if Some(i) == lead {
                return (u64::MAX, None);
            }
            blob::prepare(img, i).map_or((0, None), |p| (p.size(), Some(p)))
        })
        .collect();
    let mut order: Vec<usize> = (0..sized.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(sized[i].0));
    let mut kept = 0;
    for i in order {
        let memory = sized[i].1.as_ref().map_or(0, Prepared::memory);
        if kept + memory > KEPT_WALKS {
            sized[i].1 = None;
        } else {
            kept += memory;
        }
    }
    sized
        .into_iter()
        .map(|(size, prepared)| (size, Mutex::new(prepared)))
        .collect()
}

/// The most memory the walks kept for producers take (each layer's own is
/// bounded too: see `layer::plan`).
const KEPT_WALKS: usize = 32 << 20;
