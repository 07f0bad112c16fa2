//! A tar reader for untrusted archives (base images): headers only, with
//! bounded memory whatever the archive claims.
//!
//! The `tar` crate reads a GNU long name, long link or PAX extended header
//! whole into memory at the size its header claims, so a small gzip'd base
//! whose tar claims a 256 MiB PAX record costs 256 MiB. Here those are
//! capped ([`MAX_NAME`], [`MAX_PAX`]) with a one-line error beyond, and
//! errors never quote header bytes. PAX records are parsed by their length
//! prefix (a value may hold a newline), and a PAX `size` (members of 8 GiB
//! and more) is honoured.
//!
//! It reads what docker-archives use: ustar (with `prefix`), GNU long
//! names/links and base-256 numbers, PAX `path`, `linkpath` and `size`;
//! global PAX headers are skipped as Python's tarfile does with their
//! contents for our purposes.

use std::io::{self, Read};

/// Longest GNU long name or long link target accepted.
pub const MAX_NAME: u64 = 64 << 10;
/// Largest PAX extended header accepted (all its records together).
pub const MAX_PAX: u64 = 1 << 20;

const BLOCK: u64 = 512;

/// A byte source that can skip ahead cheaply (seek) or by reading.
pub trait Skip: Read {
    /// Skips `n` bytes, or to the end if fewer are left.
    fn skip(&mut self, n: u64) -> io::Result<()> {
        io::copy(&mut self.take(n), &mut io::sink())?;
        Ok(())
    }
}

impl Skip for &[u8] {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        let n = usize::try_from(n).unwrap_or(usize::MAX).min(self.len());
        *self = &self[n..];
        Ok(())
    }
}

impl Skip for Box<dyn Read> {}

impl<T: Skip + ?Sized> Skip for &mut T {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        (**self).skip(n)
    }
}

impl<R: io::Read + io::Seek> Skip for io::BufReader<R> {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        // Seeking past the end is no error; Index::check_within catches a
        // member running past the end of the file.
        let n = i64::try_from(n).map_err(|_| invalid("an offset over 2^63"))?;
        self.seek_relative(n)
    }
}

/// One member as its headers describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMember {
    /// The name (PAX `path`, GNU long name or ustar prefix/name), raw bytes.
    pub name: Vec<u8>,
    /// The link target for links, raw bytes.
    pub link: Vec<u8>,
    /// The ustar type flag (`0`, `1`, `2`, `5` …).
    pub typeflag: u8,
    /// Data size in bytes.
    pub size: u64,
    /// Offset of the data in the tar stream.
    pub data_pos: u64,
}

/// Iterates over the members of a tar stream.
pub struct TarReader<R> {
    inner: R,
    /// Offset in the tar stream.
    pos: u64,
    /// Unread data bytes of the current member.
    data_left: u64,
    /// Padding after the current member's data.
    pad_left: u64,
    done: bool,
    members: u64,
    /// Offset of the header being read, for errors.
    header_pos: u64,
}

impl<R: Skip> TarReader<R> {
    pub fn new(inner: R) -> TarReader<R> {
        TarReader {
            inner,
            pos: 0,
            data_left: 0,
            pad_left: 0,
            done: false,
            members: 0,
            header_pos: 0,
        }
    }

    /// The next member, its data unread; `None` at the end of the archive
    /// (a zero block, or the end of the stream at a block boundary).
    pub fn next_member(&mut self) -> io::Result<Option<RawMember>> {
        if self.done {
            return Ok(None);
        }
        let result = self.next_inner();
        if !matches!(result, Ok(Some(_))) {
            self.done = true;
        }
        result
    }

