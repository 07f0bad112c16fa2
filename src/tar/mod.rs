//! Tar headers exactly as CPython's `tarfile` writes them in its default
//! PAX format (`tarfile.open(mode="w|")`), which is what nixpkgs'
//! `stream_layered_image.py` uses for both the layer tarballs and the outer
//! docker-archive. Layer digests (diff_ids) hash these bytes, so every field
//! must match byte for byte:
//!
//! - ustar header with magic `ustar\0` `00`, octal fields zero-padded and
//!   NUL-terminated, checksum as six octal digits, NUL, space;
//! - device fields left as NULs for anything but character/block devices;
//! - directory names end in `/`;
//! - a PAX `x` header named `././@PaxHeader` when a name or link target is
//!   not ASCII or longer than 100 characters, when uname/gname are not ASCII
//!   or longer than 32, or when uid/gid/size/mtime overflow their octal
//!   fields (e.g. `size` for files of 8 GiB and more);
//! - `hdrcharset=BINARY` first when a value is not valid UTF-8 (Python's
//!   surrogateescape names), values then written as their raw bytes;
//! - the archive ends with two zero blocks, padded to a 10240-byte record.

mod pyname;

pub use pyname::{compare_names, ustar_text};

/// Size of a tar block.
pub const BLOCK: u64 = 512;
/// tarfile's RECORDSIZE: archives are padded to a multiple of this.
pub const RECORD: u64 = 20 * BLOCK;

/// What a tar entry is; the store holds nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Regular,
    Directory,
    Symlink,
}

impl Kind {
    fn typeflag(self) -> u8 {
        match self {
            Kind::Regular => b'0',
            Kind::Directory => b'5',
            Kind::Symlink => b'2',
        }
    }
}

/// The ownership and time every entry of a layer gets (nixpkgs'
/// `apply_filters`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub uid: u64,
    pub gid: u64,
    pub uname: String,
    pub gname: String,
    pub mtime: i64,
}

/// One tar member's header fields. Names and link targets are raw bytes
/// (Unix file names need not be UTF-8).
#[derive(Debug, Clone)]
pub struct Header<'a> {
    pub name: &'a [u8],
    pub kind: Kind,
    pub mode: u32,
    pub size: u64,
    pub linkname: &'a [u8],
    pub owner: &'a Owner,
}

/// Bytes of padding after `size` bytes of member data.
pub fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// Bytes that end an archive whose members took `offset` bytes: two zero
/// blocks, then zeros up to the next 10240-byte record (tarfile's close()).
pub fn end_len(offset: u64) -> u64 {
    let end = offset + 2 * BLOCK;
    end + (RECORD - end % RECORD) % RECORD - offset
}

/// Appends the header block(s) for `h` to `out`, exactly as tarfile does.
pub fn encode_header(h: &Header, out: &mut Vec<u8>) {
    let mut name = h.name.to_vec();
    if h.kind == Kind::Directory && !name.ends_with(b"/") {
        name.push(b'/');
    }
    let mut pax: Vec<(&str, Vec<u8>)> = Vec::new();
    for (key, value, limit) in [
        ("path", &name[..], 100),
        ("linkpath", h.linkname, 100),
        ("uname", h.owner.uname.as_bytes(), 32),
        ("gname", h.owner.gname.as_bytes(), 32),
    ] {
        if !value.is_ascii() || value.len() > limit {
            pax.push((key, value.to_vec()));
        }
    }
    let uid = number_field(&mut pax, "uid", h.owner.uid.into(), 8);
    let gid = number_field(&mut pax, "gid", h.owner.gid.into(), 8);
    let size = number_field(&mut pax, "size", h.size.into(), 12);
    let mtime = number_field(&mut pax, "mtime", h.owner.mtime.into(), 12);
    if !pax.is_empty() {
        encode_pax(&pax, out);
    }
    let fields = UstarFields {
        name: &ustar_text(&name),
        mode: u64::from(h.mode & 0o7777),
        uid,
        gid,
        size,
        mtime,
        typeflag: h.kind.typeflag(),
        linkname: &ustar_text(h.linkname),
        uname: &ustar_text(h.owner.uname.as_bytes()),
        gname: &ustar_text(h.owner.gname.as_bytes()),
    };
    encode_ustar(&fields, out);
}

/// The length `encode_header` would append, for sizing layers from metadata.
pub fn header_len(h: &Header) -> u64 {
    let mut scratch = Vec::with_capacity(1536);
    encode_header(h, &mut scratch);
    scratch.len() as u64
}

