//! `cargo bench --bench stream`: the streamer's wall time and peak RSS
//! against the floor, on four synthetic stores (issue 2, item 11), and the
//! other destinations of issue 7 against the `docker` format in the same
//! run.
//!
//! The floor is the least any streamer must do: read every file once and
//! hash it, i.e. `find STORE -type f -print0 | xargs -0 cat | openssl dgst
//! -sha256`. Ours is `stream-layered-image conf.json | cat >/dev/null`: the
//! archive goes through a pipe, as it does into `docker load`, and we pay for
//! writing it (tar headers, padding, two copies of every byte through the
//! pipe) while the floor pays for one pipe copy. Targets: ours ≤ 1.2 × floor
//! and peak RSS ≤ 32 MiB on every store.
//!
//! Issue 7 (destinations), per store, all through `| cat >/dev/null`:
//! - `--format dual` with a cold digest cache (`--cache` an empty directory
//!   before every run: uncompressed layers are read twice, hash then stream)
//!   and a warm one (read once). Target: warm `dual` ≤ 1.1 × `docker`.
//! - `--format oci --layer-compression gzip|zstd` (warm cache) with
//!   `RAYON_NUM_THREADS=1` and `2`, as MB/s of uncompressed layer data
//!   (the `layer.tar` members of the docker archive) over wall time, and
//!   MB per CPU-second (per core). Target, as the issue words it ("MB/s
//!   per core and on both cores"): gzip layers on 2 threads ≥ 1.7 × one
//!   core's gzip layer throughput, which is the 1-thread runs' MB per
//!   CPU-second, taking the run that needed least CPU (not their wall
//!   time: their reading and hashing threads run beside the deflating
//!   one, so they already use more than a core). Shown beside it, not a
//!   target: the 2-thread run against bare deflate of the same
//!   bytes on one core (the docker archive written to a file once, then
//!   flate2 level 6, our encoder, on one thread in this process, and GNU
//!   `gzip -6 -c FILE >/dev/null`), which leaves out everything but the
//!   deflate: reading the store, the tar, the digests.
//! - Peak RSS of every one of our runs ≤ 64 MiB.
//!
//! Method: warm page cache (no root to drop caches, so the floor and ours
//! run untimed first; ours twice for `docker` and warm `dual`, default
//! threads then `RAYON_NUM_THREADS=1`, checking both give the same bytes;
//! gzip/zstd are not warmed up: they produce every layer on every run), then all
//! contenders alternate N times; the best wall time of each is kept, peak
//! RSS is the largest seen. Our runs use a digest cache of their own under
//! the bench directory, never the user's. Nothing here asserts a time: it
//! prints tables.
//!
//! Environment:
//! - `SLI_BENCH_QUICK=1` (or `--quick`): small stores, for a CI smoke run.
//!   Run without `--bench` (as `cargo test --all-targets` does) it is a
//!   smoke test: small stores, one run, no gzip baselines, and gzip/zstd
//!   layers on the first store only, on 2 threads.
//! - `SLI_BENCH_RUNS=N`: timed runs per contender (default 3).
//! - `SLI_BENCH_COMPRESS_RUNS=N`: timed runs of the gzip/zstd contenders and
//!   baselines, which take longest (gzip -6 of incompressible data runs at
//!   about 25 MB/s per core; default 1).
//! - `SLI_BENCH_FORMATS=0`: only the floor and the `docker` format.
//! - `SLI_EXE=PATH`: stream with another executable (default: this crate's).
//! - `SLI_BENCH_REFERENCE=PATH`: also time nixpkgs' `stream_layered_image.py`
//!   at PATH (run with `python3`), for the speed-up over nixpkgs.
//! - `SLI_BENCH_CONTENT=compressible`: file contents compress about 3:1
//!   (binary-like) instead of not at all, so gzip/zstd do real work (on
//!   incompressible data our gzip stores blocks rather than deflating).
//! - `SLI_BENCH_STORES=a,b`: only these stores (default: all four).
//! - `SLI_BENCH_DIR=DIR`: where stores are cached (default: cargo's
//!   target tmp dir).

mod common;

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use common::rusage;
use common::store::{self, Store};
use sha2::{Digest, Sha256};

