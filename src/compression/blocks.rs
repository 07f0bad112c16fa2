//! Deflate blocks written by hand: stored blocks for random runs, and a
//! small encoder for short runs, one block in deflate's fixed Huffman code
//! (RFC 1951, 3.2.6) with greedy matches found through a small hash table.
//!
//! The gzip encoder uses the latter for islands: a few tar records (a header, the
//! zero-padded end of a file) between runs of random bytes that are
//! stored. zlib-rs spends tens of microseconds on each island: a fresh
//! state of some 300 KiB to clear and Huffman trees to build, to shrink
//! half a KiB. On a store of compressed files that was a fifth of a push's
//! CPU. This does the job in about a microsecond. On so little data the
//! fixed code is what zlib itself would pick, so little is lost.
//!
//! The output is a function of the input bytes alone (integer work, no
//! state kept between calls), so it is the same on every machine.

/// Deflate's shortest and longest match.
const MIN_MATCH: usize = 3;
const MAX_MATCH: usize = 258;
/// The farthest back a match may reach (the deflate window).
const MAX_DISTANCE: usize = 32 * 1024;
/// Slots of the table of the latest position of each 3-byte prefix.
const HASH_BITS: u32 = 10;

/// First length of each length code 257..=285 and its extra bits.
const LENGTH_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
/// First distance of each distance code 0..=29 and its extra bits.
const DISTANCE_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DISTANCE_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

/// Appends `data` to `out` as deflate blocks starting on a byte boundary:
/// one fixed-Huffman block, or a stored block where that would be
/// smaller. It ends byte-aligned: with a sync flush marker (an empty
/// stored block), or as the stream's final block when `end_stream`.
pub fn fixed_into(out: &mut Vec<u8>, data: &[u8], end_stream: bool) {
    let start = out.len();
    let mut bits = Bits::new(out);
    // BFINAL, then BTYPE 01: fixed Huffman codes.
    bits.put(u32::from(end_stream), 1);
    bits.put(1, 2);
    let mut head = [u32::MAX; 1 << HASH_BITS];
    let mut i = 0;
    while i < data.len() {
        let (length, distance) = longest_earlier(data, i, &mut head);
        if length >= MIN_MATCH {
            bits.length(length);
            bits.distance(distance);
            // Every position inside the match is remembered too, so a
            // later repeat of any part of it is found.
            remember_all(data, i + 1..i + length, &mut head);
            i += length;
        } else {
            bits.literal(data[i]);
            i += 1;
        }
    }
    end_fixed(bits, end_stream);
    stored_if_smaller(out, start, data, end_stream);
}

/// Ends a fixed-Huffman block: the end-of-block code, then the sync flush
/// marker (an empty stored block) or, at the stream's end, byte alignment.
fn end_fixed(mut bits: Bits<'_>, end_stream: bool) {
    bits.literal_or_length(256);
    if !end_stream {
        bits.put(0, 3);
        bits.align();
        bits.out.extend_from_slice(&[0, 0, 0xff, 0xff]);
    } else {
        bits.align();
    }
}

/// Replaces what was written of `data` from `start` by stored blocks if
/// those are smaller (incompressible input). Stored blocks end
/// byte-aligned, so no sync marker is needed after them.
fn stored_if_smaller(out: &mut Vec<u8>, start: usize, data: &[u8], end_stream: bool) {
    if out.len() - start > stored_len(data.len()) {
        out.truncate(start);
        stored_into(out, data, end_stream);
    }
}

/// The most bytes one stored block holds.
const STORED_MAX: usize = 65_535;

/// What [`stored_into`] appends for `n` bytes: a 5-byte header per block
/// of at most [`STORED_MAX`] bytes, and one block even for none.
fn stored_len(n: usize) -> usize {
    n + 5 * n.div_ceil(STORED_MAX).max(1)
}

