//! The member index of a base image tarball: every member's normalised
//! name, type, size and data offset, plus the contents of the small JSON
//! members met on the way, and link resolution inside the archive.
//!
//! nixpkgs' streamer looks members up with `tarfile.getmember`, which finds
//! the last member of a name and whose `extractfile` follows symlinks and
//! hardlinks. `docker save` relies on that: a layer shared by two legacy
//! image IDs is stored once and the second `<id>/layer.tar` is a symlink to
//! `../<other id>/layer.tar`. We mirror the lookup (last member wins, links
//! followed) but refuse names that are absolute or contain `..`, which a
//! docker-archive never has and which point outside the archive.

use std::collections::HashMap;
use std::io::Read;

use anyhow::{bail, Context, Result};

use super::tar_reader::{RawMember, Skip, TarReader};

/// The largest image config we read into memory: real ones are a few KiB
/// (one with a long history, some hundred KiB), and parsed JSON costs up
/// to 40 times its size (a list of one-letter strings).
pub const MAX_JSON: u64 = 2 << 20;
/// The largest manifest.json: a few hundred bytes per image in it.
pub const MAX_MANIFEST: u64 = 1 << 20;

/// Members indexed at most: a docker-archive has a few per layer (and
/// Docker takes 125 layers), so this only stops a hostile archive of
/// millions of empty members from growing the index without bound.
pub const MAX_MEMBERS: usize = 100_000;
/// Bytes of member names indexed at most, for the same reason.
pub const MAX_NAME_BYTES: usize = 16 << 20;
/// Bytes of JSON members kept during a compressed scan at most; past it a
/// member is read again when needed instead of kept.
const MAX_KEPT_BYTES: usize = 3 * MAX_JSON as usize;

/// Blobs up to this size whose first byte is `{` are kept during a
/// compressed scan: in the OCI layout the image config is such a blob and
/// keeping it spares a second decompressing pass.
const MAX_SNIFFED_BLOB: u64 = 1 << 20;

/// What a member is, as far as reading layer data goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Regular,
    Directory,
    /// Target as written (relative to the link's directory, may hold `..`).
    Symlink(String),
    /// Target: another member's name.
    Hardlink(String),
    /// Any other tar type (devices, FIFOs …), by its type byte.
    Other(u8),
}

/// One member of the archive.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub kind: Kind,
    pub size: u64,
    /// Offset of the member's data in the decoded tar stream; unique per
    /// member, so it also identifies the member on a later pass.
    pub data_pos: u64,
}

/// All members of an archive, by name.
#[derive(Debug, Default)]
pub struct Index {
    pub members: Vec<Member>,
    by_name: HashMap<String, usize>,
    /// Contents of small JSON members kept during the scan, by member index.
    kept: HashMap<usize, Vec<u8>>,
}

/// Links followed before we call it a loop.
const MAX_LINK_HOPS: usize = 32;

impl Index {
    /// Indexes every member of a tar stream. `keep_json` asks the scan to
    /// hold on to small JSON members (used when the stream cannot seek).
    pub fn scan<R: Skip>(reader: &mut TarReader<R>, keep_json: bool) -> Result<Index> {
        let mut index = Index::default();
        let (mut names, mut kept) = (0usize, 0usize);
        loop {
            let raw = match reader.next_member() {
                Ok(Some(raw)) => raw,
                Ok(None) => break,
                Err(e) => return Err(tar_error(&e, index.members.last())),
            };
            let member = member_of(&raw).context("has an unsafe member name")?;
            let i = index.members.len();
            names += member.name.len();
            if i >= MAX_MEMBERS || names > MAX_NAME_BYTES {
                bail!(
                    "has more than {MAX_MEMBERS} members or {} MiB of member names; \
                     a docker-archive has a few per layer",
                    MAX_NAME_BYTES >> 20
                );
            }
            if keep_json && wants_json(&member) && kept + member.size as usize <= MAX_KEPT_BYTES {
                if let Some(bytes) = read_json_candidate(&mut reader.data(), &member)? {
                    kept += bytes.len();
                    index.kept.insert(i, bytes);
                }
            }
            index.by_name.insert(member.name.clone(), i);
            index.members.push(member);
        }
        Ok(index)
    }

    /// For a plain file: every member's data must lie inside the file, or
    /// the archive was cut short (seeking past the end does not fail).
    pub fn check_within(&self, file_len: u64) -> Result<()> {
        for m in &self.members {
            let end = m.data_pos.saturating_add(m.size);
            if end > file_len {
                bail!(
                    "is truncated: member {} needs bytes up to {end} but the file has {file_len}",
                    m.name
                );
            }
        }
        Ok(())
    }

    /// The member `name` (normalised) refers to, links followed.
    pub fn resolve(&self, name: &str) -> Result<(usize, &Member)> {
        let mut current = name.to_owned();
        for _ in 0..MAX_LINK_HOPS {
            let Some(&i) = self.by_name.get(&current) else {
                if current == name {
                    bail!("has no member {name}");
                }
                bail!("member {name} links to {current}, which is not in the archive");
            };
            let m = &self.members[i];
            match &m.kind {
                Kind::Regular => return Ok((i, m)),
                Kind::Symlink(target) => current = symlink_target(&m.name, target)?,
                Kind::Hardlink(target) => current = join_components("", target)?,
                Kind::Directory => bail!("member {} is a directory, not a file", m.name),
                Kind::Other(t) => bail!(
                    "member {} is not a regular file (tar type {:?})",
                    m.name,
                    char::from(*t)
                ),
            }
        }
        bail!("member {name}: too many links (a link loop?)")
    }

