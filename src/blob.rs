//! A layer's bytes as a blob: its tar produced, compressed with the
//! chosen codec and hashed on the way (diff_id of the tar, digest and size
//! of the blob), then checked against what was known before reading and
//! recorded for next time.
//!
//! Store and customisation layers are produced one at a time per call, so
//! callers can produce several in parallel (each call has its own pipeline
//! and encoder, so the bytes never depend on the thread count). Base layers
//! come from one pass over the base image ([`produce_base`]).
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;

use anyhow::{bail, Context, Result};

use crate::archive::ArchiveWriter;
use crate::cache::{Blob, Facts};
use crate::compression::{Codec, Encoder};
use crate::digest::{self, HashCount};
use crate::layer::{self, LayerPlan};
use crate::model::{Image, Layer, Origin};

/// A store or customisation layer ready to stream, its size known.
pub enum Prepared {
    /// Store paths, walked and sized.
    Store(LayerPlan),
    /// The customisation layer's `layer.tar`.
    Customisation(u64),
}

impl Prepared {
    /// Exact size of the layer's tar.
    pub fn size(&self) -> u64 {
        match self {
            Prepared::Store(plan) => plan.size,
            Prepared::Customisation(size) => *size,
        }
    }

    /// Bytes of memory it holds until streamed (see [`LayerPlan::memory`]).
    pub fn memory(&self) -> usize {
        match self {
            Prepared::Store(plan) => plan.memory(),
            Prepared::Customisation(_) => 0,
        }
    }
}

/// Sizes layer `i` (a walk of metadata, no file contents read).
pub fn prepare(img: &Image, i: usize) -> Result<Prepared> {
    match &img.layers[i].origin {
        Origin::Store(paths) => Ok(Prepared::Store(layer::plan(
            paths,
            img.store_dir,
            img.owner,
        )?)),
        Origin::Customisation => Ok(Prepared::Customisation(img.customisation.size)),
        Origin::Base(_) => bail!("internal: base layers are streamed from the base image"),
    }
}

/// Writes the prepared layer's tar (exactly [`Prepared::size`] bytes) into
/// `aw`; the caller marks it hashed.
pub fn stream_tar<W: Write>(
    img: &Image,
    prepared: Prepared,
    aw: &mut ArchiveWriter<W>,
) -> Result<()> {
    match prepared {
        Prepared::Store(plan) => layer::stream(plan, img.store_dir, img.owner, aw),
        Prepared::Customisation(size) => {
            let c = img.customisation;
            match c.kept() {
                Some(bytes) => aw.write_all(bytes),
                None => {
                    let mut f = File::open(&c.layer_tar).with_context(|| {
                        format!("customisation layer {}: cannot open", c.layer_tar.display())
                    })?;
                    aw.copy_exact(&mut f, size, &c.layer_tar)
                }
            }
        }
    }
}

/// Produces store or customisation layer `i` compressed with `codec` into
/// `out`; returns the layer and `out`.
pub fn produce<W: Write + Send + 'static>(
    img: &Image,
    i: usize,
    codec: Codec,
    out: W,
) -> Result<(Layer, W)> {
    produce_prepared(img, i, Some(prepare(img, i)?), codec, out)
}

/// [`produce`] from layer `i` already prepared (its walk done before, for
/// its size), or, with `None`, a store layer walked while it streams (see
/// [`layer::stream_walking`]).
pub fn produce_prepared<W: Write + Send + 'static>(
    img: &Image,
    i: usize,
    prepared: Option<Prepared>,
    codec: Codec,
    out: W,
) -> Result<(Layer, W)> {
    produce_through(img, i, prepared, codec, out, ArchiveWriter::new)
}