/// Appends `data` as stored blocks (at most 65,535 bytes each), starting
/// on a byte boundary; the last is final when `end_stream`.
pub fn stored_into(out: &mut Vec<u8>, data: &[u8], end_stream: bool) {
    out.reserve(stored_len(data.len()));
    let mut chunks = data.chunks(STORED_MAX).peekable();
    // No data still makes one (empty) block, so a final flag is written.
    if chunks.peek().is_none() {
        out.extend_from_slice(&[u8::from(end_stream), 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        let is_final = end_stream && chunks.peek().is_none();
        // BFINAL in bit 0, BTYPE 00 (stored), then padding to the byte.
        out.push(u8::from(is_final));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
}

/// The longest match for `data[i..]` at the latest earlier position with
/// the same 3-byte prefix (greedy, one candidate: islands are short and
/// this is about speed), as (length, distance); remembers position `i`.
fn longest_earlier(data: &[u8], i: usize, head: &mut [u32]) -> (usize, usize) {
    let Some(slot) = slot(data, i) else {
        return (0, 0);
    };
    let candidate = head[slot];
    head[slot] = i as u32;
    if candidate == u32::MAX || i - candidate as usize > MAX_DISTANCE {
        return (0, 0);
    }
    let c = candidate as usize;
    let max = (data.len() - i).min(MAX_MATCH);
    // Overlapping matches (distance < length) are fine: the decoder copies
    // byte by byte, which is how a run repeats at distance 1.
    (common_prefix(&data[c..c + max], &data[i..i + max]), i - c)
}

/// How many leading bytes `a` and `b` (of one length) share: eight
/// compared at a time (islands are mostly zero runs, matched 258 bytes at
/// a time).
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let mut k = 0;
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let differ = u64::from_le_bytes(x.try_into().unwrap_or_default())
            ^ u64::from_le_bytes(y.try_into().unwrap_or_default());
        if differ != 0 {
            return k + differ.trailing_zeros() as usize / 8;
        }
        k += 8;
    }
    k + a[k..]
        .iter()
        .zip(&b[k..])
        .take_while(|(x, y)| x == y)
        .count()
}

/// Remembers every position of `range` in turn, as [`remember`] on each
/// would, the 3-byte prefix rolled along instead of read afresh at each.
fn remember_all(data: &[u8], range: std::ops::Range<usize>, head: &mut [u32]) {
    // Positions with 3 bytes to hash.
    let end = range.end.min(data.len().saturating_sub(MIN_MATCH - 1));
    if range.start >= end {
        return;
    }
    let p = range.start;
    let mut v = u32::from(data[p]) << 8 | u32::from(data[p + 1]) << 16;
    for (p, &next) in (p..end).zip(&data[p + 2..end + 2]) {
        v = v >> 8 | u32::from(next) << 16;
        head[hash(v)] = p as u32;
    }
}

/// The hash slot of the 3 bytes at `i`, if there are 3.
fn slot(data: &[u8], i: usize) -> Option<usize> {
    let b = data.get(i..i + MIN_MATCH)?;
    Some(hash(
        u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16,
    ))
}

/// The slot of three bytes `v` (first byte lowest).
fn hash(v: u32) -> usize {
    (v.wrapping_mul(0x9e37_79b1) >> (32 - HASH_BITS)) as usize
}

/// Deflate's bit order: values least significant bit first, Huffman codes
/// most significant bit first.
struct Bits<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    count: u32,
}

impl<'a> Bits<'a> {
    fn new(out: &'a mut Vec<u8>) -> Bits<'a> {
        Bits {
            out,
            acc: 0,
            count: 0,
        }
    }

    /// Appends the low `len` bits of `value` (len ≤ 32).
    fn put(&mut self, value: u32, len: u32) {
        self.acc |= u64::from(value) << self.count;
        self.count += len;
        while self.count >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.count -= 8;
        }
    }

    /// Appends a Huffman code of `len` bits, most significant bit first.
    fn code(&mut self, code: u32, len: u32) {
        self.put(code.reverse_bits() >> (32 - len), len);
    }

    /// Pads with zero bits to the next byte boundary.
    fn align(&mut self) {
        if self.count > 0 {
            self.put(0, 8 - self.count);
        }
    }

    /// The fixed code of a literal/length symbol (0..=287).
    fn literal_or_length(&mut self, symbol: u32) {
        match symbol {
            0..=143 => self.code(0x30 + symbol, 8),
            144..=255 => self.code(0x190 + symbol - 144, 9),
            256..=279 => self.code(symbol - 256, 7),
            _ => self.code(0xc0 + symbol - 280, 8),
        }
    }

    fn literal(&mut self, byte: u8) {
        self.literal_or_length(u32::from(byte));
    }

