//! Name-based UUIDs (RFC 4122 §4.3, version 5: SHA-1), for the SPDX
//! document namespace and the CycloneDX serial number. Deriving them from
//! the image's digest and the document's content keeps the SBOM's bytes
//! deterministic while two different documents still get different ids.
//!
//! SHA-1 is implemented here (FIPS 180-4) rather than pulled in as a crate:
//! it only names documents, it is a few dozen lines, and the version-5 UUID
//! is what CycloneDX's `serialNumber` pattern (versions 1 to 5) accepts.

/// RFC 4122's name space for URLs (`6ba7b811-9dad-11d1-80b4-00c04fd430c8`).
pub const NAMESPACE_URL: [u8; 16] = [
    0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8,
];

/// The version-5 UUID of `name` in `namespace`, as lower-case text.
pub fn v5(namespace: &[u8; 16], name: &[u8]) -> String {
    let mut data = Vec::with_capacity(16 + name.len());
    data.extend_from_slice(namespace);
    data.extend_from_slice(name);
    let hash = sha1(&data);
    let mut b = [0u8; 16];
    b.copy_from_slice(&hash[..16]);
    b[6] = (b[6] & 0x0f) | 0x50; // version 5
    b[8] = (b[8] & 0x3f) | 0x80; // the RFC 4122 variant
    format!(
        "{}-{}-{}-{}-{}",
        crate::digest::hex(&b[..4]),
        crate::digest::hex(&b[4..6]),
        crate::digest::hex(&b[6..8]),
        crate::digest::hex(&b[8..10]),
        crate::digest::hex(&b[10..])
    )
}

/// The 16 bytes of a UUID given as text (as [`v5`] writes it).
pub fn bytes(uuid: &str) -> Option<[u8; 16]> {
    let hex: String = uuid.chars().filter(|&c| c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// SHA-1 of `data` (FIPS 180-4 §6.1).
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0];
    let mut message = data.to_vec();
    let bit_len = (data.len() as u64).wrapping_mul(8);
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&bit_len.to_be_bytes());
    for block in message.chunks_exact(64) {
        let mut w = [0u32; 80];
        for (t, word) in block.chunks_exact(4).enumerate() {
            w[t] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for t in 16..80 {
            w[t] = (w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (t, &wt) in w.iter().enumerate() {
            let (f, k) = match t {
                0..=19 => ((b & c) | (!b & d), 0x5a827999),
                20..=39 => (b ^ c ^ d, 0x6ed9eba1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8f1bbcdc),
                _ => (b ^ c ^ d, 0xca62c1d6),
            };
            let temp = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(wt);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = temp;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, word) in out.chunks_exact_mut(4).zip(h) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_known_digests() {
        assert_eq!(
            crate::digest::hex(&sha1(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            crate::digest::hex(&sha1(b"")),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
        // Two blocks.
        assert_eq!(
            crate::digest::hex(&sha1(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1"
        );
    }

    /// Python: `uuid.uuid5(uuid.NAMESPACE_URL, "https://example.com/a")`.
    #[test]
    fn v5_matches_python() {
        assert_eq!(
            bytes("6ba7b811-9dad-11d1-80b4-00c04fd430c8"),
            Some(NAMESPACE_URL)
        );
        assert_eq!(v5(&NAMESPACE_URL, b"https://example.com/a"), PY_EXAMPLE);
        assert_eq!(bytes("nope"), None);
    }

    const PY_EXAMPLE: &str = "6639460f-3425-5329-8097-a58f06127860";
}