/// Issue 2's targets: the `docker` format against the floor.
const MAX_RATIO: f64 = 1.2;
const MAX_RSS_MIB: f64 = 32.0;
/// Issue 7's targets: warm `dual` against `docker`, gzip layers on two
/// threads against one core's gzip layers, and peak RSS of every destination.
const MAX_DUAL_RATIO: f64 = 1.1;
const MIN_GZIP_SCALING: f64 = 1.7;
const MAX_FORMATS_RSS_MIB: f64 = 64.0;

/// Settings from the environment and command line.
struct Options {
    quick: bool,
    smoke: bool,
    runs: usize,
    compress_runs: usize,
    formats: bool,
    exe: PathBuf,
    reference: Option<PathBuf>,
    cache: PathBuf,
}

/// A program that streams a conf: `program prefix… conf.json args…`.
#[derive(Clone)]
struct Streamer {
    label: String,
    program: PathBuf,
    prefix: Vec<OsString>,
    args: Vec<OsString>,
    env: Vec<(&'static str, &'static str)>,
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
    /// The least CPU time of any run: the per-core baseline is judged on
    /// the run that needed least, the hardest to beat.
    least_cpu: Option<Duration>,
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
        self.least_cpu = Some(self.least_cpu.map_or(s.cpu, |c| c.min(s.cpu)));
        self.max_rss_kib = self.max_rss_kib.max(s.max_rss_kib);
    }

    fn secs(&self) -> f64 {
        self.best_wall.unwrap_or_default().as_secs_f64()
    }

    fn ran(&self) -> bool {
        self.best_wall.is_some()
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
    check_tools(&opts)?;
    let ours = Streamer::ours("docker", &opts.exe);
    let nixpkgs = opts.reference.as_ref().map(|script| Streamer {
        label: "nixpkgs".into(),
        program: "python3".into(),
        prefix: vec![script.clone().into()],
        args: vec![],
        env: vec![],
    });
    println!(
        "stream-layered-image bench: warm page cache, best of {} runs ({} for gzip/zstd), {} CPUs{}",
        opts.runs,
        opts.compress_runs,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        if opts.quick { ", QUICK stores" } else { "" }
    );
    println!(
        "  file contents: {}",
        if store::compressible() {
            "compressible (about 3:1 at gzip -6; SLI_BENCH_CONTENT=compressible)"
        } else {
            "incompressible (pseudo-random)"
        }
    );
    println!("  floor:  find STORE -type f -print0 | xargs -0 cat | openssl dgst -sha256");
    println!(
        "  docker: {} conf.json --cache DIR | cat >/dev/null",
        opts.exe.display()
    );
    if opts.formats {
        println!("  dual:   … --format dual --cache DIR (cold: DIR emptied before each run; warm)");
        println!(
            "  gzip/zstd: RAYON_NUM_THREADS=1|2 … --format oci --layer-compression gzip|zstd --cache DIR (warm)"
        );
        if !opts.smoke {
            println!("  one core's gzip layers: the 1-thread run's MB per CPU-s");
            println!("  bare deflate, one core: gzip -6 -c ARCHIVE >/dev/null; flate2 level 6 on one thread (in-process)");
        }
    }
    let load_before = load_average();
    let mut rows = Vec::new();
    let wanted = std::env::var("SLI_BENCH_STORES").ok();
    for kind in store::KINDS {
        if wanted
            .as_deref()
            .is_some_and(|w| !w.split(',').any(|k| k == kind))
        {
            continue;
        }
        let store = store::prepare(kind, opts.quick, &opts.cache)
            .map_err(|e| format!("preparing store {kind} in {}: {e}", opts.cache.display()))?;
        // nixpkgs' streamer only reads `store_layers`.
        let reference = nixpkgs.as_ref().filter(|_| !store.graph);
        rows.push(bench_store(store, &ours, reference, &opts)?);
    }
    print_table(&rows, nixpkgs.is_some());
    if opts.formats {
        print_formats(&rows, &opts);
    }
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
    let positive = |name: &str| -> Result<Option<usize>, String> {
        match std::env::var(name) {
            Ok(v) => v
                .parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .map(Some)
                .ok_or_else(|| format!("{name}={v:?}: expected a positive integer")),
            Err(_) => Ok(None),
        }
    };
    let runs = positive("SLI_BENCH_RUNS")?.unwrap_or(if smoke { 1 } else { 3 });
    let compress_runs = positive("SLI_BENCH_COMPRESS_RUNS")?.unwrap_or(1);
    let formats = std::env::var("SLI_BENCH_FORMATS").map_or(true, |v| v != "0");
    let exe = std::env::var_os("SLI_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_stream-layered-image")));
    let reference = std::env::var_os("SLI_BENCH_REFERENCE").map(PathBuf::from);
    let cache = std::env::var_os("SLI_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("sli-bench"));
    Ok(Options {
        quick,
        smoke,
        runs,
        compress_runs,
        formats,
        exe,
        reference,
        cache,
    })
}