    /// Whether a member of that (normalised) name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Contents kept during the scan, if any.
    pub fn kept(&self, i: usize) -> Option<&[u8]> {
        self.kept.get(&i).map(Vec::as_slice)
    }
}

/// A tar reading error as one line: where it happened and its cause
/// (escaped all the same: a decompressor's message is not ours).
pub fn tar_error(e: &std::io::Error, previous: Option<&Member>) -> anyhow::Error {
    let cause: String = e
        .to_string()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(120)
        .collect();
    // Our reader's own messages say what and where already.
    if cause.starts_with("is not a valid tar archive") || cause.starts_with("has a") {
        return anyhow::anyhow!("{cause}");
    }
    // zstd refuses frames whose window needs more than we allow.
    if cause.contains("too much memory") {
        return anyhow::anyhow!(
            "cannot be decompressed within the memory limit (a zstd window over 128 MiB: {cause})"
        );
    }
    match previous {
        None => anyhow::anyhow!("is not a valid tar archive ({cause})"),
        Some(m) => anyhow::anyhow!(
            "is not a valid tar archive or is truncated after member {} ({cause})",
            crate::escape::one_line(&m.name)
        ),
    }
}

/// Builds our view of one tar member, refusing unsafe names.
fn member_of(raw: &RawMember) -> Result<Member> {
    let name = normalize(&String::from_utf8_lossy(&raw.name))?;
    let link = || String::from_utf8_lossy(&raw.link).into_owned();
    let kind = match raw.typeflag {
        b'0' | b'\0' | b'7' => Kind::Regular,
        b'5' => Kind::Directory,
        b'2' => Kind::Symlink(link()),
        b'1' => Kind::Hardlink(link()),
        t => Kind::Other(t),
    };
    Ok(Member {
        name,
        kind,
        size: raw.size,
        data_pos: raw.data_pos,
    })
}

/// A member name as a relative path without `.` components or a trailing
/// slash; absolute names and `..` components are errors.
pub fn normalize(raw: &str) -> Result<String> {
    if raw.starts_with('/') {
        bail!("`{raw}` is an absolute name");
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => bail!("`{raw}` has a `..` component"),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Where a symlink at `link_name` pointing to `target` leads, as a member
/// name. `..` may climb within the archive but not out of it.
fn symlink_target(link_name: &str, target: &str) -> Result<String> {
    if target.starts_with('/') {
        bail!("member {link_name} is a symlink to an absolute path ({target})");
    }
    let dir = link_name.rsplit_once('/').map_or("", |(d, _)| d);
    join_components(dir, target)
        .with_context(|| format!("member {link_name} is a symlink to {target}"))
}

/// `dir` + `rel`, resolving `.` and `..` lexically.
fn join_components(dir: &str, rel: &str) -> Result<String> {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    bail!("which points outside the archive");
                }
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Members that may be the manifest or an image config.
fn wants_json(m: &Member) -> bool {
    m.kind == Kind::Regular
        && m.size <= MAX_JSON
        && (m.name.ends_with(".json")
            || (m.name.starts_with("blobs/") && m.size <= MAX_SNIFFED_BLOB))
}

/// Reads a JSON-looking member whole; `None` when it does not start with
/// `{` or `[` (an OCI blob that is a layer).
fn read_json_candidate(r: &mut impl Read, m: &Member) -> Result<Option<Vec<u8>>> {
    let mut first = [0u8; 1];
    let n = r
        .read(&mut first)
        .with_context(|| format!("is truncated or corrupt (in member {})", m.name))?;
    if n == 1 && first[0] != b'{' && first[0] != b'[' {
        return Ok(None);
    }
    let mut bytes = first[..n].to_vec();
    r.read_to_end(&mut bytes)
        .with_context(|| format!("is truncated or corrupt (in member {})", m.name))?;
    if bytes.len() as u64 != m.size {
        bail!("is truncated: member {} ends early", m.name);
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_strips_dot_and_slashes() {
        assert_eq!(normalize("./manifest.json").unwrap(), "manifest.json");
        assert_eq!(normalize("abc//layer.tar").unwrap(), "abc/layer.tar");
        assert_eq!(normalize("abc/").unwrap(), "abc");
    }

    #[test]
    fn normalize_rejects_absolute_and_dotdot() {
        let e = normalize("/etc/passwd").unwrap_err().to_string();
        assert!(e.contains("absolute") && e.contains("/etc/passwd"), "{e}");
        let e = normalize("a/../../x").unwrap_err().to_string();
        assert!(e.contains("..") && e.contains("a/../../x"), "{e}");
    }

    #[test]
    fn symlinks_resolve_relative_to_their_directory() {
        assert_eq!(
            symlink_target("b/layer.tar", "../a/layer.tar").unwrap(),
            "a/layer.tar"
        );
        assert_eq!(symlink_target("b/layer.tar", "./x").unwrap(), "b/x");
        assert!(symlink_target("b/layer.tar", "../../x").is_err());
        assert!(symlink_target("b/layer.tar", "/a/layer.tar").is_err());
    }
}
