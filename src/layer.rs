//! One store layer: store paths walked into tar entries, sized from
//! metadata, then streamed (each file read once) through the archive
//! pipeline. Mirrors nixpkgs' `archive_paths_to`:
//!
//! - `/nix` and `/nix/store` directory entries first (mode 0755), whatever
//!   the store directory is;
//! - then per store path, in the layer's order: the path itself and, unless
//!   it is a symlink, everything below it, sorted component-wise by Python
//!   code point order (`sorted(path.rglob("*"))`): a pre-order walk with
//!   each directory's children sorted; symlinked directories are not
//!   followed;
//! - names are absolute; hardlinks become regular files with full contents;
//!   mode and size from `lstat`; owner, group and mtime from the conf;
//! - the tarball ends as tarfile's does (two zero blocks, 10240-byte record).

use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::archive::ArchiveWriter;
use crate::tar::{self, Header, Kind, Owner};

/// File bytes read from the store by this process (for `--verbose`, and
/// for tests proving that a warm digest cache reads each byte once): store
/// paths' files and base images' layer data.
static STORE_BYTES_READ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// File bytes read from the store so far by this process.
pub fn store_bytes_read() -> u64 {
    STORE_BYTES_READ.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts `n` more store bytes read (a base image's layer data).
pub(crate) fn count_store_bytes(n: u64) {
    STORE_BYTES_READ.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

/// Entries kept from the sizing walk up to this many bytes of memory;
/// bigger layers are walked again while streaming, so memory stays bounded.
const ENTRY_CACHE_BYTES: usize = 8 << 20;

/// One file, directory or symlink of a store path.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The path on disk (also the tar name, with a leading `/` ensured).
    pub path: Vec<u8>,
    pub kind: Kind,
    pub mode: u32,
    pub size: u64,
    pub link: Vec<u8>,
}

impl Entry {
    fn memory(&self) -> usize {
        std::mem::size_of::<Entry>() + self.path.len() + self.link.len()
    }
}

/// A layer ready to stream: its store paths, its exact tarball size and,
/// when small enough, the entries found while sizing it.
#[derive(Debug)]
pub struct LayerPlan {
    pub paths: Vec<String>,
    pub size: u64,
    cached: Option<Vec<Entry>>,
}

impl LayerPlan {
    /// Bytes of memory the entries kept from the walk take (0 when the
    /// layer is walked again while streaming).
    pub fn memory(&self) -> usize {
        self.cached
            .as_ref()
            .map_or(0, |c| c.iter().map(Entry::memory).sum())
    }
}

/// Checks the layer's store paths and computes its tarball size by
/// walking their metadata (no file contents are read).
pub fn plan(paths: &[String], store_dir: &str, owner: &Owner) -> Result<LayerPlan> {
    plan_with_cache(paths, store_dir, owner, ENTRY_CACHE_BYTES)
}

fn plan_with_cache(
    paths: &[String],
    store_dir: &str,
    owner: &Owner,
    cache_limit: usize,
) -> Result<LayerPlan> {
    use rayon::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut disk_paths = Vec::with_capacity(paths.len());
    for p in paths {
        disk_paths.push(checked_store_path(p, store_dir)?);
    }
    // Each store path is walked on its own, in parallel: a layer of
    // hundreds of paths (the one a push starts with, being the largest)
    // is sized on every core instead of one. The entries are kept while
    // the layer's total stays under `cache_limit`, counted across the
    // walkers, so whether they are kept depends on that total alone, and
    // joined in the layer's order: the same plan as one walk in order.
    let kept = AtomicUsize::new(0);
    let walked: Vec<Result<(u64, Option<Vec<Entry>>)>> = disk_paths
        .par_iter()
        .map(|p| {
            let mut size = 0;
            let mut cache = Some(Vec::new());
            walk(p, &mut |e| {
                size += entry_len(&e, owner);
                if let Some(c) = cache.as_mut() {
                    let m = e.memory();
                    if kept.fetch_add(m, Ordering::Relaxed) + m > cache_limit {
                        cache = None;
                    } else {
                        c.push(e);
                    }
                }
                Ok(())
            })?;
            Ok((size, cache))
        })
        .collect();
    let mut size = root_entries_len(owner);
    let mut cache = Some(Vec::new());
    // The first failure in the layer's order, as one walk in order reports.
    for w in walked {
        let (n, entries) = w?;
        size += n;
        cache = cache.zip(entries).map(|(mut all, more)| {
            all.extend(more);
            all
        });
    }
    size += tar::end_len(size);
    Ok(LayerPlan {
        paths: paths.to_vec(),
        size,
        cached: cache,
    })
}

/// Streams the layer tarball (exactly `plan.size` bytes) into `out`.
pub fn stream<W: std::io::Write>(
    plan: LayerPlan,
    store_dir: &str,
    owner: &Owner,
    out: &mut ArchiveWriter<W>,
) -> Result<()> {
    let total = write_tar(&plan.paths, plan.cached, store_dir, owner, out)?;
    if total != plan.size {
        bail!(
            "store paths {:?} changed while streaming (layer is {total} bytes, expected {})",
            plan.paths,
            plan.size
        );
    }
    Ok(())
}

/// Streams the tarball of the store paths `paths` into `out` without a
/// plan, walking them as they stream, and returns its size: for a
/// destination that needs no size before the bytes (a registry upload),
/// the layer's first bytes then leave at once instead of after a walk of
/// all its files. The same bytes as [`stream`].
pub fn stream_walking<W: std::io::Write>(
    paths: &[String],
    store_dir: &str,
    owner: &Owner,
    out: &mut ArchiveWriter<W>,
) -> Result<u64> {
    write_tar(paths, None, store_dir, owner, out)
}

/// The tarball: the root entries, the entries (as walked before, or
/// walked now), the end; returns its size.
fn write_tar<W: std::io::Write>(
    paths: &[String],
    cached: Option<Vec<Entry>>,
    store_dir: &str,
    owner: &Owner,
    out: &mut ArchiveWriter<W>,
) -> Result<u64> {
    let start = out.offset();
    let mut scratch = Vec::with_capacity(4096);
    for name in [&b"/nix"[..], b"/nix/store"] {
        let root = Entry {
            path: name.to_vec(),
            kind: Kind::Directory,
            mode: 0o755,
            size: 0,
            link: Vec::new(),
        };
        write_entry(&root, owner, &mut scratch, out)?;
    }
    let mut emit = |e: Entry| write_entry(&e, owner, &mut scratch, out);
    match cached {
        Some(entries) => entries.into_iter().try_for_each(&mut emit)?,
        None => {
            for p in paths {
                walk(&checked_store_path(p, store_dir)?, &mut emit)?;
            }
        }
    }
    let written = out.offset() - start;
    out.write_zeros(tar::end_len(written))?;
    Ok(out.offset() - start)
}

/// Checks every layer's store paths before the image starts: each a direct
/// child of the store directory, present, and listed once in the whole
/// image. A missing path (garbage-collected, a wrong `store_dir`) then
/// fails before any output, instead of after the layers before it were
/// streamed into `docker load`; a path listed twice would be two tar
/// members of one name (nixpkgs' streamer writes that broken image) or the
/// same files in two layers. One `lstat` per path.
pub fn check_paths(layers: &[Vec<String>], store_dir: &str) -> Result<()> {
    let mut seen: std::collections::HashMap<Vec<u8>, usize> = Default::default();
    for (k, layer) in layers.iter().enumerate() {
        for p in layer {
            let disk = checked_store_path(p, store_dir)?;
            if let Some(first) = seen.insert(disk.clone(), k) {
                if first == k {
                    bail!("store path {p:?} is listed twice in store layer {}", k + 1);
                }
                bail!(
                    "store path {p:?} is listed in store layers {} and {}; each path belongs to one layer",
                    first + 1,
                    k + 1
                );
            }
            let path = Path::new(OsStr::from_bytes(&disk));
            fs::symlink_metadata(path).with_context(|| format!("store path {}", path.display()))?;
        }
    }
    Ok(())
}

/// The normalised on-disk path of a store path, which must be a direct
/// child of the store directory, as Nix store paths are. nixpkgs asserts
/// `path.startswith(store_dir)`; we check whole components (so
/// `/nix/store-x` is not inside `/nix/store`) and refuse deeper paths:
/// `STORE/abc-x/sub` where `abc-x` is a symlink to `/etc` would be read
/// through that symlink, outside the store.
pub fn checked_store_path(path: &str, store_dir: &str) -> Result<Vec<u8>> {
    let norm = normalise(path);
    let store = normalise(store_dir);
    let inside = norm.len() > store.len()
        && norm.starts_with(&store)
        && (store.ends_with('/') || norm.as_bytes()[store.len()] == b'/');
    if !inside || norm.split('/').any(|c| c == "..") {
        bail!("store path {path:?} is outside store_dir {store_dir:?}");
    }
    let rest = norm[store.len()..].trim_start_matches('/');
    if rest.contains('/') {
        bail!(
            "store path {path:?} is not a direct child of store_dir {store_dir:?} \
             (Nix store paths are; a deeper path could be read through a symlink)"
        );
    }
    Ok(norm.into_bytes())
}

/// pathlib's normalisation: repeated slashes and `.` components dropped.
fn normalise(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    let joined = parts.join("/");
    if path.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    }
}

fn root_entries_len(owner: &Owner) -> u64 {
    ["/nix", "/nix/store"]
        .iter()
        .map(|n| {
            let h = Header {
                name: n.as_bytes(),
                kind: Kind::Directory,
                mode: 0o755,
                size: 0,
                linkname: b"",
                owner,
            };
            tar::header_len(&h)
        })
        .sum()
}

/// Bytes the entry takes in the tarball: header(s), data, padding.
fn entry_len(e: &Entry, owner: &Owner) -> u64 {
    let name = tar_name(&e.path);
    tar::header_len(&header(e, &name, owner)) + e.size + tar::padding(e.size)
}

/// tarfile's name for a path: relative to `/`, then given back a leading `/`.
fn tar_name(path: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if path.starts_with(b"/") {
        path.into()
    } else {
        let mut n = b"/".to_vec();
        n.extend_from_slice(path);
        n.into()
    }
}

fn header<'a>(e: &'a Entry, name: &'a [u8], owner: &'a Owner) -> Header<'a> {
    Header {
        name,
        kind: e.kind,
        mode: e.mode,
        size: e.size,
        linkname: &e.link,
        owner,
    }
}