/// The floor (and the gzip baseline) need these; fail with a clear line
/// rather than time nothing.
fn check_tools(opts: &Options) -> Result<(), String> {
    let mut tools = vec!["find", "xargs", "cat", "openssl"];
    if opts.formats && !opts.smoke {
        tools.push("gzip");
    }
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", "command -v \"$1\" >/dev/null", "sh", tool])
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Err(format!("`{tool}` not found on PATH; the bench needs it"));
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
    formats: Option<Formats>,
}

/// Issue 7's contenders on one store.
struct Formats {
    /// Uncompressed layer data: the `layer.tar` members of the archive.
    layer_bytes: u64,
    dual_cold: Summary,
    dual_warm: Summary,
    /// One core's gzip -6 (GNU gzip, flate2), when measured.
    gzip_gnu: Option<Summary>,
    gzip_flate2: Option<Summary>,
    /// Our compressed layers, by codec, on 1 and 2 threads (1: when measured).
    gzip: [Option<Summary>; 2],
    zstd: [Option<Summary>; 2],
}

/// A contender of issue 7 and where its samples go.
enum Slot {
    DualCold,
    DualWarm,
    Gzip(usize),
    Zstd(usize),
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
    // Our digest caches live beside the store, never in the user's; the
    // warm one starts empty so every run of the bench fills it the same way.
    let warm = store
        .conf
        .with_file_name(format!("cache-warm-{}", store.name));
    let cold = store
        .conf
        .with_file_name(format!("cache-cold-{}", store.name));
    empty_dir(&warm)?;
    let ours = ours.with_args(&[&"--cache".into(), &warm.clone().into_os_string()]);
    // Warm-up, untimed: fills the page cache for everyone and checks that
    // our executable streams this conf at all.
    floor(&store)?;
    let archive_bytes = deterministic_size(&ours, &store)?;
    if let Some(r) = reference {
        stream(r, &store)?;
    }
    let mut contenders: Vec<(Slot, Streamer, usize)> = Vec::new();
    let mut formats = None;
    let mut archive = None;
    if opts.formats {
        let dual = |cache: &Path, label: &str| {
            ours.relabel(label).with_args(&[
                &"--format".into(),
                &"dual".into(),
                &"--cache".into(),
                &cache.as_os_str().to_owned(),
            ])
        };
        let compressed = |codec: &str, threads: &'static str| {
            ours.relabel(&format!("oci-{codec}-{threads}t"))
                .with_args(&[
                    &"--format".into(),
                    &"oci".into(),
                    &"--layer-compression".into(),
                    &codec.into(),
                ])
                .with_env("RAYON_NUM_THREADS", threads)
        };
        let dual_warm = dual(&warm, "dual-warm");
        // Fills the warm cache for `dual` and checks it is deterministic.
        deterministic_size(&dual_warm, &store)?;
        contenders.push((Slot::DualCold, dual(&cold, "dual-cold"), opts.runs));
        contenders.push((Slot::DualWarm, dual_warm, opts.runs));
        // A smoke run compresses only the first store: it checks the code
        // path, and gzip is the slowest thing here.
        let codecs: &[(&str, usize)] = if opts.smoke && store.name != store::KINDS[0] {
            &[]
        } else {
            &[("gzip", 0), ("zstd", 1)]
        };
        for &(codec, slot) in codecs {
            // No warm-up: compressed layers are produced (spooled) on every
            // run whatever the cache holds, and the page cache is warm.
            // That the thread count does not change their bytes is a test.
            let two = compressed(codec, "2");
            let one = compressed(codec, "1");
            let make = |t: usize| {
                if slot == 0 {
                    Slot::Gzip(t)
                } else {
                    Slot::Zstd(t)
                }
            };
            if !opts.smoke {
                contenders.push((make(0), one, opts.compress_runs));
            }
            contenders.push((make(1), two, opts.compress_runs));
        }
        // The docker archive on disk: the uncompressed layer data, counted
        // and fed to the one-core gzip baselines.
        let path = store
            .conf
            .with_file_name(format!("archive-{}.tar", store.name));
        write_archive(&ours, &store, &path)?;
        formats = Some(Formats {
            layer_bytes: layer_bytes(&path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?,
            dual_cold: Summary::default(),
            dual_warm: Summary::default(),
            gzip_gnu: None,
            gzip_flate2: None,
            gzip: [None, None],
            zstd: [None, None],
        });
        archive = Some(path);
    }
    let (mut f, mut o, mut r) = (Summary::default(), Summary::default(), Summary::default());
    let mut gnu = Summary::default();
    let mut fl = Summary::default();
    let mut samples: Vec<Summary> = vec![Summary::default(); contenders.len()];
    for run in 0..opts.runs.max(opts.compress_runs) {
        if run < opts.runs {
            f.add(floor(&store)?);
            o.add(stream(&ours, &store)?);
            if let Some(reference) = reference {
                r.add(stream(reference, &store)?);
            }
        }
        for ((slot, streamer, runs), summary) in contenders.iter().zip(&mut samples) {
            if run >= *runs {
                continue;
            }
            if matches!(slot, Slot::DualCold) {
                empty_dir(&cold)?;
            }
            summary.add(stream(streamer, &store)?);
        }
        if let (Some(path), false) = (&archive, opts.smoke) {
            if run < opts.compress_runs {
                gnu.add(gzip_gnu(path)?);
                fl.add(gzip_flate2(path)?);
            }
        }
    }
    if let Some(fm) = &mut formats {
        for ((slot, _, _), summary) in contenders.iter().zip(samples) {
            match slot {
                Slot::DualCold => fm.dual_cold = summary,
                Slot::DualWarm => fm.dual_warm = summary,
                Slot::Gzip(t) => fm.gzip[*t] = Some(summary),
                Slot::Zstd(t) => fm.zstd[*t] = Some(summary),
            }
        }
        if !opts.smoke {
            fm.gzip_gnu = Some(gnu);
            fm.gzip_flate2 = Some(fl);
        }
    }
    if let Some(path) = archive {
        let _ = fs::remove_file(path);
    }
    let _ = fs::remove_dir_all(&cold);
    Ok(Row {
        store,
        archive_bytes,
        floor: f,
        ours: o,
        reference: reference.map(|_| r),
        formats,
    })
}

