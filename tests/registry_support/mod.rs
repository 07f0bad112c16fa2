//! Helpers for tests/registry.rs: a real registry (Debian's
//! `docker-registry`, distribution 2.8) on 127.0.0.1, an in-test token
//! service, a fault-injecting proxy, test blobs, and `skopeo`.
#![allow(dead_code)]

pub mod blobs;
pub mod proxy;
pub mod server;
pub mod token;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!(
            "sli-registry-test-{}-{tag}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The certs.d root every test client reads (`SLI_CERTS_D`), set once per
/// test process before any client exists; TLS tests put their CA under
/// `127.0.0.1:PORT/ca.crt` in it. It lives in cargo's scratch directory for
/// tests, one per process (a static outlives every test, so nothing can
/// remove it at the end); those of processes that have ended are removed
/// here instead.
pub fn certs_d() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let name = |pid: &str| format!("sli-registry-test-{pid}-certs.d");
        for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let file = e.file_name();
            let Some(pid) = file
                .to_str()
                .and_then(|f| f.strip_prefix("sli-registry-test-"))
                .and_then(|f| f.strip_suffix("-certs.d"))
            else {
                continue;
            };
            if file.to_str() == Some(name(pid).as_str())
                && pid.bytes().all(|b| b.is_ascii_digit())
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let d = root.join(name(&std::process::id().to_string()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::env::set_var("SLI_CERTS_D", &d);
        d
    })
}

/// Runs a command, panicking with its stderr if it fails; returns stdout.
pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Whether a command is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .is_ok_and(|o| o.status.success())
}
