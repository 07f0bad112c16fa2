//! sha256 digests as the image format spells them: nixpkgs names layers and
//! the config by the lower-case hex sha256 (`hashlib.sha256().hexdigest()`),
//! and diff_ids are `sha256:<hex>`.

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
}
