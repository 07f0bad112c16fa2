//! Pushing one image: every blob first, the manifest last
//! (go-containerregistry's `remote.Write`).
//!
//! # Digests known before, or only after, the upload
//!
//! A manifest names each layer by its compressed digest and size, and the
//! config names each layer by its uncompressed digest (diff_id). When the
//! layer-digest cache knows them, a layer is a [`BlobSource`] with
//! `known: Some(..)`: we `HEAD` it and skip it if the registry has it, so an
//! unchanged image pushes without reading the store. When they are not known
//! (cold cache), the layer is uploaded, its digest computed on the way, and
//! only then can the config and the manifest be written. So both are
//! *specs*: [`ConfigSpec::Build`] and [`ManifestSpec::Build`] /
//! [`ManifestSpec::Standard`] are called once every layer is in the
//! registry, with each layer's final digest and size ([`LayerResult`], in
//! plan order). A config builder that needs diff_ids gets them from the
//! caller's side: a layer known in advance came from the cache with its
//! diff_id; any other layer was uploaded, so its producer ran and can have
//! recorded the diff_id it saw (e.g. in a `Mutex<Vec<Option<String>>>`
//! shared with the builder). Producers and builders may borrow (the plan
//! has a lifetime), so they can read the store through references.
//!
//! Order: layers (in parallel, `Options::jobs`), then the config blob, then
//! the manifest, once per tag. Nothing is written to a tag before every
//! blob it names is present; a failure anywhere stops the push before the
//! manifest.
//!
//! # What the tag already holds
//!
//! Pushing a new version over an old one, most blobs are already in the
//! repository, and a `HEAD` each (a hundred for a hundred-layer image)
//! costs more than the one layer that changed. So before any blob, the
//! manifest at the tag is fetched once ([`Client::listed_blobs`]): a
//! registry accepts a manifest only once every blob it names is in the
//! repository, so each blob it lists (config and layers, same digest and
//! size) counts as present without a request; only the others are
//! `HEAD`ed. This only ever saves requests: a tag that does not exist, or
//! holds an index, or anything we cannot read, means `HEAD`s as before.
//! When no tag gives one (a new tag per build), the manifests this
//! repository was last given by earlier pushes, if the caller remembers
//! them ([`PushPlan::earlier`]), are fetched by digest (at most
//! [`MAX_EARLIER`]; their bytes must hash to it) and serve the same way. A
//! blob may still vanish between that `GET` and the manifest `PUT` (garbage
//! collection): the `PUT` then fails with `BLOB_UNKNOWN` or
//! `MANIFEST_BLOB_UNKNOWN`, and the push checks every blob again the usual
//! way (`HEAD`, mount, upload) and puts the manifest once more.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, Result};

use super::blob::{Mount, Producer};
use super::manifest::{self, ManifestFormat};
use super::{BlobDigest, Client, Options};
use crate::reference::Reference;

/// A layer to push.
pub struct BlobSource<'a> {
    /// The layer's compressed digest and size if known before reading its
    /// bytes (from a cache): lets the push `HEAD` or mount it first, and
    /// the bytes must then hash to it.
    pub known: Option<BlobDigest>,
    /// The layer's media type, for the manifest
    /// ([`ManifestFormat::layer_media_type`]).
    pub media_type: String,
    /// Writes the compressed layer. May be called more than once (a retried
    /// upload starts over), and must write the same bytes each time.
    pub produce: Box<Producer<'a>>,
    /// Whether `produce` returns the digest of what it wrote (see
    /// [`BlobSource::hashed`]).
    pub self_hashed: bool,
    /// About how many bytes the layer is (0: unknown). Only the order of
    /// uploads depends on it: largest first.
    pub size_hint: u64,
}

