//! Cleanup on SIGINT, SIGTERM and SIGHUP: files and directories being
//! written (an `-o` temporary file, an OCI layout directory) are registered
//! here, and a signal removes them before the process dies of it.
//!
//! The handler itself only writes the signal number into a pipe (all a
//! signal handler may safely do); a watcher thread reads it, removes every
//! registered path with ordinary code (`remove_dir_all` included), then
//! restores the default action and raises the signal again, so the parent
//! sees "killed by SIGINT" (a shell prints nothing and reports status 130;
//! a shell loop stops). SIGKILL cannot be caught: it leaves at most a
//! temporary file whose name says so (see `output`).
//!
//! A signal the process inherited as ignored (`nohup`, a background job's
//! SIGINT) stays ignored.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// The signals that remove registered paths.
pub const SIGNALS: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Paths to remove on a signal, by registration id.
static REGISTRY: Mutex<Vec<(u64, PathBuf)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
/// Write end of the self-pipe, read by the watcher thread.
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);

fn registry() -> MutexGuard<'static, Vec<(u64, PathBuf)>> {
    // A panic elsewhere while holding the lock must not stop the cleanup.
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Installs the handlers and the watcher thread (once; later calls return
/// the first result). Call it before anything is written.
pub fn install() -> io::Result<()> {
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| install_once().map_err(|e| e.to_string()))
        .clone()
        .map_err(io::Error::other)
}

fn install_once() -> io::Result<()> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fds[0] is a fresh descriptor owned by nobody else.
    let read_end = unsafe { OwnedFd::from_raw_fd(fds[0]) };
    PIPE_WRITE.store(fds[1], Ordering::SeqCst);
    std::thread::Builder::new()
        .name("signal-cleanup".into())
        .spawn(move || watch(read_end))?;
    for sig in SIGNALS {
        // SAFETY: a zeroed sigaction is valid; we only read the old one.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction == libc::SIG_IGN
            {
                continue;
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Async-signal-safe: one `write` of the signal number, errno preserved.
extern "C" fn on_signal(sig: libc::c_int) {
    // SAFETY: write(2) and errno access are async-signal-safe.
    unsafe {
        let errno = *libc::__errno_location();
        let byte = sig as u8;
        libc::write(
            PIPE_WRITE.load(Ordering::Relaxed),
            (&byte as *const u8).cast(),
            1,
        );
        *libc::__errno_location() = errno;
    }
}

fn watch(read_end: OwnedFd) {
    let mut pipe = File::from(read_end);
    let mut byte = [0u8; 1];
    loop {
        match pipe.read(&mut byte) {
            Ok(1) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            _ => return,
        }
    }
    let sig = libc::c_int::from(byte[0]);
    // Held until the process is gone: a commit waiting for the lock never
    // renames a file we are removing.
    let mut paths = registry();
    for (_, path) in paths.drain(..) {
        remove(&path);
    }
    // SAFETY: restoring the default action and raising the signal on this
    // thread ends the process the way the signal would have.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
    std::process::exit(128 + sig);
}

fn remove(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// A path removed if a signal arrives while this value lives. Dropping it
/// only forgets the path (its owner removes it on an ordinary failure).
#[derive(Debug)]
pub struct Registration {
    id: u64,
}

impl Registration {
    /// Registers `path` (a file or a directory tree).
    pub fn new(path: &Path) -> Registration {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        registry().push((id, path.to_owned()));
        Registration { id }
    }

    /// Runs `commit` (the rename into place) and forgets the path, with the
    /// signal cleanup held off meanwhile: a signal is handled before the
    /// rename (nothing left) or after it (the finished file stays).
    pub fn commit<T>(self, commit: impl FnOnce() -> T) -> T {
        let mut paths = registry();
        let result = commit();
        paths.retain(|(id, _)| *id != self.id);
        result
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        registry().retain(|(id, _)| *id != self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_come_and_go() {
        let a = Registration::new(Path::new("/nonexistent/a"));
        let b = Registration::new(Path::new("/nonexistent/b"));
        let has = |p: &str| registry().iter().any(|(_, q)| q == Path::new(p));
        assert!(has("/nonexistent/a") && has("/nonexistent/b"));
        drop(a);
        assert!(!has("/nonexistent/a") && has("/nonexistent/b"));
        assert_eq!(b.commit(|| 7), 7);
        assert!(!has("/nonexistent/b"));
    }
}
