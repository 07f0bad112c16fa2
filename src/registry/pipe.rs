//! Feeding a blob's producer into an HTTP request body with bounded
//! memory: the producer (a `Fn(&mut dyn Write)`) runs on its own thread
//! and hands 64 KiB chunks through a channel of 8 to the request's reader,
//! hashing and counting on the way, so the digest and size are known when
//! the body ends, and at most ~600 KiB of a blob is in memory per upload.
//!
//! [`stream_or_whole`] first holds up to `limit` bytes: a blob that ends
//! within them is handed over whole, its digest and size known before a
//! byte is sent (one `PUT` with a `Content-Length`); a longer one streams,
//! the held chunks first, so it is produced once either way. Memory is then
//! at most `limit` plus one chunk plus the channel per upload.
//! [`stream_or_whole_hinted`] does without the thread for a blob its size
//! hint says is small.
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
    /// The producer finished: the digest and size of all it wrote.
    End(BlobDigest),
    Failed,
}

/// How the producer ended.
#[derive(Debug)]
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

/// What [`stream_or_whole`] hands its consumer.
pub enum Start<'r> {
    /// The blob ended within the limit: all of it, read from memory, and
    /// its digest and size.
    Whole(&'r mut dyn Read, BlobDigest),
    /// The blob is longer: its bytes from the first, the rest as the
    /// producer writes them; digest and size in [`Produced`] at the end.
    Stream(&'r mut dyn Read),
}

/// Runs `produce` into `consume`'s reader; returns both outcomes.
pub fn stream<R>(
    produce: &Producer<'_>,
    self_hashed: bool,
    consume: impl FnOnce(&mut dyn Read) -> R,
) -> (R, Produced) {
    with_producer(produce, self_hashed, |rx| {
        consume(&mut ChanReader::new(rx, Vec::new()))
    })
}

/// Runs `produce`, holding its chunks until it ends or has written more
/// than `limit` bytes, then calls `consume` with [`Start::Whole`] or
/// [`Start::Stream`]. `Err`: the producer failed before that, and
/// `consume` was not called.
pub fn stream_or_whole<R>(
    produce: &Producer<'_>,
    self_hashed: bool,
    limit: u64,
    consume: impl FnOnce(Start<'_>) -> R,
) -> anyhow::Result<(R, Produced)> {
    let (r, produced) = with_producer(produce, self_hashed, |rx| {
        let mut held = Vec::new();
        let mut size = 0u64;
        while size <= limit {
            match rx.recv() {
                Ok(Msg::Data(d)) => {
                    size += d.len() as u64;
                    held.push(d);
                }
                Ok(Msg::End(blob)) => {
                    let mut body = ChanReader::new(rx, held);
                    body.ended = true;
                    return Some(consume(Start::Whole(&mut body, blob)));
                }
                // The producer's outcome says why.
                Ok(Msg::Failed) | Err(_) => return None,
            }
        }
        Some(consume(Start::Stream(&mut ChanReader::new(rx, held))))
    });
    match (r, produced) {
        (Some(r), produced) => Ok((r, produced)),
        (None, Produced::Failed(e)) => Err(e),
        // Not reached: the channel is open until the producer has ended.
        (None, _) => Err(anyhow::anyhow!("the blob's producer stopped early")),
    }
}

/// [`stream_or_whole`] for a blob of about `hint` bytes: if that is at
/// most half the `limit`, it is produced on this thread straight into
/// memory (no thread, no channel: for a push of many small layers, one
/// thread each cost more than the work), then handed over whole. One that
/// turns out longer than `limit` after all (a wrong hint) is dropped and
/// produced again the streaming way.
pub fn stream_or_whole_hinted<R>(
    produce: &Producer<'_>,
    self_hashed: bool,
    limit: u64,
    hint: u64,
    consume: impl FnOnce(Start<'_>) -> R,
) -> anyhow::Result<(R, Produced)> {
    if hint == 0 || hint > limit / 2 {
        return stream_or_whole(produce, self_hashed, limit, consume);
    }
    let mut held = Held {
        buf: Vec::with_capacity(usize::try_from(hint).unwrap_or(0) + CHUNK),
        hasher: (!self_hashed).then(Sha256::new),
        limit,
        over: false,
    };
    // A panic is an error, as on the producer's own thread.
    let produced = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| produce(&mut held)))
        .unwrap_or_else(|_| Err(anyhow::anyhow!("the blob's producer panicked")));
    let reported = match produced {
        Ok(reported) => reported,
        Err(_) if held.over => return stream_or_whole(produce, self_hashed, limit, consume),
        Err(e) => return Err(e),
    };
    let size = held.buf.len() as u64;
    let blob = written(held.hasher.take(), reported, size)?;
    let r = consume(Start::Whole(&mut &held.buf[..], blob.clone()));
    Ok((r, Produced::Done(blob)))
}

/// The digest and size of the `size` bytes a producer wrote: hashed on
/// the way (`hasher`), or as the producer itself `reported` them, which
/// must then be for exactly those bytes.
fn written(
    hasher: Option<Sha256>,
    reported: Option<BlobDigest>,
    size: u64,
) -> anyhow::Result<BlobDigest> {
    match (hasher, reported) {
        (Some(h), _) => Ok(BlobDigest {
            digest: format!("sha256:{:x}", h.finalize()),
            size,
        }),
        (None, Some(d)) if d.size == size => Ok(d),
        (None, _) => Err(anyhow::anyhow!(
            "internal: the blob's producer did not report the digest of the {size} bytes it wrote"
        )),
    }
}

/// A blob held whole in memory, up to a limit.
struct Held {
    buf: Vec<u8>,
    /// None when the producer hashes what it writes itself.
    hasher: Option<Sha256>,
    limit: u64,
    /// Set when a write would have passed `limit` (and failed).
    over: bool,
}

impl Write for Held {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let need = self.buf.len() + b.len();
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        if need > limit {
            self.over = true;
            return Err(io::Error::other("the blob is longer than its size hint"));
        }
        // Grown by doubling as a Vec would, but never past the limit: at
        // most `limit` bytes held, as when streamed.
        if need > self.buf.capacity() {
            let want = need.max(2 * self.buf.capacity()).min(limit);
            self.buf.reserve_exact(want - self.buf.len());
        }
        self.buf.extend_from_slice(b);
        if let Some(h) = &mut self.hasher {
            h.update(b);
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `produce` on its own thread, writing into the channel `read`
/// takes; returns what `read` returned and how the producer ended. The
/// channel closes when `read` returns, which unblocks a producer still
/// writing. The bytes are hashed on the way unless `self_hashed`: then
/// the producer's own digest is taken (its size checked against the
/// bytes counted here).
fn with_producer<R>(
    produce: &Producer<'_>,
    self_hashed: bool,
    read: impl FnOnce(Receiver<Msg>) -> R,
) -> (R, Produced) {
    let (tx, rx) = sync_channel::<Msg>(DEPTH);
    let gone = &AtomicBool::new(false);
    std::thread::scope(|s| {
        let producer = s.spawn(move || {
            let mut w = ChanWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
                hasher: (!self_hashed).then(Sha256::new),
                size: 0,
                gone,
            };
            let r = produce(&mut w).and_then(|reported| {
                w.send_buf()?;
                written(w.hasher.take(), reported, w.size)
            });
            match r {
                Ok(blob) => {
                    let _ = tx.send(Msg::End(blob.clone()));
                    Produced::Done(blob)
                }
                Err(_) if gone.load(Ordering::SeqCst) => Produced::Abandoned,
                Err(e) => {
                    let _ = tx.send(Msg::Failed);
                    Produced::Failed(e)
                }
            }
        });
        let r = read(rx);
        let produced = producer
            .join()
            .unwrap_or_else(|_| Produced::Failed(anyhow::anyhow!("the blob's producer panicked")));
        (r, produced)
    })
}

struct ChanWriter<'a> {
    tx: SyncSender<Msg>,
    buf: Vec<u8>,
    /// None when the producer hashes what it writes itself.
    hasher: Option<Sha256>,
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
        if let Some(h) = &mut self.hasher {
            h.update(&b[..n]);
        }
        self.size += n as u64;
        if self.buf.len() == CHUNK {
            self.send_buf()?;
        }
        Ok(n)
    }
    /// Sends nothing: every chunk but the last is full (held chunks then
    /// take no more memory than their bytes); the end sends the rest.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct ChanReader {
    /// Chunks received before reading began, read first.
    held: std::vec::IntoIter<Vec<u8>>,
    rx: Receiver<Msg>,
    cur: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl ChanReader {
    fn new(rx: Receiver<Msg>, held: Vec<Vec<u8>>) -> ChanReader {
        ChanReader {
            held: held.into_iter(),
            rx,
            cur: Vec::new(),
            pos: 0,
            ended: false,
        }
    }
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if let Some(d) = self.held.next() {
                self.cur = d;
                self.pos = 0;
                continue;
            }
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Data(d)) => {
                    self.cur = d;
                    self.pos = 0;
                }
                Ok(Msg::End(_)) => self.ended = true,
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
        let produce = |w: &mut dyn Write| -> anyhow::Result<Option<BlobDigest>> {
            for c in data.chunks(1000) {
                w.write_all(c)?;
            }
            Ok(None)
        };
        let (got, p) = stream(&produce, false, |r| {
            let mut v = Vec::new();
            r.read_to_end(&mut v).map(|_| v)
        });
        assert_eq!(got.unwrap(), data);
        let Produced::Done(d) = p else {
            panic!("not done")
        };
        assert_eq!(d, digest_of(&data));
    }

    /// Also [`stream_or_whole`] failing after it decided to stream.
    #[test]
    fn a_failing_producer_fails_the_body() {
        let produce = |w: &mut dyn Write| -> anyhow::Result<Option<BlobDigest>> {
            w.write_all(&[1; 100_000])?;
            anyhow::bail!("store read failed")
        };
        let (got, p) = stream(&produce, false, |r| r.read_to_end(&mut Vec::new()));
        assert!(got.is_err());
        assert!(matches!(p, Produced::Failed(e) if e.to_string() == "store read failed"));
        let (whole, got, p) = run(&produce, 50_000).unwrap();
        assert_eq!(whole, None);
        assert!(got.is_err());
        assert!(matches!(p, Produced::Failed(e) if e.to_string() == "store read failed"));
    }

    /// Also [`stream_or_whole`]'s reader, streaming.
    #[test]
    fn a_reader_that_stops_abandons() {
        let produce = |w: &mut dyn Write| -> anyhow::Result<Option<BlobDigest>> {
            for _ in 0..1000 {
                w.write_all(&[0; 65536])?;
            }
            Ok(None)
        };
        let read_10 = |r: &mut dyn Read| r.read_exact(&mut [0; 10]).unwrap();
        let ((), p) = stream(&produce, false, read_10);
        assert!(matches!(p, Produced::Abandoned));
        let ((), p) = stream_or_whole(&produce, false, 1000, |start| match start {
            Start::Stream(r) => read_10(r),
            Start::Whole(..) => panic!("whole"),
        })
        .unwrap();
        assert!(matches!(p, Produced::Abandoned));
    }

    /// `n` bytes of a pattern, written in odd-sized pieces (chunks of the
    /// channel do not line up with them).
    fn pattern(
        n: usize,
    ) -> (
        Vec<u8>,
        impl Fn(&mut dyn Write) -> anyhow::Result<Option<BlobDigest>> + Sync,
    ) {
        let data: Vec<u8> = (0..n as u32).map(|i| (i % 251) as u8).collect();
        let d = data.clone();
        let produce = move |w: &mut dyn Write| -> anyhow::Result<Option<BlobDigest>> {
            for c in d.chunks(1000) {
                w.write_all(c)?;
            }
            Ok(None)
        };
        (data, produce)
    }

    /// `stream_or_whole` with a consumer that reads everything: whether
    /// it was whole (and with which digest), the bytes, how it ended.
    fn run(
        produce: &Producer<'_>,
        limit: u64,
    ) -> anyhow::Result<(Option<BlobDigest>, io::Result<Vec<u8>>, Produced)> {
        let ((whole, got), p) = stream_or_whole(produce, false, limit, |start| {
            let mut v = Vec::new();
            match start {
                Start::Whole(r, d) => (Some(d), r.read_to_end(&mut v).map(|_| v)),
                Start::Stream(r) => (None, r.read_to_end(&mut v).map(|_| v)),
            }
        })?;
        Ok((whole, got, p))
    }

    fn digest_of(data: &[u8]) -> BlobDigest {
        BlobDigest {
            digest: format!("sha256:{:x}", Sha256::digest(data)),
            size: data.len() as u64,
        }
    }

    #[test]
    fn whole_under_and_at_the_limit() {
        for (n, limit) in [
            (300_000, 1 << 20),
            (300_000, 300_000),
            (CHUNK * 3, CHUNK as u64 * 3),
            (0, 0),
        ] {
            let (data, produce) = pattern(n);
            let (whole, got, p) = run(&produce, limit).unwrap();
            assert_eq!(whole, Some(digest_of(&data)), "{n} bytes, limit {limit}");
            assert_eq!(got.unwrap(), data);
            assert!(matches!(p, Produced::Done(d) if d == digest_of(&data)));
        }
    }

    #[test]
    fn one_byte_over_the_limit_streams_every_byte_in_order() {
        // Over by one within a chunk, and over by one just past a full
        // chunk (the held chunks end exactly at the limit).
        for (n, limit) in [(300_001, 300_000), (CHUNK * 3 + 1, CHUNK as u64 * 3)] {
            let (data, produce) = pattern(n);
            let (whole, got, p) = run(&produce, limit).unwrap();
            assert_eq!(whole, None, "{n} bytes, limit {limit}");
            assert_eq!(got.unwrap(), data);
            assert!(matches!(p, Produced::Done(d) if d == digest_of(&data)));
        }
        let (data, produce) = pattern(1);
        let (whole, got, _) = run(&produce, 0).unwrap();
        assert_eq!((whole, got.unwrap()), (None, data));
    }

    #[test]
    fn a_producer_failing_before_the_decision_is_not_consumed() {
        let produce = |w: &mut dyn Write| -> anyhow::Result<Option<BlobDigest>> {
            w.write_all(&[1; 100_000])?;
            anyhow::bail!("store read failed")
        };
        let called = std::cell::Cell::new(false);
        let e = stream_or_whole(&produce, false, 1 << 20, |_| called.set(true)).unwrap_err();
        assert_eq!(e.to_string(), "store read failed");
        assert!(!called.get());
        let panics = |_: &mut dyn Write| -> anyhow::Result<Option<BlobDigest>> { panic!("boom") };
        let e = stream_or_whole(&panics, false, 1 << 20, |_| called.set(true)).unwrap_err();
        assert_eq!(e.to_string(), "the blob's producer panicked");
        assert!(!called.get());
    }

    /// Hinted small: produced here and handed over whole, once; hinted
    /// wrong (longer than the limit after all): produced again and
    /// streamed, every byte in order; failing or panicking: an error, and
    /// nothing consumed; hinted large or unknown: as `stream_or_whole`.
    #[test]
    fn hinted_small_blobs_are_made_here() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let hinted = |n: usize, limit: u64, hint: u64| {
            let (data, write) = pattern(n);
            calls.store(0, Ordering::SeqCst);
            let counted = |w: &mut dyn Write| {
                calls.fetch_add(1, Ordering::SeqCst);
                write(w)
            };
            let ((whole, got), p) = stream_or_whole_hinted(&counted, false, limit, hint, |start| {
                let mut v = Vec::new();
                match start {
                    Start::Whole(r, d) => (Some(d), r.read_to_end(&mut v).map(|_| v)),
                    Start::Stream(r) => (None, r.read_to_end(&mut v).map(|_| v)),
                }
            })
            .unwrap();
            assert_eq!(got.unwrap(), data);
            assert!(matches!(p, Produced::Done(d) if d == digest_of(&data)));
            (whole.is_some(), calls.load(Ordering::SeqCst))
        };
        assert_eq!(hinted(300_000, 1 << 20, 300_000), (true, 1));
        assert_eq!(hinted(0, 1 << 20, 1), (true, 1));
        assert_eq!(hinted(300_001, 300_000, 1000), (false, 2));
        assert_eq!(hinted(CHUNK * 3, 1 << 20, 0), (true, 1));
        assert_eq!(hinted(CHUNK * 30, 1 << 20, CHUNK as u64 * 30), (false, 1));

        let failing = |w: &mut dyn Write| -> anyhow::Result<Option<BlobDigest>> {
            w.write_all(&[1; 1000])?;
            anyhow::bail!("store read failed")
        };
        let called = std::cell::Cell::new(false);
        let e = stream_or_whole_hinted(&failing, false, 1 << 20, 1000, |_| called.set(true))
            .unwrap_err();
        assert_eq!(e.to_string(), "store read failed");
        let panics = |_: &mut dyn Write| -> anyhow::Result<Option<BlobDigest>> { panic!("boom") };
        let e = stream_or_whole_hinted(&panics, false, 1 << 20, 1000, |_| called.set(true))
            .unwrap_err();
        assert_eq!(e.to_string(), "the blob's producer panicked");
        assert!(!called.get());

        let (_, write) = pattern(1000);
        let said = |size: u64| BlobDigest {
            digest: format!("sha256:{}", "cd".repeat(32)),
            size,
        };
        let honest = |w: &mut dyn Write| write(w).map(|_| Some(said(1000)));
        let ((), p) = stream_or_whole_hinted(&honest, true, 1 << 20, 1000, |start| match start {
            Start::Whole(_, d) => assert_eq!(d, said(1000)),
            Start::Stream(_) => panic!("streamed"),
        })
        .unwrap();
        assert!(matches!(p, Produced::Done(d) if d == said(1000)));
        let short = |w: &mut dyn Write| write(w).map(|_| Some(said(999)));
        let e = stream_or_whole_hinted(&short, true, 1 << 20, 1000, |_| ()).unwrap_err();
        assert!(e.to_string().contains("did not report"), "{e}");
    }

    /// A producer that hashes what it writes itself: its digest is taken
    /// as is (here a made-up one, to show nothing hashed it again), but
    /// only for as many bytes as it wrote.
    #[test]
    fn a_self_hashed_producer_is_taken_at_its_word() {
        let (data, write) = pattern(300_000);
        let said = |size: u64| BlobDigest {
            digest: format!("sha256:{}", "ab".repeat(32)),
            size,
        };
        let honest = |w: &mut dyn Write| write(w).map(|_| Some(said(300_000)));
        let (got, p) = stream(&honest, true, |r| {
            let mut v = Vec::new();
            r.read_to_end(&mut v).map(|_| v)
        });
        assert_eq!(got.unwrap(), data);
        assert!(matches!(p, Produced::Done(d) if d == said(300_000)));
        let ((), p) = stream_or_whole(&honest, true, 1 << 20, |start| match start {
            Start::Whole(_, d) => assert_eq!(d, said(300_000)),
            Start::Stream(_) => panic!("streamed"),
        })
        .unwrap();
        assert!(matches!(p, Produced::Done(_)));
        let short = |w: &mut dyn Write| write(w).map(|_| Some(said(299_999)));
        let e = stream_or_whole(&short, true, 1 << 20, |_| ()).unwrap_err();
        assert!(e.to_string().contains("did not report"), "{e}");
        let silent = |w: &mut dyn Write| write(w);
        let (_, p) = stream(&silent, true, |r| r.read_to_end(&mut Vec::new()));
        assert!(matches!(p, Produced::Failed(_)));
    }
}