impl<'a> BlobSource<'a> {
    /// A layer whose digest is not known in advance.
    pub fn new(
        media_type: &str,
        produce: impl Fn(&mut dyn std::io::Write) -> Result<()> + Sync + 'a,
    ) -> BlobSource<'a> {
        BlobSource {
            known: None,
            media_type: media_type.to_owned(),
            produce: Box::new(move |w| produce(w).map(|()| None)),
            self_hashed: false,
            size_hint: 0,
        }
    }

    /// A layer whose producer hashes what it writes and returns that
    /// digest and size (a layer's producer does, for the digest cache): the
    /// upload then takes them instead of hashing every byte a second time.
    pub fn hashed(
        media_type: &str,
        produce: impl Fn(&mut dyn std::io::Write) -> Result<BlobDigest> + Sync + 'a,
    ) -> BlobSource<'a> {
        BlobSource {
            known: None,
            media_type: media_type.to_owned(),
            produce: Box::new(move |w| produce(w).map(Some)),
            self_hashed: true,
            size_hint: 0,
        }
    }

    /// The same, with an estimate of its size for scheduling: the largest
    /// layers start first, so the one that takes longest to compress and
    /// send overlaps with the many small ones (whose uploads mostly wait on
    /// the registry) instead of running alone at the end.
    pub fn size_hint(mut self, bytes: u64) -> BlobSource<'a> {
        self.size_hint = bytes;
        self
    }

    /// The same, with its digest and size known in advance.
    pub fn known(mut self, digest: BlobDigest) -> BlobSource<'a> {
        self.known = Some(digest);
        self
    }
}

/// Builds the config's bytes from the layers' results (plan order).
pub type ConfigBuilder<'a> = dyn Fn(&[LayerResult]) -> Result<Vec<u8>> + Send + Sync + 'a;

/// Builds `(media type, bytes)` of the manifest from the config's digest
/// and the layers' results (plan order).
pub type ManifestBuilder<'a> =
    dyn Fn(&BlobDigest, &[LayerResult]) -> Result<(String, Vec<u8>)> + Send + Sync + 'a;

/// The image configuration blob.
pub enum ConfigSpec<'a> {
    /// Its bytes, known up front.
    Bytes(Vec<u8>),
    /// Built once every layer is in the registry, from their results.
    Build(Box<ConfigBuilder<'a>>),
}

/// The manifest.
pub enum ManifestSpec<'a> {
    /// Bytes known up front (every layer's digest was known): checked
    /// against nothing but what the registry says.
    Bytes {
        /// Its media type.
        media_type: String,
        /// Its bytes.
        bytes: Vec<u8>,
    },
    /// The standard image manifest in this format, from the config's and
    /// layers' final digests and the layers' media types ([`manifest::build`]).
    Standard(ManifestFormat),
    /// The caller's builder: `(media type, bytes)` from the config's digest
    /// and the layers' results.
    Build(Box<ManifestBuilder<'a>>),
}

/// Gives, for a registry and repository, the digests of manifests earlier
/// pushes put there, most recent first.
pub type EarlierManifests<'a> = dyn Fn(&str, &str) -> Vec<String> + Sync + 'a;

/// Earlier manifests fetched by digest at most, per push.
pub const MAX_EARLIER: usize = 4;

/// What to push.
pub struct PushPlan<'a> {
    /// Layers, in image order.
    pub layers: Vec<BlobSource<'a>>,
    /// The image configuration.
    pub config: ConfigSpec<'a>,
    /// The manifest.
    pub manifest: ManifestSpec<'a>,
    /// Manifests the repository may still hold from earlier pushes, tried
    /// (by digest) when no tag holds a usable one: the blobs they list need
    /// no `HEAD`. `None`: the tags only.
    pub earlier: Option<Box<EarlierManifests<'a>>>,
}

/// How a blob came to be in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It was there already (`HEAD`, or listed by the manifest the tag held).
    Present,
    /// Mounted from another repository.
    Mounted,
    /// Uploaded by us.
    Uploaded,
}

/// One layer, once in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerResult {
    /// Its digest and size.
    pub digest: BlobDigest,
    /// Its media type (from the [`BlobSource`]).
    pub media_type: String,
    /// How it got there.
    pub outcome: Outcome,
}

