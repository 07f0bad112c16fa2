//! The customisation layer: the directory nixpkgs' Nix code builds from
//! `contents`, `extraCommands`, `fakeRootCommands` … holding `layer.tar`
//! and `checksum` (the sha256 hex digest of `layer.tar`).
//!
//! Mirrors `add_customisation_layer` of nixpkgs' streamer, which reads the
//! checksum (whitespace stripped), checks that it is 64 characters long and
//! uses it as the layer's diff_id without looking at `layer.tar`. We also
//! check that it is hex and that it matches `layer.tar`'s sha256, since a
//! wrong diff_id makes `docker load` reject the whole image; that both are
//! regular files (a FIFO would hang the read); and, in the same read, that
//! `layer.tar` is a tar archive, which Docker requires as well.
//!
//! Checking before the image starts means a bad layer fails before any
//! output, but costs a read of `layer.tar`; a layer of up to
//! [`KEEP_BYTES`] (the usual symlink farm and `/etc` files) is kept from
//! that read and streamed from memory, so its bytes are read once. A
//! bigger one is read again while streaming, and hashed again there.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

use crate::base_image::tar_reader::{Skip, TarReader};

/// Largest `layer.tar` kept in memory from the checking read.
pub const KEEP_BYTES: u64 = 8 << 20;

/// A checked customisation layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Customisation {
    /// `DIR/layer.tar`.
    pub layer_tar: PathBuf,
    /// `sha256:<hex>` (lowercase), equal to the sha256 of `layer.tar`.
    pub diff_id: String,
    /// Size of `layer.tar` in bytes.
    pub size: u64,
    /// `layer.tar`'s bytes as checked, when at most [`KEEP_BYTES`].
    kept: Option<Vec<u8>>,
}

impl Customisation {
    /// Opens `dir`, reads `checksum` and verifies it against `layer.tar`.
    /// Errors read `customisation layer PATH: problem`.
    pub fn open(dir: &Path) -> Result<Customisation> {
        Customisation::open_keeping(dir, KEEP_BYTES)
    }

    /// [`Customisation::open`], keeping `layer.tar` if at most `keep` bytes.
    pub fn open_keeping(dir: &Path, keep: u64) -> Result<Customisation> {
        ensure!(
            dir.is_dir(),
            "customisation layer {}: is not a directory",
            dir.display()
        );
        let checksum_path = dir.join("checksum");
        let layer_tar = dir.join("layer.tar");
        let expected = read_checksum(&checksum_path)
            .with_context(|| format!("customisation layer {}", checksum_path.display()))?;
        let (actual, size, kept, tar_problem) = hash_file(&layer_tar, keep)
            .with_context(|| format!("customisation layer {}", layer_tar.display()))?;
        if !expected.eq_ignore_ascii_case(&actual) {
            bail!(
                "customisation layer {}: checksum {expected} does not match layer.tar (sha256 {actual})",
                checksum_path.display()
            );
        }
        // Docker refuses the whole image over a layer that is not a tar.
        if let Some(problem) = tar_problem {
            bail!(
                "customisation layer {}: {}",
                layer_tar.display(),
                crate::escape::one_line(&problem)
            );
        }
        Ok(Customisation {
            layer_tar,
            diff_id: format!("sha256:{actual}"),
            size,
            kept,
        })
    }

    /// `layer.tar`'s bytes, if small enough to have been kept when checked.
    pub fn kept(&self) -> Option<&[u8]> {
        self.kept.as_deref()
    }
}

/// The checksum file's digest: 64 hex digits, surrounding whitespace (a
/// trailing newline from `sha256sum | cut`) ignored as nixpkgs' `.strip()`.
fn read_checksum(path: &Path) -> Result<String> {
    let mut bytes = Vec::new();
    // 64 digits and some whitespace; more is not a checksum file.
    open_regular(path)?
        .take(4096)
        .read_to_end(&mut bytes)
        .context("cannot read")?;
    let text = String::from_utf8_lossy(&bytes);
    let digest = text.trim();
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        let shown: String = digest.chars().take(80).collect();
        bail!("is not a sha256 (64 hex digits): {shown:?}");
    }
    Ok(digest.to_owned())
}

