//! Loading into podman: `podman load` with the archive on its stdin. Every
//! layer is sent: podman's loader (containers/image's docker-archive
//! source) reads each layer the manifest names, and its Docker-compatible
//! API runs the same loader, so neither can skip a member. podman itself
//! notices layers it already stores (`Copying blob … skipped: already
//! exists`) and does not store them again.
//!
//! A watchdog kills podman if it neither reads its input nor prints for
//! the timeout, so a wedged podman gives an error, not a hang.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use super::messages::LoadReport;
use crate::escape::one_line;

/// podman's stdout and stderr are kept up to this size each.
const MAX_OUTPUT: usize = 1 << 20;

/// Loads the archive `produce` writes with `podman load` (podman from
/// `PATH`), waiting at most 10 minutes without progress.
///
/// # Errors
/// One line: podman missing, podman failing (its `Error:` line), podman
/// silent past the timeout, or `produce`'s error.
pub fn load_podman(produce: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<LoadReport> {
    load_podman_with(OsStr::new("podman"), Duration::from_secs(600), produce)
}

/// As [`load_podman`], with the podman executable and timeout given.
///
/// # Errors
/// As [`load_podman`].
pub fn load_podman_with(
    program: &OsStr,
    timeout: Duration,
    produce: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<LoadReport> {
    let mut upload = PodmanUpload::start(program, timeout)?;
    match produce(&mut upload) {
        Ok(()) => upload.finish(),
        Err(e) => {
            upload.abort();
            Err(e)
        }
    }
}

/// A running `podman load`: write the archive into it, then
/// [`PodmanUpload::finish`]. An owned `Write + Send`, like
/// [`super::Upload`]; dropping it unfinished kills podman, which then loads
/// nothing.
#[derive(Debug)]
pub struct PodmanUpload {
    child: Arc<Mutex<Child>>,
    stdin: Option<ChildStdin>,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    activity: Arc<Activity>,
    /// Dropped to stop the watchdog.
    stop: Option<Sender<()>>,
    timeout: Duration,
    name: String,
}

/// When podman last made progress (read input or printed), and whether
/// the watchdog killed it.
#[derive(Debug)]
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    killed: AtomicBool,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let now = self.start.elapsed();
        now.saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

fn lock(child: &Mutex<Child>) -> MutexGuard<'_, Child> {
    // A panic elsewhere must not stop us from killing or reaping podman.
    child.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PodmanUpload {
    /// Starts `program load`.
    ///
    /// # Errors
    /// One line when podman cannot be started.
    pub fn start(program: &OsStr, timeout: Duration) -> Result<PodmanUpload> {
        let name = program.to_string_lossy().into_owned();
        let mut child = Command::new(program)
            .arg("load")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => {
                    anyhow!("{name} load: {name} is not installed (not on PATH)")
                }
                _ => anyhow!("{name} load: cannot start {name}: {e}"),
            })?;
        let activity = Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            killed: AtomicBool::new(false),
        });
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .map(|s| capture(s, Arc::clone(&activity)));
        let stderr = child
            .stderr
            .take()
            .map(|s| capture(s, Arc::clone(&activity)));
        let child = Arc::new(Mutex::new(child));
        let (stop, stopped) = mpsc::channel::<()>();
        let (watched, seen) = (Arc::clone(&child), Arc::clone(&activity));
        std::thread::spawn(move || loop {
            match stopped.recv_timeout(Duration::from_millis(200)) {
                Err(RecvTimeoutError::Timeout) if seen.idle() > timeout => {
                    seen.killed.store(true, Ordering::Relaxed);
                    let _ = lock(&watched).kill();
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        });
        Ok(PodmanUpload {
            child,
            stdin,
            stdout,
            stderr,
            activity,
            stop: Some(stop),
            timeout,
            name,
        })
    }

    /// Ends podman's input and waits for it to finish.
    ///
    /// # Errors
    /// One line: podman's own error, or podman killed for silence.
    pub fn finish(mut self) -> Result<LoadReport> {
        drop(self.stdin.take());
        let status = loop {
            let polled = lock(&self.child).try_wait();
            match polled {
                Ok(Some(status)) => break status,
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => bail!("{} load: waiting for it: {e}", self.name),
            }
        };
        let stdout = self
            .stdout
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let stderr = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let stdout = String::from_utf8_lossy(&stdout);
        let stderr = String::from_utf8_lossy(&stderr);
        if self.activity.killed.load(Ordering::Relaxed) {
            bail!(
                "{} load: no progress for {} s; stopped it",
                self.name,
                self.timeout.as_secs()
            );
        }
        if !status.success() {
            let said = stderr
                .lines()
                .chain(stdout.lines())
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .find(|l| l.starts_with("Error"))
                .or_else(|| stderr.lines().rev().map(str::trim).find(|l| !l.is_empty()))
                .unwrap_or("no message");
            bail!("{} load failed ({status}): {}", self.name, one_line(said));
        }
        let mut report = LoadReport::default();
        stdout.lines().for_each(|l| report.take_line(l));
        // `Copying blob <digest> done` for each layer stored, `… skipped:
        // already exists` for those podman had.
        report.layers_unpacked = stderr
            .lines()
            .filter(|l| l.starts_with("Copying blob") && !l.contains("skipped"))
            .count();
        if report.images.is_empty() && report.image_ids.is_empty() {
            bail!(
                "{} load: finished without naming a loaded image: {}",
                self.name,
                one_line(stdout.trim())
            );
        }
        Ok(report)
    }

    /// Stops podman without loading anything.
    pub fn abort(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        drop(self.stdin.take());
        let mut child = lock(&self.child);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for PodmanUpload {
    fn drop(&mut self) {
        // Unfinished (finish took stdin and reaped podman): kill it, so a
        // half-written archive is never loaded.
        if self.stdin.is_some() {
            self.kill();
        }
        drop(self.stop.take());
    }
}

impl Write for PodmanUpload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(io::Error::other("podman load: input already closed"));
        };
        match stdin.write(data) {
            Ok(n) => {
                self.activity.touch();
                Ok(n)
            }
            // podman exiting early closes the pipe; its reason is in what it
            // printed, which only `finish` reads. Not `BrokenPipe`, which
            // the executable takes for its own reader closing.
            Err(e) => {
                let why = self.early_error();
                Err(io::Error::other(
                    if self.activity.killed.load(Ordering::Relaxed) {
                        format!(
                            "{} load: no progress for {} s; stopped it",
                            self.name,
                            self.timeout.as_secs()
                        )
                    } else {
                        format!(
                            "{} load stopped reading the archive ({e}): {why}",
                            self.name
                        )
                    },
                ))
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl PodmanUpload {
    /// podman's error line after it exited early.
    fn early_error(&mut self) -> String {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(lock(&self.child).try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let stderr = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr);
        let line = stderr
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("Error"))
            .or_else(|| stderr.lines().rev().map(str::trim).find(|l| !l.is_empty()))
            .unwrap_or("none printed");
        one_line(line)
    }
}

/// Reads a pipe to its end in a thread, keeping the first [`MAX_OUTPUT`]
/// bytes and noting activity.
fn capture(mut pipe: impl Read + Send + 'static, activity: Arc<Activity>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    activity.touch();
                    let room = MAX_OUTPUT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        kept
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fake_podman(dir: &std::path::Path, script: &str) -> std::path::PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("podman");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn scratch(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("sli-podman-unit-{}-{tag}", std::process::id()))
    }

    #[test]
    fn output_is_parsed() {
        let dir = scratch("ok");
        let podman = fake_podman(
            &dir,
            "cat >/dev/null\n\
             echo 'Getting image source signatures' >&2\n\
             echo 'Copying blob sha256:aa skipped: already exists' >&2\n\
             echo 'Copying blob sha256:bb done' >&2\n\
             echo 'Loaded image: localhost/app:1'",
        );
        let report = load_podman_with(podman.as_os_str(), Duration::from_secs(10), |out| {
            out.write_all(&vec![7u8; 1 << 20])?;
            Ok(())
        })
        .unwrap();
        assert_eq!(report.images, ["localhost/app:1"]);
        assert_eq!(report.layers_unpacked, 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn failure_is_one_line() {
        let dir = scratch("fail");
        let podman = fake_podman(
            &dir,
            "head -c 10 >/dev/null\necho 'Error: payload does not match any of the supported image formats' >&2\nexit 125",
        );
        let err = load_podman_with(podman.as_os_str(), Duration::from_secs(10), |out| {
            for _ in 0..64 {
                out.write_all(&[0u8; 65536])?;
            }
            Ok(())
        })
        .unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("Error: payload does not match"), "{text}");
        assert!(!text.contains('\n'), "{text}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn silent_podman_is_stopped() {
        let dir = scratch("hang");
        let podman = fake_podman(&dir, "exec sleep 60");
        let started = Instant::now();
        let err = load_podman_with(podman.as_os_str(), Duration::from_millis(500), |out| {
            out.write_all(b"small")?;
            Ok(())
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("no progress"), "{err:#}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn missing_podman_is_one_line() {
        let err = load_podman_with(
            OsStr::new("/nonexistent/podman"),
            Duration::from_secs(1),
            |_| Ok(()),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("not installed"), "{err:#}");
    }
}
