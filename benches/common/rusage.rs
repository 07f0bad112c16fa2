//! Reaping a child with `wait4(2)` so the bench gets that child's own peak
//! RSS and CPU time.
//!
//! Why not the alternatives: `getrusage(RUSAGE_CHILDREN)` reports the
//! largest of *all* children reaped so far (the floor's `openssl` included),
//! and reading `/proc/<pid>/status` (VmHWM) races with the child's exit.
//! `wait4` returns exactly the reaped child's figures, atomically with its
//! exit status. std already links libc, so one `extern "C"` declaration is
//! all it takes; no crate is added for it.

use std::io;
use std::process::{Child, ExitStatus};
use std::time::Duration;

/// What one reaped child used.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub status: ExitStatus,
    /// Peak resident set size (`ru_maxrss`), KiB; 0 where unknown.
    pub max_rss_kib: u64,
    /// User plus system CPU time.
    pub cpu: Duration,
}

/// Waits for `child` and returns its exit status and resource usage.
pub fn wait(child: Child) -> io::Result<Usage> {
    imp::wait(child)
}

#[cfg(target_os = "linux")]
mod imp {
    use super::Usage;
    use std::io;
    use std::os::raw::{c_int, c_long};
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Child, ExitStatus};
    use std::time::Duration;

    /// `struct timeval` as glibc and musl define it on Linux (two longs).
    #[repr(C)]
    #[derive(Default)]
    struct Timeval {
        tv_sec: c_long,
        tv_usec: c_long,
    }

    /// `struct rusage` on Linux: two timevals, then 14 longs of which
    /// `ru_maxrss` (KiB) is the first.
    #[repr(C)]
    #[derive(Default)]
    struct Rusage {
        ru_utime: Timeval,
        ru_stime: Timeval,
        ru_maxrss: c_long,
        _rest: [c_long; 13],
    }

    extern "C" {
        fn wait4(pid: c_int, status: *mut c_int, options: c_int, rusage: *mut Rusage) -> c_int;
    }

    fn duration(t: &Timeval) -> Duration {
        let micros = (t.tv_sec as i128) * 1_000_000 + t.tv_usec as i128;
        Duration::from_micros(micros.max(0) as u64)
    }

    pub fn wait(child: Child) -> io::Result<Usage> {
        let pid = c_int::try_from(child.id())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
        let mut status: c_int = 0;
        let mut usage = Rusage::default();
        loop {
            // SAFETY: `pid` is our own unreaped child (std's `Child` only
            // reaps in `wait`/`try_wait`, which we never call on it), and
            // both pointers are to live, correctly laid out locals.
            let r = unsafe { wait4(pid, &mut status, 0, &mut usage) };
            if r == pid {
                break;
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
        // The child is reaped: dropping `Child` closes any pipes and does
        // not wait again.
        drop(child);
        Ok(Usage {
            status: ExitStatus::from_raw(status),
            max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
            cpu: duration(&usage.ru_utime) + duration(&usage.ru_stime),
        })
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::Usage;
    use std::io;
    use std::process::Child;
    use std::time::Duration;

    /// Elsewhere the layout of `struct rusage` differs; report no usage
    /// rather than guess it.
    pub fn wait(mut child: Child) -> io::Result<Usage> {
        let status = child.wait()?;
        Ok(Usage {
            status,
            max_rss_kib: 0,
            cpu: Duration::ZERO,
        })
    }
}
