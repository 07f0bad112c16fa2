//! Where the image goes: stdout (nixpkgs' behaviour, piped into
//! `docker load` or a compressor), or `-o FILE`. Optional compression
//! replaces the compressor pipe of nixpkgs' `buildLayeredImage`; both
//! encoders are deterministic (gzip with mtime 0 and no file name, like
//! `gzip -n`).
//!
//! `-o PATH` never replaces anything but a regular file ([`resolve`]):
//!
//! - a FIFO, a device, a socket or an open descriptor (`/dev/stdout`,
//!   `/dev/fd/N`, `/proc/self/fd/N`: anything inside `/proc`) is written in
//!   place; a terminal is refused as on stdout;
//! - a symlink is followed (to its final target) and the target is
//!   replaced, never the link;
//! - a regular file (or a new one) is written atomically through a
//!   [`TempFile`] beside it: created exclusively (`O_EXCL`, so neither a
//!   planted symlink nor a file pre-created by someone else is ever opened)
//!   under an unpredictable name `.NAME.XXXXXXXX.sli-tmp`, renamed into
//!   place only when the whole image is written, removed on every failure
//!   and on SIGINT/SIGTERM/SIGHUP ([`crate::signals`]).
//!
//! stdout closed by the shell (`>&-`) is an error: Rust reopens a closed
//! descriptor 1 on `/dev/null`, which would lose the image silently.

use std::fs::{self, File};
use std::io::{self, IsTerminal, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use flate2::write::GzEncoder;

use crate::signals;

/// Installs the SIGINT/SIGTERM/SIGHUP cleanup of temporary outputs; main
/// calls it first thing. See [`crate::signals`].
pub fn install_signal_cleanup() -> Result<()> {
    signals::install().context("cannot install signal handlers")
}

/// Compression applied to the whole docker-archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    /// Plain tar, what `docker load` and nixpkgs' streamer use.
    None,
    /// gzip (level 6), as `buildLayeredImage`'s default `compressor = "gz"`.
    Gz,
    /// zstd (level 3), as `compressor = "zstd"`.
    Zstd,
}

/// What an `-o` path turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Written in place: a FIFO, device or socket, or an open descriptor
    /// inside `/proc` (`/dev/stdout` leads there).
    InPlace(PathBuf),
    /// A regular file to create or replace, symlinks already followed.
    File(PathBuf),
}

/// Symlinks followed before we call it a loop (Linux's own limit).
const MAX_LINK_HOPS: usize = 40;

/// Classifies `path` for writing, following symlinks one hop at a time so
/// that the final target (not the link) is what gets replaced.
pub fn resolve(path: &Path) -> Result<Target> {
    let shown = || format!("output {}", path.display());
    let mut p = path.to_path_buf();
    for _ in 0..MAX_LINK_HOPS {
        // `/proc/self/fd/N` "links" name open files (a pipe, the file stdout
        // was redirected to): following the text would be wrong and
        // renaming over them impossible.
        if in_proc(&p) {
            return Ok(Target::InPlace(p));
        }
        let meta = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Target::File(p)),
            Err(e) => return Err(anyhow::Error::new(e).context(shown())),
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            let link = fs::read_link(&p).with_context(shown)?;
            p = match p.parent() {
                Some(dir) if link.is_relative() => dir.join(link),
                _ => link,
            };
        } else if ft.is_dir() {
            bail!("{}: is a directory", shown());
        } else if ft.is_file() {
            return Ok(Target::File(p));
        } else {
            return Ok(Target::InPlace(p));
        }
    }
    bail!("{}: too many levels of symbolic links", shown())
}

/// Whether `p`'s directory is inside `/proc`.
fn in_proc(p: &Path) -> bool {
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::canonicalize(dir).is_ok_and(|d| d.starts_with("/proc"))
}