fn write_entry<W: std::io::Write>(
    e: &Entry,
    owner: &Owner,
    scratch: &mut Vec<u8>,
    out: &mut ArchiveWriter<W>,
) -> Result<()> {
    scratch.clear();
    let name = tar_name(&e.path);
    tar::encode_header(&header(e, &name, owner), scratch);
    out.write_all(scratch)?;
    if e.kind == Kind::Regular && e.size > 0 {
        let path = Path::new(OsStr::from_bytes(&e.path));
        let mut f = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
        out.copy_exact(&mut f, e.size, path)?;
        // Bytes past the planned size would be cut silently; a file that
        // shrank is already an error in copy_exact, one that grew is too.
        let mut one = [0u8; 1];
        if f.read(&mut one)
            .with_context(|| format!("{}: cannot read", path.display()))?
            > 0
        {
            bail!(
                "{}: grew while streaming (planned {} bytes); store paths must not change",
                path.display(),
                e.size
            );
        }
        STORE_BYTES_READ.fetch_add(e.size, std::sync::atomic::Ordering::Relaxed);
        out.write_zeros(tar::padding(e.size))?;
    }
    Ok(())
}

/// Visits `root` and, if it is a real directory, everything below it in
/// Python's sorted order.
pub fn walk(root: &[u8], visit: &mut dyn FnMut(Entry) -> Result<()>) -> Result<()> {
    let path = PathBuf::from(OsStr::from_bytes(root));
    let meta =
        fs::symlink_metadata(&path).with_context(|| format!("store path {}", path.display()))?;
    let entry = entry_from(root.to_vec(), stat_of(&path, &meta)?)?;
    let is_dir = entry.kind == Kind::Directory;
    visit(entry)?;
    if is_dir {
        walk_dir(&path, visit)?;
    }
    Ok(())
}

