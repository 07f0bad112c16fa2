//! `cargo bench --bench push`: pushing to a registry (issue 8), in one run,
//! to Debian's `docker-registry` (distribution 2.8) started here on
//! 127.0.0.1 (a free port, storage in a temporary directory on tmpfs,
//! killed at the end), with the load bench's images (the store + one small
//! app path as the last store layer; see `common/incremental.rs`):
//!
//! - ours, cold: `ours conf-a --push 127.0.0.1:PORT/sli-bench/STORE:a -v`
//!   into an empty registry with an empty digest cache;
//! - ours, unchanged: the same push again (digest cache warm);
//! - ours, one-leaf change: image B (the app's new version) to `:b`;
//! - ours, that layer alone: image "one" (the new app alone) to another
//!   repository with an empty cache: reading, compressing and uploading it;
//! - the anchor, cold and unchanged (a fresh registry of its own):
//!   `ours conf-a >T && skopeo copy --dest-tls-verify=false
//!   --dest-compress-format gzip --dest-compress-level 6 docker-archive:T
//!   docker://127.0.0.1:PORT/sli-bench/STORE:a` (our docker-archive is byte
//!   for byte nixpkgs' stream; gzip level 6 as our layers). Not
//!   `| skopeo copy docker-archive:/dev/stdin`: skopeo 1.9 cannot read an
//!   uncompressed archive from a pipe (it reopens the path per member), so
//!   the anchor spools to a file as skopeo does itself for other streams.
//!   Its peak RSS is the largest of the shell's children (ours, skopeo).
//!
//! Every cold run gets a fresh registry. Targets: unchanged push ≤ 0.3 s
//! and zero store bytes read (`-v`: `read N bytes from the store`); cold
//! push ≥ 2 × faster than the skopeo anchor; one-leaf change ≤ 1.5 × that
//! layer alone.
//!
//! Without `/usr/bin/docker-registry` (or `SLI_BENCH_REGISTRY`) it prints
//! SKIPPED and exits 0; without `skopeo` the anchor rows are skipped;
//! without `--push` in `--help` our rows say SKIPPED. Run without
//! `--bench` (as `cargo test --all-targets` does) it is a smoke test: one
//! run on a tiny image. Environment: `SLI_BENCH_QUICK=1`,
//! `SLI_BENCH_RUNS=N`, `SLI_EXE`, `SLI_BENCH_DIR`, `SLI_BENCH_REGISTRY`,
//! `SLI_BENCH_REGISTRY_STORAGE=disk` (registry storage on the disk instead
//! of tmpfs; see [`registry_dir`]),
//! `SLI_BENCH_STORES=many-paths,big-files,small-files` (default many-paths).

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use common::incremental::{self, Images};
use common::run::{self, mib, secs_cell, Best, Options};