/// A temporary file beside `target`, renamed over it by [`TempFile::commit`]
/// and removed if dropped uncommitted or if a signal arrives first.
///
/// Safe in a directory others can write to: created with `O_EXCL` (a
/// symlink or file already at the name is never opened; another random
/// name is tried), named `.NAME.XXXXXXXX.sli-tmp` with 8 random
/// characters, mode 0666 minus the umask (or the replaced file's mode) like
/// a file the shell creates, on the target's file system so the rename is
/// atomic.
#[derive(Debug)]
pub struct TempFile {
    // Field order is drop order: remove the file, then forget it for signals.
    path: tempfile::TempPath,
    target: PathBuf,
    signal: signals::Registration,
}

impl TempFile {
    /// Creates the temporary file for `target` (a [`Target::File`] path)
    /// and returns it open for writing.
    pub fn beside(target: &Path) -> Result<(File, TempFile)> {
        TempFile::beside_with(target, 8)
    }

    /// [`TempFile::beside`] with `random` random characters in the name
    /// (tests use 1 to plant something at every possible name).
    fn beside_with(target: &Path, random: usize) -> Result<(File, TempFile)> {
        let (dir, name) = dir_and_name(target);
        let file = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".sli-tmp")
            .rand_bytes(random)
            .permissions(fs::Permissions::from_mode(0o666))
            .tempfile_in(dir)
            .with_context(|| {
                format!(
                    "output {}: cannot create a temporary file in {}",
                    target.display(),
                    dir.display()
                )
            })?;
        let (file, path) = file.into_parts();
        let signal = signals::Registration::new(&path);
        // Replacing a file keeps its permissions (a private image stays
        // private), as writing into it with `>` would.
        if let Ok(old) = fs::metadata(target) {
            let _ = file.set_permissions(fs::Permissions::from_mode(old.mode() & 0o777));
        }
        Ok((
            file,
            TempFile {
                path,
                target: target.to_owned(),
                signal,
            },
        ))
    }

    /// The temporary file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes `file` (this temporary file, fully written) to disk and
    /// renames it over the target.
    pub fn commit(self, file: File) -> Result<()> {
        let TempFile {
            path,
            target,
            signal,
        } = self;
        let shown = || format!("output {}: cannot write", target.display());
        file.sync_all().with_context(shown)?;
        drop(file);
        signal
            .commit(|| path.persist(&target))
            .map_err(|e| anyhow::Error::new(e.error).context(shown()))
    }
}

/// A temporary directory beside `target` (e.g. an OCI layout being
/// written), renamed to `target` by [`TempDir::commit`], removed with its
/// contents if dropped uncommitted or on SIGINT/SIGTERM/SIGHUP. The name is
/// `.NAME.XXXXXXXX.sli-tmp`, the directory mode 0700 until committed.
#[derive(Debug)]
pub struct TempDir {
    dir: Option<tempfile::TempDir>,
    target: PathBuf,
    signal: Option<signals::Registration>,
}

/// The directory a temporary sibling of `target` goes in (so the final
/// rename stays on one file system) and the name it is derived from.
fn dir_and_name(target: &Path) -> (&Path, String) {
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    (dir, name)
}

impl TempDir {
    /// Creates the directory beside `target`.
    pub fn beside(target: &Path) -> Result<TempDir> {
        let (parent, name) = dir_and_name(target);
        let dir = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".sli-tmp")
            .tempdir_in(parent)
            .with_context(|| {
                format!(
                    "output {}: cannot create a temporary directory in {}",
                    target.display(),
                    parent.display()
                )
            })?;
        let signal = signals::Registration::new(dir.path());
        Ok(TempDir {
            dir: Some(dir),
            target: target.to_owned(),
            signal: Some(signal),
        })
    }

    /// Where to write the contents.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), |d| d.path())
    }

    /// Gives the directory mode 0777 minus the umask and renames it to the
    /// target, which must not exist or be an empty directory.
    pub fn commit(mut self) -> Result<()> {
        let (Some(dir), Some(signal)) = (self.dir.take(), self.signal.take()) else {
            return Ok(());
        };
        let shown = || format!("output {}: cannot write", self.target.display());
        // SAFETY: umask(2) cannot fail; it is set back at once.
        let umask = unsafe {
            let m = libc::umask(0o022);
            libc::umask(m);
            m
        };
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777 & !umask))
            .with_context(shown)?;
        let path = dir.keep();
        let result = signal.commit(|| fs::rename(&path, &self.target));
        if result.is_err() {
            let _ = fs::remove_dir_all(&path);
        }
        result.with_context(shown)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Remove the tree, then forget it for signals.
        self.dir = None;
        self.signal = None;
    }
}

