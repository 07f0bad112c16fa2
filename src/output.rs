//! Where the image goes: stdout (nixpkgs' behaviour, piped into
//! `docker load` or a compressor), or `-o FILE` written atomically (a
//! temporary file beside it, renamed into place only when the whole image is
//! written; removed on any failure). Optional compression replaces the
//! compressor pipe of nixpkgs' `buildLayeredImage`; both encoders are
//! deterministic (gzip with mtime 0 and no file name, like `gzip -n`).

use std::fs::{self, File};
use std::io::{self, IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use flate2::write::GzEncoder;

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
    /// (temporary path, final path) for `-o` to a regular file.
    paths: Option<(PathBuf, PathBuf)>,
}

impl Output {
    /// Opens stdout (`path` None) or a temporary file beside `path`.
    pub fn open(path: Option<&Path>, compression: Compression) -> Result<Output> {
        let (file, paths) = match path {
            None => {
                if io::stdout().is_terminal() {
                    bail!("refusing to write an image tarball to a terminal; pipe it (e.g. into `docker load`) or use -o FILE");
                }
                let fd = io::stdout()
                    .as_fd()
                    .try_clone_to_owned()
                    .context("cannot use stdout")?;
                (File::from(fd), None)
            }
            Some(target) if is_special(target)? => {
                // A FIFO or device (`-o /dev/stdout`) is written in place:
                // renaming over it would replace the device with a file.
                let file = File::options()
                    .write(true)
                    .open(target)
                    .with_context(|| format!("output {}: cannot open", target.display()))?;
                (file, None)
            }
            Some(target) => {
                let tmp = temp_path(target);
                let file = File::create(&tmp).with_context(|| {
                    format!(
                        "output {}: cannot create {}",
                        target.display(),
                        tmp.display()
                    )
                })?;
                (file, Some((tmp, target.to_path_buf())))
            }
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
            paths,
        })
    }

    /// Finishes compression and, for `-o`, renames the file into place.
    pub fn commit(mut self) -> Result<()> {
        let file = match self.sink.take() {
            Some(Sink::Plain(f)) => f,
            Some(Sink::Gz(e)) => e.finish().context("cannot finish gzip output")?,
            Some(Sink::Zstd(e)) => e.finish().context("cannot finish zstd output")?,
            None => return Ok(()),
        };
        if let Some((tmp, target)) = self.paths.take() {
            let result = file
                .sync_all()
                .and_then(|()| fs::rename(&tmp, &target))
                .with_context(|| format!("output {}: cannot write", target.display()));
            if result.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            result?;
        }
        Ok(())
    }
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
        self.sink = None;
        if let Some((tmp, _)) = self.paths.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// True when `target` exists and is neither a regular file nor a directory.
fn is_special(target: &Path) -> Result<bool> {
    match fs::metadata(target) {
        Ok(m) if m.is_dir() => bail!("output {}: is a directory", target.display()),
        Ok(m) => Ok(!m.is_file()),
        Err(_) => Ok(false),
    }
}

/// `.NAME.tmp-PID` beside the target, so the rename stays on one file system.
fn temp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = format!(".{name}.tmp-{}", std::process::id());
    match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(tmp),
        _ => PathBuf::from(tmp),
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
}
