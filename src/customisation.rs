//! The customisation layer: the directory nixpkgs' Nix code builds from
//! `contents`, `extraCommands`, `fakeRootCommands` … holding `layer.tar`
//! and `checksum` (the sha256 hex digest of `layer.tar`).
//!
//! Mirrors `add_customisation_layer` of nixpkgs' streamer, which reads the
//! checksum (whitespace stripped), checks that it is 64 characters long and
//! uses it as the layer's diff_id without looking at `layer.tar`. We also
//! check that it is hex and that it matches `layer.tar`'s sha256, since a
//! wrong diff_id makes `docker load` reject the whole image.
//!
//! Checking before the image starts means a bad layer fails before any
//! output, but costs a read of `layer.tar`; a layer of up to
//! [`KEEP_BYTES`] (the usual symlink farm and `/etc` files) is kept from
//! that read and streamed from memory, so its bytes are read once. A
//! bigger one is read again while streaming, and hashed again there.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};

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
        let (actual, size, kept) = hash_file(&layer_tar, keep)
            .with_context(|| format!("customisation layer {}", layer_tar.display()))?;
        if !expected.eq_ignore_ascii_case(&actual) {
            bail!(
                "customisation layer {}: checksum {expected} does not match layer.tar (sha256 {actual})",
                checksum_path.display()
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
    let bytes = std::fs::read(path).map_err(describe_io)?;
    let text = String::from_utf8_lossy(&bytes);
    let digest = text.trim();
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        let shown: String = digest.chars().take(80).collect();
        bail!("is not a sha256 (64 hex digits): {shown:?}");
    }
    Ok(digest.to_owned())
}

/// sha256 (lowercase hex) and size of a regular file, read in chunks, and
/// its bytes if there are at most `keep` of them.
fn hash_file(path: &Path, keep: u64) -> Result<(String, u64, Option<Vec<u8>>)> {
    let meta = std::fs::metadata(path).map_err(describe_io)?;
    ensure!(meta.is_file(), "is not a regular file");
    let mut file = File::open(path).map_err(describe_io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    let mut kept = (meta.len() <= keep).then(Vec::new);
    loop {
        let n = file.read(&mut buf).context("cannot read")?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        // A file that grew past `keep` while read is simply not kept.
        if size > keep {
            kept = None;
        }
        if let Some(k) = kept.as_mut() {
            k.extend_from_slice(&buf[..n]);
        }
    }
    Ok((crate::digest::hex(&hasher.finalize()), size, kept))
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

    const LAYER: &[u8] = b"not really a tar, but hashed all the same";
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
}
