//! `cargo bench --bench load`: loading into Docker (issue 9), in one run,
//! on the benchmark store(s) with one small app store path as the last
//! store layer (see `common/incremental.rs`):
//!
//! - `ours conf | docker load`, fresh (the daemon has none of the layers)
//!   and reload (it has them all); with `SLI_BENCH_REFERENCE`, the same for
//!   nixpkgs' streamer;
//! - `ours conf --load`: fresh, unchanged reload, and a one-leaf change
//!   (image B: the app's new version, with image A loaded);
//! - the baseline of the one-leaf change: `docker load -i` of an archive
//!   (written beforehand) holding that changed layer alone.
//!
//! Targets: unchanged reload ≤ 0.3 s; one-leaf change ≤ 1.5 × the one-layer
//! baseline; fresh `--load` no slower than `| docker load`.
//!
//! Every image it loads is tagged `sli-bench-load-<store>-<pid>-…` and
//! removed (by that tag) before each fresh run and at the end; nothing else
//! in the daemon is touched. "Fresh" assumes no other image holds these
//! synthetic layers. Our runs use a digest cache of their own under the
//! bench directory, warmed by the first `| docker load`.
//!
//! Without a Docker daemon (`docker info` fails) it prints SKIPPED and
//! exits 0; without `--load` in `--help` it times only the `| docker load`
//! rows and says SKIPPED for the rest. Run without `--bench` (as `cargo
//! test --all-targets` does) it is a smoke test: one run on a tiny image
//! (two store layers and the app). Environment: `SLI_BENCH_QUICK=1`,
//! `SLI_BENCH_RUNS=N`, `SLI_EXE`, `SLI_BENCH_DIR`, `SLI_BENCH_REFERENCE`,
//! `SLI_BENCH_STORES=many-paths,big-files,small-files` (default many-paths).

mod common;

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use common::incremental::{self, Images};
use common::run::{self, mib, secs_cell, Best, Options, Timed};

const MAX_RELOAD_S: f64 = 0.3;
const MAX_ONE_LEAF_RATIO: f64 = 1.5;
const MAX_FRESH_RATIO: f64 = 1.0;

