//! NAR hashes as Nix writes them, turned into the lower-case hex SHA-256
//! that SPDX `checksums` and CycloneDX `hashes` take.
//!
//! closureInfo's `registration` and exportReferencesGraph write
//! `sha256:<nix-base32>` (52 characters); newer Nix writes SRI,
//! `sha256-<base64>`; `sha256:<hex>` also occurs. Nix's base-32 is not
//! RFC 4648's: its alphabet leaves out `e o u t`, and it writes the digits
//! from the most significant end of a little-endian bit string
//! (`printHash32` / `parseHash32` in Nix's `libutil/hash.cc`).

/// Nix's base-32 alphabet.
const NIX_BASE32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// A NAR hash (`sha256:…` in base-32, base-16 or base-64, or SRI
/// `sha256-…`) as 64 lower-case hex digits.
///
/// # Errors
///
/// A one-line description of what is wrong with `text` (another algorithm,
/// a bad digit, the wrong length), for the caller's warning.
pub fn nar_hash_hex(text: &str) -> Result<String, String> {
    let bytes = if let Some(sri) = text.strip_prefix("sha256-") {
        base64_decode(sri).ok_or_else(|| format!("{text:?} is not valid SRI base-64"))?
    } else if let Some(rest) = text.strip_prefix("sha256:") {
        match rest.len() {
            52 => nix_base32_decode(rest, 32)
                .ok_or_else(|| format!("{text:?} is not valid Nix base-32"))?,
            64 => hex_decode(rest).ok_or_else(|| format!("{text:?} is not valid hex"))?,
            44 => base64_decode(rest).ok_or_else(|| format!("{text:?} is not valid base-64"))?,
            n => {
                return Err(format!(
                    "{text:?} has {n} digits; a SHA-256 has 52 (base-32), 64 (hex) or 44 (base-64)"
                ))
            }
        }
    } else {
        return Err(format!(
            "{text:?} is not a SHA-256 hash (expected sha256:… or sha256-…)"
        ));
    };
    if bytes.len() != 32 {
        return Err(format!(
            "{text:?} holds {} bytes, not the 32 of a SHA-256",
            bytes.len()
        ));
    }
    Ok(crate::digest::hex(&bytes))
}

/// Decodes Nix base-32 text of a `size`-byte hash; `None` on a character
/// outside the alphabet, a wrong length, or bits beyond `size` bytes.
pub fn nix_base32_decode(text: &str, size: usize) -> Option<Vec<u8>> {
    if text.len() != (size * 8).div_ceil(5) {
        return None;
    }
    let mut out = vec![0u8; size];
    // The last character holds the lowest five bits.
    for (n, c) in text.bytes().rev().enumerate() {
        let digit = NIX_BASE32.iter().position(|&a| a == c)? as u16;
        let (i, j) = (n * 5 / 8, n * 5 % 8);
        let shifted = digit << j;
        out[i] |= (shifted & 0xff) as u8;
        let carry = (shifted >> 8) as u8;
        match out.get_mut(i + 1) {
            Some(next) => *next |= carry,
            // The first digit may only use the bits that fit.
            None if carry != 0 => return None,
            None => {}
        }
    }
    Some(out)
}

/// Decodes padded standard base-64 (RFC 4648 §4), as SRI hashes use it.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if bytes.len() % 4 != 0 {
        return None;
    }
    let pad = bytes.iter().rev().take_while(|&&b| b == b'=').count();
    if pad > 2 {
        return None;
    }
    let value = |b: u8| -> Option<u32> {
        Some(match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let body = &bytes[..bytes.len() - pad];
    for chunk in body.chunks(4) {
        let mut acc = 0u32;
        for &b in chunk {
            acc = acc << 6 | value(b)?;
        }
        // A short last chunk carries 2 or 3 characters: 1 or 2 bytes.
        let got = chunk.len() * 6 / 8;
        acc <<= 6 * (4 - chunk.len() as u32);
        if chunk.len() == 1 {
            return None;
        }
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + got]);
    }
    Some(out)
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ABC_HEX: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    /// Expected values from Nix 2.8: `nix-hash --type sha256 --to-base16`,
    /// `--to-base32` and `nix hash to-sri`.
    #[test]
    fn known_values() {
        let cases = [
            (
                "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s",
                ABC_HEX,
            ),
            (
                "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
                ABC_HEX,
            ),
            (&format!("sha256:{ABC_HEX}"), ABC_HEX),
            (
                "sha256:ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
                ABC_HEX,
            ),
            (
                "sha256:1n46ik5yv024i1417kjb6fgfhwzwfi1nnhsdb9nlj6ylgqr8mr8b",
                "0be58a327ed41b496d5a4d436b4374fc73e89e334bce1348884480edcb8c86d8",
            ),
            (
                "sha256:0000000000000000000000000000000000000000000000000000",
                &"0".repeat(64),
            ),
            (
                "sha256:1zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
                &"f".repeat(64),
            ),
        ];
        for (nix, hex) in cases {
            assert_eq!(nar_hash_hex(nix).as_deref(), Ok(hex), "{nix}");
        }
    }

    #[test]
    fn bad_hashes_are_described() {
        let bad = [
            (
                "sha256:2zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
                "base-32",
            ),
            (
                "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5e",
                "base-32",
            ),
            ("sha256:abc", "digits"),
            ("sha512:abc", "not a SHA-256"),
            ("", "not a SHA-256"),
            ("sha256-ungW", "bytes"),
            (
                "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0",
                "base-64",
            ),
            (
                "sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa!=",
                "base-64",
            ),
            ("sha256:ééééééééééééééééééééééééééééééééé", "hex"),
        ];
        for (text, why) in bad {
            let err = nar_hash_hex(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    #[test]
    fn base64_edges() {
        assert_eq!(base64_decode(""), Some(vec![]));
        assert_eq!(base64_decode("YQ=="), Some(b"a".to_vec()));
        assert_eq!(base64_decode("YWI="), Some(b"ab".to_vec()));
        assert_eq!(base64_decode("YWJj"), Some(b"abc".to_vec()));
        assert_eq!(base64_decode("Y==="), None);
        assert_eq!(base64_decode("Y"), None);
    }
}