/// Progress, for a reporter.
#[derive(Debug, Clone)]
pub enum Event {
    /// The manifest a tag held before the push (or one an earlier push put
    /// in the repository) was read: the blobs it lists need no `HEAD`. Not
    /// sent when none was usable.
    Listed {
        /// The tag, or the digest it was fetched by.
        reference: String,
        /// Its manifest's digest.
        digest: String,
        /// How many blobs it lists.
        blobs: usize,
    },
    /// The blobs listed by the tag's previous manifest were not all there
    /// when the manifest was put: every blob is being checked again.
    Recheck {
        /// The registry's refusal, one line.
        reason: String,
    },
    /// A layer's upload starts (the registry lacks it and could not mount
    /// it): its bytes are read from now on.
    Uploading {
        /// Index in the plan.
        layer: usize,
        /// Its digest, when known in advance.
        digest: Option<String>,
    },
    /// A blob is in the registry. `layer` is its index in the plan, `None`
    /// for the config.
    Blob {
        /// Index in the plan; `None` for the config.
        layer: Option<usize>,
        /// Its digest and size.
        digest: BlobDigest,
        /// How.
        outcome: Outcome,
    },
    /// A manifest was put under `reference` (a tag or the digest).
    Manifest {
        /// The tag, or the digest when no tag was given.
        reference: String,
        /// The manifest's digest.
        digest: String,
    },
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct PushReport {
    /// Blobs (layers and config) that were there already.
    pub blobs_present: usize,
    /// Blobs mounted from another repository.
    pub blobs_mounted: usize,
    /// Blobs uploaded.
    pub blobs_uploaded: usize,
    /// Bytes uploaded (sizes of the uploaded blobs).
    pub bytes_uploaded: u64,
    /// Of `blobs_present`, those known present because the manifest the
    /// tag held lists them (no `HEAD` was sent for them).
    pub blobs_listed: usize,
    /// The digest of the manifest the tag held before the push (or of the
    /// first earlier one fetched by digest), when it was read and used.
    pub previous_manifest: Option<String>,
    /// The layers, in plan order.
    pub layers: Vec<LayerResult>,
    /// The config blob.
    pub config: BlobDigest,
    /// The manifest's media type.
    pub manifest_media_type: String,
    /// The manifest's digest: print `NAME@DIGEST`.
    pub manifest_digest: String,
    /// The manifest's size in bytes (for a descriptor naming it: an
    /// artifact's `subject`, an image index's entry).
    pub manifest_size: u64,
}

/// Pushes `plan` to `client`'s repository under each of `tags` (by digest
/// only when `tags` is empty). `mount_from` lists repositories of the same
/// registry to mount known layers from before uploading them. `report` sees
/// each blob and manifest as it lands.
pub fn push(
    client: &Client,
    plan: &PushPlan<'_>,
    tags: &[String],
    report: &(dyn Fn(&Event) + Sync),
) -> Result<PushReport> {
    push_with_mounts(client, plan, tags, &[], report)
}

/// [`push`], trying to mount each known layer from `mount_from` first.
pub fn push_with_mounts(
    client: &Client,
    plan: &PushPlan<'_>,
    tags: &[String],
    mount_from: &[String],
    report: &(dyn Fn(&Event) + Sync),
) -> Result<PushReport> {
    push_inner(client, plan, tags, mount_from, None, &[], report)
}

/// [`push_with_mounts`]; `learned`, when given, holds each layer's digest
/// from an earlier push of the same plan (used as if known in advance).
fn push_inner(
    client: &Client,
    plan: &PushPlan<'_>,
    tags: &[String],
    mount_from: &[String],
    learned: Option<&[BlobDigest]>,
    expected: &[String],
    report: &(dyn Fn(&Event) + Sync),
) -> Result<PushReport> {
    client.ping()?;
    let earlier = match &plan.earlier {
        Some(f) => f(client.registry(), client.repository()),
        None => Vec::new(),
    };
    let previous = previous_manifests(client, tags, &earlier, report);
    let listed: HashSet<BlobDigest> = previous
        .iter()
        .flat_map(|p| p.blobs.iter().cloned())
        .collect();
    let first = push_once(
        client, plan, tags, mount_from, learned, expected, &listed, report,
    );
    // After a recheck, `pass` listed nothing: every blob was checked.
    let (pass, earlier) = match first {
        Ok(pass) => (pass, None),
        Err(Failed::BlobUnknown(e, pass)) if pass.assumed() > 0 => {
            // A blob the old manifest listed is gone: check every blob the
            // usual way, knowing every layer's digest now, and put again.
            report(&Event::Recheck { reason: e.clone() });
            let digests: Vec<BlobDigest> = pass.layers.iter().map(|l| l.digest.clone()).collect();
            let again = push_once(
                client,
                plan,
                tags,
                mount_from,
                Some(&digests),
                expected,
                &HashSet::new(),
                report,
            )
            .map_err(Failed::into_error)?;
            (again, Some(pass))
        }
        Err(e) => return Err(e.into_error()),
    };
    let Pass {
        mut layers,
        listed_layers,
        config,
        mut config_outcome,
        config_listed,
        media_type,
        digest,
        size,
    } = pass;
    if let Some(before) = earlier {
        // What the first pass uploaded or mounted, the second found
        // present: it was this push that put it there.
        for (now, then) in layers.iter_mut().zip(&before.layers) {
            if now.outcome == Outcome::Present {
                now.outcome = then.outcome;
            }
        }
        if config_outcome == Outcome::Present {
            config_outcome = before.config_outcome;
        }
    }
    let mut out = PushReport {
        blobs_present: 0,
        blobs_mounted: 0,
        blobs_uploaded: 0,
        bytes_uploaded: 0,
        blobs_listed: listed_layers.iter().filter(|l| **l).count() + usize::from(config_listed),
        previous_manifest: previous.into_iter().next().map(|p| p.digest),
        layers,
        config: config.clone(),
        manifest_media_type: media_type,
        manifest_digest: digest,
        manifest_size: size,
    };
    let all = out
        .layers
        .iter()
        .map(|l| (l.outcome, l.digest.size))
        .chain([(config_outcome, config.size)])
        .collect::<Vec<_>>();
    for (o, size) in all {
        match o {
            Outcome::Present => out.blobs_present += 1,
            Outcome::Mounted => out.blobs_mounted += 1,
            Outcome::Uploaded => {
                out.blobs_uploaded += 1;
                out.bytes_uploaded += size;
            }
        }
    }
    Ok(out)
}

/// The first usable image manifest among the tags (in order); when there
/// is none, every usable one of the `earlier` digests (at most
/// [`MAX_EARLIER`]). Never an error: anything unusable means checking each
/// blob instead.
fn previous_manifests(
    client: &Client,
    tags: &[String],
    earlier: &[String],
    report: &(dyn Fn(&Event) + Sync),
) -> Vec<super::manifest::Listed> {
    let found = |reference: &String| {
        let listed = client.listed_blobs(reference).ok().flatten()?;
        report(&Event::Listed {
            reference: reference.clone(),
            digest: listed.digest.clone(),
            blobs: listed.blobs.len(),
        });
        Some(listed)
    };
    if let Some(listed) = tags.iter().find_map(found) {
        return vec![listed];
    }
    earlier
        .iter()
        .filter(|d| crate::digest::is_sha256_digest(d))
        .take(MAX_EARLIER)
        .filter_map(found)
        .collect()
}

/// One pass of a push: the blobs, then the manifest under every reference.
struct Pass {
    layers: Vec<LayerResult>,
    /// Per layer: counted present because the tag's manifest lists it.
    listed_layers: Vec<bool>,
    config: BlobDigest,
    config_outcome: Outcome,
    config_listed: bool,
    media_type: String,
    digest: String,
    size: u64,
}

impl Pass {
    /// Blobs counted present on the old manifest's word alone.
    fn assumed(&self) -> usize {
        self.listed_layers.iter().filter(|l| **l).count() + usize::from(self.config_listed)
    }
}

/// Why a pass failed.
enum Failed {
    /// A manifest `PUT` named a blob the registry does not have; the pass
    /// as far as it got.
    BlobUnknown(String, Box<Pass>),
    /// Anything else.
    Other(anyhow::Error),
}

impl Failed {
    fn into_error(self) -> anyhow::Error {
        match self {
            Failed::BlobUnknown(line, _) => anyhow!(line),
            Failed::Other(e) => e,
        }
    }
}

impl From<anyhow::Error> for Failed {
    fn from(e: anyhow::Error) -> Failed {
        Failed::Other(e)
    }
}

/// Pushes every blob (those in `listed` count as present without a
/// request), then puts the manifest under every reference.
#[allow(clippy::too_many_arguments)]
fn push_once(
    client: &Client,
    plan: &PushPlan<'_>,
    tags: &[String],
    mount_from: &[String],
    learned: Option<&[BlobDigest]>,
    expected: &[String],
    listed: &HashSet<BlobDigest>,
    report: &(dyn Fn(&Event) + Sync),
) -> Result<Pass, Failed> {
    let (layers, listed_layers) = push_layers(client, plan, mount_from, learned, listed, report)?;

    let config_bytes = match &plan.config {
        ConfigSpec::Bytes(b) => b.clone(),
        ConfigSpec::Build(f) => f(&layers).map_err(|e| {
            client
                .t
                .fail("building the image configuration", format!("{e:#}"))
        })?,
    };
    let config = BlobDigest {
        digest: manifest::digest_of(&config_bytes),
        size: config_bytes.len() as u64,
    };
    let config_listed = listed.contains(&config);
    let config_outcome = if config_listed {
        Outcome::Present
    } else {
        push_config(client, &config, &config_bytes, mount_from)?
    };
    report(&Event::Blob {
        layer: None,
        digest: config.clone(),
        outcome: config_outcome,
    });

    let (media_type, bytes) = match &plan.manifest {
        ManifestSpec::Bytes { media_type, bytes } => {
            // Bytes made before the push can only be right if they name
            // what was pushed.
            let text = String::from_utf8_lossy(bytes);
            let digests = layers
                .iter()
                .map(|l| &l.digest.digest)
                .chain([&config.digest]);
            if let Some(missing) = digests.into_iter().find(|d| !text.contains(d.as_str())) {
                return Err(client
                    .t
                    .fail(
                        "checking the manifest",
                        format!("it does not name the pushed blob {missing}"),
                    )
                    .into());
            }
            (media_type.clone(), bytes.clone())
        }
        ManifestSpec::Standard(format) => {
            let l: Vec<(&str, &BlobDigest)> = layers
                .iter()
                .map(|l| (l.media_type.as_str(), &l.digest))
                .collect();
            (
                format.manifest_media_type().to_owned(),
                manifest::build(*format, &config, &l),
            )
        }
        ManifestSpec::Build(f) => f(&config, &layers)
            .map_err(|e| client.t.fail("building the manifest", format!("{e:#}")))?,
    };
    let digest = manifest::digest_of(&bytes);
    if let Some(d) = expected.iter().find(|d| **d != digest) {
        return Err(client
            .t
            .fail(
                "checking the manifest digest",
                format!("the image's manifest is {digest}, not {d}"),
            )
            .into());
    }
    let references: Vec<String> = if tags.is_empty() {
        vec![digest.clone()]
    } else {
        tags.to_vec()
    };
    let pass = Pass {
        layers,
        listed_layers,
        config,
        config_outcome,
        config_listed,
        media_type,
        digest,
        size: bytes.len() as u64,
    };
    for r in &references {
        if let Err(e) = client.put_manifest(r, &pass.media_type, &bytes) {
            return Err(match e.downcast::<manifest::BlobUnknown>() {
                Ok(unknown) => Failed::BlobUnknown(unknown.0, Box::new(pass)),
                Err(e) => Failed::Other(e),
            });
        }
        report(&Event::Manifest {
            reference: r.clone(),
            digest: pass.digest.clone(),
        });
    }
    Ok(pass)
}

/// The config blob: present, mounted, or uploaded from memory.
fn push_config(
    client: &Client,
    config: &BlobDigest,
    bytes: &[u8],
    mount_from: &[String],
) -> Result<Outcome> {
    if client.blob_exists(&config.digest)? {
        return Ok(Outcome::Present);
    }
    let mut opened = None;
    for from in mount_from.iter().filter(|f| **f != client.t.repository) {
        match client.mount_or_open(&config.digest, from)? {
            Mount::Mounted => return Ok(Outcome::Mounted),
            Mount::Opened(location) => {
                opened.get_or_insert(location);
            }
        }
    }
    client.upload_at(
        Some(&config.digest),
        &|w| {
            w.write_all(bytes)?;
            Ok(None)
        },
        false,
        bytes.len() as u64,
        opened,
        None,
    )?;
    Ok(Outcome::Uploaded)
}

/// Every layer into the registry, `client.jobs` at a time. The first
/// failure stops the others from starting new layers. A layer whose digest
/// is known and in `listed` is present without a request. Returns the
/// results and, per layer, whether `listed` made it present.
fn push_layers(
    client: &Client,
    plan: &PushPlan<'_>,
    mount_from: &[String],
    learned: Option<&[BlobDigest]>,
    listed: &HashSet<BlobDigest>,
    report: &(dyn Fn(&Event) + Sync),
) -> Result<(Vec<LayerResult>, Vec<bool>)> {
    let n = plan.layers.len();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<LayerResult>>> = Mutex::new(vec![None; n]);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let workers = client.jobs.min(n).max(1);
    // Largest first (see `BlobSource::size_hint`); ties in image order.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(plan.layers[i].size_hint));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if failed.load(Ordering::SeqCst) {
                    return;
                }
                let Some(&i) = order.get(next.fetch_add(1, Ordering::SeqCst)) else {
                    return;
                };
                let known = learned
                    .and_then(|l| l.get(i))
                    .or(plan.layers[i].known.as_ref());
                let layer = &plan.layers[i];
                let result = match known.filter(|k| listed.contains(*k)) {
                    Some(k) => Ok(LayerResult {
                        digest: k.clone(),
                        media_type: layer.media_type.clone(),
                        outcome: Outcome::Present,
                    }),
                    None => push_layer(client, i, layer, known, mount_from, &failed, report),
                };
                match result {
                    Ok(r) => {
                        report(&Event::Blob {
                            layer: Some(i),
                            digest: r.digest.clone(),
                            outcome: r.outcome,
                        });
                        results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                    }
                    Err(e) => {
                        failed.store(true, Ordering::SeqCst);
                        let mut first = first_error.lock().unwrap_or_else(|e| e.into_inner());
                        first.get_or_insert(e);
                        return;
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        return Err(e);
    }
    let results = results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.ok_or_else(|| anyhow!("a layer was not pushed")))
        .collect::<Result<Vec<_>>>()?;
    let by_listing = (0..n)
        .map(|i| {
            let known = learned
                .and_then(|l| l.get(i))
                .or(plan.layers[i].known.as_ref());
            known.is_some_and(|k| listed.contains(k))
        })
        .collect();
    Ok((results, by_listing))
}

