//! Running and timing the commands of the load and push benches: one
//! command, or a producer piped into a consumer (`ours | docker load`), with
//! our process's peak RSS (`wait4`) and what it printed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::rusage;

/// Settings shared by the load and push benches.
pub struct Options {
    /// Run without `--bench` (as `cargo test --all-targets` does): a smoke
    /// test, one run on a tiny image.
    pub smoke: bool,
    /// Small stores (`SLI_BENCH_QUICK=1`, `--quick` or a smoke run).
    pub quick: bool,
    /// Timed runs per contender (`SLI_BENCH_RUNS`, default 3; smoke 1).
    pub runs: usize,
    /// Our executable (`SLI_EXE`, default this crate's).
    pub exe: PathBuf,
    /// Where stores are cached (`SLI_BENCH_DIR`, default cargo's target tmp dir).
    pub dir: PathBuf,
    /// Store kinds to move (`SLI_BENCH_STORES`, comma-separated; default
    /// many-paths; small-files and big-files also work).
    pub stores: Vec<&'static str>,
    /// nixpkgs' `stream_layered_image.py` (`SLI_BENCH_REFERENCE`).
    pub reference: Option<PathBuf>,
}

impl Options {
    pub fn from_env() -> Result<Options, String> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let flag = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0");
        let smoke = !args.iter().any(|a| a == "--bench");
        let quick = smoke || flag("SLI_BENCH_QUICK") || args.iter().any(|a| a == "--quick");
        let runs = match std::env::var("SLI_BENCH_RUNS") {
            Ok(v) => v
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| format!("SLI_BENCH_RUNS={v:?}: expected a positive integer"))?,
            Err(_) if smoke => 1,
            Err(_) => 3,
        };
        let exe = std::env::var_os("SLI_EXE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_stream-layered-image")));
        let dir = std::env::var_os("SLI_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("sli-bench"));
        let wanted = std::env::var("SLI_BENCH_STORES").unwrap_or_else(|_| "many-paths".into());
        let mut stores = Vec::new();
        for name in wanted.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let kind = ["small-files", "big-files", "many-paths"]
                .into_iter()
                .find(|k| *k == name)
                .ok_or_else(|| {
                    format!(
                        "SLI_BENCH_STORES: unknown store {name:?} (small-files, big-files, many-paths)"
                    )
                })?;
            stores.push(kind);
        }
        Ok(Options {
            smoke,
            quick,
            runs,
            exe,
            dir,
            stores,
            reference: std::env::var_os("SLI_BENCH_REFERENCE").map(PathBuf::from),
        })
    }

    /// Store layers kept in the images: all, or the first two in a smoke
    /// run (a tiny image).
    pub fn keep_layers(&self) -> Option<usize> {
        self.smoke.then_some(2)
    }
}

/// Whether `exe --help` mentions `flag` (the flags of issues 8 and 9 land
/// separately).
pub fn help_has(exe: &Path, flag: &str) -> bool {
    Command::new(exe)
        .arg("--help")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
}