enum Sink {
    Plain(File),
    Gz(GzEncoder<File>),
    Zstd(zstd::stream::write::Encoder<'static, File>),
}

/// An open output. Dropping it without [`Output::commit`] removes a
/// partially written `-o` file.
pub struct Output {
    sink: Option<Sink>,
    /// `stdout` or `output FILE`, for write errors.
    name: String,
    /// The temporary file of `-o` to a regular file.
    temp: Option<TempFile>,
}

impl Output {
    /// Opens stdout (`path` None) or `-o path` as [`resolve`] says.
    pub fn open(path: Option<&Path>, compression: Compression) -> Result<Output> {
        let (file, temp) = match path {
            None => (open_stdout()?, None),
            Some(path) => match resolve(path)? {
                Target::InPlace(p) => (open_in_place(path, &p)?, None),
                Target::File(p) => {
                    let (file, temp) = TempFile::beside(&p)?;
                    (file, Some(temp))
                }
            },
        };
        let sink = match compression {
            Compression::None => Sink::Plain(file),
            Compression::Gz => Sink::Gz(
                flate2::GzBuilder::new()
                    .mtime(0)
                    .write(file, flate2::Compression::new(6)),
            ),
            Compression::Zstd => {
                Sink::Zstd(zstd::stream::write::Encoder::new(file, 3).context("cannot start zstd")?)
            }
        };
        let name = match path {
            Some(p) => format!("output {}", p.display()),
            None => "stdout".to_owned(),
        };
        Ok(Output {
            sink: Some(sink),
            name,
            temp,
        })
    }

    /// Finishes compression and, for `-o` to a file, renames it into place.
    pub fn commit(mut self) -> Result<()> {
        let name = self.name.clone();
        let mut file = match self.sink.take() {
            Some(Sink::Plain(f)) => f,
            Some(Sink::Gz(e)) => e.finish().context("cannot finish gzip output")?,
            Some(Sink::Zstd(e)) => e.finish().context("cannot finish zstd output")?,
            None => return Ok(()),
        };
        file.flush()
            .with_context(|| format!("{name}: cannot write"))?;
        match self.temp.take() {
            Some(temp) => temp.commit(file),
            None => Ok(()),
        }
    }
}

/// stdout, refused when it is a terminal or was closed by the shell.
fn open_stdout() -> Result<File> {
    if io::stdout().is_terminal() {
        bail!("refusing to write an image tarball to a terminal; pipe it (e.g. into `docker load`) or use -o FILE");
    }
    let closed = || {
        anyhow::anyhow!(
            "stdout is closed; nowhere to write the image (redirect it, or use -o FILE)"
        )
    };
    let fd = io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|_| closed())?;
    let file = File::from(fd);
    if is_reopened_dev_null(&file) {
        return Err(closed());
    }
    Ok(file)
}

/// Rust's runtime reopens a closed stdout on `/dev/null` read-write; a
/// shell's `>/dev/null` opens it write-only. Only the former is refused.
fn is_reopened_dev_null(file: &File) -> bool {
    let (Ok(meta), Ok(null)) = (file.metadata(), fs::metadata("/dev/null")) else {
        return false;
    };
    // SAFETY: F_GETFL on a descriptor we own has no side effects.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    meta.file_type().is_char_device()
        && meta.rdev() == null.rdev()
        && flags >= 0
        && flags & libc::O_ACCMODE == libc::O_RDWR
}