/// What the walk keeps of `lstat` while a directory's children are sorted
/// (a few words each, not a whole `Metadata`).
#[derive(Debug, Clone, Copy)]
struct Stat {
    kind: Kind,
    mode: u32,
    size: u64,
}

fn walk_dir(dir: &Path, visit: &mut dyn FnMut(Entry) -> Result<()>) -> Result<()> {
    let read = |e: std::io::Error| {
        anyhow::Error::new(e).context(format!("{}: cannot read directory", dir.display()))
    };
    let mut children = Vec::new();
    for item in fs::read_dir(dir).map_err(read)? {
        let item = item.map_err(read)?;
        let meta = item
            .metadata()
            .with_context(|| format!("{}: cannot stat", item.path().display()))?;
        children.push((item.file_name().into_vec(), stat_of(&item.path(), &meta)?));
    }
    children.sort_by(|a, b| tar::compare_names(&a.0, &b.0));
    for (name, stat) in children {
        let mut path = dir.as_os_str().as_bytes().to_vec();
        path.push(b'/');
        path.extend_from_slice(&name);
        let entry = entry_from(path, stat)?;
        if entry.kind == Kind::Directory {
            let sub = PathBuf::from(OsStr::from_bytes(&entry.path));
            visit(entry)?;
            walk_dir(&sub, visit)?;
        } else {
            visit(entry)?;
        }
    }
    Ok(())
}