/// [`produce_prepared`] with the archive pipeline `stages` makes around
/// the encoder: its own threads, or inline on this one.
fn produce_through<W: Write>(
    img: &Image,
    i: usize,
    prepared: Option<Prepared>,
    codec: Codec,
    out: W,
    stages: impl FnOnce(Encoder<HashCount<W>>) -> ArchiveWriter<Encoder<HashCount<W>>>,
) -> Result<(Layer, W)> {
    // The uncompressed blob's digest is the diff_id, hashed by the pipeline.
    let inner = match codec {
        Codec::None => HashCount::counting(out),
        _ => HashCount::hashing(out),
    };
    let mut aw = stages(codec.encoder(inner)?);
    aw.begin_hashed()?;
    match (prepared, &img.layers[i].origin) {
        (Some(p), _) => stream_tar(img, p, &mut aw)?,
        (None, Origin::Store(paths)) => {
            layer::stream_walking(paths, img.store_dir, img.owner, &mut aw)?;
        }
        (None, _) => stream_tar(img, prepare(img, i)?, &mut aw)?,
    }
    // The tar's size: what was just written (a plan's size is checked
    // against it while streaming).
    let size = aw.offset();
    aw.end_hashed()?;
    let diff_id = match aw.digests()?.first() {
        Some(d) => digest::diff_id(d),
        None => bail!("internal: no digest for {}", img.describe(i)),
    };
    let encoder = aw.finish()?;
    let (out, blob_size, blob_digest) = encoder
        .finish()
        .with_context(|| format!("{}: cannot finish {}", img.describe(i), codec.name()))?
        .into_parts();
    let blob = Blob {
        digest: blob_digest.unwrap_or_else(|| diff_id.clone()),
        size: blob_size,
    };
    let mut learnt = Facts {
        diff_id: diff_id.clone(),
        size,
        blobs: BTreeMap::new(),
        stored: None,
    };
    if codec != Codec::None {
        learnt
            .blobs
            .insert(codec.fact_key().to_owned(), blob.clone());
    }
    settle(img, i, &learnt)?;
    img.reporter.progress(size, true);
    let layer = Layer {
        diff_id,
        blob,
        codec,
        history: img.layers[i].history.clone(),
    };
    Ok((layer, out))
}

/// Checks what streaming layer `i` showed against what was known before
/// (a mismatch drops the known entry and is an error: it named a blob or
/// skipped work wrongly), then records it for next time.
pub fn settle(img: &Image, i: usize, learnt: &Facts) -> Result<()> {
    let spec = &img.layers[i];
    if let Some(known) = img.known_facts(i) {
        let blob_differs = learnt
            .blobs
            .iter()
            .any(|(k, b)| known.blobs.get(k).is_some_and(|kb| kb != b));
        // Facts with a size are whole (cache, digests file): how the
        // layer is stored must agree too.
        let size_differs =
            known.size != 0 && (known.size != learnt.size || known.stored != learnt.stored);
        if known.diff_id != learnt.diff_id || size_differs || blob_differs {
            // The checksum file disagreeing with the bytes is the layer
            // changing; a wrong size or blob digest with the right diff_id
            // is a bad cache entry like any other (dropped below).
            if matches!(spec.origin, Origin::Customisation) && known.diff_id != learnt.diff_id {
                bail!(
                    "customisation layer {}: changed while streaming (checksum says {}, streamed {})",
                    img.customisation.layer_tar.display(),
                    known.diff_id,
                    learnt.diff_id
                );
            }
            if let Some(key) = &spec.key {
                img.known.forget(key);
            }
            let streamed = if learnt.diff_id.is_empty() {
                format!("{} bytes", learnt.size)
            } else {
                format!("{} of {} bytes", learnt.diff_id, learnt.size)
            };
            // Same tar, other compressed bytes: name the blob that differs.
            let blob = learnt
                .blobs
                .iter()
                .find_map(|(k, b)| {
                    let kb = known.blobs.get(k).filter(|kb| *kb != b)?;
                    Some(format!(
                        "; its {k} blob: recorded {} of {} bytes, streamed {} of {} bytes",
                        kb.digest, kb.size, b.digest, b.size
                    ))
                })
                .unwrap_or_default();
            bail!(
                "{}: the digests recorded for it (cache or --digests file) do not match its bytes \
                 (recorded {} of {} bytes, streamed {streamed}{blob}); the entry was dropped, run again",
                img.describe(i),
                known.diff_id,
                known.size,
            );
        }
    }
    if let Some(key) = &spec.key {
        img.known.record(key, learnt);
    }
    Ok(())
}

