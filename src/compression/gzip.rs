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
//! Within a block, runs of 512-byte units (tar records) whose byte
//! frequencies are near-uniform and whose 4-byte words do not recur
//! (already compressed data: `.gz`, `.xz`, `.jar`, images, firmware;
//! random test data) are written as stored blocks instead of deflated, as
//! klauspost/compress (skopeo, containerd) and zstd skip such data:
//! deflate cannot shrink it and crawls through it (about 40 MB/s a core
//! here). Units as small as a tar record let a header between two files'
//! random contents be compressed alone. The tests are exact integer
//! arithmetic on each unit's bytes ([`uniform`], [`repeats`]), so they
//! decide the same way on every machine.
//!
//! Such a short run beside a stored one (an island: headers, directories,
//! small files) is written in deflate's fixed Huffman code by
//! [`blocks::fixed_into`], in a microsecond where a fresh zlib state and
//! its Huffman trees cost tens. Other runs go to zlib-rs: a block's first
//! primed with the 32 KiB before the block, one after a stored run afresh.
//!
//! What each block compresses to depends only on its bytes, the bytes
//! before it and the level, never on which thread ran it or when, so the
//! output is the same whatever the thread count: the blob digest stays a
//! function of the layer's contents. The CRC-32 and size in the trailer
//! are computed in order on the caller's thread (CRC-32 runs at several
//! GB/s, far ahead of deflate).

use std::io::{self, Write};
use std::sync::Arc;

use flate2::{Compress, Compression, FlushCompress, Status};

use super::blocks;
use super::parallel::{shared_pool, InOrder, Pool};

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

/// Streams a gzip member into `W`, deflating blocks in parallel.
pub struct GzipEncoder<W: Write> {
    /// Blocks on the pool, written out in order after the header.
    blocks: InOrder<W>,
    /// The block being filled.
    block: Vec<u8>,
    /// The last [`DICTIONARY`] bytes of the previous block.
    dictionary: Arc<Vec<u8>>,
    crc: crc32fast::Hasher,
    /// Input bytes so far (the trailer's ISIZE).
    size: u64,
}

impl<W: Write> GzipEncoder<W> {
    /// An encoder on the shared pool.
    pub fn new(out: W) -> GzipEncoder<W> {
        GzipEncoder::on(out, Arc::clone(shared_pool()))
    }

    fn on(out: W, pool: Arc<Pool>) -> GzipEncoder<W> {
        GzipEncoder {
            blocks: InOrder::new(out, pool, &HEADER),
            block: Vec::with_capacity(BLOCK),
            dictionary: Arc::new(Vec::new()),
            crc: crc32fast::Hasher::new(),
            size: 0,
        }
    }

    /// Hands the current block to the pool.
    fn submit(&mut self, last: bool) -> io::Result<()> {
        let block = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        let dictionary = std::mem::replace(
            &mut self.dictionary,
            Arc::new(block[block.len().saturating_sub(DICTIONARY)..].to_vec()),
        );
        self.blocks
            .submit(move || deflate_block(&dictionary, &block, last))
    }

    /// Ends the member (last block, CRC-32 and size) and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.submit(true)?;
        let mut out = self.blocks.finish()?;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.finalize().to_le_bytes());
        // ISIZE: the input size modulo 2^32.
        trailer[4..].copy_from_slice(&(self.size as u32).to_le_bytes());
        out.write_all(&trailer)?;
        Ok(out)
    }
}

impl<W: Write> Write for GzipEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(BLOCK - self.block.len());
        self.block.extend_from_slice(&buf[..n]);
        self.crc.update(&buf[..n]);
        self.size += n as u64;
        if self.block.len() == BLOCK {
            self.submit(false)?;
        }
        Ok(n)
    }

    /// Writes out the blocks already compressed; a partial block stays,
    /// since cutting it here would make the bytes depend on flush timing.
    fn flush(&mut self) -> io::Result<()> {
        self.blocks.flush()
    }
}

