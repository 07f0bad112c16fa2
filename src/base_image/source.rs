//! The bytes of a base image file: which compression wraps the tar and a
//! fresh decoded reader per pass.
//!
//! nixpkgs' streamer opens `fromImage` with Python's `tarfile.open`, which
//! detects the compression from the first bytes (never from the file name).
//! We do the same for the formats users actually hand to `fromImage`: plain
//! tar (`docker save`, streamLayeredImage), gzip (`buildImage`,
//! `buildLayeredImage`, `docker save | gzip`) and zstd (`buildLayeredImage`
//! with `compressor = "zstd"`). bzip2 and xz get a clear error instead.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// How the tar stream is stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar: members can be read by seeking.
    None,
    /// gzip, possibly several concatenated members (as `pigz` may write).
    Gzip,
    /// zstd, possibly several frames.
    Zstd,
}

/// Magic numbers of the compressors `tarfile.open` knows plus zstd.
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const BZIP2_MAGIC: &[u8] = b"BZh";
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];

/// Classifies a file by its first bytes.
pub fn detect(head: &[u8]) -> Result<Compression> {
    if head.starts_with(GZIP_MAGIC) {
        Ok(Compression::Gzip)
    } else if head.starts_with(ZSTD_MAGIC) {
        Ok(Compression::Zstd)
    } else if head.starts_with(BZIP2_MAGIC) {
        bail!("is bzip2-compressed, which is not supported: decompress it or use gzip/zstd")
    } else if head.starts_with(XZ_MAGIC) {
        bail!("is xz-compressed, which is not supported: decompress it or use gzip/zstd")
    } else {
        Ok(Compression::None)
    }
}

/// Reads the first bytes of `path` and classifies it.
pub fn sniff(path: &Path) -> Result<Compression> {
    if path.is_dir() {
        bail!("is a directory, not a docker-archive tarball");
    }
    let mut head = Vec::with_capacity(8);
    File::open(path)
        .context("cannot open")?
        .take(8)
        .read_to_end(&mut head)
        .context("cannot read")?;
    if head.is_empty() {
        bail!("is empty, not a tar archive");
    }
    detect(&head)
}

/// Opens `path` and returns its decoded tar stream, from the start.
pub fn open_decoded(path: &Path, compression: Compression) -> Result<Box<dyn Read>> {
    let file = BufReader::with_capacity(1 << 16, File::open(path).context("cannot open")?);
    Ok(match compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(file).context("cannot start zstd decoding")?,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_magic_bytes() {
        assert_eq!(detect(b"\x1f\x8b\x08\x00").unwrap(), Compression::Gzip);
        assert_eq!(detect(b"\x28\xb5\x2f\xfd\x00").unwrap(), Compression::Zstd);
        assert_eq!(detect(b"manifest.json\0").unwrap(), Compression::None);
    }

    #[test]
    fn rejects_bzip2_and_xz_with_a_reason() {
        let e = detect(b"BZh91AY").unwrap_err().to_string();
        assert!(e.contains("bzip2"), "{e}");
        let e = detect(b"\xfd7zXZ\x00\x00").unwrap_err().to_string();
        assert!(e.contains("xz"), "{e}");
    }
}