/// Removes `dir` with its contents and creates it empty.
fn empty_dir(dir: &Path) -> Result<(), String> {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("emptying {}: {e}", dir.display())),
    }
    fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))
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

/// One core's gzip: GNU `gzip -6 -c ARCHIVE >/dev/null`.
fn gzip_gnu(archive: &Path) -> Result<Sample, String> {
    let start = Instant::now();
    let child = Command::new("gzip")
        .args(["-6", "-c"])
        .arg(archive)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("gzip -6: cannot start: {e}"))?;
    let usage = rusage::wait(child).map_err(|e| format!("gzip -6: {e}"))?;
    let wall = start.elapsed();
    if !usage.status.success() {
        return Err(format!(
            "gzip -6 -c {}: {}",
            archive.display(),
            usage.status
        ));
    }
    Ok(Sample {
        wall,
        cpu: usage.cpu,
        max_rss_kib: usage.max_rss_kib,
    })
}

/// One core's gzip with our deflate: flate2 (zlib-rs) level 6, one stream, on this
/// thread. Its CPU time is taken as its wall time, and RSS is not ours to
/// report (it is this process's).
fn gzip_flate2(archive: &Path) -> Result<Sample, String> {
    let what = |e: io::Error| format!("flate2 level 6 over {}: {e}", archive.display());
    let start = Instant::now();
    let mut file = fs::File::open(archive).map_err(what)?;
    let mut enc = flate2::write::GzEncoder::new(io::sink(), flate2::Compression::new(6));
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(what)?;
        if n == 0 {
            break;
        }
        enc.write_all(&buf[..n]).map_err(what)?;
    }
    enc.finish().map_err(what)?;
    let wall = start.elapsed();
    Ok(Sample {
        wall,
        cpu: wall,
        max_rss_kib: 0,
    })
}

