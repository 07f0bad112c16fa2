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
            produce: Box::new(produce),
        }
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

/// What to push.
pub struct PushPlan<'a> {
    /// Layers, in image order.
    pub layers: Vec<BlobSource<'a>>,
    /// The image configuration.
    pub config: ConfigSpec<'a>,
    /// The manifest.
    pub manifest: ManifestSpec<'a>,
}

/// How a blob came to be in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It was there already (`HEAD`).
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
    let layers = push_layers(client, plan, mount_from, learned, report)?;

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
    let config_outcome = push_config(client, &config, &config_bytes, mount_from)?;
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
                return Err(client.t.fail(
                    "checking the manifest",
                    format!("it does not name the pushed blob {missing}"),
                ));
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
        return Err(client.t.fail(
            "checking the manifest digest",
            format!("the image's manifest is {digest}, not {d}"),
        ));
    }
    let references: Vec<String> = if tags.is_empty() {
        vec![digest.clone()]
    } else {
        tags.to_vec()
    };
    for r in &references {
        client.put_manifest(r, &media_type, &bytes)?;
        report(&Event::Manifest {
            reference: r.clone(),
            digest: digest.clone(),
        });
    }

    let mut out = PushReport {
        blobs_present: 0,
        blobs_mounted: 0,
        blobs_uploaded: 0,
        bytes_uploaded: 0,
        layers,
        config: config.clone(),
        manifest_media_type: media_type,
        manifest_digest: digest,
        manifest_size: bytes.len() as u64,
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
        &|w| Ok(w.write_all(bytes)?),
        opened,
        None,
    )?;
    Ok(Outcome::Uploaded)
}

/// Every layer into the registry, `client.jobs` at a time. The first
/// failure stops the others from starting new layers.
fn push_layers(
    client: &Client,
    plan: &PushPlan<'_>,
    mount_from: &[String],
    learned: Option<&[BlobDigest]>,
    report: &(dyn Fn(&Event) + Sync),
) -> Result<Vec<LayerResult>> {
    let n = plan.layers.len();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<LayerResult>>> = Mutex::new(vec![None; n]);
    let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    let workers = client.jobs.min(n).max(1);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                if failed.load(Ordering::SeqCst) {
                    return;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    return;
                }
                let known = learned
                    .and_then(|l| l.get(i))
                    .or(plan.layers[i].known.as_ref());
                let layer = &plan.layers[i];
                match push_layer(client, i, layer, known, mount_from, &failed, report) {
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
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.ok_or_else(|| anyhow!("a layer was not pushed")))
        .collect()
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
    let d = client.upload_at(known_digest, &*layer.produce, opened, Some(cancel))?;
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