/// Compresses one block primed with `dictionary` (the input before it):
/// its random-looking runs as stored blocks, short islands between them
/// in the fixed Huffman code, the rest deflated; the output ends
/// byte-aligned (a sync flush), or ends the stream when `last`.
fn deflate_block(dictionary: &[u8], data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let runs = runs(data);
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    if runs.is_empty() {
        // An empty last block still ends the stream.
        deflate_into(&mut out, dictionary, &[], last)?;
        return Ok(out);
    }
    let count = runs.len();
    for (k, (range, run)) in runs.into_iter().enumerate() {
        let end_stream = last && k + 1 == count;
        let bytes = &data[range];
        match run {
            Run::Stored => blocks::stored_into(&mut out, bytes, end_stream),
            Run::Island => blocks::fixed_into(&mut out, bytes, end_stream),
            // Runs alternate, so a deflated run is either the block's first
            // (primed with the input before the block) or follows a stored
            // one: random bytes, nothing to match, so it starts afresh
            // (priming costs as much as deflating 32 KiB).
            Run::Deflated => {
                let window = if k == 0 { dictionary } else { &[][..] };
                deflate_into(&mut out, window, bytes, end_stream)?;
            }
        }
    }
    Ok(out)
}

/// Bytes per unit the stored-or-deflated decision is made for: a tar
/// record, so a header between two files' random contents is compressed
/// alone while the contents around it are stored.
const UNIT: usize = 512;
/// The longest island: a non-random run next to a stored one that is
/// written in the fixed Huffman code ([`blocks::fixed_into`]) instead of
/// by zlib. 16 KiB: headers, directories and small files between
/// compressed ones. On the push bench's store of random files, 8 units
/// left a tenth of the CPU in zlib; 32 cost 0.1 % in size over zlib's.
const ISLAND_UNITS: usize = 32;
/// The most pairs of equal bytes a random unit has: Σ c(c − 1)/2 over the
/// byte counts c, which is χ² + 256 for 512 bytes (χ² against uniform:
/// random data scores 255 on average, standard deviation 23; this allows
/// χ² ≤ 400, six deviations above, while text, code and tar headers score
/// thousands).
const MAX_PAIRS: u32 = 656;
/// Slots of the table of recently seen 4-byte words (see [`repeats`]).
const SLOT_BITS: u32 = 12;

/// How a run of a block's units is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    /// Random-looking units: stored blocks.
    Stored,
    /// At most [`ISLAND_UNITS`] other units next to a stored run (tar
    /// headers between compressed files): the fixed Huffman code.
    Island,
    /// The rest: zlib-rs at [`LEVEL`].
    Deflated,
}

/// `data` cut into runs of whole units that look random (stored) and runs
/// of the rest (islands or deflated), in order. A random run must be at
/// least two units long to be worth a switch; a trailing partial unit is
/// never stored.
fn runs(data: &[u8]) -> Vec<(std::ops::Range<usize>, Run)> {
    let mut seen = vec![0u64; 1 << SLOT_BITS];
    let units: Vec<bool> = data
        .chunks(UNIT)
        // The repeat check first: it looks at a quarter of the words and
        // stops at the second repeat, so most compressible data (zeros in
        // binaries, recurring words in text, tokens) is told apart cheaply.
        .map(|u| u.len() == UNIT && !repeats(u, &mut seen) && uniform(u))
        .collect();
    let mut out: Vec<(std::ops::Range<usize>, Run)> = Vec::new();
    let mut i = 0;
    while i < units.len() {
        let mut j = i;
        while j < units.len() && units[j] == units[i] {
            j += 1;
        }
        let run = if units[i] && j - i >= 2 {
            Run::Stored
        } else {
            Run::Deflated
        };
        let range = i * UNIT..(j * UNIT).min(data.len());
        match out.last_mut() {
            Some((r, s)) if *s == run => r.end = range.end,
            _ => out.push((range, run)),
        }
        i = j;
    }
    // Short non-random runs beside a stored one are islands.
    for k in 0..out.len() {
        let beside_stored = (k > 0 && out[k - 1].1 == Run::Stored)
            || out.get(k + 1).is_some_and(|(_, r)| *r == Run::Stored);
        let (range, run) = &mut out[k];
        if *run == Run::Deflated && beside_stored && range.len() <= ISLAND_UNITS * UNIT {
            *run = Run::Island;
        }
    }
    out
}

/// Whether a unit's byte frequencies are so close to uniform that
/// deflate's Huffman coding could save almost nothing (compressed or
/// encrypted files, random test data): at most [`MAX_PAIRS`] pairs of
/// equal bytes. Exact integers, so every machine decides alike; counting
/// stops as soon as the unit is over the limit, so skewed data (nearly
/// all that deflate can shrink) costs a fraction of a pass.
fn uniform(unit: &[u8]) -> bool {
    let mut counts = [0u16; 256];
    let mut pairs = 0u32;
    for part in unit.chunks(64) {
        for &b in part {
            let c = &mut counts[usize::from(b)];
            pairs += u32::from(*c);
            *c += 1;
        }
        if pairs > MAX_PAIRS {
            return false;
        }
    }
    true
}

