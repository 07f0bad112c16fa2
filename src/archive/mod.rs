//! The outer docker-archive byte stream, written in one pass.
//!
//! nixpkgs' `stream_layered_image.py` builds every layer tarball twice
//! (once to learn its sha256, which names the member, once to stream it).
//! We read each byte once: the layer's size comes from metadata, the outer
//! member gets a name we can choose up front, and the sha256 (the diff_id)
//! is computed while the bytes go by, for the config written last.
//!
//! Work is split over three threads so reading files, hashing and writing
//! overlap (the floor we race is `cat | openssl dgst`, two processes):
//! the caller fills fixed-size chunks (file reads land directly in them),
//! a hasher thread hashes the chunks marked as layer data, and a writer
//! thread writes them out and hands the buffers back. At most
//! [`MAX_CHUNKS`] chunks exist, so memory does not grow with the image.
//! A small blob takes the same steps on the caller's thread instead
//! ([`ArchiveWriter::inline`]): for it, starting and feeding two threads
//! costs more than their overlap saves.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

/// Bytes per chunk: large enough for few syscalls and messages, small
/// enough that all chunks together stay a few MiB.
pub const CHUNK: usize = 512 * 1024;
/// Chunks in flight between the three threads.
pub const MAX_CHUNKS: usize = 8;
/// The one chunk of an inline pipeline ([`ArchiveWriter::inline`]).
const INLINE_CHUNK: usize = 64 * 1024;

/// A sha256 digest.
pub type Sha = [u8; 32];

struct Chunk {
    data: Vec<u8>,
    used: usize,
    hashed: bool,
}

enum Msg {
    Data(Chunk),
    /// Ends the current hashed member: its digest is recorded.
    EndHash,
    /// Asks for every digest recorded so far.
    Report(Sender<Vec<Sha>>),
}

/// Writes the outer archive through the hash/write pipeline.
pub struct ArchiveWriter<W: Write> {
    current: Option<Chunk>,
    hashing: bool,
    allocated: usize,
    stages: Stages<W>,
    /// Bytes of the outer archive so far.
    offset: u64,
}

/// Where the filled chunks go.
enum Stages<W: Write> {
    /// The hasher and writer threads.
    Threads {
        to_hasher: Option<SyncSender<Msg>>,
        pool: Receiver<Chunk>,
        hasher: Option<JoinHandle<Vec<Sha>>>,
        writer: Option<JoinHandle<io::Result<W>>>,
    },
    /// Hashed and written on the caller's thread ([`ArchiveWriter::inline`]).
    Inline {
        hasher: Sha256,
        digests: Vec<Sha>,
        /// None once a write failed (its error is returned then).
        out: Option<W>,
        /// The chunk written last, filled again next.
        spare: Option<Chunk>,
    },
}

impl<W: Write + Send + 'static> ArchiveWriter<W> {
    /// Starts the hasher and writer threads around `out`.
    pub fn new(out: W) -> ArchiveWriter<W> {
        let (to_hasher, hasher_rx) = mpsc::sync_channel::<Msg>(2);
        let (to_writer, writer_rx) = mpsc::sync_channel::<Chunk>(2);
        let (pool_tx, pool) = mpsc::channel::<Chunk>();
        let hasher = std::thread::spawn(move || hash_stage(hasher_rx, to_writer));
        let writer = std::thread::spawn(move || write_stage(writer_rx, pool_tx, out));
        ArchiveWriter {
            current: None,
            hashing: false,
            allocated: 0,
            stages: Stages::Threads {
                to_hasher: Some(to_hasher),
                pool,
                hasher: Some(hasher),
                writer: Some(writer),
            },
            offset: 0,
        }
    }
}

impl<W: Write> ArchiveWriter<W> {
    /// The same pipeline on the caller's thread, around a writer that may
    /// borrow: each chunk is hashed and written as it fills. For a small
    /// blob (a layer of a few MiB uploading), where two threads cost more
    /// to start and to hand chunks between than their overlap saves.
    pub fn inline(out: W) -> ArchiveWriter<W> {
        ArchiveWriter {
            current: None,
            hashing: false,
            allocated: 0,
            stages: Stages::Inline {
                hasher: Sha256::new(),
                digests: Vec::new(),
                out: Some(out),
                spare: None,
            },
            offset: 0,
        }
    }