/// Opens a FIFO, device or `/proc` descriptor for writing, as it is. One
/// of our own descriptors (`/dev/stdout`) is duplicated rather than
/// reopened, so a pipe, socket or `>>` append keeps working.
fn open_in_place(shown: &Path, p: &Path) -> Result<File> {
    let ctx = || format!("output {}: cannot open", shown.display());
    let file = match own_fd(p) {
        Some(fd) => {
            // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we own, or -1.
            let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
            if dup < 0 {
                return Err(anyhow::Error::new(io::Error::last_os_error()).context(ctx()));
            }
            // SAFETY: `dup` is fresh and owned by nobody else.
            File::from(unsafe { OwnedFd::from_raw_fd(dup) })
        }
        None => File::options().write(true).open(p).with_context(ctx)?,
    };
    if file.is_terminal() {
        bail!(
            "output {}: is a terminal; refusing to write an image tarball to it",
            shown.display()
        );
    }
    Ok(file)
}

/// `N` when `p` is `/proc/<our pid>/fd/N` (or `/proc/self/fd/N`).
fn own_fd(p: &Path) -> Option<libc::c_int> {
    let dir = fs::canonicalize(p.parent()?).ok()?;
    let ours = Path::new("/proc")
        .join(std::process::id().to_string())
        .join("fd");
    if dir != ours {
        return None;
    }
    p.file_name()?.to_str()?.parse().ok()
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = match self.sink.as_mut() {
            Some(Sink::Plain(f)) => f.write(buf),
            Some(Sink::Gz(e)) => e.write(buf),
            Some(Sink::Zstd(e)) => e.write(buf),
            None => Err(io::Error::other("output already closed")),
        };
        result.map_err(|e| self.named(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.sink.as_mut() {
            Some(Sink::Plain(f)) => f.flush(),
            Some(Sink::Gz(e)) => e.flush(),
            Some(Sink::Zstd(e)) => e.flush(),
            None => Ok(()),
        }
    }
}

impl Output {
    /// Names the output in a write error, keeping its kind (a broken pipe
    /// stays recognisable).
    fn named(&self, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("{}: {e}", self.name))
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        // Close the file before the temporary one is removed.
        self.sink = None;
        self.temp = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sli-output-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn commit_renames_and_drop_removes() {
        let d = scratch("atomic");
        let target = d.join("img.tar");
        let mut o = Output::open(Some(&target), Compression::None).unwrap();
        o.write_all(b"abc").unwrap();
        assert!(!target.exists(), "nothing at the target before commit");
        o.commit().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"abc");
        let other = d.join("other.tar");
        let mut o = Output::open(Some(&other), Compression::None).unwrap();
        o.write_all(b"partial").unwrap();
        drop(o);
        assert_eq!(
            fs::read_dir(&d).unwrap().count(),
            1,
            "only the committed file remains"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn gzip_is_deterministic_and_round_trips() {
        let d = scratch("gz");
        let mut bytes = Vec::new();
        for n in ["a.gz", "b.gz"] {
            let mut o = Output::open(Some(&d.join(n)), Compression::Gz).unwrap();
            o.write_all(&[42; 100_000]).unwrap();
            o.commit().unwrap();
            bytes.push(fs::read(d.join(n)).unwrap());
        }
        assert_eq!(bytes[0], bytes[1]);
        assert_eq!(&bytes[0][4..8], &[0, 0, 0, 0], "gzip mtime is 0");
        let mut plain = Vec::new();
        io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[0][..]), &mut plain)
            .unwrap();
        assert_eq!(plain, vec![42; 100_000]);
        fs::remove_dir_all(&d).unwrap();
    }

    /// The letters and digits tempfile draws random name characters from.
    const NAME_CHARS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

    /// With one random character there are 62 possible temporary names:
    /// plant a symlink (to a victim file) or a file owned by "someone else"
    /// at all but one, and the output must use the free one, leaving every
    /// planted thing and the victim untouched.
    #[test]
    fn planted_symlinks_and_files_at_temp_names_are_never_used() {
        let d = scratch("planted");
        let victim = d.join("victim");
        fs::write(&victim, b"precious").unwrap();
        let target = d.join("img.tar");
        let free = 'Q';
        for (i, c) in NAME_CHARS.chars().filter(|&c| c != free).enumerate() {
            let name = d.join(format!(".img.tar.{c}.sli-tmp"));
            if i % 2 == 0 {
                std::os::unix::fs::symlink(&victim, &name).unwrap();
            } else {
                fs::write(&name, b"planted").unwrap();
                fs::set_permissions(&name, fs::Permissions::from_mode(0o666)).unwrap();
            }
        }
        let (mut file, temp) = TempFile::beside_with(&target, 1).unwrap();
        assert_eq!(temp.path(), d.join(format!(".img.tar.{free}.sli-tmp")));
        file.write_all(b"image").unwrap();
        temp.commit(file).unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"image");
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        for c in NAME_CHARS.chars().filter(|&c| c != free) {
            let name = d.join(format!(".img.tar.{c}.sli-tmp"));
            let m = fs::symlink_metadata(&name).unwrap();
            assert!(m.file_type().is_symlink() || fs::read(&name).unwrap() == b"planted");
        }
        // Every name taken: an error, still nothing followed.
        let (_, _t) = TempFile::beside_with(&target, 1).unwrap();
        let e = TempFile::beside_with(&target, 1).unwrap_err();
        assert!(
            format!("{e:#}").contains("cannot create a temporary file"),
            "{e:#}"
        );
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn symlinks_are_followed_to_the_file_they_name() {
        let d = scratch("links");
        fs::create_dir(d.join("real")).unwrap();
        fs::write(d.join("real/img.tar"), b"old").unwrap();
        std::os::unix::fs::symlink("real/img.tar", d.join("a")).unwrap();
        std::os::unix::fs::symlink(d.join("a"), d.join("b")).unwrap();
        assert_eq!(
            resolve(&d.join("b")).unwrap(),
            Target::File(d.join("real/img.tar"))
        );
        // A dangling link names the file to create, as `>` would.
        std::os::unix::fs::symlink("real/new.tar", d.join("c")).unwrap();
        assert_eq!(
            resolve(&d.join("c")).unwrap(),
            Target::File(d.join("real/new.tar"))
        );
        std::os::unix::fs::symlink("loop", d.join("loop")).unwrap();
        assert!(resolve(&d.join("loop")).is_err());
        assert!(resolve(&d.join("real")).is_err(), "a directory");
        assert!(matches!(
            resolve(Path::new("/dev/stdout")).unwrap(),
            Target::InPlace(_)
        ));
        assert!(matches!(
            resolve(Path::new("/dev/null")).unwrap(),
            Target::InPlace(_)
        ));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn replacing_a_file_keeps_its_mode() {
        let d = scratch("mode");
        let target = d.join("img.tar");
        fs::write(&target, b"old").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        let mut o = Output::open(Some(&target), Compression::None).unwrap();
        o.write_all(b"new").unwrap();
        o.commit().unwrap();
        assert_eq!(fs::metadata(&target).unwrap().mode() & 0o777, 0o600);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn temp_dir_commits_or_vanishes() {
        let d = scratch("tempdir");
        let t = TempDir::beside(&d.join("layout")).unwrap();
        fs::write(t.path().join("index.json"), b"{}").unwrap();
        t.commit().unwrap();
        assert_eq!(fs::read(d.join("layout/index.json")).unwrap(), b"{}");
        let t = TempDir::beside(&d.join("other")).unwrap();
        fs::create_dir(t.path().join("blobs")).unwrap();
        drop(t);
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
        fs::remove_dir_all(&d).unwrap();
    }
}
