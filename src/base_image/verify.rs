//! Checking base layers against their diff_ids while they are copied.
//!
//! nixpkgs' streamer copies base layers through unverified, so a corrupt
//! or doctored base becomes an image that `docker load` rejects (or, worse,
//! one whose layer does not hold what its diff_id promises). A diff_id is
//! the sha256 of the uncompressed layer tar: of the bytes themselves for a
//! plain member, of the decompressed bytes for a gzip or zstd one. The
//! bytes are handed to a thread that decompresses if needed and hashes, so
//! the check costs the copy nothing but a second core.

use std::fs::File;
use std::io::{self, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use anyhow::{bail, Result};
use sha2::{Digest, Sha256};

/// Chunks in flight to the hashing thread (each at most one read's worth).
const CHUNKS_IN_FLIGHT: usize = 8;

/// `what: diff_id mismatch …` unless `actual` (`sha256:<hex>`) is `expected`.
pub fn check(what: &str, expected: &str, actual: &str) -> Result<()> {
    if expected != actual {
        bail!(
            "{what}: content does not match its diff_id (the image config says {expected}, \
             the layer is {actual}); the base image is corrupt or was altered"
        );
    }
    Ok(())
}

/// Hands out exactly `left` bytes of `inner`, copying them into `spool` if
/// given, and fails the read that delivers the last byte when the digest
/// differs from `expected`. An early end is an error too.
pub struct Verifying<'a> {
    inner: &'a mut dyn Read,
    left: u64,
    expected: &'a str,
    what: String,
    spool: Option<&'a mut File>,
    hasher: Option<Hasher>,
    /// The digest once all bytes were read, or why it could not be had.
    outcome: Option<Result<String, String>>,
    /// Bytes handed out count as store bytes read (`--verbose`).
    count: bool,
}

struct Hasher {
    tx: Option<SyncSender<Vec<u8>>>,
    thread: Option<JoinHandle<io::Result<String>>>,
}

impl<'a> Verifying<'a> {
    pub fn new(
        inner: &'a mut dyn Read,
        size: u64,
        expected: &'a str,
        what: String,
        spool: Option<&'a mut File>,
    ) -> Verifying<'a> {
        let (tx, rx) = sync_channel(CHUNKS_IN_FLIGHT);
        let thread = std::thread::Builder::new()
            .name("base-layer-digest".into())
            .spawn(move || diff_id_of(Chunks::new(rx)))
            .ok();
        Verifying {
            inner,
            left: size,
            expected,
            what,
            spool,
            hasher: Some(Hasher {
                tx: Some(tx),
                thread,
            }),
            outcome: None,
            count: false,
        }
    }

    /// Bytes handed out from now on count as bytes read from the store.
    pub fn count_store_reads(&mut self) {
        self.count = true;
    }

    /// The digest is already known to match (a member listed again).
    pub fn skip_hashing(&mut self) {
        self.hasher = None;
    }

    /// After the consumer is done: the digest if every byte was read and
    /// hashed (`None` if the consumer stopped early or hashing was skipped),
    /// or the mismatch error.
    pub fn finish(mut self) -> Result<Option<String>> {
        if self.left == 0 && self.outcome.is_none() {
            self.conclude();
        }
        match self.outcome.take() {
            Some(Ok(d)) => Ok(Some(d)),
            Some(Err(e)) => bail!("{e}"),
            None => Ok(None),
        }
    }

    /// Joins the hashing thread and records the outcome.
    fn conclude(&mut self) {
        let Some(mut h) = self.hasher.take() else {
            return;
        };
        drop(h.tx.take());
        let digest = match h.thread.take().map(JoinHandle::join) {
            Some(Ok(Ok(d))) => d,
            Some(Ok(Err(e))) => {
                self.outcome = Some(Err(format!(
                    "{}: cannot decompress it to check its diff_id ({})",
                    self.what,
                    crate::escape::one_line(&e.to_string())
                )));
                return;
            }
            _ => {
                self.outcome = Some(Err(format!("{}: cannot hash it", self.what)));
                return;
            }
        };
        self.outcome = Some(
            check(&self.what, self.expected, &digest)
                .map(|()| digest)
                .map_err(|e| e.to_string()),
        );
    }
}