/// Whether the unit's bytes repeat, which deflate's matches would shrink
/// even where the byte counts are uniform (a few hundred random tokens
/// used over and over): more than one of the unit's 4-byte words at
/// offsets divisible by 4 equals a word seen earlier in the block.
/// `seen` keeps the latest word per hash slot, so some repeats are missed,
/// but repeated tokens recur often enough to be caught, while random data
/// repeats a word about once in 8,000 units. Words at every fourth offset
/// only: a quarter of the work, and a recurring token lands on the same
/// offset modulo 4 one time in four.
fn repeats(unit: &[u8], seen: &mut [u64]) -> bool {
    let mut n = 0;
    for w in unit.chunks_exact(4) {
        let v = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        let slot = (v.wrapping_mul(0x9e37_79b1) >> (32 - SLOT_BITS)) as usize;
        // Tagged so an empty slot (0) matches no word.
        let tagged = u64::from(v) + 1;
        if seen[slot] == tagged {
            n += 1;
            if n > 1 {
                return true;
            }
        } else {
            seen[slot] = tagged;
        }
    }
    false
}

/// Raw-deflates `data` primed with `window` onto `out` at level
/// [`LEVEL`], ending with a sync flush, or with the final block when
/// `end_stream`.
fn deflate_into(out: &mut Vec<u8>, window: &[u8], data: &[u8], end_stream: bool) -> io::Result<()> {
    // A fresh state each time: a reset one is not enough, since zlib-rs
    // keeps the previous stream's bytes in its window, and match finding
    // near the input's end can peek at them (the bytes would then depend
    // on which block a thread compressed before).
    let mut c = Compress::new(Compression::new(LEVEL), false);
    if !window.is_empty() {
        c.set_dictionary(window).map_err(io::Error::other)?;
    }
    let flush = if end_stream {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    out.reserve(data.len() / 2 + 1024);
    let start = c.total_in();
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let consumed = (c.total_in() - start) as usize;
        let status = c
            .compress_vec(&data[consumed..], out, flush)
            .map_err(io::Error::other)?;
        let all_in = (c.total_in() - start) as usize == data.len();
        // Done when the input is in and deflate left output room (it
        // fills the buffer whenever it has more to give).
        match status {
            Status::StreamEnd => break,
            _ if !end_stream && all_in && out.len() < out.capacity() => break,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn encode(pool: &Arc<Pool>, data: &[u8], writes: usize) -> Vec<u8> {
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

    fn gunzip(gz: &[u8]) -> Vec<u8> {
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut back)
            .unwrap();
        back
    }

    /// How a block would write each unit of `data`, one letter per unit:
    /// 's' stored, 'i' island (fixed Huffman code), 'd' deflated.
    fn stored_units(data: &[u8]) -> String {
        let mut s = vec![b'?'; data.len().div_ceil(UNIT)];
        for (r, run) in runs(data) {
            let letter = match run {
                Run::Stored => b's',
                Run::Island => b'i',
                Run::Deflated => b'd',
            };
            s[r.start / UNIT..r.end.div_ceil(UNIT)].fill(letter);
        }
        String::from_utf8(s).unwrap()
    }

    /// Like the bench's compressible store (and binaries): tokens of 2 to
    /// 12 random bytes from a vocabulary of 1024, so the byte counts are
    /// uniform but deflate finds matches.
    fn tokens(n: usize, seed: u64) -> Vec<u8> {
        let vocabulary: Vec<Vec<u8>> = (0..1024u64)
            .map(|i| random(2 + (i % 11) as usize, 1000 + i))
            .collect();
        let picks = random(n, seed);
        let mut out = Vec::with_capacity(n + 12);
        for p in picks.chunks(2) {
            let i = usize::from(p[0]) * 4 + usize::from(p[p.len() - 1] & 3);
            out.extend_from_slice(&vocabulary[i]);
            if out.len() >= n {
                break;
            }
        }
        out.truncate(n);
        out
    }

    #[test]
    fn random_units_are_stored() {
        let r = random(BLOCK, 1);
        assert!(stored_units(&r).bytes().all(|c| c == b's'), "random data");
        assert!(
            stored_units(&sample(BLOCK)).bytes().all(|c| c == b'd'),
            "text-like data"
        );
        assert_eq!(
            stored_units(&r[..3 * UNIT - 1]),
            "ssi",
            "a partial unit is not stored"
        );
        // Tar headers (zero-heavy records) between random file contents
        // are islands; the contents around them are stored.
        let mut files = random(10 * UNIT, 2);
        files[3 * UNIT..3 * UNIT + 300].fill(0);
        files[4 * UNIT + 100..4 * UNIT + 400].fill(0);
        files[8 * UNIT..9 * UNIT].fill(0);
        assert_eq!(
            stored_units(&files),
            "sssiisssii",
            "a lone random unit is not stored"
        );
        // A lone random unit between text deflates.
        let mut lone = sample(2 * UNIT);
        lone.extend_from_slice(&random(UNIT, 3));
        lone.extend_from_slice(&sample(2 * UNIT));
        assert_eq!(stored_units(&lone), "ddddd");
        // Uniform bytes that repeat (random tokens reused) deflate well:
        // after the block's first few units they are not taken for random,
        // and the block compresses within 2 % of one deflate stream.
        let t = tokens(BLOCK, 4);
        let units = stored_units(&t);
        assert!(units[8..].bytes().all(|c| c == b'd'), "{units}");
        let pool = Arc::new(Pool::new(2));
        let ours = encode(&pool, &t, BLOCK).len();
        let mut whole = flate2::write::GzEncoder::new(Vec::new(), Compression::new(LEVEL));
        whole.write_all(&t).unwrap();
        let whole = whole.finish().unwrap().len();
        assert!(ours * 100 < whole * 102, "{ours} vs {whole}");
        assert!(whole * 10 < t.len() * 8, "tokens compress: {whole}");

        // A layer of text, random bytes, then text again, written in odd
        // pieces: all of it reads back as one member, and the random part
        // costs its size plus a few bytes per 64 KiB.
        let mut data = sample(BLOCK + 100);
        data.extend_from_slice(&random(2 * BLOCK + 5, 3));
        data.extend_from_slice(&sample(BLOCK));
        let gz = encode(&pool, &data, 50_000);
        let back = gunzip(&gz);
        assert_eq!(back, data);
        let text = encode(&pool, &sample(BLOCK + 100), 50_000).len();
        assert!(
            gz.len() < 2 * text + 2 * BLOCK + 5 + 4096,
            "{} {text}",
            gz.len()
        );
        // Random files with headers between them cost little more than
        // their size, and read back.
        let gz = encode(&pool, &files, 1000);
        let back = gunzip(&gz);
        assert_eq!(back, files);
        assert!(gz.len() < 8 * UNIT + 400, "{}", gz.len());
        // Ending on stored units: the final flag is on the last one.
        let tail = random(BLOCK + 70_000 - 70_000 % UNIT, 4);
        let gz = encode(&pool, &tail, BLOCK);
        let back = gunzip(&gz);
        assert_eq!(back, tail);
        assert!(gz.len() < tail.len() + 100, "stored, not deflated");
    }

    #[test]
    fn round_trips_at_block_edges() {
        let one = Arc::new(Pool::new(1));
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
        let one = encode(&Arc::new(Pool::new(1)), &data, BLOCK);
        assert_eq!(encode(&Arc::new(Pool::new(3)), &data, 4096), one);
        // Whole blocks at once on three threads: which thread compresses
        // which block varies from run to run (this caught a reused deflate
        // state leaking one block's bytes into another's).
        for _ in 0..3 {
            assert_eq!(encode(&Arc::new(Pool::new(3)), &data, BLOCK), one);
        }
        assert_eq!(encode(&Arc::new(Pool::new(2)), &data, 777_777), one);
        // The dictionary carries matches across cuts: repeating data costs
        // next to nothing (without it, ~10 KB) even when the repeat
        // straddles a block edge.
        let mut twice = data.clone();
        twice.extend_from_slice(&data[data.len() - 20_000..]);
        let two = encode(&Arc::new(Pool::new(2)), &twice, 65536);
        assert!(
            two.len() < one.len() + 1000,
            "{} vs {}",
            two.len(),
            one.len()
        );
    }
}