fn main() -> ExitCode {
    match bench() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench load: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The tags of one store's images, and removing them.
struct Tags {
    a: String,
    b: String,
    one: String,
    nixpkgs: String,
}

impl Tags {
    fn new(kind: &str) -> Tags {
        let base = format!("sli-bench-load-{kind}-{}", std::process::id());
        Tags {
            a: format!("{base}:a"),
            b: format!("{base}:b"),
            one: format!("{base}-one:latest"),
            nixpkgs: format!("{base}-nixpkgs:a"),
        }
    }

    fn all(&self) -> [&str; 4] {
        [&self.a, &self.b, &self.one, &self.nixpkgs]
    }
}

/// `docker rmi` of our own tags (those present); the layers go with the
/// last image that holds them.
fn remove(tags: &[&str]) -> Result<(), String> {
    for tag in tags {
        if !run::answers("docker", &["image", "inspect", tag]) {
            continue;
        }
        let out = Command::new("docker")
            .args(["rmi", tag])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("docker rmi {tag}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "docker rmi {tag}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// Removes the images of earlier runs that were killed before their
/// clean-up (tags `sli-bench-load-…-PID…` whose PID no longer runs): they
/// would hold the layers a fresh load must send.
fn remove_stale() -> Result<(), String> {
    let out = Command::new("docker")
        .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("docker images: {e}"))?;
    let listing = String::from_utf8_lossy(&out.stdout);
    let stale: Vec<&str> = listing
        .lines()
        .filter(|tag| {
            let Some(rest) = tag.strip_prefix("sli-bench-load-") else {
                return false;
            };
            let repo = rest.split(':').next().unwrap_or_default();
            let pid = repo
                .split('-')
                .rev()
                .find_map(|part| part.parse::<u32>().ok());
            pid.is_some_and(|pid| {
                pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
            })
        })
        .collect();
    if !stale.is_empty() {
        eprintln!(
            "bench load: removing images of killed runs: {}",
            stale.join(" ")
        );
    }
    remove(&stale)
}

fn image_id(tag: &str) -> Result<String, String> {
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", tag])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("docker image inspect {tag}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker image inspect {tag}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn bench() -> Result<(), String> {
    let opts = Options::from_env()?;
    if !run::answers("docker", &["info", "--format", "{{.ServerVersion}}"]) {
        println!("bench load: SKIPPED (no Docker daemon: `docker info` failed)");
        return Ok(());
    }
    let has_load = run::help_has(&opts.exe, "--load");
    println!(
        "stream-layered-image load bench: best of {} runs{}",
        opts.runs,
        if opts.smoke {
            ", SMOKE (tiny image)"
        } else if opts.quick {
            ", QUICK stores"
        } else {
            ""
        }
    );
    if !has_load {
        println!("  --load: SKIPPED (--load/--push not available in this executable)");
    }
    remove_stale()?;
    let mut results = Vec::new();
    for &kind in &opts.stores {
        let root = opts.dir.join("incremental");
        let images = incremental::prepare(kind, opts.quick, &root, opts.keep_layers())
            .map_err(|e| format!("preparing {kind} in {}: {e}", root.display()))?;
        let tags = Tags::new(kind);
        let result = bench_store(&images, &tags, &opts, has_load);
        // Whatever happened, leave no image of ours behind.
        let cleaned = remove(&tags.all());
        results.push((images, result?));
        cleaned?;
    }
    println!(
        "\n{:<12} {:<44} {:>8} {:>9} {:>13}",
        "store", "contender", "wall s", "peak MiB", "store MB read"
    );
    for (images, r) in &results {
        print_store(images, r, has_load);
    }
    if cfg!(debug_assertions) {
        println!(
            "\nunoptimised (debug) build: times are not meaningful; use `cargo bench --bench load`"
        );
    }
    Ok(())
}

#[derive(Default)]
struct Results {
    pipe_fresh: Best,
    pipe_reload: Best,
    nixpkgs_fresh: Best,
    nixpkgs_reload: Best,
    load_fresh: Best,
    load_reload: Best,
    load_leaf: Best,
    one_layer: Best,
    one_layer_mb: f64,
    image_a: String,
    same_id: Option<bool>,
}

fn bench_store(
    images: &Images,
    tags: &Tags,
    opts: &Options,
    has_load: bool,
) -> Result<Results, String> {
    let store = &images.store;
    let scratch = store.conf.with_file_name(format!("load-{}", store.name));
    run::empty_dir(&scratch)?;
    let cache = scratch.join("cache");
    let ours = |conf: &Path, tag: &str| {
        let mut c = Command::new(&opts.exe);
        c.arg(conf).args(["-t", tag, "--cache"]).arg(&cache);
        c
    };
    let docker_load = || {
        let mut c = Command::new("docker");
        c.arg("load");
        c
    };
    let with_load = |conf: &Path, tag: &str| {
        let mut c = ours(conf, tag);
        c.args(["-v", "--load"]);
        c
    };
    eprintln!(
        "bench load: {}: {} store layers + app, {:.0} MB of store files",
        store.name,
        images.layers - 1,
        store.bytes as f64 / 1e6
    );
    remove(&tags.all())?;
    // The one-layer baseline's archive, written once.
    let one_tar = scratch.join("one.tar");
    let mut c = ours(&images.one, &tags.one);
    c.arg("-o").arg(&one_tar);
    run::timed("write one-layer archive", c, &scratch)?;
    let mut r = Results {
        one_layer_mb: std::fs::metadata(&one_tar).map_or(0.0, |m| m.len() as f64 / 1e6),
        ..Results::default()
    };
    let step = |what: &str, t: Result<Timed, String>, best: &mut Best| -> Result<(), String> {
        let t = t?;
        eprintln!(
            "bench load: {}: {what}: {:.3} s",
            store.name,
            t.wall.as_secs_f64()
        );
        best.add(&t);
        Ok(())
    };
    for _ in 0..opts.runs {
        remove(&[&tags.a, &tags.b])?;
        let what = "ours | docker load, fresh";
        let t = run::timed_pipe(what, ours(&images.a, &tags.a), docker_load(), &scratch);
        step(what, t, &mut r.pipe_fresh)?;
        r.image_a = image_id(&tags.a)?;
        let what = "ours | docker load, reload";
        let t = run::timed_pipe(what, ours(&images.a, &tags.a), docker_load(), &scratch);
        step(what, t, &mut r.pipe_reload)?;
        if let Some(script) = &opts.reference {
            remove(&[&tags.a, &tags.b, &tags.nixpkgs])?;
            let nixpkgs = || {
                let mut c = Command::new("python3");
                c.arg(script)
                    .arg(&images.a)
                    .args(["--repo_tag", &tags.nixpkgs]);
                c
            };
            let what = "nixpkgs | docker load, fresh";
            let t = run::timed_pipe(what, nixpkgs(), docker_load(), &scratch);
            step(what, t, &mut r.nixpkgs_fresh)?;
            let what = "nixpkgs | docker load, reload";
            let t = run::timed_pipe(what, nixpkgs(), docker_load(), &scratch);
            step(what, t, &mut r.nixpkgs_reload)?;
            remove(&[&tags.nixpkgs])?;
        }
        if has_load {
            remove(&[&tags.a, &tags.b])?;
            let what = "--load, fresh";
            let t = run::timed(what, with_load(&images.a, &tags.a), &scratch);
            step(what, t, &mut r.load_fresh)?;
            let id = image_id(&tags.a)?;
            r.same_id = Some(r.same_id.unwrap_or(true) && id == r.image_a);
            let what = "--load, unchanged reload";
            let t = run::timed(what, with_load(&images.a, &tags.a), &scratch);
            step(what, t, &mut r.load_reload)?;
            let what = "--load, one-leaf change";
            let t = run::timed(what, with_load(&images.b, &tags.b), &scratch);
            step(what, t, &mut r.load_leaf)?;
        }
        remove(&[&tags.one])?;
        let mut c = docker_load();
        c.arg("-i").arg(&one_tar);
        let what = "docker load -i (the changed layer alone)";
        step(what, run::timed(what, c, &scratch), &mut r.one_layer)?;
        remove(&[&tags.one])?;
    }
    Ok(r)
}

fn print_store(images: &Images, r: &Results, has_load: bool) {
    let mut first = true;
    let mut line = |name: &str, b: &Best, skipped: bool| {
        let store = if first { images.store.name } else { "" };
        first = false;
        if skipped {
            println!("{store:<12} {name:<44} SKIPPED (--load/--push not available)");
            return;
        }
        println!(
            "{store:<12} {name:<44} {:>8} {:>9.1} {:>13}",
            secs_cell(b.secs()),
            mib(b.max_rss_kib),
            b.store_bytes
                .map_or_else(|| "-".to_owned(), |n| format!("{:.1}", n as f64 / 1e6))
        );
    };
    line("ours | docker load, fresh", &r.pipe_fresh, false);
    line("ours | docker load, reload", &r.pipe_reload, false);
    if r.nixpkgs_fresh.best.is_some() {
        line("nixpkgs | docker load, fresh", &r.nixpkgs_fresh, false);
        line("nixpkgs | docker load, reload", &r.nixpkgs_reload, false);
    }
    line("--load, fresh", &r.load_fresh, !has_load);
    line("--load, unchanged reload", &r.load_reload, !has_load);
    line(
        "--load, one-leaf change (app 1.0 -> 1.1)",
        &r.load_leaf,
        !has_load,
    );
    line(
        &format!(
            "docker load -i, that layer alone ({:.1} MB)",
            r.one_layer_mb
        ),
        &r.one_layer,
        false,
    );
    if !has_load {
        println!("{:<12} targets: SKIPPED (--load/--push not available)", "");
        return;
    }
    let mut verdicts = Vec::new();
    let verdict = |v: &mut Vec<String>, text: String, met: bool| {
        v.push(format!("{text} {}", if met { "met" } else { "MISSED" }));
    };
    if let Some(s) = r.load_reload.secs() {
        verdict(
            &mut verdicts,
            format!("unchanged reload {s:.3} s (≤ {MAX_RELOAD_S})"),
            s <= MAX_RELOAD_S,
        );
        if let Some(n) = r.nixpkgs_reload.secs() {
            verdicts.push(format!("(nixpkgs reload / ours {:.1}×)", n / s.max(1e-9)));
        }
    }
    if let (Some(leaf), Some(one)) = (r.load_leaf.secs(), r.one_layer.secs()) {
        let ratio = leaf / one.max(1e-9);
        verdict(
            &mut verdicts,
            format!("one-leaf / one layer alone {ratio:.2} (≤ {MAX_ONE_LEAF_RATIO})"),
            ratio <= MAX_ONE_LEAF_RATIO,
        );
    }
    if let (Some(fresh), Some(pipe)) = (r.load_fresh.secs(), r.pipe_fresh.secs()) {
        let ratio = fresh / pipe.max(1e-9);
        verdict(
            &mut verdicts,
            format!("fresh --load / | docker load {ratio:.2} (≤ {MAX_FRESH_RATIO})"),
            ratio <= MAX_FRESH_RATIO,
        );
    }
    if let Some(same) = r.same_id {
        verdicts.push(format!(
            "image ID {} `| docker load`'s",
            if same { "same as" } else { "DIFFERS from" }
        ));
    }
    println!("{:<12} targets: {}", "", verdicts.join("; "));
    // Our own summary lines (layers sent), as printed.
    for (name, b) in [
        ("fresh", &r.load_fresh),
        ("unchanged", &r.load_reload),
        ("one-leaf", &r.load_leaf),
    ] {
        let summary = b.stderr.lines().rev().find(|l| {
            l.starts_with("stream-layered-image: ") && l.contains(" layer") && l.contains(" in ")
        });
        if let Some(summary) = summary {
            println!("{:<12}   {name}: {}", "", summary.trim());
        }
    }
}
