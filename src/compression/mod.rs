//! Per-layer compression for the OCI forms and registries: each layer is
//! compressed as its own blob (its digest names it), unlike `--compress`,
//! which compresses the whole archive stream.
//!
//! The bytes must be the same on every machine and run, because the
//! compressed digest is what registries and OCI layouts store and what the
//! digest cache remembers. So each codec has one pinned encoder and
//! parameter set (the encoder crates are pinned in Cargo.lock):
//!
//! - gzip: one member, header with mtime 0, no file name, OS byte 255;
//!   the deflate stream is cut every 256 KiB of input, each block
//!   deflated at level 6 by `flate2`'s zlib-rs backend (a Rust port of
//!   zlib-ng's deflate) with the previous 32 KiB as dictionary and a sync
//!   flush at its end, so blocks compress on several cores at once and
//!   still give the same bytes whatever the thread count; runs of random
//!   512-byte units (tar records) are stored rather than deflated, and
//!   short runs beside them written in the fixed Huffman code by our own
//!   small encoder ([`gzip`]);
//! - zstd: libzstd via the `zstd` crate, level 3; the input cut every
//!   1 MiB, each piece its own frame (no checksum, content size set, no
//!   dictionary, a fresh context each), the frames concatenated, so a
//!   layer compresses on several cores at once ([`zstd`]).
//!
//! A layer is always compressed by one encoder whose output is a function
//! of its input alone, so the result does not depend on how many layers
//! are compressed at once or on how many threads help.
#![warn(missing_docs)]

mod blocks;
pub mod gzip;
mod parallel;
pub mod zstd;

use std::io::{self, Write};

use anyhow::Result;

/// How each layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Codec {
    /// Uncompressed tar: the blob digest is the diff_id.
    None,
    /// gzip, level 6 (the pinned parameters are in the README).
    Gzip,
    /// zstd, level 3 (podman, skopeo and containerd read these; Docker 20.10 and umoci 0.4 cannot).
    Zstd,
}

impl Codec {
    /// The name users give and see (`--layer-compression`).
    pub fn name(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
        }
    }

    /// The key of this codec's blobs in the cache and digests files. It
    /// names the pinned encoder, not just the format: when an encoder's
    /// bytes change (gzip became block-parallel, then stored random runs
    /// by tar record, then checked repeats first, then wrote the short
    /// runs between stored ones in the fixed Huffman code), the key
    /// changes (zstd, when it became one frame per 1 MiB piece), so blob
    /// digests recorded by an older version are ignored
    /// instead of being taken for names of blobs this version no longer
    /// writes.
    pub fn fact_key(self) -> &'static str {
        match self {
            Codec::None => "none",
            Codec::Gzip => "gzip-blocks-4",
            Codec::Zstd => "zstd-frames-1",
        }
    }

    /// The OCI layer media type of a blob compressed this way.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Codec::None => "application/vnd.oci.image.layer.v1.tar",
            Codec::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Codec::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// The Docker schema 2 layer media type (Docker has none for zstd; the
    /// OCI one is what Docker's own tools write there).
    pub fn docker_media_type(self) -> &'static str {
        match self {
            Codec::None => "application/vnd.docker.image.rootfs.diff.tar",
            Codec::Gzip => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Codec::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// The codec whose magic bytes start `head` (for base-image layers,
    /// which are stored as their archive has them).
    pub fn sniff(head: &[u8]) -> Codec {
        if head.starts_with(&[0x1f, 0x8b]) {
            Codec::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Codec::Zstd
        } else {
            Codec::None
        }
    }

    /// Wraps `out` in this codec's pinned encoder.
    pub fn encoder<W: Write>(self, out: W) -> Result<Encoder<W>> {
        Ok(match self {
            Codec::None => Encoder::None(out),
            Codec::Gzip => Encoder::Gzip(gzip::GzipEncoder::new(out)),
            Codec::Zstd => Encoder::Zstd(zstd::ZstdEncoder::new(out)),
        })
    }
}

/// A [`Codec`]'s encoder around a writer; [`Encoder::finish`] ends the
/// compressed stream and returns the writer.
pub enum Encoder<W: Write> {
    /// Pass-through.
    None(W),
    /// gzip.
    Gzip(gzip::GzipEncoder<W>),
    /// zstd.
    Zstd(zstd::ZstdEncoder<W>),
}

impl<W: Write> Encoder<W> {
    /// Writes the compressed stream's end and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compress(codec: Codec, data: &[u8]) -> Vec<u8> {
        let mut e = codec.encoder(Vec::new()).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// The pinned parameters: changing them changes every cached digest,
    /// so this test pins the bytes' digests.
    #[test]
    fn pinned_bytes() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let gz = compress(Codec::Gzip, &data);
        assert_eq!(&gz[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff]);
        let zs = compress(Codec::Zstd, &data);
        assert_eq!(Codec::sniff(&gz), Codec::Gzip);
        assert_eq!(Codec::sniff(&zs), Codec::Zstd);
        assert_eq!(compress(Codec::None, &data), data);
        let mut back = Vec::new();
        io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(::zstd::decode_all(&zs[..]).unwrap(), data);
        assert_eq!(compress(Codec::Gzip, &data), gz, "deterministic");
        assert_eq!(compress(Codec::Zstd, &data), zs, "deterministic");
    }
}