fn push_layer(
    client: &Client,
    index: usize,
    layer: &BlobSource<'_>,
    known: Option<&BlobDigest>,
    mount_from: &[String],
    cancel: &AtomicBool,
    report: &(dyn Fn(&Event) + Sync),
) -> Result<LayerResult> {
    let done = |digest: BlobDigest, outcome| LayerResult {
        digest,
        media_type: layer.media_type.clone(),
        outcome,
    };
    let mut opened = None;
    if let Some(known) = known {
        if client.blob_exists(&known.digest)? {
            return Ok(done(known.clone(), Outcome::Present));
        }
        for from in mount_from.iter().filter(|f| **f != client.t.repository) {
            match client.mount_or_open(&known.digest, from)? {
                Mount::Mounted => return Ok(done(known.clone(), Outcome::Mounted)),
                Mount::Opened(location) => {
                    // Keep the first upload the registry opened for us.
                    if opened.is_none() {
                        opened = Some(location);
                    }
                }
            }
        }
    }
    let known_digest = known.map(|k| k.digest.as_str());
    report(&Event::Uploading {
        layer: index,
        digest: known_digest.map(str::to_owned),
    });
    let d = client.upload_at(
        known_digest,
        &*layer.produce,
        layer.self_hashed,
        layer.size_hint,
        opened,
        Some(cancel),
    )?;
    if let Some(k) = known {
        if k.size != d.size {
            return Err(client.t.fail(
                &format!("uploading blob {}", d.digest),
                format!("{} bytes, but {} were expected", d.size, k.size),
            ));
        }
    }
    Ok(done(d, Outcome::Uploaded))
}

