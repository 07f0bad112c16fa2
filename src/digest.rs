//! sha256 digests as the image format spells them: nixpkgs names layers and
//! the config by the lower-case hex sha256 (`hashlib.sha256().hexdigest()`),
//! and diff_ids are `sha256:<hex>`.

use std::io::{self, Write};

use sha2::{Digest, Sha256};

/// Lower-case hex of any digest bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// `sha256:<hex>`, the diff_id / image ID form.
pub fn diff_id(digest: &[u8; 32]) -> String {
    format!("sha256:{}", hex(digest))
}

/// True for `sha256:` followed by 64 lower-case hex digits: the only
/// digest form we write, and the only one we accept from caches, digests
/// files and OCI layouts (it becomes a file name there).
pub fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A writer that passes bytes on and counts them, optionally hashing them
/// too (a blob's digest and size, computed on the way out).
pub struct HashCount<W> {
    inner: W,
    hasher: Option<Sha256>,
    size: u64,
}

impl<W: Write> HashCount<W> {
    /// Counts and hashes what goes to `inner`.
    pub fn hashing(inner: W) -> HashCount<W> {
        HashCount {
            inner,
            hasher: Some(Sha256::new()),
            size: 0,
        }
    }

    /// Only counts (the digest is known some other way).
    pub fn counting(inner: W) -> HashCount<W> {
        HashCount {
            inner,
            hasher: None,
            size: 0,
        }
    }

    /// The inner writer, the byte count and the `sha256:<hex>` digest
    /// (None when only counting).
    pub fn into_parts(self) -> (W, u64, Option<String>) {
        let digest = self.hasher.map(|h| diff_id(&h.finalize().into()));
        (self.inner, self.size, digest)
    }
}

impl<W: Write> Write for HashCount<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(diff_id(&[0xab; 32])[..10], *"sha256:aba");
    }

    #[test]
    fn hash_count_and_digest_shape() {
        let mut w = HashCount::hashing(Vec::new());
        w.write_all(b"abc").unwrap();
        let (inner, size, d) = w.into_parts();
        assert_eq!((inner.len(), size), (3, 3));
        let d = d.unwrap();
        assert_eq!(d, format!("sha256:{}", sha256_hex(b"abc")));
        assert!(is_sha256_digest(&d));
        assert!(!is_sha256_digest("sha256:ABC"));
        assert!(!is_sha256_digest(&d.replace("sha256", "sha512")));
        assert!(!is_sha256_digest(&format!("{d}/../x")));
    }
}