    /// Bytes written to the outer archive so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Starts a member whose bytes are hashed (a layer tarball).
    pub fn begin_hashed(&mut self) -> Result<()> {
        self.switch(true)
    }

    /// Ends the hashed member; its digest joins [`Self::digests`].
    pub fn end_hashed(&mut self) -> Result<()> {
        self.switch(false)?;
        self.send(Msg::EndHash)
    }

    /// Appends bytes (hashed if inside a hashed member).
    pub fn write_all(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let chunk = self.chunk()?;
            let n = bytes.len().min(chunk.data.len() - chunk.used);
            chunk.data[chunk.used..chunk.used + n].copy_from_slice(&bytes[..n]);
            chunk.used += n;
            bytes = &bytes[n..];
            self.offset += n as u64;
        }
        Ok(())
    }

    /// Appends `n` zero bytes.
    pub fn write_zeros(&mut self, mut n: u64) -> Result<()> {
        while n > 0 {
            let chunk = self.chunk()?;
            let k = (chunk.data.len() - chunk.used).min(n.try_into().unwrap_or(usize::MAX));
            chunk.data[chunk.used..chunk.used + k].fill(0);
            chunk.used += k;
            n -= k as u64;
            self.offset += k as u64;
        }
        Ok(())
    }

    /// Appends exactly `n` bytes read from `src` (named `what` in errors),
    /// reading straight into the chunks.
    pub fn copy_exact(&mut self, src: &mut dyn Read, mut n: u64, what: &Path) -> Result<()> {
        while n > 0 {
            let chunk = self.chunk()?;
            let room = chunk.data.len() - chunk.used;
            let want = room.min(n.try_into().unwrap_or(usize::MAX));
            let got = match src.read(&mut chunk.data[chunk.used..chunk.used + want]) {
                Ok(0) => bail!(
                    "{}: file shrank while streaming ({n} bytes missing)",
                    what.display()
                ),
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("{}: cannot read", what.display()))
                }
            };
            chunk.used += got;
            n -= got as u64;
            self.offset += got as u64;
        }
        Ok(())
    }

    /// Appends a regular-file member header (uniform owner, mode 0644).
    pub fn member_header(&mut self, name: &str, size: u64, mtime: i64) -> Result<()> {
        let mut header = Vec::with_capacity(1024);
        crate::tar::encode_plain_file_header(name, size, mtime, &mut header);
        self.write_all(&header)
    }

    /// Appends a whole small member: header, bytes, padding.
    pub fn bytes_member(&mut self, name: &str, bytes: &[u8], mtime: i64) -> Result<()> {
        self.member_header(name, bytes.len() as u64, mtime)?;
        self.write_all(bytes)?;
        self.write_zeros(crate::tar::padding(bytes.len() as u64))
    }

    /// Every digest of an ended hashed member so far, in order.
    pub fn digests(&mut self) -> Result<Vec<Sha>> {
        self.flush()?;
        if let Stages::Inline { digests, .. } = &self.stages {
            return Ok(digests.clone());
        }
        let (tx, rx) = mpsc::channel();
        self.send(Msg::Report(tx))?;
        match rx.recv() {
            Ok(d) => Ok(d),
            Err(_) => Err(self.downstream_error()),
        }
    }

    /// Flushes everything and returns the output for committing.
    pub fn finish(mut self) -> Result<W> {
        self.flush()?;
        if let Stages::Inline { out, .. } = &mut self.stages {
            let mut out = out
                .take()
                .ok_or_else(|| anyhow!("internal: output already failed"))?;
            out.flush().context("cannot write the image")?;
            return Ok(out);
        }
        self.join().map(|(_, out)| out)
    }

    /// Marks where hashed data starts or stops: chunks never mix the two.
    fn switch(&mut self, hashed: bool) -> Result<()> {
        if self.hashing != hashed {
            self.flush()?;
            self.hashing = hashed;
        }
        Ok(())
    }

    /// The chunk being filled, with room for at least one byte.
    fn chunk(&mut self) -> Result<&mut Chunk> {
        if matches!(&self.current, Some(c) if c.used == c.data.len()) {
            self.flush()?;
        }
        if self.current.is_none() {
            let mut chunk = self.fresh_chunk()?;
            chunk.used = 0;
            chunk.hashed = self.hashing;
            self.current = Some(chunk);
        }
        self.current
            .as_mut()
            .ok_or_else(|| anyhow!("internal: no chunk"))
    }

    fn fresh_chunk(&mut self) -> Result<Chunk> {
        let pool = match &mut self.stages {
            // One chunk, smaller: nothing overlaps with filling it.
            Stages::Inline { spare, .. } => {
                return Ok(spare.take().unwrap_or_else(|| Chunk {
                    data: vec![0; INLINE_CHUNK],
                    used: 0,
                    hashed: false,
                }));
            }
            Stages::Threads { pool, .. } => pool,
        };
        if let Ok(c) = pool.try_recv() {
            return Ok(c);
        }
        if self.allocated < MAX_CHUNKS {
            self.allocated += 1;
            return Ok(Chunk {
                data: vec![0; CHUNK],
                used: 0,
                hashed: false,
            });
        }
        match pool.recv() {
            Ok(c) => Ok(c),
            Err(_) => Err(self.downstream_error()),
        }
    }

    fn flush(&mut self) -> Result<()> {
        match self.current.take() {
            Some(c) if c.used > 0 => self.send(Msg::Data(c)),
            _ => Ok(()),
        }
    }

    fn send(&mut self, msg: Msg) -> Result<()> {
        let sent = match &mut self.stages {
            Stages::Threads { to_hasher, .. } => match to_hasher {
                Some(tx) => tx.send(msg).is_ok(),
                None => false,
            },
            Stages::Inline {
                hasher,
                digests,
                out,
                spare,
            } => {
                return match msg {
                    Msg::Data(chunk) => {
                        if chunk.hashed {
                            hasher.update(&chunk.data[..chunk.used]);
                        }
                        let w = out
                            .as_mut()
                            .ok_or_else(|| anyhow!("internal: output already failed"))?;
                        if let Err(e) = w.write_all(&chunk.data[..chunk.used]) {
                            *out = None;
                            return Err(e).context("cannot write the image");
                        }
                        *spare = Some(chunk);
                        Ok(())
                    }
                    Msg::EndHash => {
                        digests.push(hasher.finalize_reset().into());
                        Ok(())
                    }
                    Msg::Report(reply) => {
                        let _ = reply.send(digests.clone());
                        Ok(())
                    }
                };
            }
        };
        if sent {
            Ok(())
        } else {
            Err(self.downstream_error())
        }
    }

    /// The reason the pipeline stopped taking data: the writer's error.
    fn downstream_error(&mut self) -> anyhow::Error {
        match self.join() {
            Err(e) => e,
            Ok(_) => anyhow!("internal: output pipeline stopped without an error"),
        }
    }

    /// Ends the threads (their input closed) and takes their results.
    fn join(&mut self) -> Result<(Vec<Sha>, W)> {
        let Stages::Threads {
            to_hasher,
            hasher,
            writer,
            ..
        } = &mut self.stages
        else {
            bail!("internal: no pipeline threads to join");
        };
        *to_hasher = None;
        let hasher = hasher
            .take()
            .ok_or_else(|| anyhow!("internal: pipeline already joined"))?;
        let writer = writer
            .take()
            .ok_or_else(|| anyhow!("internal: pipeline already joined"))?;
        let digests = hasher
            .join()
            .map_err(|_| anyhow!("internal: hashing thread panicked"))?;
        let out = writer
            .join()
            .map_err(|_| anyhow!("internal: writing thread panicked"))?
            .context("cannot write the image")?;
        Ok((digests, out))
    }
}