impl Read for Verifying<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{}: truncated, {} bytes missing", self.what, self.left),
            ));
        }
        if let Some(spool) = self.spool.as_mut() {
            spool.write_all(&buf[..n]).map_err(|e| {
                io::Error::new(e.kind(), format!("{}: temporary copy: {e}", self.what))
            })?;
        }
        if let Some(tx) = self.hasher.as_ref().and_then(|h| h.tx.as_ref()) {
            // A send fails only if the thread is gone; joining says why.
            let _ = tx.send(buf[..n].to_vec());
        }
        self.left -= n as u64;
        if self.count {
            crate::layer::count_store_bytes(n as u64);
        }
        if self.left == 0 {
            self.conclude();
            if let Some(Err(e)) = &self.outcome {
                return Err(io::Error::new(io::ErrorKind::InvalidData, e.clone()));
            }
        }
        Ok(n)
    }
}

impl Drop for Verifying<'_> {
    fn drop(&mut self) {
        // Stopped early: end the thread's input and wait for it, leaving no
        // thread behind.
        if let Some(mut h) = self.hasher.take() {
            drop(h.tx.take());
            if let Some(t) = h.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// The bytes sent over a channel, as a reader.
struct Chunks {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    at: usize,
}

impl Chunks {
    fn new(rx: Receiver<Vec<u8>>) -> Chunks {
        Chunks {
            rx,
            cur: Vec::new(),
            at: 0,
        }
    }
}

impl Read for Chunks {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.cur.len() {
            match self.rx.recv() {
                Ok(v) => {
                    self.cur = v;
                    self.at = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len() - self.at);
        buf[..n].copy_from_slice(&self.cur[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `sha256:<hex>` of a layer's uncompressed tar: `r` itself, or `r`
/// decompressed when it starts with gzip or zstd magic (as `docker load`
/// accepts such members).
pub fn diff_id_of(mut r: impl Read) -> io::Result<String> {
    let mut head = [0u8; 4];
    let mut got = 0;
    while got < head.len() {
        match r.read(&mut head[got..])? {
            0 => break,
            n => got += n,
        }
    }
    let mut whole = io::Cursor::new(&head[..got]).chain(r);
    let mut hash = HashWriter(Sha256::new());
    match super::source::detect(&head[..got]) {
        Ok(super::source::Compression::Gzip) => {
            io::copy(&mut flate2::read::MultiGzDecoder::new(whole), &mut hash)?;
        }
        Ok(super::source::Compression::Zstd) => {
            let mut d = zstd::stream::read::Decoder::new(whole)?;
            d.window_log_max(27)?;
            io::copy(&mut d, &mut hash)?;
        }
        // bzip2/xz members (which docker accepts too) are hashed as they
        // are: the mismatch then says so.
        _ => {
            io::copy(&mut whole, &mut hash)?;
        }
    }
    Ok(format!("sha256:{}", crate::digest::hex(&hash.0.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> String {
        format!("sha256:{}", crate::digest::hex(&Sha256::digest(b)))
    }

    #[test]
    fn plain_and_compressed_members_hash_to_the_uncompressed_digest() {
        let tar = vec![7u8; 100_000];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        for stored in [&tar, &gz, &zst] {
            assert_eq!(diff_id_of(&stored[..]).unwrap(), sha(&tar));
        }
    }

    #[test]
    fn the_last_read_fails_on_a_mismatch() {
        let data = vec![1u8; 70_000];
        let good = sha(&data);
        let mut src = &data[..];
        let mut r = Verifying::new(&mut src, data.len() as u64, &good, "layer 1".into(), None);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(r.finish().unwrap(), Some(good));

        let bad = sha(b"other");
        let mut src = &data[..];
        let mut r = Verifying::new(&mut src, data.len() as u64, &bad, "layer 1".into(), None);
        let mut buf = vec![0u8; data.len()];
        let e = r.read_exact(&mut buf).unwrap_err().to_string();
        assert!(
            e.contains("layer 1") && e.contains("does not match its diff_id"),
            "{e}"
        );
        assert!(r.finish().is_err());
    }

    #[test]
    fn early_end_and_empty_layers() {
        let mut src = &b"abc"[..];
        let mut r = Verifying::new(&mut src, 5, "x", "layer 2".into(), None);
        let e = r.read_to_end(&mut Vec::new()).unwrap_err().to_string();
        assert!(e.contains("layer 2") && e.contains("truncated"), "{e}");
        let empty = sha(b"");
        let mut src = &b""[..];
        let r = Verifying::new(&mut src, 0, &empty, "layer 3".into(), None);
        assert_eq!(r.finish().unwrap(), Some(empty));
    }
}
