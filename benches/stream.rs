//! `cargo bench --bench stream`: the streamer's wall time and peak RSS
//! against the floor, on three synthetic stores (issue 2, item 11).
//!
//! The floor is the least any streamer must do: read every file once and
//! hash it, i.e. `find STORE -type f -print0 | xargs -0 cat | openssl dgst
//! -sha256`. Ours is `stream-layered-image conf.json | cat >/dev/null`: the
//! archive goes through a pipe, as it does into `docker load`, and we pay for
//! writing it (tar headers, padding, two copies of every byte through the
//! pipe) while the floor pays for one pipe copy. Targets: ours ≤ 1.2 × floor
//! and peak RSS ≤ 32 MiB on every store.
//!
//! Method: warm cache (no root to drop caches, so every contender runs once
//! untimed first; ours twice, checking both runs give the same bytes), then
//! floor and ours alternate N times; the best wall time
//! of each is kept, peak RSS is the largest seen. Nothing here asserts a
//! time: it prints a table.
//!
//! Environment:
//! - `SLI_BENCH_QUICK=1` (or `--quick`): small stores, for a CI smoke run.
//!   Run without `--bench` (as `cargo test --all-targets` does) it is a
//!   smoke test: small stores, one run.
//! - `SLI_BENCH_RUNS=N`: timed runs per contender (default 3).
//! - `SLI_EXE=PATH`: stream with another executable (default: this crate's).
//! - `SLI_BENCH_REFERENCE=PATH`: also time nixpkgs' `stream_layered_image.py`
//!   at PATH (run with `python3`), for the speed-up over nixpkgs.
//! - `SLI_BENCH_DIR=DIR`: where stores are cached (default: cargo's
//!   target tmp dir).

mod common;

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use common::rusage;
use common::store::{self, Store};
use sha2::{Digest, Sha256};

/// The targets.
const MAX_RATIO: f64 = 1.2;
const MAX_RSS_MIB: f64 = 32.0;

/// Settings from the environment and command line.
struct Options {
    quick: bool,
    runs: usize,
    exe: PathBuf,
    reference: Option<PathBuf>,
    cache: PathBuf,
}

/// A program that streams a conf: `program prefix… conf.json`.
struct Streamer {
    label: &'static str,
    program: PathBuf,
    prefix: Vec<OsString>,
}

/// One timed run.
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    cpu: Duration,
    max_rss_kib: u64,
}

/// Best-of-N summary for one contender on one store.
#[derive(Clone, Copy, Default)]
struct Summary {
    best_wall: Option<Duration>,
    cpu_of_best: Duration,
    max_rss_kib: u64,
}

impl Summary {
    fn add(&mut self, s: Sample) {
        let better = match self.best_wall {
            Some(best) => s.wall < best,
            None => true,
        };
        if better {
            self.best_wall = Some(s.wall);
            self.cpu_of_best = s.cpu;
        }
        self.max_rss_kib = self.max_rss_kib.max(s.max_rss_kib);
    }

    fn secs(&self) -> f64 {
        self.best_wall.unwrap_or_default().as_secs_f64()
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let opts = options()?;
    check_tools()?;
    let ours = Streamer {
        label: "ours",
        program: opts.exe.clone(),
        prefix: vec![],
    };
    let nixpkgs = opts.reference.as_ref().map(|script| Streamer {
        label: "nixpkgs",
        program: "python3".into(),
        prefix: vec![script.clone().into()],
    });
    println!(
        "stream-layered-image bench: warm cache, best of {} runs, {} CPUs{}",
        opts.runs,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        if opts.quick { ", QUICK stores" } else { "" }
    );
    println!("  floor: find STORE -type f -print0 | xargs -0 cat | openssl dgst -sha256");
    println!("  ours:  {} conf.json | cat >/dev/null", opts.exe.display());
    let load_before = load_average();
    let mut rows = Vec::new();
    for kind in store::KINDS {
        let store = store::prepare(kind, opts.quick, &opts.cache)
            .map_err(|e| format!("preparing store {kind} in {}: {e}", opts.cache.display()))?;
        // nixpkgs' streamer only reads `store_layers`.
        let reference = nixpkgs.as_ref().filter(|_| !store.graph);
        rows.push(bench_store(store, &ours, reference, &opts)?);
    }
    print_table(&rows, nixpkgs.is_some());
    println!(
        "load average (1 min) before {load_before}, after {}: well above the CPU count means \
         other work shared the machine and wall times are noisy; the CPU columns are steadier",
        load_average()
    );
    Ok(())
}

/// The 1-minute load average, to judge how noisy the wall times are.
fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn options() -> Result<Options, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0");
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
    // binary without it, and then a smoke run (quick stores, one run) is
    // all a test suite wants.
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
    let reference = std::env::var_os("SLI_BENCH_REFERENCE").map(PathBuf::from);
    let cache = std::env::var_os("SLI_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("sli-bench"));
    Ok(Options {
        quick,
        runs,
        exe,
        reference,
        cache,
    })
}

/// The floor needs these; fail with a clear line rather than time nothing.
fn check_tools() -> Result<(), String> {
    for tool in ["find", "xargs", "cat", "openssl"] {
        let found = Command::new("sh")
            .args(["-c", "command -v \"$1\" >/dev/null", "sh", tool])
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Err(format!("`{tool}` not found on PATH; the floor needs it"));
        }
    }
    Ok(())
}