/// Produces every base layer as a blob, in one pass over the base image:
/// a layer stored compressed passes through as stored (its own codec), a
/// plain one is compressed with `codec`. `make(i)` gives the writer for
/// layer `i`; `done(i, layer, writer)` takes it back. Each layer's facts
/// are checked against what was known and recorded ([`settle`]), saying
/// for a layer passed through which codec its blob has ([`Facts::stored`]).
pub fn produce_base<W: Write>(
    img: &Image,
    codec: Codec,
    make: &mut dyn FnMut(usize) -> Result<W>,
    done: &mut dyn FnMut(usize, Layer, W) -> Result<()>,
) -> Result<()> {
    let Some(base) = img.base else {
        return Ok(());
    };
    base.stream_layers(&mut |b, l, reader| {
        let mut head = [0u8; 4];
        let mut n = 0;
        while n < head.len() {
            match reader.read(&mut head[n..])? {
                0 => break,
                k => n += k,
            }
        }
        let stored = Codec::sniff(&head[..n]);
        let (used, encode) = match stored {
            Codec::None => (codec, codec),
            c => (c, Codec::None),
        };
        let mut enc = encode.encoder(HashCount::hashing(make(b)?))?;
        enc.write_all(&head[..n])?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match reader.read(&mut buf)? {
                0 => break,
                k => enc.write_all(&buf[..k])?,
            }
        }
        let (out, size, digest) = enc.finish()?.into_parts();
        let blob = Blob {
            digest: digest.unwrap_or_default(),
            size,
        };
        let mut learnt = Facts {
            diff_id: l.diff_id.clone(),
            size: l.size,
            blobs: BTreeMap::new(),
            stored: (stored != Codec::None).then(|| stored.name().to_owned()),
        };
        // A stored blob is named by its codec; one we compressed, by our
        // encoder (see `Facts::blobs`).
        if stored != Codec::None {
            learnt.blobs.insert(stored.name().to_owned(), blob.clone());
        } else if used != Codec::None {
            learnt
                .blobs
                .insert(used.fact_key().to_owned(), blob.clone());
        }
        settle(img, b, &learnt)?;
        img.reporter.progress(l.size, true);
        let layer = Layer {
            diff_id: l.diff_id.clone(),
            blob,
            codec: used,
            history: img.layers[b].history.clone(),
        };
        done(b, layer, out)
    })
}

/// [`produce`] into a borrowed writer (a registry upload's body): a small
/// layer (at most [`INLINE`] bytes) inline on this thread; a larger one on
/// the pipeline's threads, which need an owned writer, so it writes into a
/// bounded channel drained here into `out`, at most [`CHANNEL_DEPTH`]
/// chunks in flight.
/// `prepared`: layer `i` already prepared, or `None` (see
/// [`produce_prepared`]).
pub fn produce_into(
    img: &Image,
    i: usize,
    prepared: Option<Prepared>,
    codec: Codec,
    out: &mut dyn Write,
) -> Result<Layer> {
    // Small by its walk, or by the graph's NAR size (a tar is about as big).
    let size = prepared
        .as_ref()
        .map(Prepared::size)
        .or(img.layers[i].nar_size);
    if size.is_some_and(|s| s <= INLINE) {
        return produce_through(img, i, prepared, codec, out, ArchiveWriter::inline)
            .map(|(l, _)| l);
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(CHANNEL_DEPTH);
    std::thread::scope(|s| {
        let producer = s.spawn(move || {
            produce_prepared(img, i, prepared, codec, ChannelWriter(tx)).map(|(l, _)| l)
        });
        let mut failed = None;
        for chunk in rx.iter() {
            if failed.is_none() {
                if let Err(e) = out.write_all(&chunk) {
                    // Keep draining so the producer ends; report this error.
                    failed = Some(e);
                }
            }
        }
        let layer = producer
            .join()
            .map_err(|_| anyhow::anyhow!("internal: layer producer panicked"))?;
        match failed {
            Some(e) => {
                Err(anyhow::Error::new(e).context(format!("{}: cannot send", img.describe(i))))
            }
            None => layer,
        }
    })
}

/// Chunks in flight between a producer and a borrowed writer.
const CHANNEL_DEPTH: usize = 4;

/// The largest layer [`produce_into`] produces on the calling thread, its
/// archive pipeline inline (no thread of its own, no channel): for a push
/// of a hundred small layers, starting and feeding three threads per layer
/// cost more than their overlap saves (the compression pool still takes
/// its blocks).
const INLINE: u64 = 4 << 20;

/// The sending end of [`produce_into`]'s channel, as an owned writer.
struct ChannelWriter(std::sync::mpsc::SyncSender<Vec<u8>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .send(buf.to_vec())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "receiver gone"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
