//! The zstd layer encoder: the input cut every [`PIECE`] bytes, each piece
//! compressed on its own into one zstd frame, the frames written one after
//! another. A zstd stream may hold several frames (RFC 8878, section 3.1)
//! and every decoder reads them as one stream, as it does `zstd:chunked`
//! layers; so a large layer compresses on several cores at once instead
//! of one, at the cost of the matches across each cut: 1.3 % in size on a
//! tar of `/usr`. 2 MiB pieces would cost 0.3 %, but the pieces in flight
//! (a few per layer being written) took the peak RSS of a 2-thread run
//! from 35 to 68 MiB, over the 64 MiB the destinations may use; at 1 MiB
//! it is about 45.
//!
//! Each frame depends only on its piece, the pinned level and parameters,
//! and the libzstd version (pinned in Cargo.lock through `zstd-sys`): the
//! bytes are the same whatever the thread count. Every piece gets a fresh
//! compression context, so nothing one piece leaves behind can reach
//! another's bytes.

use std::io::{self, Write};
use std::sync::Arc;

use zstd::stream::raw::CParameter;

use super::parallel::{shared_pool, InOrder, Pool};

/// Input bytes per frame. Part of the pinned format: changing it changes
/// every zstd blob digest.
pub const PIECE: usize = 1024 * 1024;
/// Pinned zstd level.
pub const LEVEL: i32 = 3;

/// Streams zstd frames into `W`, compressing pieces in parallel.
pub struct ZstdEncoder<W: Write> {
    frames: InOrder<W>,
    /// The piece being filled.
    piece: Vec<u8>,
    /// Whether a frame was submitted (an empty input still gets one).
    started: bool,
}

impl<W: Write> ZstdEncoder<W> {
    /// An encoder on the shared pool.
    pub fn new(out: W) -> ZstdEncoder<W> {
        ZstdEncoder::on(out, Arc::clone(shared_pool()))
    }

    fn on(out: W, pool: Arc<Pool>) -> ZstdEncoder<W> {
        ZstdEncoder {
            frames: InOrder::new(out, pool, &[]),
            piece: Vec::with_capacity(PIECE),
            started: false,
        }
    }

    fn submit(&mut self) -> io::Result<()> {
        let piece = std::mem::replace(&mut self.piece, Vec::with_capacity(PIECE));
        self.started = true;
        self.frames.submit(move || frame(&piece))
    }

    /// Ends the stream (the last, possibly short, frame) and returns the
    /// writer.
    pub fn finish(mut self) -> io::Result<W> {
        if !self.piece.is_empty() || !self.started {
            self.submit()?;
        }
        self.frames.finish()
    }
}

impl<W: Write> Write for ZstdEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(PIECE - self.piece.len());
        self.piece.extend_from_slice(&buf[..n]);
        if self.piece.len() == PIECE {
            self.submit()?;
        }
        Ok(n)
    }

    /// Writes out the frames already compressed; a partial piece stays,
    /// since cutting it here would make the bytes depend on flush timing.
    fn flush(&mut self) -> io::Result<()> {
        self.frames.flush()
    }
}

/// One frame holding `piece`: level [`LEVEL`], no checksum, the content
/// size in the header, no dictionary.
fn frame(piece: &[u8]) -> io::Result<Vec<u8>> {
    let mut c = zstd::bulk::Compressor::new(LEVEL)?;
    c.set_parameter(CParameter::ChecksumFlag(false))?;
    c.set_parameter(CParameter::ContentSizeFlag(true))?;
    let mut out = c.compress(piece)?;
    // The buffer was sized for the worst case; pieces wait in memory
    // until their turn, so keep only what they hold.
    out.shrink_to_fit();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(pool: &Arc<Pool>, data: &[u8], writes: usize) -> Vec<u8> {
        let mut e = ZstdEncoder::on(Vec::new(), Arc::clone(pool));
        for part in data.chunks(writes.max(1)) {
            e.write_all(part).unwrap();
        }
        e.finish().unwrap()
    }

    /// Binary-like: tokens of a few bytes from a fixed vocabulary, some
    /// text between them.
    fn sample(n: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let vocabulary: Vec<Vec<u8>> = (0..512)
            .map(|i| (0..2 + i % 9).map(|_| next() as u8).collect())
            .collect();
        let mut out = Vec::with_capacity(n + 16);
        while out.len() < n {
            let r = next();
            if r % 5 == 0 {
                out.extend_from_slice(b"/nix/store/");
            } else {
                out.extend_from_slice(&vocabulary[(r >> 8) as usize % vocabulary.len()]);
            }
        }
        out.truncate(n);
        out
    }

    #[test]
    fn round_trips_at_piece_edges() {
        let one = Arc::new(Pool::new(1));
        for n in [0, 1, PIECE - 1, PIECE, PIECE + 1, 3 * PIECE + 12345] {
            let data = sample(n);
            let zs = encode(&one, &data, 100_000);
            assert!(zs.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]), "{n} bytes");
            assert_eq!(zstd::decode_all(&zs[..]).unwrap(), data, "{n} bytes");
        }
    }

    /// The bytes depend on neither the thread count nor how the input was
    /// cut into writes.
    #[test]
    fn same_bytes_whatever_the_threads() {
        let data = sample(5 * PIECE + 999);
        let one = encode(&Arc::new(Pool::new(1)), &data, PIECE);
        assert_eq!(encode(&Arc::new(Pool::new(3)), &data, 4096), one);
        for _ in 0..3 {
            assert_eq!(encode(&Arc::new(Pool::new(3)), &data, PIECE), one);
        }
        assert_eq!(encode(&Arc::new(Pool::new(2)), &data, 777_777), one);
    }

    /// Cutting costs little against one frame over the whole input.
    #[test]
    fn pieces_cost_little() {
        let data = sample(4 * PIECE);
        let ours = encode(&Arc::new(Pool::new(2)), &data, PIECE).len();
        let whole = zstd::bulk::compress(&data, LEVEL).unwrap().len();
        assert!(ours * 1000 < whole * 1030, "{ours} vs {whole}");
        assert!(
            whole * 10 < data.len() * 8,
            "the sample compresses: {whole}"
        );
    }
}