/// Everything measured on one store.
struct Row {
    store: Store,
    archive_bytes: u64,
    floor: Summary,
    ours: Summary,
    reference: Option<Summary>,
}

fn bench_store(
    store: Store,
    ours: &Streamer,
    reference: Option<&Streamer>,
    opts: &Options,
) -> Result<Row, String> {
    eprintln!(
        "bench: {}: {} files, {:.0} MB in {} store paths, {} layers",
        store.name,
        store.files,
        mb(store.bytes),
        store.paths,
        store.layers
    );
    // Warm-up, untimed: fills the page cache for everyone and checks that
    // our executable streams this conf at all.
    floor(&store)?;
    let archive_bytes = deterministic_size(ours, &store)?;
    if let Some(r) = reference {
        stream(r, &store)?;
    }
    let (mut f, mut o, mut r) = (Summary::default(), Summary::default(), Summary::default());
    for _ in 0..opts.runs {
        f.add(floor(&store)?);
        o.add(stream(ours, &store)?);
        if let Some(reference) = reference {
            r.add(stream(reference, &store)?);
        }
    }
    Ok(Row {
        store,
        archive_bytes,
        floor: f,
        ours: o,
        reference: reference.map(|_| r),
    })
}

/// The floor: every file read once, through a pipe, into sha256.
fn floor(store: &Store) -> Result<Sample, String> {
    let script = "find \"$1\" -type f -print0 | xargs -0 cat | openssl dgst -sha256 >/dev/null";
    let start = Instant::now();
    let child = Command::new("sh")
        .args(["-c", script, "floor"])
        .arg(&store.store_dir)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("floor on {}: cannot start sh: {e}", store.name))?;
    let usage = rusage::wait(child).map_err(|e| format!("floor on {}: {e}", store.name))?;
    let wall = start.elapsed();
    if !usage.status.success() {
        return Err(format!("floor on {}: {}", store.name, usage.status));
    }
    Ok(Sample {
        wall,
        cpu: usage.cpu,
        max_rss_kib: usage.max_rss_kib,
    })
}

/// One timed streamer run: `program conf.json | cat >/dev/null`. The clock
/// stops when `cat` has drained the pipe, like the floor's `openssl`.
fn stream(streamer: &Streamer, store: &Store) -> Result<Sample, String> {
    let what = format!("{} on {}", streamer.label, store.name);
    let stderr = stderr_file(streamer, store)?;
    let start = Instant::now();
    let mut cat = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("{what}: cannot start cat: {e}"))?;
    let pipe = cat
        .stdin
        .take()
        .ok_or_else(|| format!("{what}: no pipe to cat"))?;
    let child = streamer
        .command(store)
        .stdout(Stdio::from(pipe))
        .stderr(Stdio::from(stderr.1))
        .spawn()
        .map_err(|e| format!("{what}: cannot start {}: {e}", streamer.program.display()))?;
    let usage = rusage::wait(child).map_err(|e| format!("{what}: {e}"))?;
    let drained = cat.wait().map_err(|e| format!("{what}: cat: {e}"))?;
    let wall = start.elapsed();
    if !usage.status.success() {
        return Err(format!("{what}: {}{}", usage.status, tail(&stderr.0)));
    }
    if !drained.success() {
        return Err(format!("{what}: cat: {drained}"));
    }
    Ok(Sample {
        wall,
        cpu: usage.cpu,
        max_rss_kib: usage.max_rss_kib,
    })
}

/// Two untimed runs (one with a single rayon thread) that must give the
/// same archive; returns its size. Cheap here, and it catches ordering bugs
/// that only show with many chunks and layers.
fn deterministic_size(streamer: &Streamer, store: &Store) -> Result<u64, String> {
    let (bytes, first) = archive_digest(streamer, store, None)?;
    let (_, second) = archive_digest(streamer, store, Some("1"))?;
    if first != second {
        return Err(format!(
            "{} on {}: two runs gave different archives (RAYON_NUM_THREADS unset, then 1)",
            streamer.label, store.name
        ));
    }
    Ok(bytes)
}

