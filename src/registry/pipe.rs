//! Feeding a blob's producer into an HTTP request body with bounded
//! memory: the producer (a `Fn(&mut dyn Write)`) runs on its own thread
//! and hands 64 KiB chunks through a channel of 8 to the request's reader,
//! hashing and counting on the way, so the digest and size are known when
//! the body ends, and at most ~600 KiB of a blob is in memory per upload.
//!
//! The body ends with an explicit end mark: if the producer fails or
//! panics, the reader returns an error instead of a clean end, so a
//! truncated blob is never completed.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use sha2::{Digest, Sha256};

use super::blob::{BlobDigest, Producer};

const CHUNK: usize = 64 * 1024;
const DEPTH: usize = 8;

enum Msg {
    Data(Vec<u8>),
    End,
    Failed,
}

/// How the producer ended.
pub enum Produced {
    /// All bytes written: their digest and size.
    Done(BlobDigest),
    /// The producer returned an error of its own (not caused by the
    /// request going away): not worth retrying.
    Failed(anyhow::Error),
    /// The reader stopped reading (the request failed or was answered
    /// early); the request's outcome says why.
    Abandoned,
}

/// Runs `produce` into `consume`'s reader; returns both outcomes.
pub fn stream<R>(
    produce: &Producer<'_>,
    consume: impl FnOnce(&mut dyn Read) -> R,
) -> (R, Produced) {
    let (tx, rx) = sync_channel::<Msg>(DEPTH);
    let gone = &AtomicBool::new(false);
    std::thread::scope(|s| {
        let producer = s.spawn(move || {
            let mut w = ChanWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
                hasher: Sha256::new(),
                size: 0,
                gone,
            };
            let r = produce(&mut w).and_then(|()| w.flush().map_err(anyhow::Error::from));
            match r {
                Ok(()) => {
                    let _ = tx.send(Msg::End);
                    Produced::Done(BlobDigest {
                        digest: format!("sha256:{:x}", w.hasher.finalize_reset()),
                        size: w.size,
                    })
                }
                Err(_) if gone.load(Ordering::SeqCst) => Produced::Abandoned,
                Err(e) => {
                    let _ = tx.send(Msg::Failed);
                    Produced::Failed(e)
                }
            }
        });
        let mut reader = ChanReader {
            rx,
            cur: Vec::new(),
            pos: 0,
            ended: false,
        };
        let r = consume(&mut reader);
        // Unblock a producer still writing.
        drop(reader);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Produced::Failed(anyhow::anyhow!("the blob's producer panicked")));
        (r, produced)
    })
}

/// Runs `produce` into nothing but a hasher: the digest and size.
pub fn hash_only(produce: &Producer<'_>) -> anyhow::Result<BlobDigest> {
    let mut w = HashWriter {
        hasher: Sha256::new(),
        size: 0,
    };
    produce(&mut w)?;
    Ok(BlobDigest {
        digest: format!("sha256:{:x}", w.hasher.finalize()),
        size: w.size,
    })
}

struct HashWriter {
    hasher: Sha256,
    size: u64,
}

impl Write for HashWriter {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.hasher.update(b);
        self.size += b.len() as u64;
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct ChanWriter<'a> {
    tx: SyncSender<Msg>,
    buf: Vec<u8>,
    hasher: Sha256,
    size: u64,
    gone: &'a AtomicBool,
}

impl ChanWriter<'_> {
    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.send(Msg::Data(chunk)).map_err(|_| {
            self.gone.store(true, Ordering::SeqCst);
            io::Error::new(io::ErrorKind::BrokenPipe, "the upload request ended")
        })
    }
}

impl Write for ChanWriter<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = b.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&b[..n]);
        self.hasher.update(&b[..n]);
        self.size += n as u64;
        if self.buf.len() == CHUNK {
            self.send_buf()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.send_buf()
    }
}

struct ChanReader {
    rx: Receiver<Msg>,
    cur: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Data(d)) => {
                    self.cur = d;
                    self.pos = 0;
                }
                Ok(Msg::End) => self.ended = true,
                Ok(Msg::Failed) | Err(_) => {
                    return Err(io::Error::other("the blob's producer failed"));
                }
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_hashes_and_ends() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let produce = |w: &mut dyn Write| -> anyhow::Result<()> {
            for c in data.chunks(1000) {
                w.write_all(c)?;
            }
            Ok(())
        };
        let (got, p) = stream(&produce, |r| {
            let mut v = Vec::new();
            r.read_to_end(&mut v).map(|_| v)
        });
        assert_eq!(got.unwrap(), data);
        let Produced::Done(d) = p else {
            panic!("not done")
        };
        assert_eq!(d.size, 300_000);
        assert_eq!(d, hash_only(&produce).unwrap());
        assert_eq!(d.digest, format!("sha256:{:x}", Sha256::digest(&data)));
    }

    #[test]
    fn a_failing_producer_fails_the_body() {
        let produce = |w: &mut dyn Write| -> anyhow::Result<()> {
            w.write_all(&[1; 100_000])?;
            anyhow::bail!("store read failed")
        };
        let (got, p) = stream(&produce, |r| r.read_to_end(&mut Vec::new()));
        assert!(got.is_err());
        assert!(matches!(p, Produced::Failed(e) if e.to_string() == "store read failed"));
    }

    #[test]
    fn a_reader_that_stops_abandons() {
        let produce = |w: &mut dyn Write| -> anyhow::Result<()> {
            for _ in 0..1000 {
                w.write_all(&[0; 65536])?;
            }
            Ok(())
        };
        let ((), p) = stream(&produce, |r| {
            let mut b = [0; 10];
            r.read_exact(&mut b).unwrap();
        });
        assert!(matches!(p, Produced::Abandoned));
    }
}