    fn next_inner(&mut self) -> io::Result<Option<RawMember>> {
        let mut long_name = None;
        let mut long_link = None;
        let mut pax = Pax::default();
        loop {
            self.skip_rest()?;
            self.header_pos = self.pos;
            let Some(block) = self.read_block()? else {
                return Ok(None);
            };
            if block.iter().all(|&b| b == 0) {
                return Ok(None);
            }
            check_checksum(&block).map_err(|e| self.bad(e))?;
            let mut size = number(&block[124..136]).map_err(|e| self.bad(e))?;
            let typeflag = block[156];
            let data_pos = self.pos;
            match typeflag {
                b'L' | b'K' | b'x' | b'g' => {
                    self.start_data(size)?;
                    match typeflag {
                        b'L' => long_name = Some(self.read_ext(size, MAX_NAME, "GNU long name")?),
                        b'K' => long_link = Some(self.read_ext(size, MAX_NAME, "GNU long link")?),
                        b'x' => {
                            pax = Pax::parse(&self.read_ext(size, MAX_PAX, "PAX header")?)
                                .map_err(|e| self.bad(e))?
                        }
                        _ => {} // global PAX header: skipped with the data
                    }
                    continue;
                }
                _ => {}
            }
            if let Some(s) = pax.size {
                size = s;
            }
            self.start_data(size)?;
            let name = match (pax.path.take(), long_name.take()) {
                (Some(p), _) => p,
                (None, Some(l)) => trim_nul(&l).to_vec(),
                (None, None) => ustar_name(&block),
            };
            let link = match (pax.linkpath.take(), long_link.take()) {
                (Some(p), _) => p,
                (None, Some(l)) => trim_nul(&l).to_vec(),
                (None, None) => trim_nul(&block[157..257]).to_vec(),
            };
            self.members += 1;
            return Ok(Some(RawMember {
                name,
                link,
                typeflag,
                size,
                data_pos,
            }));
        }
    }

    /// Reads the current member's data (at most what is left of it).
    pub fn read_data(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.data_left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the archive ends inside a member",
            ));
        }
        self.data_left -= n as u64;
        self.pos += n as u64;
        Ok(n)
    }

    /// The current member's data as a reader.
    pub fn data(&mut self) -> Data<'_, R> {
        Data(self)
    }

    fn start_data(&mut self, size: u64) -> io::Result<()> {
        self.data_left = size;
        self.pad_left = (BLOCK - size % BLOCK) % BLOCK;
        self.pos
            .checked_add(size)
            .and_then(|p| p.checked_add(self.pad_left))
            .ok_or_else(|| self.bad("a member size past 2^64"))?;
        Ok(())
    }

    fn skip_rest(&mut self) -> io::Result<()> {
        let n = self.data_left + self.pad_left;
        if n > 0 {
            self.inner.skip(n)?;
            self.pos += n;
            self.data_left = 0;
            self.pad_left = 0;
        }
        Ok(())
    }

    /// A whole block, `None` at a clean end of stream.
    fn read_block(&mut self) -> io::Result<Option<[u8; 512]>> {
        let mut block = [0u8; 512];
        let mut got = 0;
        while got < block.len() {
            match self.inner.read(&mut block[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.pos += got as u64;
        match got {
            0 if self.members > 0 => Ok(None),
            0 => Err(invalid("is empty")),
            512 => Ok(Some(block)),
            n if self.members == 0 => Err(invalid(format!(
                "is not a valid tar archive: {n} bytes, shorter than a tar header"
            ))),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("ends inside a header at offset {}", self.pos),
            )),
        }
    }

    /// Reads an extension header's data, refusing more than `max` bytes.
    fn read_ext(&mut self, size: u64, max: u64, what: &str) -> io::Result<Vec<u8>> {
        if size > max {
            return Err(invalid(format!(
                "has a {what} of {size} bytes at offset {} (the limit is {max})",
                self.header_pos
            )));
        }
        let mut bytes = vec![0u8; size as usize];
        let mut got = 0;
        while got < bytes.len() {
            got += self.read_data(&mut bytes[got..])?;
        }
        Ok(bytes)
    }

    fn bad(&self, why: impl std::fmt::Display) -> io::Error {
        let at = if self.members == 0 {
            "is not a valid tar archive".to_owned()
        } else {
            format!("has a bad tar header at offset {}", self.header_pos)
        };
        invalid(format!("{at}: {why}"))
    }
}