/// An untimed run: the archive's size and sha256.
fn archive_digest(
    streamer: &Streamer,
    store: &Store,
    rayon_threads: Option<&str>,
) -> Result<(u64, Vec<u8>), String> {
    let what = format!("{} on {}", streamer.label, store.name);
    let stderr = stderr_file(streamer, store)?;
    let mut cmd = streamer.command(store);
    if let Some(n) = rayon_threads {
        cmd.env("RAYON_NUM_THREADS", n);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr.1))
        .spawn()
        .map_err(|e| format!("{what}: cannot start {}: {e}", streamer.program.display()))?;
    let mut out = child
        .stdout
        .take()
        .ok_or_else(|| format!("{what}: no stdout pipe"))?;
    let mut hasher = HashingSink(Sha256::new());
    let bytes = io::copy(&mut out, &mut hasher).map_err(|e| format!("{what}: {e}"))?;
    let status = child.wait().map_err(|e| format!("{what}: {e}"))?;
    if !status.success() {
        return Err(format!("{what}: {status}{}", tail(&stderr.0)));
    }
    if bytes == 0 {
        return Err(format!("{what}: wrote nothing"));
    }
    Ok((bytes, hasher.0.finalize().to_vec()))
}

/// A `Write` that only hashes.
struct HashingSink(Sha256);

impl io::Write for HashingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Streamer {
    fn command(&self, store: &Store) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.prefix).arg(&store.conf).stdin(Stdio::null());
        cmd
    }
}

/// The streamer's stderr goes to a file beside the store, shown on failure.
fn stderr_file(streamer: &Streamer, store: &Store) -> Result<(PathBuf, fs::File), String> {
    let path = store
        .conf
        .with_file_name(format!("{}-{}.stderr", store.name, streamer.label));
    let file = fs::File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
    Ok((path, file))
}

/// The last lines of a failed run's stderr, for the error message.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let last = &lines[lines.len().saturating_sub(5)..];
    if last.is_empty() {
        String::new()
    } else {
        format!(
            "; stderr ({}) ends:\n  {}",
            path.display(),
            last.join("\n  ")
        )
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn print_table(rows: &[Row], with_reference: bool) {
    println!();
    print!(
        "{:<12} {:>6} {:>6} {:>9} {:>10} {:>8} {:>8} {:>6} {:>8} {:>8} {:>9}",
        "store",
        "files",
        "layers",
        "store MB",
        "archive MB",
        "floor s",
        "ours s",
        "ratio",
        "floorCPU",
        "oursCPU",
        "peak MiB"
    );
    if with_reference {
        print!(" {:>10} {:>8}", "nixpkgs s", "speedup");
    }
    println!("  targets (ratio ≤ {MAX_RATIO}, RSS ≤ {MAX_RSS_MIB} MiB)");
    let mut all_met = true;
    for row in rows {
        let ratio = row.ours.secs() / row.floor.secs().max(1e-9);
        let rss = mib(row.ours.max_rss_kib);
        print!(
            "{:<12} {:>6} {:>6} {:>9.1} {:>10.1} {:>8.3} {:>8.3} {:>6.2} {:>8.3} {:>8.3} {:>9.1}",
            row.store.name,
            row.store.files,
            row.store.layers,
            mb(row.store.bytes),
            mb(row.archive_bytes),
            row.floor.secs(),
            row.ours.secs(),
            ratio,
            row.floor.cpu_of_best.as_secs_f64(),
            row.ours.cpu_of_best.as_secs_f64(),
            rss
        );
        if let Some(r) = &row.reference {
            print!(
                " {:>10.3} {:>7.1}x",
                r.secs(),
                r.secs() / row.ours.secs().max(1e-9)
            );
        }
        let mut misses = Vec::new();
        if ratio > MAX_RATIO {
            misses.push("ratio");
        }
        if rss > MAX_RSS_MIB {
            misses.push("RSS");
        }
        all_met &= misses.is_empty();
        if misses.is_empty() {
            println!("  met");
        } else {
            println!("  MISSED: {}", misses.join(", "));
        }
    }
    let verdict = if cfg!(debug_assertions) {
        // `cargo test` builds the executable unoptimised too.
        "unoptimised (debug) build: times are not meaningful; use `cargo bench --bench stream`"
    } else if all_met {
        "all targets met"
    } else {
        "some targets MISSED (timings on a busy machine are noisy; rerun before concluding)"
    };
    println!("\n{verdict}");
}