/// Opens `path` if it is a regular file (symlinks followed). A FIFO would
/// block the read forever and a device has no business here: both are
/// refused by type, checked again on the file opened without blocking.
fn open_regular(path: &Path) -> Result<File> {
    let refuse = |m: &std::fs::Metadata| -> Result<()> {
        let ft = m.file_type();
        let what = if ft.is_file() {
            return Ok(());
        } else if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        bail!("is {what}, not a regular file")
    };
    refuse(&std::fs::metadata(path).map_err(describe_io)?)?;
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(describe_io)?;
    refuse(&file.metadata().context("cannot stat")?)?;
    Ok(file)
}

/// Hashes (and keeps, up to a limit) every byte read through it; an I/O
/// error is recorded, so that the tar check cannot mistake it for a
/// malformed archive.
struct Hashing {
    file: File,
    hasher: Sha256,
    size: u64,
    keep: u64,
    kept: Option<Vec<u8>>,
    io_error: Option<io::Error>,
}

impl Read for Hashing {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match self.file.read(buf) {
            Ok(n) => n,
            Err(e) => {
                let kind = e.kind();
                self.io_error = Some(e);
                return Err(io::Error::new(kind, "cannot read"));
            }
        };
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        // A file that grew past `keep` while read is simply not kept.
        if self.size > self.keep {
            self.kept = None;
        }
        if let Some(k) = self.kept.as_mut() {
            k.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

impl Skip for Hashing {}

/// What one read of `layer.tar` tells: sha256 (lowercase hex), size, the
/// bytes if kept, and what is wrong with it as a tar archive.
type Hashed = (String, u64, Option<Vec<u8>>, Option<String>);

/// sha256 (lowercase hex) and size of a regular file, its bytes if there
/// are at most `keep` of them, and what is wrong with it as a tar archive
/// (checked in the same read, by the reader base images go through).
fn hash_file(path: &Path, keep: u64) -> Result<Hashed> {
    let file = open_regular(path)?;
    let len = file.metadata().context("cannot stat")?.len();
    let mut h = Hashing {
        file,
        hasher: Sha256::new(),
        size: 0,
        keep,
        kept: (len <= keep).then(Vec::new),
        io_error: None,
    };
    let tar_problem = {
        let mut tar = TarReader::new(&mut h);
        loop {
            match tar.next_member() {
                Ok(Some(_)) => {}
                Ok(None) => break None,
                Err(e) => break Some(e.to_string()),
            }
        }
    };
    // The rest: the end-of-archive blocks and record padding.
    let rest = io::copy(&mut h, &mut io::sink());
    if let Some(e) = h.io_error.take() {
        return Err(anyhow::Error::new(e).context("cannot read"));
    }
    rest.context("cannot read")?;
    let tar_problem = tar_problem.map(|p| match p.as_str() {
        "is empty" => "is empty, not a tar archive".to_owned(),
        _ => p,
    });
    Ok((
        crate::digest::hex(&h.hasher.finalize()),
        h.size,
        h.kept,
        tar_problem,
    ))
}

/// "is missing" reads better than "No such file or directory (os error 2)".
fn describe_io(e: io::Error) -> anyhow::Error {
    match e.kind() {
        io::ErrorKind::NotFound => anyhow::anyhow!("is missing"),
        _ => anyhow::Error::new(e).context("cannot read"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty tar archive: its end-of-archive blocks.
    const LAYER: &[u8] = &[0u8; 1536];
    /// sha256 of LAYER, as `sha256sum` prints it.
    fn digest() -> String {
        let hex: String = Sha256::digest(LAYER)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex.len(), 64);
        hex
    }

    /// A scratch directory removed when dropped.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    impl std::ops::Deref for Scratch {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    fn dir_with(checksum: Option<&[u8]>, layer: Option<&[u8]>) -> Scratch {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sli-custom-unit-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(c) = checksum {
            std::fs::write(dir.join("checksum"), c).unwrap();
        }
        if let Some(l) = layer {
            std::fs::write(dir.join("layer.tar"), l).unwrap();
        }
        Scratch(dir)
    }

    fn err(dir: &Path) -> String {
        format!("{:#}", Customisation::open(dir).unwrap_err())
    }

    #[test]
    fn valid_layer_opens_with_trailing_newline() {
        let dir = dir_with(Some(format!("{}\n", digest()).as_bytes()), Some(LAYER));
        let c = Customisation::open(&dir).unwrap();
        assert_eq!(c.diff_id, format!("sha256:{}", digest()));
        assert_eq!(c.size, LAYER.len() as u64);
        assert_eq!(c.layer_tar, dir.join("layer.tar"));
    }

    #[test]
    fn small_layer_is_kept_from_the_checking_read() {
        let dir = dir_with(Some(digest().as_bytes()), Some(LAYER));
        let c = Customisation::open(&dir).unwrap();
        assert_eq!(c.kept(), Some(LAYER));
        let c = Customisation::open_keeping(&dir, LAYER.len() as u64 - 1).unwrap();
        assert_eq!(c.kept(), None, "one byte over the limit is read again");
        assert_eq!(c.diff_id, format!("sha256:{}", digest()));
    }

    #[test]
    fn uppercase_checksum_matches_and_diff_id_is_lowercase() {
        let dir = dir_with(Some(digest().to_uppercase().as_bytes()), Some(LAYER));
        assert_eq!(
            Customisation::open(&dir).unwrap().diff_id,
            format!("sha256:{}", digest())
        );
    }

    #[test]
    fn missing_dir() {
        let dir = std::env::temp_dir().join("sli-custom-unit-does-not-exist");
        let e = err(&dir);
        assert!(
            e.contains("does-not-exist") && e.contains("not a directory"),
            "{e}"
        );
    }

    #[test]
    fn missing_checksum() {
        let dir = dir_with(None, Some(LAYER));
        let e = err(&dir);
        assert!(e.contains("checksum") && e.contains("is missing"), "{e}");
    }

    #[test]
    fn missing_layer_tar() {
        let dir = dir_with(Some(digest().as_bytes()), None);
        let e = err(&dir);
        assert!(e.contains("layer.tar") && e.contains("is missing"), "{e}");
    }

    #[test]
    fn checksum_of_wrong_length() {
        let dir = dir_with(Some(b"abc123\n"), Some(LAYER));
        let e = err(&dir);
        assert!(
            e.contains("checksum") && e.contains("64 hex digits") && e.contains("abc123"),
            "{e}"
        );
    }

    #[test]
    fn checksum_not_hex() {
        let dir = dir_with(Some("z".repeat(64).as_bytes()), Some(LAYER));
        assert!(err(&dir).contains("64 hex digits"));
    }

    #[test]
    fn checksum_mismatch() {
        let dir = dir_with(Some("0".repeat(64).as_bytes()), Some(LAYER));
        let e = err(&dir);
        assert!(e.contains("does not match") && e.contains(&digest()), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn layer_tar_that_is_a_directory() {
        let dir = dir_with(Some(digest().as_bytes()), None);
        std::fs::create_dir(dir.join("layer.tar")).unwrap();
        assert!(err(&dir).contains("not a regular file"));
    }

    #[test]
    fn layer_tar_that_is_not_a_tar() {
        let junk = b"not really a tar, but hashed all the same";
        let hex = crate::digest::hex(&Sha256::digest(junk));
        let dir = dir_with(Some(hex.as_bytes()), Some(junk));
        let e = err(&dir);
        assert!(e.contains("layer.tar: is not a valid tar archive"), "{e}");
        let dir = dir_with(
            Some(crate::digest::hex(&Sha256::digest(b"")).as_bytes()),
            Some(b""),
        );
        assert!(err(&dir).contains("is empty, not a tar archive"));
    }

    #[test]
    fn fifos_are_refused_without_blocking() {
        for name in ["checksum", "layer.tar"] {
            let dir = dir_with(Some(digest().as_bytes()), Some(LAYER));
            std::fs::remove_file(dir.join(name)).unwrap();
            let c = std::ffi::CString::new(dir.join(name).into_os_string().into_encoded_bytes())
                .unwrap();
            // SAFETY: mkfifo with a valid C string.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
            let e = err(&dir);
            assert!(e.contains(name) && e.contains("is a FIFO"), "{e}");
        }
    }
}