/// On an error path the pipeline is dropped unfinished: wait for the
/// threads so the output is dropped too (removing a partial `-o` file)
/// before the process exits.
impl<W: Write> Drop for ArchiveWriter<W> {
    fn drop(&mut self) {
        self.current = None;
        if let Stages::Threads {
            to_hasher,
            hasher,
            writer,
            ..
        } = &mut self.stages
        {
            *to_hasher = None;
            if let Some(h) = hasher.take() {
                let _ = h.join();
            }
            if let Some(w) = writer.take() {
                let _ = w.join();
            }
        }
    }
}

fn hash_stage(rx: Receiver<Msg>, to_writer: SyncSender<Chunk>) -> Vec<Sha> {
    let mut digests = Vec::new();
    let mut hasher = Sha256::new();
    for msg in rx {
        match msg {
            Msg::Data(chunk) => {
                if chunk.hashed {
                    hasher.update(&chunk.data[..chunk.used]);
                }
                if to_writer.send(chunk).is_err() {
                    break;
                }
            }
            Msg::EndHash => digests.push(hasher.finalize_reset().into()),
            Msg::Report(reply) => {
                let _ = reply.send(digests.clone());
            }
        }
    }
    digests
}

fn write_stage<W: Write>(rx: Receiver<Chunk>, pool: Sender<Chunk>, mut out: W) -> io::Result<W> {
    for chunk in rx {
        out.write_all(&chunk.data[..chunk.used])?;
        // The producer may have finished and gone; the buffer then just drops.
        let _ = pool.send(chunk);
    }
    out.flush()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Writes the same members through `w`; returns their digests.
    fn members<W: Write>(mut w: ArchiveWriter<W>, big: &[u8]) -> (Vec<Sha>, W) {
        w.write_all(b"head").unwrap();
        w.begin_hashed().unwrap();
        w.copy_exact(&mut &big[..], big.len() as u64, Path::new("big"))
            .unwrap();
        w.end_hashed().unwrap();
        w.begin_hashed().unwrap();
        w.write_zeros(10).unwrap();
        w.end_hashed().unwrap();
        let d = w.digests().unwrap();
        w.write_all(b"tail").unwrap();
        (d, w.finish().unwrap())
    }

    #[test]
    fn hashes_only_marked_members_and_keeps_order() {
        let big = vec![7u8; CHUNK * 3 + 5];
        let out = Shared::default();
        let (d, _) = members(ArchiveWriter::new(out.clone()), &big);
        assert_eq!(d[0], <[u8; 32]>::from(Sha256::digest(&big)));
        assert_eq!(d[1], <[u8; 32]>::from(Sha256::digest([0u8; 10])));
        let bytes = out.0.lock().unwrap().clone();
        assert_eq!(bytes.len(), 4 + big.len() + 10 + 4);
        assert!(bytes.starts_with(b"head") && bytes.ends_with(b"tail"));
        // Inline, into a borrowed writer: the same bytes and digests.
        let mut borrowed = Vec::new();
        let (inline, _) = members(ArchiveWriter::inline(&mut borrowed), &big);
        assert_eq!(inline, d);
        assert!(borrowed == bytes);
    }

    struct Closed;
    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writer_errors_reach_the_producer() {
        for mut w in [ArchiveWriter::new(Closed), ArchiveWriter::inline(Closed)] {
            let big = vec![1u8; CHUNK];
            let mut result = Ok(());
            for _ in 0..64 {
                result = w.write_all(&big);
                if result.is_err() {
                    break;
                }
            }
            let err = result.unwrap_err();
            let io = err
                .chain()
                .find_map(|e| e.downcast_ref::<io::Error>())
                .unwrap();
            assert_eq!(io.kind(), io::ErrorKind::BrokenPipe);
            // Once failed, it stays failed.
            assert!(w
                .write_all(&big)
                .and_then(|()| w.finish().map(drop))
                .is_err());
        }
    }

    #[test]
    fn short_source_is_an_error() {
        let mut w = ArchiveWriter::new(io::sink());
        let err = w
            .copy_exact(&mut &b"abc"[..], 5, Path::new("/x"))
            .unwrap_err();
        assert!(format!("{err:#}").contains("/x: file shrank"), "{err:#}");
    }
}