    fn length(&mut self, length: usize) {
        let i = LENGTH_BASE.partition_point(|&b| usize::from(b) <= length) - 1;
        self.literal_or_length(257 + i as u32);
        self.put(
            (length - usize::from(LENGTH_BASE[i])) as u32,
            u32::from(LENGTH_EXTRA[i]),
        );
    }

    fn distance(&mut self, distance: usize) {
        let i = DISTANCE_BASE.partition_point(|&b| usize::from(b) <= distance) - 1;
        // Fixed distance codes are 5 bits each.
        self.code(i as u32, 5);
        self.put(
            (distance - usize::from(DISTANCE_BASE[i])) as u32,
            u32::from(DISTANCE_EXTRA[i]),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn inflate(deflated: &[u8]) -> Vec<u8> {
        let mut back = Vec::new();
        flate2::read::DeflateDecoder::new(deflated)
            .read_to_end(&mut back)
            .unwrap();
        back
    }

    /// Several islands then a final one, as the gzip encoder strings them.
    fn round_trip(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, part) in parts.iter().enumerate() {
            fixed_into(&mut out, part, k + 1 == parts.len());
        }
        assert_eq!(inflate(&out), parts.concat());
        out
    }

    fn tar_header(name: &str) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        for (at, field) in [
            (100, "0000644\0"),
            (108, "0000000\0"),
            (116, "0000000\0"),
            (124, "00000001750\0"),
            (136, "00000000001\0"),
            (148, "0012345\0"),
            (257, "ustar\0"),
            (263, "00"),
        ] {
            h[at..at + field.len()].copy_from_slice(field.as_bytes());
        }
        h[156] = b'0';
        h
    }