/// [`TarReader::read_data`] as a `Read`.
pub struct Data<'a, R>(&'a mut TarReader<R>);

impl<R: Skip> Read for Data<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_data(buf)
    }
}

fn invalid(why: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_string())
}

/// The PAX records we use.
#[derive(Default)]
struct Pax {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
}

impl Pax {
    /// Records are `LEN KEY=VALUE\n`, LEN counting the whole record.
    fn parse(mut data: &[u8]) -> Result<Pax, String> {
        let mut pax = Pax::default();
        while !data.is_empty() {
            let space = data
                .iter()
                .take(20)
                .position(|&b| b == b' ')
                .ok_or("a PAX record without a length")?;
            let len: usize = std::str::from_utf8(&data[..space])
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or("a PAX record length that is not a number")?;
            if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
                return Err("a PAX record whose length does not fit".into());
            }
            let record = &data[space + 1..len - 1];
            let eq = record
                .iter()
                .position(|&b| b == b'=')
                .ok_or("a PAX record without '='")?;
            let (key, value) = (&record[..eq], &record[eq + 1..]);
            match key {
                b"path" => pax.path = Some(value.to_vec()),
                b"linkpath" => pax.linkpath = Some(value.to_vec()),
                b"size" => {
                    pax.size = Some(
                        std::str::from_utf8(value)
                            .ok()
                            .and_then(|s| s.parse().ok())
                            .ok_or("a PAX size that is not a number")?,
                    )
                }
                _ => {}
            }
            data = &data[len..];
        }
        Ok(pax)
    }
}

fn trim_nul(b: &[u8]) -> &[u8] {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    &b[..end]
}

/// `prefix/name` for POSIX ustar headers, `name` otherwise.
fn ustar_name(block: &[u8; 512]) -> Vec<u8> {
    let name = trim_nul(&block[0..100]);
    let prefix = trim_nul(&block[345..500]);
    if &block[257..265] == b"ustar\x0000" && !prefix.is_empty() {
        let mut full = prefix.to_vec();
        full.push(b'/');
        full.extend_from_slice(name);
        full
    } else {
        name.to_vec()
    }
}

/// An octal field (spaces and NULs around it) or GNU base-256.
fn number(field: &[u8]) -> Result<u64, String> {
    if field[0] & 0x80 != 0 {
        if field[0] == 0xff {
            return Err("a negative size".into());
        }
        let mut n: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            n = n
                .checked_mul(256)
                .and_then(|n| n.checked_add(u64::from(b)))
                .ok_or("a size past 2^64")?;
        }
        return Ok(n);
    }
    let text = trim_nul(field);
    let digits = text.trim_ascii();
    if digits.is_empty() {
        return Ok(0);
    }
    let mut n: u64 = 0;
    for &b in digits {
        if !(b'0'..=b'7').contains(&b) {
            return Err("a size field that is not octal".into());
        }
        n = n
            .checked_mul(8)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or("a size past 2^64")?;
    }
    Ok(n)
}