/// Appends a plain outer-archive member header (mode 0644, owner 0/0 with
/// empty names, as `tarfile.TarInfo(name)` defaults), used for the
/// docker-archive's layer.tar, config and manifest members.
pub fn encode_plain_file_header(name: &str, size: u64, mtime: i64, out: &mut Vec<u8>) {
    let owner = Owner {
        uid: 0,
        gid: 0,
        uname: String::new(),
        gname: String::new(),
        mtime,
    };
    let h = Header {
        name: name.as_bytes(),
        kind: Kind::Regular,
        mode: 0o644,
        size,
        linkname: b"",
        owner: &owner,
    };
    encode_header(&h, out);
}

/// tarfile puts a number in the ustar field when `0 <= n < 8**(digits-1)`;
/// otherwise it writes 0 there and the decimal value as a PAX record.
fn number_field(
    pax: &mut Vec<(&'static str, Vec<u8>)>,
    key: &'static str,
    n: i128,
    digits: u32,
) -> u64 {
    let limit = 8i128.pow(digits - 1);
    if (0..limit).contains(&n) {
        n as u64
    } else {
        pax.push((key, n.to_string().into_bytes()));
        0
    }
}

/// The ustar fields after PAX decisions, already in their on-disk forms.
struct UstarFields<'a> {
    name: &'a [u8],
    mode: u64,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    typeflag: u8,
    linkname: &'a [u8],
    uname: &'a [u8],
    gname: &'a [u8],
}

fn encode_ustar(f: &UstarFields, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + BLOCK as usize, 0);
    let b = &mut out[start..];
    put_text(&mut b[0..100], f.name);
    put_octal(&mut b[100..108], f.mode);
    put_octal(&mut b[108..116], f.uid);
    put_octal(&mut b[116..124], f.gid);
    put_octal(&mut b[124..136], f.size);
    put_octal(&mut b[136..148], f.mtime);
    b[148..156].copy_from_slice(b"        ");
    b[156] = f.typeflag;
    put_text(&mut b[157..257], f.linkname);
    b[257..265].copy_from_slice(b"ustar\x0000");
    put_text(&mut b[265..297], f.uname);
    put_text(&mut b[297..329], f.gname);
    // devmajor, devminor and prefix stay NUL, as tarfile leaves them for
    // anything but device files.
    let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
    // Six digits, NUL, and the eighth byte stays a space, as tarfile
    // writes it; the largest sum (512 × 255) fits in six octal digits.
    put_octal(&mut b[148..155], sum);
}

/// tarfile's `stn`: bytes cut to the field, NUL-padded.
fn put_text(field: &mut [u8], text: &[u8]) {
    let n = text.len().min(field.len());
    field[..n].copy_from_slice(&text[..n]);
}

/// tarfile's `itn` for in-range values: zero-padded octal, then NUL.
fn put_octal(field: &mut [u8], n: u64) {
    // By hand rather than `format!`: this runs for every entry, twice (the
    // sizing walk measures each header), and core::fmt plus the allocation
    // made it most of the reading thread's user time on small files.
    let digits = field.len() - 1;
    let mut rest = n;
    for slot in field[..digits].iter_mut().rev() {
        *slot = b'0' + (rest & 7) as u8;
        rest >>= 3;
    }
    debug_assert_eq!(rest, 0, "{n} does not fit {digits} octal digits");
    field[digits] = 0;
}

