//! The gzip layer encoder: one gzip member whose deflate stream is cut into
//! fixed-size blocks compressed on several cores at once, as pigz does.
//!
//! A single deflate stream runs on one core (about 60 MB/s at level 6),
//! which makes the largest layer the bottleneck of a push or an OCI
//! archive. Here the input is cut every [`BLOCK`] bytes; each block is
//! deflated on its own, primed with the 32 KiB of input before it as the
//! dictionary (so matches still reach back across the cut), and ends with
//! a sync flush (an empty stored block) that leaves the stream
//! byte-aligned, so the compressed blocks concatenate into one valid
//! deflate stream. The last block ends the stream instead.
//!
//! A block whose byte frequencies are near-uniform (already compressed
//! data: `.gz`, `.xz`, `.jar`, images, firmware; random test data) is
//! stored instead of deflated, as klauspost/compress (skopeo, containerd)
//! and zstd do: deflate cannot shrink it, and trying runs at a crawl.
//! The test is exact integer arithmetic on the block's byte counts
//! ([`incompressible`]), so it decides the same way on every machine.
//!
//! What each block compresses to depends only on its bytes, the bytes
//! before it and the level, never on which thread ran it or when, so the
//! output is the same whatever the thread count: the blob digest stays a
//! function of the layer's contents. The CRC-32 and size in the trailer
//! are computed in order on the caller's thread (CRC-32 runs at several
//! GB/s, far ahead of deflate).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, OnceLock};

use flate2::{Compress, Compression, FlushCompress, Status};

/// Input bytes per independently compressed block. Part of the pinned
/// format: changing it changes every gzip blob digest.
pub const BLOCK: usize = 256 * 1024;
/// The deflate window: how much of the previous block primes the next.
const DICTIONARY: usize = 32 * 1024;
/// Pinned deflate level.
pub const LEVEL: u32 = 6;
/// The gzip header: magic, deflate, no flags, mtime 0, no extra flags,
/// OS 255 (unknown), as `flate2::GzBuilder` writes it.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// The threads that deflate blocks, shared by every encoder in the
/// process: as many as rayon's (so `RAYON_NUM_THREADS` bounds both).
/// They are not rayon's own workers because those may be busy producing
/// the very layers whose blocks wait here.
fn shared_pool() -> &'static Arc<rayon::ThreadPool> {
    static POOL: OnceLock<Arc<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| Arc::new(pool(rayon::current_num_threads())))
}

/// A deflate pool of `threads` threads.
fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("gzip-{i}"))
        .build()
        // Building a pool fails only if threads cannot be spawned; then
        // nothing else in the process could run either.
        .expect("cannot start the gzip threads")
}

/// Streams a gzip member into `W`, deflating blocks in parallel.
pub struct GzipEncoder<W: Write> {
    out: W,
    pool: Arc<rayon::ThreadPool>,
    /// The block being filled.
    block: Vec<u8>,
    /// The last [`DICTIONARY`] bytes of the previous block.
    dictionary: Arc<Vec<u8>>,
    /// Blocks handed to the pool, oldest first; written out in this order.
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    /// How many blocks may be in flight (bounds memory to a few MiB).
    max_pending: usize,
    crc: flate2::Crc,
    header_written: bool,
}

impl<W: Write> GzipEncoder<W> {
    /// An encoder on the shared pool.
    pub fn new(out: W) -> GzipEncoder<W> {
        GzipEncoder::on(out, Arc::clone(shared_pool()))
    }

    fn on(out: W, pool: Arc<rayon::ThreadPool>) -> GzipEncoder<W> {
        // One more block than threads keeps every thread busy while the
        // oldest block is written out.
        let max_pending = pool.current_num_threads() + 1;
        GzipEncoder {
            out,
            pool,
            block: Vec::with_capacity(BLOCK),
            dictionary: Arc::new(Vec::new()),
            pending: VecDeque::new(),
            max_pending,
            crc: flate2::Crc::new(),
            header_written: false,
        }
    }