/// The header checksum: the sum of its bytes with the checksum field read
/// as spaces (unsigned, or signed as some old writers did).
fn check_checksum(block: &[u8; 512]) -> Result<(), String> {
    let stored = number(&block[148..156]).map_err(|_| "a checksum field that is not octal")?;
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    if stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed) {
        Ok(())
    } else {
        Err("the header checksum does not match".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(name: &[u8], typeflag: u8, size: u64) -> Vec<u8> {
        let mut h = vec![0u8; 512];
        h[..name.len()].copy_from_slice(name);
        h[100..108].copy_from_slice(b"0000644\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[156] = typeflag;
        h[257..265].copy_from_slice(b"ustar\x0000");
        h[148..156].copy_from_slice(b"        ");
        let sum: u64 = h.iter().map(|&b| u64::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        h
    }

    fn member(out: &mut Vec<u8>, name: &[u8], typeflag: u8, data: &[u8]) {
        out.extend(header(name, typeflag, data.len() as u64));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }

    fn all(bytes: &[u8]) -> io::Result<Vec<RawMember>> {
        let mut r = TarReader::new(bytes);
        let mut v = Vec::new();
        while let Some(m) = r.next_member()? {
            v.push(m);
        }
        Ok(v)
    }

    #[test]
    fn reads_names_sizes_and_positions() {
        let mut t = Vec::new();
        member(&mut t, b"a.json", b'0', b"{}");
        member(&mut t, b"dir/", b'5', b"");
        t.extend([0u8; 1024]);
        let m = all(&t).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].name.as_slice(), m[0].size, m[0].data_pos),
            (&b"a.json"[..], 2, 512)
        );
        assert_eq!(m[1].data_pos, 1536);
    }

    #[test]
    fn pax_values_may_hold_newlines_and_set_the_size() {
        let name = b"a\nb/layer.tar";
        let rec = |k: &str, v: &[u8]| {
            let body_len = k.len() + v.len() + 3;
            let mut len = body_len + 1;
            while len != body_len + len.to_string().len() {
                len = body_len + len.to_string().len();
            }
            let mut r = format!("{len} {k}=").into_bytes();
            r.extend_from_slice(v);
            r.push(b'\n');
            r
        };
        let mut pax = rec("path", name);
        pax.extend(rec("size", b"3"));
        let mut t = Vec::new();
        member(&mut t, b"././@PaxHeader", b'x', &pax);
        member(&mut t, b"short", b'0', b"abc");
        let m = all(&t).unwrap();
        assert_eq!(m[0].name, name);
        assert_eq!(m[0].size, 3);
    }

    #[test]
    fn huge_extension_headers_are_refused_without_allocating() {
        for flag in [b'x', b'L', b'K'] {
            let mut t = header(b"././@LongLink", flag, 256 << 20);
            t.extend([b'a'; 512]);
            let e = all(&t).unwrap_err().to_string();
            assert!(e.contains("the limit is"), "{e}");
        }
    }

    #[test]
    fn garbage_is_not_a_tar_and_errors_quote_no_bytes() {
        let e = all(&[b'\n'; 600]).unwrap_err().to_string();
        assert!(e.starts_with("is not a valid tar archive"), "{e}");
        assert!(!e.contains('\n'));
        let mut t = Vec::new();
        member(&mut t, b"a", b'0', b"x");
        t.extend(&[7u8; 512]);
        let e = all(&t).unwrap_err().to_string();
        assert!(e.contains("bad tar header at offset 1024"), "{e}");
    }

    #[test]
    fn base256_sizes() {
        let mut f = [0u8; 12];
        f[0] = 0x80;
        f[11] = 5;
        f[10] = 1;
        assert_eq!(number(&f).unwrap(), 261);
        assert!(number(&[0xff; 12]).is_err());
        assert_eq!(number(b" 17 \0\0\0\0\0\0\0\0").unwrap(), 15);
    }

    /// Fuzzing finding (tar_names): a name holding newlines and non-UTF-8
    /// bytes, written as a PAX record with hdrcharset=BINARY, reads back
    /// whole (the tar crate cut it at the first newline).
    #[test]
    fn writer_names_with_newlines_round_trip() {
        let name = b"/\xfc\xff\xff\xffnhx/sto\n\n\n\nrk/abc-x/\xe9/nh\x88\xd0\x8c";
        let owner = crate::tar::Owner {
            uid: 0,
            gid: 0,
            uname: "root".into(),
            gname: "root".into(),
            mtime: 1,
        };
        let h = crate::tar::Header {
            name,
            kind: crate::tar::Kind::Symlink,
            mode: 0o777,
            size: 0,
            linkname: b"t\xe9\n",
            owner: &owner,
        };
        let mut out = Vec::new();
        crate::tar::encode_header(&h, &mut out);
        out.extend([0u8; 1024]);
        let m = all(&out).unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].name, name);
        assert_eq!(m[0].link, b"t\xe9\n");
    }
}