/// Pushes `plan` to every reference in `refs` (the repeatable `--push REF`):
/// grouped by registry and repository in the order given, one push per
/// repository with all its tags (a reference without a tag means `latest`;
/// one with only a digest is pushed by digest, and the digest must be the
/// manifest's). The first repository's push learns every layer's digest;
/// later ones `HEAD` with it and mount from the repositories already pushed
/// on the same registry, so the store is read once. Returns each
/// repository's first reference and report, in order.
pub fn push_all(
    refs: &[Reference],
    plan: &PushPlan<'_>,
    options: &Options,
    mount_from: &[String],
    report: &(dyn Fn(&Reference, &Event) + Sync),
) -> Result<Vec<(Reference, PushReport)>> {
    push_all_inner(refs, plan, options, mount_from, false, report)
}

/// [`push_all`], but the manifest is put by its digest only: the tags and
/// digests of `refs` are left for an image index that names it.
pub fn push_all_untagged(
    refs: &[Reference],
    plan: &PushPlan<'_>,
    options: &Options,
    mount_from: &[String],
    report: &(dyn Fn(&Reference, &Event) + Sync),
) -> Result<Vec<(Reference, PushReport)>> {
    push_all_inner(refs, plan, options, mount_from, true, report)
}

fn push_all_inner(
    refs: &[Reference],
    plan: &PushPlan<'_>,
    options: &Options,
    mount_from: &[String],
    untagged: bool,
    report: &(dyn Fn(&Reference, &Event) + Sync),
) -> Result<Vec<(Reference, PushReport)>> {
    let mut groups: Vec<(Reference, Vec<String>, Vec<String>)> = Vec::new();
    for r in refs {
        let at = groups
            .iter()
            .position(|(g, _, _)| g.registry == r.registry && g.repository == r.repository);
        let i = at.unwrap_or_else(|| {
            groups.push((r.clone(), Vec::new(), Vec::new()));
            groups.len() - 1
        });
        let (_, tags, digests) = &mut groups[i];
        if untagged {
            continue;
        }
        match (&r.tag, &r.digest) {
            (None, Some(d)) => digests.push(d.clone()),
            (tag, digest) => {
                let t = tag.clone().unwrap_or_else(|| "latest".to_owned());
                if !tags.contains(&t) {
                    tags.push(t);
                }
                digests.extend(digest.clone());
            }
        }
    }
    let mut out: Vec<(Reference, PushReport)> = Vec::new();
    let mut learned: Option<Vec<BlobDigest>> = None;
    for (first, tags, digests) in groups {
        let client = Client::new(&first, options)?;
        let mut mounts: Vec<String> = mount_from.to_vec();
        for (done, _) in out.iter().filter(|(d, _)| d.registry == first.registry) {
            mounts.push(done.repository.clone());
        }
        let r = push_inner(
            &client,
            plan,
            &tags,
            &mounts,
            learned.as_deref(),
            &digests,
            &|e| report(&first, e),
        )?;
        learned = Some(r.layers.iter().map(|l| l.digest.clone()).collect());
        out.push((first, r));
    }
    Ok(out)
}