    #[test]
    fn round_trips() {
        let header = tar_header("nix/store/0123456789abcdfghijklmnpqrsvwxyz-hello-2.12/bin/hello");
        let out = round_trip(&[&header]);
        // Mostly zeros and digits: a header shrinks to a fraction.
        assert!(out.len() < 160, "{}", out.len());
        let every_byte: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        let zeros = vec![0u8; 70_000];
        let mut x = 7u32;
        let noise: Vec<u8> = (0..3000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16) as u8
            })
            .collect();
        round_trip(&[b"", b"a", b"ab", b"abc", b"abcabcabcabc", &every_byte]);
        // Matches at every length and the longest distance.
        let mut far = noise.clone();
        far.extend_from_slice(&zeros[..MAX_DISTANCE - noise.len()]);
        far.extend_from_slice(&noise);
        for n in [3, 4, 10, 11, 257, 258, 259, 1000] {
            let mut run = b"xy".to_vec();
            run.extend(std::iter::repeat_n(b'z', n));
            round_trip(&[&run, &far]);
        }
        // Longer than a stored block, and incompressible: stored instead,
        // at 5 bytes per 65,535.
        let out = round_trip(&[&zeros, &noise, &[]]);
        let noise_alone = round_trip(&[&noise]);
        assert_eq!(noise_alone.len(), noise.len() + 5, "stored when smaller");
        // Zeros: 13 bits per 258 bytes (length 258, distance 1).
        assert!(out.len() < 450 + noise.len() + 20, "{}", out.len());
    }

    /// The encoder's match loop as first written, a byte at a time:
    /// matches extended byte by byte, each position inside a match hashed
    /// afresh. The output is pinned (it names every gzip blob), so the
    /// faster one must write exactly what this writes.
    fn plain_fixed_into(out: &mut Vec<u8>, data: &[u8], end_stream: bool) {
        let start = out.len();
        let mut bits = Bits::new(out);
        bits.put(u32::from(end_stream), 1);
        bits.put(1, 2);
        let mut head = [u32::MAX; 1 << HASH_BITS];
        let mut i = 0;
        while i < data.len() {
            let mut found = (0, 0);
            if let Some(slot) = slot(data, i) {
                let candidate = head[slot];
                head[slot] = i as u32;
                if candidate != u32::MAX && i - candidate as usize <= MAX_DISTANCE {
                    let c = candidate as usize;
                    let max = (data.len() - i).min(MAX_MATCH);
                    let length = (0..max).take_while(|&k| data[c + k] == data[i + k]).count();
                    found = (length, i - c);
                }
            }
            let (length, distance) = found;
            if length >= MIN_MATCH {
                bits.length(length);
                bits.distance(distance);
                for p in i + 1..i + length {
                    if let Some(slot) = slot(data, p) {
                        head[slot] = p as u32;
                    }
                }
                i += length;
            } else {
                bits.literal(data[i]);
                i += 1;
            }
        }
        end_fixed(bits, end_stream);
        stored_if_smaller(out, start, data, end_stream);
    }

    /// Islands as tar makes them (headers, zero-padded file ends, text,
    /// runs, noise, repeats near and far, every length near the word
    /// size and the match limits): the same bytes as the plain encoder.
    #[test]
    fn writes_what_the_plain_encoder_writes() {
        let mut x = 12345u64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 32) as u8
                })
                .collect()
        };
        let mut inputs: Vec<Vec<u8>> = Vec::new();
        for n in (0..40).chain([255, 256, 257, 258, 259, 260, 265, 516, 517, 1000]) {
            let mut v = noise(5);
            v.extend(std::iter::repeat_n(0u8, n));
            v.extend(noise(3));
            v.extend(std::iter::repeat_n(b'a', n));
            inputs.push(v);
        }
        for k in 0..64 {
            let mut v = Vec::new();
            let tail = noise(k * 7 % 512);
            v.extend(&tail);
            v.resize(512, 0);
            v.extend(tar_header(&format!("nix/store/{k}-x/share/file-{k}.txt")));
            v.extend(b"text, text and more text; ".repeat(k % 9));
            v.extend(&tail[..tail.len() / 2]);
            v.extend(noise(k));
            inputs.push(v);
        }
        let mut far = noise(100);
        far.extend(std::iter::repeat_n(0u8, MAX_DISTANCE - 100));
        far.extend(far[..300].to_vec());
        inputs.push(far);
        for input in &inputs {
            for end_stream in [false, true] {
                let (mut fast, mut plain) = (Vec::new(), Vec::new());
                fixed_into(&mut fast, input, end_stream);
                plain_fixed_into(&mut plain, input, end_stream);
                assert!(fast == plain, "{} bytes", input.len());
            }
        }
    }

    /// Many mixed inputs (runs, repeats from near and far, noise, cut at
    /// odd lengths) read back.
    #[test]
    fn mixed_inputs_round_trip() {
        let mut x = 0x1234_5678u32;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        for _ in 0..300 {
            let mut data: Vec<u8> = Vec::new();
            let target = (next() % 20_000) as usize;
            while data.len() < target {
                let n = 1 + (next() % 600) as usize;
                match next() % 4 {
                    0 => data.extend(std::iter::repeat_n((next() % 3) as u8, n)),
                    1 if data.len() > 3 => {
                        let from = (next() as usize) % data.len();
                        let to = (from + n).min(data.len());
                        let copy = data[from..to].to_vec();
                        data.extend_from_slice(&copy);
                    }
                    2 => data.extend((0..n).map(|_| next() as u8)),
                    _ => data.extend(b"nix/store/".iter().cycle().take(n)),
                }
            }
            data.truncate(target);
            let cut = (next() as usize) % (data.len() + 1);
            round_trip(&[&data[..cut], &data[cut..]]);
        }
    }

    /// Stored blocks read back, and take the room `stored_len` says (the
    /// choice between fixed and stored rests on it).
    #[test]
    fn stored_blocks() {
        for n in [
            0,
            1,
            STORED_MAX - 1,
            STORED_MAX,
            STORED_MAX + 1,
            3 * STORED_MAX + 7,
        ] {
            let data: Vec<u8> = (0..n).map(|i| (i * 31 % 256) as u8).collect();
            let mut out = Vec::new();
            stored_into(&mut out, &data, true);
            assert_eq!(out.len(), stored_len(n), "{n} bytes");
            assert_eq!(inflate(&out), data);
        }
    }

    /// The same input gives the same bytes (no state between calls).
    #[test]
    fn deterministic() {
        let header = tar_header("nix/store/x-y/z");
        let mut a = Vec::new();
        fixed_into(&mut a, &header, false);
        let mut b = Vec::new();
        fixed_into(&mut b, b"something else entirely, first", false);
        let before = b.len();
        fixed_into(&mut b, &header, false);
        assert_eq!(&b[before..], &a[..]);
    }
}
