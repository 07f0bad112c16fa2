//! File names as Python sees them. CPython decodes Unix names as UTF-8 with
//! `surrogateescape` (each undecodable byte becomes one lone surrogate
//! U+DC80..U+DCFF), sorts them by code point (pathlib's `sorted`), and
//! tarfile's ustar fields encode them as ASCII with `replace` (one `?` per
//! non-ASCII character). Both are mirrored here on raw bytes.

use std::cmp::Ordering;

/// The code points CPython would decode `bytes` into.
fn code_points(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes.utf8_chunks().flat_map(|chunk| {
        let valid = chunk.valid().chars().map(u32::from);
        let escaped = chunk.invalid().iter().map(|&b| 0xDC00 + u32::from(b));
        valid.chain(escaped)
    })
}

/// Orders two path components as Python orders their `str` forms.
pub fn compare_names(a: &[u8], b: &[u8]) -> Ordering {
    // Valid UTF-8 orders the same bytewise and by code point; only names
    // with undecodable bytes need the slow path.
    match (std::str::from_utf8(a), std::str::from_utf8(b)) {
        (Ok(_), Ok(_)) => a.cmp(b),
        _ => code_points(a).cmp(code_points(b)),
    }
}

/// `text.encode("ascii", "replace")` of the decoded name.
pub fn ustar_text(bytes: &[u8]) -> Vec<u8> {
    if bytes.is_ascii() {
        return bytes.to_vec();
    }
    code_points(bytes)
        .map(|c| if c < 0x80 { c as u8 } else { b'?' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_bytes_sort_by_surrogate_code_point() {
        // U+0080 (C2 80) < U+DC80 (lone 0x80), although 0x80 < 0xC2 bytewise.
        assert_eq!(compare_names(b"\xc2\x80", b"\x80"), Ordering::Less);
        // U+E000 (EE 80 80) > U+DCFF (lone 0xFF).
        assert_eq!(
            compare_names("\u{e000}".as_bytes(), b"\xff"),
            Ordering::Greater
        );
        assert_eq!(compare_names(b"a b", b"a"), Ordering::Greater);
        assert_eq!(compare_names(b"A", b"a"), Ordering::Less);
    }

    #[test]
    fn one_question_mark_per_character() {
        assert_eq!(ustar_text("dé-日本".as_bytes()), b"d?-??");
        assert_eq!(ustar_text(b"x\xe2\x82y"), b"x??y");
    }
}