fn stat_of(path: &Path, meta: &Metadata) -> Result<Stat> {
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_dir() {
        Kind::Directory
    } else if ft.is_file() {
        Kind::Regular
    } else {
        let what = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        bail!(
            "{}: is {what}; Nix store paths hold only files, directories and symlinks",
            path.display()
        );
    };
    let size = if kind == Kind::Regular { meta.len() } else { 0 };
    Ok(Stat {
        kind,
        mode: meta.mode() & 0o7777,
        size,
    })
}

fn entry_from(path: Vec<u8>, stat: Stat) -> Result<Entry> {
    let link = if stat.kind == Kind::Symlink {
        let p = Path::new(OsStr::from_bytes(&path));
        fs::read_link(p)
            .with_context(|| format!("{}: cannot read symlink", p.display()))?
            .into_os_string()
            .into_vec()
    } else {
        Vec::new()
    };
    Ok(Entry {
        path,
        kind: stat.kind,
        mode: stat.mode,
        size: stat.size,
        link,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_paths_must_be_inside_store_dir() {
        assert_eq!(
            checked_store_path("/nix/store//abc-x/", "/nix/store").unwrap(),
            b"/nix/store/abc-x"
        );
        assert_eq!(
            checked_store_path("/nix/store/abc", "/nix/store/").unwrap(),
            b"/nix/store/abc"
        );
        for bad in [
            "/nix/store-evil/x",
            "/nix/store",
            "/etc/passwd",
            "/nix/store/../../etc",
        ] {
            let err = checked_store_path(bad, "/nix/store").unwrap_err();
            assert!(
                err.to_string().contains("outside store_dir"),
                "{bad}: {err}"
            );
        }
        for deep in [
            "/nix/store/abc-x/sub",
            "/nix/store/abc-x/../abc-y/etc/passwd",
        ] {
            let err = checked_store_path(deep, "/nix/store")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("not a direct child") || err.contains("outside"),
                "{deep}: {err}"
            );
        }
    }

    /// root:root, mtime 1.
    fn root() -> Owner {
        Owner {
            uid: 0,
            gid: 0,
            uname: "root".into(),
            gname: "root".into(),
            mtime: 1,
        }
    }

    /// Layers too big for the entry cache are walked again while
    /// streaming; the bytes must not depend on which path was taken.
    #[test]
    fn rewalk_gives_the_same_bytes_as_the_cache() {
        let store = std::env::temp_dir().join(format!("sli-rewalk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&store);
        fs::create_dir_all(store.join("aaaa-p/sub")).unwrap();
        fs::write(store.join("aaaa-p/sub/f"), vec![5u8; 1000]).unwrap();
        fs::write(store.join("aaaa-p/g"), "g").unwrap();
        let store_dir = store.to_str().unwrap().to_owned();
        let paths = vec![format!("{store_dir}/aaaa-p")];
        let owner = root();
        let mut outputs = Vec::new();
        for limit in [ENTRY_CACHE_BYTES, 0] {
            let plan = plan_with_cache(&paths, &store_dir, &owner, limit).unwrap();
            assert_eq!(plan.cached.is_some(), limit > 0);
            let size = plan.size;
            let mut w = ArchiveWriter::new(Vec::new());
            w.begin_hashed().unwrap();
            stream(plan, &store_dir, &owner, &mut w).unwrap();
            w.end_hashed().unwrap();
            let bytes = w.finish().unwrap();
            assert_eq!(bytes.len() as u64, size);
            outputs.push(bytes);
        }
        assert!(outputs[0] == outputs[1]);
        fs::remove_dir_all(&store).unwrap();
    }

    /// A layer of several store paths: walked while streaming, planned
    /// (its paths walked in parallel) with its entries kept, or planned
    /// over the entry limit, it is the same tarball of the planned size.
    #[test]
    fn walking_while_streaming_gives_the_planned_bytes() {
        let store = std::env::temp_dir().join(format!("sli-walking-{}", std::process::id()));
        let _ = fs::remove_dir_all(&store);
        let mut paths = Vec::new();
        for (k, name) in ["cccc-c", "aaaa-a", "bbbb-b", "dddd-d"].iter().enumerate() {
            let p = store.join(name);
            fs::create_dir_all(p.join("sub/deeper")).unwrap();
            fs::write(p.join("sub/deeper/f"), vec![k as u8; 700 + k]).unwrap();
            fs::write(p.join("g"), name).unwrap();
            std::os::unix::fs::symlink("g", p.join("link")).unwrap();
            paths.push(p.to_str().unwrap().to_owned());
        }
        let store_dir = store.to_str().unwrap().to_owned();
        let owner = root();
        let tar = |plan: Option<LayerPlan>| {
            let mut w = ArchiveWriter::new(Vec::new());
            w.begin_hashed().unwrap();
            let size = match plan {
                Some(plan) => {
                    let size = plan.size;
                    stream(plan, &store_dir, &owner, &mut w).unwrap();
                    size
                }
                None => stream_walking(&paths, &store_dir, &owner, &mut w).unwrap(),
            };
            w.end_hashed().unwrap();
            let bytes = w.finish().unwrap();
            assert_eq!(bytes.len() as u64, size);
            bytes
        };
        let walked = tar(None);
        // Every limit: all kept, the limit reached part way (no walker
        // keeps its entries then), none kept.
        let all = plan_with_cache(&paths, &store_dir, &owner, ENTRY_CACHE_BYTES).unwrap();
        let memory = all.memory();
        assert!(memory > 0);
        assert!(all.cached.is_some());
        for limit in [ENTRY_CACHE_BYTES, memory, memory - 1, memory / 2, 0] {
            let plan = plan_with_cache(&paths, &store_dir, &owner, limit).unwrap();
            assert_eq!(plan.cached.is_some(), limit >= memory, "limit {limit}");
            assert!(tar(Some(plan)) == walked, "limit {limit}");
        }
        // In the layer's order, not the names' (the paths' order is the
        // layer's: nixpkgs writes them as listed).
        let names: Vec<usize> = ["cccc-c", "aaaa-a", "bbbb-b", "dddd-d"]
            .iter()
            .map(|n| {
                walked
                    .windows(n.len())
                    .position(|w| w == n.as_bytes())
                    .unwrap()
            })
            .collect();
        assert!(names.windows(2).all(|w| w[0] < w[1]), "{names:?}");
        fs::remove_dir_all(&store).unwrap();
    }

    #[test]
    fn walk_is_preorder_with_python_sorting() {
        let dir = std::env::temp_dir().join(format!("sli-walk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for d in ["p/a", "p/a-b.d"] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        for f in ["p/a/b", "p/a b", "p/A", "p/a-b.d/x"] {
            fs::write(dir.join(f), f).unwrap();
        }
        std::os::unix::fs::symlink("a", dir.join("p/link")).unwrap();
        let root = dir.join("p").into_os_string().into_vec();
        let mut seen = Vec::new();
        walk(&root, &mut |e| {
            seen.push(String::from_utf8(e.path[root.len()..].to_vec()).unwrap());
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            ["", "/A", "/a", "/a/b", "/a b", "/a-b.d", "/a-b.d/x", "/link"]
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