    /// Hands the current block to the pool.
    fn submit(&mut self, last: bool) -> io::Result<()> {
        let block = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        let dictionary = std::mem::replace(
            &mut self.dictionary,
            Arc::new(block[block.len().saturating_sub(DICTIONARY)..].to_vec()),
        );
        let (tx, rx) = mpsc::sync_channel(1);
        self.pool.spawn(move || {
            // The receiver may be gone (the encoder was dropped mid-way).
            let _ = tx.send(deflate_block(&dictionary, &block, last));
        });
        self.pending.push_back(rx);
        while self.pending.len() >= self.max_pending {
            self.write_oldest()?;
        }
        // Pass on whatever is already done, without waiting.
        while let Some(Ok(done)) = self.pending.front().map(Receiver::try_recv) {
            self.pending.pop_front();
            self.emit(done?)?;
        }
        Ok(())
    }

    /// Waits for the oldest block and writes it out.
    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(rx) = self.pending.pop_front() else {
            return Ok(());
        };
        let done = rx
            .recv()
            .map_err(|_| io::Error::other("a gzip thread stopped"))??;
        self.emit(done)
    }

    fn emit(&mut self, compressed: Vec<u8>) -> io::Result<()> {
        if !self.header_written {
            self.out.write_all(&HEADER)?;
            self.header_written = true;
        }
        self.out.write_all(&compressed)
    }

    /// Ends the member (last block, CRC-32 and size) and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
        self.out.write_all(&trailer)?;
        Ok(self.out)
    }
}

impl<W: Write> Write for GzipEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        if self.block.len() == BLOCK {
            self.submit(false)?;
        }
        Ok(n)
    }

    /// Writes out the blocks already compressed; a partial block stays,
    /// since cutting it here would make the bytes depend on flush timing.
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Deflates one block primed with `dictionary`: raw deflate, ending with
/// a sync flush, or with the final block when `last`.
fn deflate_block(dictionary: &[u8], data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    if incompressible(data) {
        return Ok(stored_blocks(data, last));
    }
    // A fresh state per block: a reset one is not enough, since zlib-rs
    // keeps the previous stream's bytes in its window, and match finding
    // near the input's end can peek at them (the bytes would then depend
    // on which block a thread compressed before).
    let mut c = Compress::new(Compression::new(LEVEL), false);
    {
        if !dictionary.is_empty() {
            c.set_dictionary(dictionary).map_err(io::Error::other)?;
        }
        let flush = if last {
            FlushCompress::Finish
        } else {
            FlushCompress::Sync
        };
        let mut out = Vec::with_capacity(data.len() / 2 + 1024);
        let start = c.total_in();
        loop {
            if out.capacity() - out.len() < 1024 {
                out.reserve(out.capacity().max(64 * 1024));
            }
            let consumed = (c.total_in() - start) as usize;
            let status = c
                .compress_vec(&data[consumed..], &mut out, flush)
                .map_err(io::Error::other)?;
            let all_in = (c.total_in() - start) as usize == data.len();
            // Done when the input is in and deflate left output room (it
            // fills the buffer whenever it has more to give).
            match status {
                Status::StreamEnd => break,
                _ if !last && all_in && out.len() < out.capacity() => break,
                _ => {}
            }
        }
        Ok(out)
    }
}

