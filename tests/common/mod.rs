//! Shared helpers for the integration tests: the reference fixture (built
//! once per machine under a lock), scratch directories, running the
//! executable, and reading docker-archive output.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where the vectors expect the fixture (names inside layers are absolute).
pub const FIXTURE: &str = "/tmp/sli-fixture";

/// Builds the fixture with tests/vectors/make-fixture.py unless a complete
/// one exists. Test binaries run concurrently, so creation is guarded by a
/// lock directory (created atomically) and finished by a stamp file.
pub fn fixture() -> &'static Path {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let stamp = Path::new(FIXTURE).join(".sli-complete");
        let _lock = Lock::acquire(Path::new("/tmp/sli-fixture.lock"));
        if !stamp.exists() {
            let script = repo().join("tests/vectors/make-fixture.py");
            let status = Command::new("python3")
                .arg(&script)
                .arg(FIXTURE)
                .status()
                .expect("python3 runs make-fixture.py");
            assert!(status.success(), "make-fixture.py failed");
            fs::write(&stamp, b"ok").unwrap();
        }
    });
    Path::new(FIXTURE)
}

struct Lock(PathBuf);

impl Lock {
    fn acquire(path: &Path) -> Lock {
        let start = Instant::now();
        loop {
            match fs::create_dir(path) {
                Ok(()) => return Lock(path.to_path_buf()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // A holder that died leaves the lock behind; building the
                    // fixture takes well under a minute.
                    if start.elapsed() > Duration::from_secs(120) {
                        let _ = fs::remove_dir(path);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("cannot create {}: {e}", path.display()),
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stream-layered-image"))
}

/// A reference vector (tests/vectors/NAME.json).
pub fn vector(name: &str) -> Value {
    let text = fs::read(repo().join(format!("tests/vectors/{name}.json"))).unwrap();
    serde_json::from_slice(&text).unwrap()
}

/// A directory removed (made writable first) on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("sli-test-{}-{tag}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }

    /// Writes `conf` as JSON and returns its path.
    pub fn conf(&self, name: &str, conf: &Value) -> PathBuf {
        let p = self.path(name);
        fs::write(&p, serde_json::to_vec_pretty(conf).unwrap()).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("u+rwx")
            .arg(&self.0)
            .status();
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs the executable with `args` and extra environment.
pub fn run(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the executable runs")
}

/// Runs the executable on `conf`, writing to stdout, and requires success.
pub fn stream(conf: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&std::ffi::OsStr> = vec![conf.as_os_str()];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let out = run(&args, &[]);
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A docker-archive's members by name, plus their order.
pub struct Archive {
    pub members: HashMap<String, Vec<u8>>,
    pub order: Vec<String>,
}

impl Archive {
    pub fn parse(bytes: &[u8]) -> Archive {
        let mut members = HashMap::new();
        let mut order = Vec::new();
        let mut ar = tar::Archive::new(bytes);
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = String::from_utf8(e.path_bytes().to_vec()).unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            order.push(name.clone());
            members.insert(name, data);
        }
        Archive { members, order }
    }

    pub fn manifest(&self) -> Value {
        serde_json::from_slice(&self.members["manifest.json"]).unwrap()
    }

    /// The layer tarballs in manifest order.
    pub fn layers(&self) -> Vec<&[u8]> {
        let m = self.manifest();
        m[0]["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| &self.members[l.as_str().unwrap()][..])
            .collect()
    }

    pub fn config(&self) -> &[u8] {
        let m = self.manifest();
        &self.members[m[0]["Config"].as_str().unwrap()]
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The stderr text, and a check that an error is one line naming `needle`.
pub fn one_line_error(out: &Output, needle: &str) -> String {
    assert!(!out.status.success(), "expected failure");
    assert_eq!(out.status.code(), Some(1), "exit code 1");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("stream-layered-image:"))
        .collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    assert!(!err.contains("panicked"), "no panic: {err}");
    assert!(lines[0].contains(needle), "error names {needle:?}: {err}");
    lines[0].to_owned()
}

/// True when `cmd` exists on PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {cmd}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Reads a file fully (helper for readability).
pub fn read(p: &Path) -> Vec<u8> {
    let mut v = Vec::new();
    fs::File::open(p).unwrap().read_to_end(&mut v).unwrap();
    v
}

/// Lower-case hex of digest bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