/// Writes the docker archive to `path` (untimed).
fn write_archive(streamer: &Streamer, store: &Store, path: &Path) -> Result<(), String> {
    let what = format!("{} on {} -o {}", streamer.label, store.name, path.display());
    let stderr = stderr_file(streamer, store)?;
    let status = streamer
        .command(store)
        .arg("-o")
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr.1))
        .status()
        .map_err(|e| format!("{what}: {e}"))?;
    if !status.success() {
        return Err(format!("{what}: {status}{}", tail(&stderr.0)));
    }
    Ok(())
}

/// The uncompressed layer data in a docker archive: its `layer.tar` members.
fn layer_bytes(archive: &Path) -> io::Result<u64> {
    let mut tar = tar::Archive::new(fs::File::open(archive)?);
    let mut total = 0;
    for entry in tar.entries_with_seek()? {
        let entry = entry?;
        if entry.path()?.ends_with("layer.tar") {
            total += entry.size();
        }
    }
    Ok(total)
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

/// Two untimed runs (the second with a single rayon thread) that must give
/// the same archive; returns its size. Cheap here, and it catches ordering
/// bugs that only show with many chunks and layers.
fn deterministic_size(streamer: &Streamer, store: &Store) -> Result<u64, String> {
    let (bytes, first) = archive_digest(streamer, store)?;
    let (_, second) = archive_digest(&streamer.with_env("RAYON_NUM_THREADS", "1"), store)?;
    if first != second {
        return Err(format!(
            "{} on {}: two runs gave different archives (RAYON_NUM_THREADS unset, then 1)",
            streamer.label, store.name
        ));
    }
    Ok(bytes)
}

/// An untimed run: the archive's size and sha256.
fn archive_digest(streamer: &Streamer, store: &Store) -> Result<(u64, Vec<u8>), String> {
    let what = format!("{} on {}", streamer.label, store.name);
    let stderr = stderr_file(streamer, store)?;
    let mut child = streamer
        .command(store)
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
    fn ours(label: &str, exe: &Path) -> Streamer {
        Streamer {
            label: label.into(),
            program: exe.to_owned(),
            prefix: vec![],
            args: vec![],
            env: vec![],
        }
    }

    fn relabel(&self, label: &str) -> Streamer {
        Streamer {
            label: label.into(),
            ..self.clone()
        }
    }

    fn with_args(&self, args: &[&OsString]) -> Streamer {
        let mut s = self.clone();
        s.args.extend(args.iter().map(|a| (*a).clone()));
        s
    }

    fn with_env(&self, name: &'static str, value: &'static str) -> Streamer {
        let mut s = self.clone();
        s.env.retain(|(n, _)| *n != name);
        s.env.push((name, value));
        s
    }

    fn command(&self, store: &Store) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.prefix)
            .arg(&store.conf)
            .args(&self.args)
            .envs(self.env.iter().copied())
            .stdin(Stdio::null());
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

/// Issue 7's table: every contender per store, then its targets.
fn print_formats(rows: &[Row], opts: &Options) {
    println!();
    println!(
        "Formats and layer compression (issue 7): MB/s is uncompressed layer data over wall time,"
    );
    println!("MB/CPU-s over the process's CPU time (user + system; per core)");
    println!(
        "{:<12} {:<36} {:>8} {:>10} {:>8} {:>11} {:>9}",
        "store", "contender", "wall s", "layer MB/s", "CPU s", "MB/CPU-s", "peak MiB"
    );
    let mut all_met = true;
    for row in rows {
        let Some(fm) = &row.formats else { continue };
        let rate = |s: &Summary| mb(fm.layer_bytes) / s.secs().max(1e-9);
        let mut first = true;
        let mut line = |name: &str, s: &Summary, rss: bool| {
            if !s.ran() {
                return;
            }
            let cpu = s.cpu_of_best.as_secs_f64();
            println!(
                "{:<12} {:<36} {:>8.3} {:>10.1} {:>8.3} {:>11.1} {:>9}",
                if first { row.store.name } else { "" },
                name,
                s.secs(),
                rate(s),
                cpu,
                mb(fm.layer_bytes) / cpu.max(1e-9),
                if rss {
                    format!("{:.1}", mib(s.max_rss_kib))
                } else {
                    "-".to_owned()
                }
            );
            first = false;
        };
        line("floor (find | cat | openssl)", &row.floor, true);
        line("docker", &row.ours, true);
        line("dual, cold cache", &fm.dual_cold, true);
        line("dual, warm cache", &fm.dual_warm, true);
        if let Some(s) = &fm.gzip_gnu {
            line("gzip -6 -c (GNU gzip, 1 core)", s, true);
        }
        if let Some(s) = &fm.gzip_flate2 {
            line("flate2 level 6 (1 thread, in-process)", s, false);
        }
        let threads = ["1 thread", "2 threads"];
        for (codec, runs) in [("gzip", &fm.gzip), ("zstd", &fm.zstd)] {
            for (t, s) in runs.iter().enumerate() {
                if let Some(s) = s {
                    line(&format!("oci, {codec} layers, {}", threads[t]), s, true);
                }
            }
        }
        // The targets.
        let mut verdicts = Vec::new();
        let dual_ratio = fm.dual_warm.secs() / row.ours.secs().max(1e-9);
        let met = dual_ratio <= MAX_DUAL_RATIO;
        all_met &= met;
        verdicts.push(format!(
            "warm dual / docker {dual_ratio:.2} (≤ {MAX_DUAL_RATIO}) {}",
            met_or_missed(met)
        ));
        // The target, as the issue measures it ("MB/s per core and on both
        // cores"): gzip layers on two threads against one core's gzip
        // layer throughput, the 1-thread runs' MB per CPU-second (the least
        // CPU any of them took). Not their wall time: their reading and
        // hashing threads run beside the deflating one, so they already use
        // more than a core.
        let measured = |s: &Option<Summary>| s.as_ref().filter(|s| s.ran()).map(rate);
        match (fm.gzip[0].as_ref(), fm.gzip[1].as_ref()) {
            (Some(one), Some(two)) if one.ran() && two.ran() => {
                let least = one.least_cpu.unwrap_or(one.cpu_of_best);
                let per_core = mb(fm.layer_bytes) / least.as_secs_f64().max(1e-9);
                let scaling = rate(two) / per_core;
                let met = scaling >= MIN_GZIP_SCALING;
                all_met &= met;
                verdicts.push(format!(
                    "gzip layers on 2 threads / one core's {scaling:.2} (≥ {MIN_GZIP_SCALING}) {}",
                    met_or_missed(met)
                ));
                // CPU over wall time: how many cores the 2-thread run
                // actually got. Near 1 means other work held the second
                // core, and the target cannot be judged from this run.
                verdicts.push(format!(
                    "(the 2-thread run used {:.2} cores; 2 threads / 1 thread by wall time {:.2})",
                    two.cpu_of_best.as_secs_f64() / two.secs().max(1e-9),
                    one.secs() / two.secs().max(1e-9)
                ));
                // Bare deflate of the finished archive on one core: no store
                // to read, no tar to write, no digests; what our pipeline
                // costs beyond the deflate itself shows here. Not a target.
                if let Some(base) = measured(&fm.gzip_flate2) {
                    let gnu = measured(&fm.gzip_gnu)
                        .map(|g| format!(", {:.2} × GNU gzip -6", rate(two) / g))
                        .unwrap_or_default();
                    verdicts.push(format!(
                        "(2 threads against bare deflate on one core: {:.2} × flate2 -6{gnu})",
                        rate(two) / base
                    ));
                }
            }
            _ => verdicts.push("gzip scaling not measured (smoke run)".to_owned()),
        }
        let ours = [&row.ours, &fm.dual_cold, &fm.dual_warm]
            .into_iter()
            .chain(fm.gzip.iter().flatten())
            .chain(fm.zstd.iter().flatten());
        let rss = ours.map(|s| mib(s.max_rss_kib)).fold(0.0, f64::max);
        let met = rss <= MAX_FORMATS_RSS_MIB;
        all_met &= met;
        verdicts.push(format!(
            "peak RSS {rss:.1} MiB (≤ {MAX_FORMATS_RSS_MIB}) {}",
            met_or_missed(met)
        ));
        println!("{:<12} targets: {}", "", verdicts.join("; "));
    }
    let verdict = if cfg!(debug_assertions) {
        "unoptimised (debug) build: times are not meaningful; use `cargo bench --bench stream`"
    } else if opts.smoke {
        "smoke run: one run, no gzip baselines"
    } else if all_met {
        "all issue 7 targets met"
    } else {
        "some issue 7 targets MISSED (timings on a busy machine are noisy; rerun before concluding)"
    };
    println!("\n{verdict}");
}

fn met_or_missed(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}