/// A PAX extended header: records `"%d %s=%s\n"` where the leading length
/// counts itself, preceded by `hdrcharset=BINARY` when a value is not UTF-8.
fn encode_pax(records: &[(&str, Vec<u8>)], out: &mut Vec<u8>) {
    let mut payload = Vec::new();
    if records.iter().any(|(_, v)| std::str::from_utf8(v).is_err()) {
        payload.extend_from_slice(b"21 hdrcharset=BINARY\n");
    }
    for (key, value) in records {
        // Iterate from 0 as tarfile does: for some lengths two fixed
        // points exist (9 and 10 for a body of 8) and tarfile takes the first.
        let body = key.len() + value.len() + 3;
        let mut total = 0;
        loop {
            let next = body + total.to_string().len();
            if next == total {
                break;
            }
            total = next;
        }
        payload.extend_from_slice(total.to_string().as_bytes());
        payload.push(b' ');
        payload.extend_from_slice(key.as_bytes());
        payload.push(b'=');
        payload.extend_from_slice(value);
        payload.push(b'\n');
    }
    let fields = UstarFields {
        name: b"././@PaxHeader",
        mode: 0,
        uid: 0,
        gid: 0,
        size: payload.len() as u64,
        mtime: 0,
        typeflag: b'x',
        linkname: b"",
        uname: b"",
        gname: b"",
    };
    encode_ustar(&fields, out);
    let pad = padding(payload.len() as u64) as usize;
    out.extend_from_slice(&payload);
    out.resize(out.len() + pad, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> Owner {
        Owner {
            uid: 0,
            gid: 0,
            uname: "root".into(),
            gname: "root".into(),
            mtime: 1,
        }
    }

    fn header(name: &[u8], kind: Kind, size: u64, link: &[u8], owner: &Owner) -> Vec<u8> {
        let mut out = Vec::new();
        let h = Header {
            name,
            kind,
            mode: if kind == Kind::Symlink { 0o777 } else { 0o555 },
            size,
            linkname: link,
            owner,
        };
        encode_header(&h, &mut out);
        assert_eq!(out.len() as u64, header_len(&h));
        out
    }

    /// The first two members of every reference layer, from tests/vectors/basic.tar.
    #[test]
    fn nix_root_matches_reference_bytes() {
        let tar = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/vectors/basic.tar"
        ))
        .unwrap();
        let layer = &tar[512..];
        let o = root();
        let mut out = Vec::new();
        let h = Header {
            name: b"/nix",
            kind: Kind::Directory,
            mode: 0o755,
            size: 0,
            linkname: b"",
            owner: &o,
        };
        encode_header(&h, &mut out);
        assert_eq!(&out[..], &layer[..512]);
        let outer = &tar[..512];
        let mut out = Vec::new();
        let name = "28c3e9a451d61ac4fc81a0ad7f2ec8a9162bede6221c3c496a3455e3d649c794/layer.tar";
        encode_plain_file_header(name, 71680, 1, &mut out);
        assert_eq!(&out[..], outer);
    }

    #[test]
    fn long_and_unicode_names_get_pax_path() {
        let o = root();
        let short = header(&[b'a'; 100], Kind::Regular, 1, b"", &o);
        assert_eq!(short.len(), 512, "100 bytes fit the ustar field");
        let long = header(&[b'a'; 101], Kind::Regular, 1, b"", &o);
        assert_eq!(long.len(), 3 * 512);
        assert!(long[512..].starts_with(b"111 path=aaaa"));
        assert_eq!(long[0..14], *b"././@PaxHeader");
        let uni = header("/ü".as_bytes(), Kind::Regular, 1, b"", &o);
        assert!(uni[512..].starts_with("12 path=/ü\n".as_bytes()));
        assert_eq!(
            &uni[1024..1027],
            b"/?\0",
            "ustar name replaces non-ASCII with ?"
        );
    }

    #[test]
    fn non_utf8_names_get_binary_charset() {
        let o = root();
        let h = header(b"/a\xff\xfeb", Kind::Regular, 1, b"", &o);
        let pax = &h[512..1024];
        assert!(pax.starts_with(b"21 hdrcharset=BINARY\n14 path=/a\xff\xfeb\n"));
        assert_eq!(&h[1024..1030], b"/a??b\0");
    }

    #[test]
    fn size_of_8_gib_needs_pax() {
        let o = root();
        let below = header(b"f", Kind::Regular, 8u64.pow(11) - 1, b"", &o);
        assert_eq!(below.len(), 512);
        let at = header(b"f", Kind::Regular, 8u64.pow(11), b"", &o);
        assert!(at[512..].starts_with(b"19 size=8589934592\n"));
        assert_eq!(&at[1024 + 124..1024 + 136], b"00000000000\0");
    }

    #[test]
    fn pax_length_prefix_counts_itself() {
        // Lengths crossing a power of ten, as tarfile computes them.
        for (value_len, prefix) in [(90, &b"99 path="[..]), (91, b"101 path="), (1, b"9 path=")] {
            let mut out = Vec::new();
            encode_pax(&[("path", vec![b'x'; value_len])], &mut out);
            assert!(out[512..].starts_with(prefix), "{value_len}");
        }
    }

    #[test]
    fn end_pads_to_record() {
        assert_eq!(end_len(0), 10240);
        assert_eq!(end_len(512), 10240 - 512);
        assert_eq!(end_len(9216), 1024);
        assert_eq!(end_len(9217), 1023 + 10240);
        assert_eq!(padding(511), 1);
        assert_eq!(padding(512), 0);
    }
}
