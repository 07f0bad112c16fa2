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
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

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
    let mut head = Vec::with_capacity(8);
    open_regular(path)?
        .take(8)
        .read_to_end(&mut head)
        .context("cannot read")?;
    if head.is_empty() {
        bail!("is empty, not a tar archive");
    }
    detect(&head)
}

/// Opens `path` for reading if it is a regular file (symlinks followed).
/// Anything else is refused by its type before it is opened for reading:
/// reading a FIFO blocks forever, opening some devices has side effects.
/// The open itself is non-blocking and the type checked again on the open
/// file, so a file swapped for a FIFO in between is refused, not waited on.
pub fn open_regular(path: &Path) -> Result<File> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!("cannot open: no such file"),
        _ => anyhow::Error::new(e).context("cannot open"),
    })?;
    refuse_non_regular(&meta)?;
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .context("cannot open")?;
    refuse_non_regular(&file.metadata().context("cannot stat")?)?;
    Ok(file)
}

fn refuse_non_regular(meta: &std::fs::Metadata) -> Result<()> {
    let ft = meta.file_type();
    let what = if ft.is_file() {
        return Ok(());
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() || ft.is_block_device() {
        "a device"
    } else {
        "not a regular file"
    };
    bail!("is {what}, not a docker-archive tarball")
}

/// Bytes of base image files read to index them and read their manifest
/// and config (not their layers' data, which `--verbose` counts with the
/// store's).
static INDEX_BYTES_READ: AtomicU64 = AtomicU64::new(0);

/// Bytes of base image files read so far to index them and read their
/// manifest and config.
pub fn index_bytes_read() -> u64 {
    INDEX_BYTES_READ.load(Ordering::Relaxed)
}

/// A reader whose reads count as index reads ([`index_bytes_read`]).
pub struct Indexing<R>(pub R);

impl<R: Read> Read for Indexing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.read(buf)?;
        INDEX_BYTES_READ.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl<R: Seek> Seek for Indexing<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.0.seek(pos)
    }
}

/// Opens `path` and returns its decoded tar stream, from the start; its
/// reads count as index reads when `indexing`.
pub fn open_decoded(
    path: &Path,
    compression: Compression,
    indexing: bool,
) -> Result<Box<dyn Read>> {
    let raw: Box<dyn Read> = if indexing {
        Box::new(Indexing(open_regular(path)?))
    } else {
        Box::new(open_regular(path)?)
    };
    let file = BufReader::with_capacity(1 << 16, raw);
    Ok(match compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(file)),
        Compression::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(file)
                .context("cannot start zstd decoding")?;
            // A frame may ask for a window of up to 2 GiB; zstd's own
            // default refuses more than 128 MiB, which we make explicit.
            d.window_log_max(27).context("cannot start zstd decoding")?;
            Box::new(d)
        }
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