const MAX_UNCHANGED_S: f64 = 0.3;
const MIN_COLD_SPEEDUP: f64 = 2.0;
const MAX_ONE_LEAF_RATIO: f64 = 1.5;

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench push: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A `docker-registry` of our own: loopback only, storage in `dir`.
struct Registry {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Registry {
    fn start(program: &Path, dir: PathBuf) -> Result<Registry, String> {
        run::empty_dir(&dir)?;
        // A free port: bind port 0, read it, let it go (a race with other
        // programs is possible but harmless: the start then fails clearly).
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let config = dir.join("config.yml");
        let text = format!(
            "version: 0.1\n\
             log:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        fs::write(&config, text).map_err(|e| format!("writing {}: {e}", config.display()))?;
        let log = fs::File::create(dir.join("registry.log"))
            .map_err(|e| format!("creating the registry log: {e}"))?;
        let child = Command::new(program)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| format!("registry log: {e}"))?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", program.display()))?;
        let mut registry = Registry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if ping(port) {
                return Ok(registry);
            }
            if let Ok(Some(status)) = registry.child.try_wait() {
                let log = fs::read_to_string(registry.dir.join("registry.log")).unwrap_or_default();
                return Err(format!(
                    "docker-registry exited ({status}){}",
                    run::tail(&log)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "docker-registry did not answer on 127.0.0.1:{port} in 15 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's CPU time so far (user + system, from
    /// `/proc/PID/stat`), where readable.
    fn cpu(&self) -> Option<Duration> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name (which may hold spaces): state is
        // the first, utime and stime the 12th and 13th.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf only reads a configuration value.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        (hz > 0).then(|| Duration::from_secs_f64(ticks as f64 / hz as f64))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Our own child, by its handle; then its storage.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Where the registry keeps its storage: on `/dev/shm` (tmpfs) unless
/// `SLI_BENCH_REGISTRY_STORAGE=disk`. distribution's filesystem driver
/// fsyncs every file it writes (about 1,500 times in a cold push of 101
/// blobs), and on this VM's disk each fsync makes the registry, and so the
/// client, wait: a cost of the registry's machine that a client pushing
/// to a registry elsewhere never pays, which would blur the comparison of
/// the two clients. Both contenders push to the same kind of registry.
fn registry_dir(scratch: &Path) -> PathBuf {
    if registry_on_tmpfs() {
        Path::new(SHM).join(format!("sli-bench-registry-{}", std::process::id()))
    } else {
        scratch.join("registry")
    }
}

const SHM: &str = "/dev/shm";

/// Whether [`registry_dir`] is on tmpfs: unless asked for the disk, or
/// there is no `/dev/shm`.
fn registry_on_tmpfs() -> bool {
    let disk = std::env::var("SLI_BENCH_REGISTRY_STORAGE").is_ok_and(|v| v == "disk");
    !disk && Path::new(SHM).is_dir()
}

/// `GET /v2/` answers 200.
fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let request =
        format!("GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

fn bench() -> Result<(), String> {
    let opts = Options::from_env()?;
    let registry_program = std::env::var_os("SLI_BENCH_REGISTRY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/docker-registry"));
    if !registry_program.exists() {
        println!(
            "bench push: SKIPPED ({} not found; set SLI_BENCH_REGISTRY)",
            registry_program.display()
        );
        return Ok(());
    }
    let has_push = run::help_has(&opts.exe, "--push");
    let has_skopeo = run::answers("skopeo", &["--version"]);
    println!(
        "stream-layered-image push bench: best of {} runs{}, registry {}",
        opts.runs,
        if opts.smoke {
            ", SMOKE (tiny image)"
        } else if opts.quick {
            ", QUICK stores"
        } else {
            ""
        },
        registry_program.display()
    );
    println!(
        "  registry storage: {}",
        if registry_on_tmpfs() {
            "tmpfs (/dev/shm; SLI_BENCH_REGISTRY_STORAGE=disk for the disk)"
        } else {
            "disk (the bench's scratch directory)"
        }
    );
    if !has_push {
        println!("  --push: SKIPPED (--load/--push not available in this executable)");
    }
    if !has_skopeo {
        println!("  skopeo anchor: SKIPPED (skopeo not found)");
    }
    let mut results = Vec::new();
    for &kind in &opts.stores {
        let root = opts.dir.join("incremental");
        let images = incremental::prepare(kind, opts.quick, &root, opts.keep_layers())
            .map_err(|e| format!("preparing {kind} in {}: {e}", root.display()))?;
        let r = bench_store(&images, &opts, &registry_program, has_push, has_skopeo)?;
        results.push((images, r));
    }
    println!(
        "\n{:<12} {:<46} {:>8} {:>9} {:>13} {:>7} {:>7}",
        "store", "contender", "wall s", "peak MiB", "store MB read", "CPU s", "reg CPU"
    );
    println!(
        "(CPU s: the client's, user + system, of the best run; reg CPU: the \
         registry's during it, on the same cores)"
    );
    for (images, r) in &results {
        print_store(images, r, has_push);
    }
    if cfg!(debug_assertions) {
        println!(
            "\nunoptimised (debug) build: times are not meaningful; use `cargo bench --bench push`"
        );
    }
    Ok(())
}

#[derive(Default)]
struct Results {
    cold: Best,
    unchanged: Best,
    leaf: Best,
    one_layer: Best,
    skopeo_cold: Best,
    skopeo_unchanged: Best,
}

fn bench_store(
    images: &Images,
    opts: &Options,
    program: &Path,
    has_push: bool,
    has_skopeo: bool,
) -> Result<Results, String> {
    let store = &images.store;
    let scratch = store.conf.with_file_name(format!("push-{}", store.name));
    run::empty_dir(&scratch)?;
    let kind = store.name;
    eprintln!(
        "bench push: {kind}: {} store layers + app, {:.0} MB of store files",
        images.layers - 1,
        store.bytes as f64 / 1e6
    );
    let push = |conf: &Path, reference: String, cache: &Path| {
        let mut c = Command::new(&opts.exe);
        c.arg(conf)
            .args(["-v", "--push", &reference, "--cache"])
            .arg(cache);
        c
    };
    // One timed command against `registry`, whose CPU time is read before
    // and after: on this machine it shares the cores with the client.
    let step = |what: &str, registry: &Registry, cmd: Command, best: &mut Best| {
        let before = registry.cpu();
        let t = run::timed(what, cmd, &scratch)?;
        let server = before.zip(registry.cpu()).map(|(b, a)| a.saturating_sub(b));
        eprintln!(
            "bench push: {kind}: {what}: {:.3} s, CPU {:.2} s, registry CPU {}",
            t.wall.as_secs_f64(),
            t.cpu.as_secs_f64(),
            server.map_or_else(|| "-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
        );
        best.add_with_server(&t, server);
        Ok::<(), String>(())
    };
    let mut r = Results::default();
    for _ in 0..opts.runs {
        if has_push {
            let registry = Registry::start(program, registry_dir(&scratch))?;
            let host = registry.host();
            let cache = scratch.join("cache");
            run::empty_dir(&cache)?;
            let a = format!("{host}/sli-bench/{kind}:a");
            let what = "ours, cold";
            step(
                what,
                &registry,
                push(&images.a, a.clone(), &cache),
                &mut r.cold,
            )?;
            let what = "ours, unchanged";
            step(
                what,
                &registry,
                push(&images.a, a, &cache),
                &mut r.unchanged,
            )?;
            let what = "ours, one-leaf change";
            let b = format!("{host}/sli-bench/{kind}:b");
            step(what, &registry, push(&images.b, b, &cache), &mut r.leaf)?;
            let alone = scratch.join("cache-one");
            run::empty_dir(&alone)?;
            let what = "ours, that layer alone";
            let one = format!("{host}/sli-bench/{kind}-one:latest");
            step(
                what,
                &registry,
                push(&images.one, one, &alone),
                &mut r.one_layer,
            )?;
        }
        if has_skopeo {
            let registry = Registry::start(program, registry_dir(&scratch))?;
            let dest = format!("docker://{}/sli-bench/{kind}:a", registry.host());
            let cache = scratch.join("cache-skopeo");
            run::empty_dir(&cache)?;
            // skopeo 1.9 reads an uncompressed `docker-archive:/dev/stdin`
            // by reopening the path for each member, which a pipe cannot
            // serve ("invalid tar header"); it only spools compressed
            // streams to a temporary file. So the anchor spools it itself:
            // the stream into a file, then skopeo from that file.
            let spool = scratch.join("anchor.tar");
            let anchor = || {
                let mut c = Command::new("sh");
                c.args([
                    "-c",
                    "\"$1\" \"$2\" --cache \"$3\" >\"$4\" && \
                     skopeo copy --quiet --dest-tls-verify=false \
                       --dest-compress-format gzip --dest-compress-level 6 \
                       \"docker-archive:$4\" \"$5\"; s=$?; rm -f \"$4\"; exit $s",
                    "anchor",
                ])
                .arg(&opts.exe)
                .arg(&images.a)
                .arg(&cache)
                .arg(&spool)
                .arg(&dest);
                c
            };
            let what = "skopeo anchor, cold";
            step(what, &registry, anchor(), &mut r.skopeo_cold)?;
            let what = "skopeo anchor, unchanged";
            step(what, &registry, anchor(), &mut r.skopeo_unchanged)?;
        }
    }
    Ok(r)
}

fn print_store(images: &Images, r: &Results, has_push: bool) {
    let mut first = true;
    let mut line = |name: &str, b: &Best, skipped: bool| {
        let store = if first { images.store.name } else { "" };
        first = false;
        if skipped {
            println!("{store:<12} {name:<46} SKIPPED (--load/--push not available)");
            return;
        }
        if b.best.is_none() {
            println!("{store:<12} {name:<46} SKIPPED");
            return;
        }
        println!(
            "{store:<12} {name:<46} {:>8} {:>9.1} {:>13} {:>7.2} {:>7}",
            secs_cell(b.secs()),
            mib(b.max_rss_kib),
            b.store_bytes
                .map_or_else(|| "-".to_owned(), |n| format!("{:.1}", n as f64 / 1e6)),
            b.cpu.as_secs_f64(),
            b.server_cpu
                .map_or_else(|| "-".to_owned(), |d| format!("{:.2}", d.as_secs_f64()))
        );
    };
    line(
        "ours, cold (empty registry, empty cache)",
        &r.cold,
        !has_push,
    );
    line("ours, unchanged (second push)", &r.unchanged, !has_push);
    line("ours, one-leaf change (app 1.0 -> 1.1)", &r.leaf, !has_push);
    line(
        "ours, that layer alone (new repo, empty cache)",
        &r.one_layer,
        !has_push,
    );
    line(
        "ours >T; skopeo copy docker-archive:T, cold",
        &r.skopeo_cold,
        false,
    );
    line(
        "ours >T; skopeo copy docker-archive:T, unch.",
        &r.skopeo_unchanged,
        false,
    );
    if !has_push {
        println!("{:<12} targets: SKIPPED (--load/--push not available)", "");
        return;
    }
    let mut verdicts = Vec::new();
    let verdict = |v: &mut Vec<String>, text: String, met: bool| {
        v.push(format!("{text} {}", if met { "met" } else { "MISSED" }));
    };
    if let Some(s) = r.unchanged.secs() {
        verdict(
            &mut verdicts,
            format!("unchanged push {s:.3} s (≤ {MAX_UNCHANGED_S})"),
            s <= MAX_UNCHANGED_S,
        );
        match r.unchanged.store_bytes {
            Some(n) => verdict(
                &mut verdicts,
                format!("unchanged push read {n} store bytes (0)"),
                n == 0,
            ),
            None => verdicts.push("store bytes read not reported (-v)".to_owned()),
        }
    }
    if let (Some(ours), Some(anchor)) = (r.cold.secs(), r.skopeo_cold.secs()) {
        let speedup = anchor / ours.max(1e-9);
        verdict(
            &mut verdicts,
            format!("cold push {speedup:.2}× faster than skopeo (≥ {MIN_COLD_SPEEDUP})"),
            speedup >= MIN_COLD_SPEEDUP,
        );
        // Not a target: what the client machine pays, which is all of it
        // when the registry is elsewhere.
        verdicts.push(format!(
            "cold push client CPU {:.2} s vs the anchor's {:.2} s ({:.2}×)",
            r.cold.cpu.as_secs_f64(),
            r.skopeo_cold.cpu.as_secs_f64(),
            r.skopeo_cold.cpu.as_secs_f64() / r.cold.cpu.as_secs_f64().max(1e-9)
        ));
    }
    if let (Some(leaf), Some(one)) = (r.leaf.secs(), r.one_layer.secs()) {
        let ratio = leaf / one.max(1e-9);
        verdict(
            &mut verdicts,
            format!("one-leaf / that layer alone {ratio:.2} (≤ {MAX_ONE_LEAF_RATIO})"),
            ratio <= MAX_ONE_LEAF_RATIO,
        );
    }
    println!("{:<12} targets: {}", "", verdicts.join("; "));
    // Our own summary lines (blobs present / mounted / uploaded), as printed.
    for (name, b) in [
        ("cold", &r.cold),
        ("unchanged", &r.unchanged),
        ("one-leaf", &r.leaf),
    ] {
        if let Some(summary) = b.stderr.lines().rev().find(|l| l.contains("upload")) {
            println!("{:<12}   {name}: {}", "", summary.trim());
        }
    }
}