/// Whether `program` runs at all (`program ARGS` exits 0).
pub fn answers(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One finished, timed run.
pub struct Timed {
    pub wall: Duration,
    /// CPU time (user + system) of the timed command and the children it
    /// waited for.
    pub cpu: Duration,
    /// Peak RSS of the timed command (the producer of a pipe), KiB.
    pub max_rss_kib: u64,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to completion, timed; fails with its stderr's tail.
pub fn timed(what: &str, mut cmd: Command, scratch: &Path) -> Result<Timed, String> {
    let (out_path, out) = scratch_file(scratch, what, "stdout")?;
    let (err_path, err) = scratch_file(scratch, what, "stderr")?;
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let usage = rusage::wait(child).map_err(|e| format!("{what}: {e}"))?;
    let wall = start.elapsed();
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    if !usage.status.success() {
        return Err(format!("{what}: {}{}", usage.status, tail(&stderr)));
    }
    Ok(Timed {
        wall,
        cpu: usage.cpu,
        max_rss_kib: usage.max_rss_kib,
        stdout,
        stderr,
    })
}

/// Runs `producer | consumer`, timed until both have exited; the peak RSS
/// and stderr are the producer's, stdout the consumer's.
pub fn timed_pipe(
    what: &str,
    mut producer: Command,
    mut consumer: Command,
    scratch: &Path,
) -> Result<Timed, String> {
    let (out_path, out) = scratch_file(scratch, what, "stdout")?;
    let (err_path, err) = scratch_file(scratch, what, "stderr")?;
    let (cerr_path, cerr) = scratch_file(scratch, what, "consumer-stderr")?;
    let start = Instant::now();
    let mut sink = consumer
        .stdin(Stdio::piped())
        .stdout(out)
        .stderr(cerr)
        .spawn()
        .map_err(|e| format!("{what}: cannot start the consumer: {e}"))?;
    let pipe = sink
        .stdin
        .take()
        .ok_or_else(|| format!("{what}: no pipe to the consumer"))?;
    let child = producer
        .stdin(Stdio::null())
        .stdout(Stdio::from(pipe))
        .stderr(err)
        .spawn()
        .map_err(|e| format!("{what}: cannot start the producer: {e}"))?;
    // The command still holds our copy of the pipe's write end: close it, or
    // the consumer never sees the end of its input.
    drop(producer);
    let usage = rusage::wait(child).map_err(|e| format!("{what}: {e}"))?;
    let drained = sink.wait().map_err(|e| format!("{what}: {e}"))?;
    let wall = start.elapsed();
    let stderr = fs::read_to_string(&err_path).unwrap_or_default();
    if !usage.status.success() {
        return Err(format!(
            "{what}: producer {}{}",
            usage.status,
            tail(&stderr)
        ));
    }
    if !drained.success() {
        let cerr = fs::read_to_string(&cerr_path).unwrap_or_default();
        return Err(format!("{what}: consumer {drained}{}", tail(&cerr)));
    }
    Ok(Timed {
        wall,
        cpu: usage.cpu,
        max_rss_kib: usage.max_rss_kib,
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr,
    })
}

fn scratch_file(dir: &Path, what: &str, suffix: &str) -> Result<(PathBuf, fs::File), String> {
    let slug: String = what
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let path = dir.join(format!("{slug}.{suffix}"));
    let file = fs::File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    Ok((path, file))
}

/// The last lines of a failed run's output.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let last = &lines[lines.len().saturating_sub(5)..];
    if last.is_empty() {
        String::new()
    } else {
        format!("; stderr ends:\n  {}", last.join("\n  "))
    }
}

/// What `-v` printed: `read N bytes from the store`.
pub fn store_bytes_read(stderr: &str) -> Option<u64> {
    stderr.lines().rev().find_map(|line| {
        let rest = &line[line.find("read ")? + 5..];
        let (n, after) = rest.split_once(' ')?;
        after
            .starts_with("bytes from the store")
            .then(|| n.parse().ok())?
    })
}

/// Best of N for one contender.
#[derive(Default)]
pub struct Best {
    pub best: Option<Duration>,
    /// CPU time of the best run.
    pub cpu: Duration,
    /// CPU time of a server the best run talked to (a registry), when
    /// measured ([`Best::add_with_server`]).
    pub server_cpu: Option<Duration>,
    pub max_rss_kib: u64,
    /// Store bytes read in the best run (`-v`), when reported.
    pub store_bytes: Option<u64>,
    /// The best run's stderr, for the summary lines.
    pub stderr: String,
}

impl Best {
    pub fn add(&mut self, t: &Timed) {
        self.add_with_server(t, None);
    }

    /// [`Best::add`], with the CPU time a server spent during the run.
    pub fn add_with_server(&mut self, t: &Timed, server_cpu: Option<Duration>) {
        if self.best.is_none_or(|b| t.wall < b) {
            self.best = Some(t.wall);
            self.cpu = t.cpu;
            self.server_cpu = server_cpu;
            self.store_bytes = store_bytes_read(&t.stderr);
            self.stderr = t.stderr.clone();
        }
        self.max_rss_kib = self.max_rss_kib.max(t.max_rss_kib);
    }

    pub fn secs(&self) -> Option<f64> {
        self.best.map(|d| d.as_secs_f64())
    }
}

/// Removes `dir` with its contents and creates it empty.
pub fn empty_dir(dir: &Path) -> Result<(), String> {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("emptying {}: {e}", dir.display())),
    }
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))
}

/// A table cell: seconds, or `-` where not measured.
pub fn secs_cell(s: Option<f64>) -> String {
    s.map_or_else(|| "-".to_owned(), |s| format!("{s:.3}"))
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