/// Whether `data`'s byte frequencies are so close to uniform that
/// deflate's Huffman coding could save under about 0.02 bits a byte
/// (0.25 %) and only long matches could help, which such data lacks.
///
/// The measure is the χ² statistic of the byte counts against uniform,
/// Σ (c − n/256)² / (n/256), which for near-uniform counts is
/// 2 n ln 2 times the bits a byte an order-0 code saves; the threshold is
/// χ² ≤ n / 36 (0.02 bits a byte). Random data scores about 255, text
/// and binaries millions. Small blocks are always deflated (their χ² is
/// noise, and they cost little).
fn incompressible(data: &[u8]) -> bool {
    const MIN: usize = 64 * 1024;
    if data.len() < MIN {
        return false;
    }
    let mut counts = [0u64; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let n = data.len() as u128;
    // Scaled by 256 to stay in integers: Σ (256 c − n)² ≤ 256 n² / 36.
    let spread: u128 = counts
        .iter()
        .map(|&c| {
            let d = (256 * c as i128 - n as i128).unsigned_abs();
            d * d
        })
        .sum();
    spread * 36 <= 256 * n * n
}

/// `data` as deflate stored blocks (at most 65,535 bytes each), starting
/// on a byte boundary as every block here does; the last is final when
/// `last`.
fn stored_blocks(data: &[u8], last: bool) -> Vec<u8> {
    const MAX: usize = 65_535;
    let mut out = Vec::with_capacity(data.len() + data.len() / MAX * 5 + 5);
    let mut chunks = data.chunks(MAX).peekable();
    while let Some(chunk) = chunks.next() {
        let is_final = last && chunks.peek().is_none();
        // BFINAL in bit 0, BTYPE 00 (stored), then padding to the byte.
        out.push(u8::from(is_final));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn encode(pool: &Arc<rayon::ThreadPool>, data: &[u8], writes: usize) -> Vec<u8> {
        let mut e = GzipEncoder::on(Vec::new(), Arc::clone(pool));
        for part in data.chunks(writes.max(1)) {
            e.write_all(part).unwrap();
        }
        e.finish().unwrap()
    }

    fn sample(n: usize) -> Vec<u8> {
        // Compressible but not trivial: text-like runs with a drifting seed.
        let mut x = 0x2545_f491u32;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if i % 7 < 4 {
                    b"nix store path "[i % 15]
                } else {
                    (x % 61) as u8 + b'A'
                }
            })
            .collect()
    }

    fn random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn incompressible_blocks_are_stored() {
        assert!(incompressible(&random(BLOCK, 1)));
        assert!(!incompressible(&sample(BLOCK)));
        assert!(!incompressible(&random(1000, 1)), "small blocks deflate");
        // Half random, half text is worth deflating.
        let mut mixed = random(BLOCK / 2, 2);
        mixed.extend_from_slice(&sample(BLOCK / 2));
        assert!(!incompressible(&mixed));
        // A layer of text, random bytes, then text again: stored blocks in
        // the middle, and it all reads back as one member.
        let mut data = sample(BLOCK + 100);
        data.extend_from_slice(&random(2 * BLOCK + 5, 3));
        data.extend_from_slice(&sample(BLOCK));
        let pool = Arc::new(pool(2));
        let gz = encode(&pool, &data, 50_000);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // The random part costs its size plus 5 bytes per 64 KiB.
        let text_only = encode(&pool, &sample(BLOCK + 100), 50_000).len();
        assert!(gz.len() < text_only * 2 + 2 * BLOCK + 5 + 2 * BLOCK / 65535 * 5 + 4096);
        // Ending on a stored block: the final flag is on its last piece.
        let tail = random(BLOCK + 70_000, 4);
        let gz = encode(&pool, &tail, BLOCK);
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, tail);
    }

    #[test]
    fn round_trips_at_block_edges() {
        let one = Arc::new(pool(1));
        for n in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 12345] {
            let data = sample(n);
            let gz = encode(&one, &data, 100_000);
            assert_eq!(&gz[..10], &HEADER);
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&gz[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "{n} bytes");
            // One member: the decoder that stops at the first member's end
            // must have consumed all of it.
            let mut multi = flate2::read::MultiGzDecoder::new(&gz[..]);
            let mut again = Vec::new();
            multi.read_to_end(&mut again).unwrap();
            assert_eq!(again, data);
        }
    }

    /// The bytes depend on neither the thread count nor how the input
    /// was cut into writes.
    #[test]
    fn same_bytes_whatever_the_threads() {
        let data = sample(5 * BLOCK + 999);
        let one = encode(&Arc::new(pool(1)), &data, BLOCK);
        assert_eq!(encode(&Arc::new(pool(3)), &data, 4096), one);
        // Whole blocks at once on three threads: which thread compresses
        // which block varies from run to run (this caught a reused deflate
        // state leaking one block's bytes into another's).
        for _ in 0..3 {
            assert_eq!(encode(&Arc::new(pool(3)), &data, BLOCK), one);
        }
        assert_eq!(encode(&Arc::new(pool(2)), &data, 777_777), one);
        // The dictionary carries matches across cuts: repeating data costs
        // next to nothing (without it, ~10 KB) even when the repeat
        // straddles a block edge.
        let mut twice = data.clone();
        twice.extend_from_slice(&data[data.len() - 20_000..]);
        let two = encode(&Arc::new(pool(2)), &twice, 65536);
        assert!(
            two.len() < one.len() + 1000,
            "{} vs {}",
            two.len(),
            one.len()
        );
    }
}
