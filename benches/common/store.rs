//! Synthetic Nix stores for the bench: deterministic names and bytes,
//! generated once and cached under a stamp.
//!
//! Three shapes, each a stress the issue names: many small files, a few
//! files of hundreds of MB, and hundreds of store paths layered the way
//! nixpkgs' popularity layering leaves them for `maxLayers = 100` (98
//! single-path layers, one layer holding the rest, the customisation layer).
//! Each store comes with a conf.json in nixpkgs' `store_layers` form.
//!
//! File contents are incompressible pseudo-random bytes by default (the
//! worst case for deflate, and what skopeo-like tools skip through);
//! `SLI_BENCH_CONTENT=compressible` makes them compress about 3:1 at
//! gzip -6, like binaries and libraries, so compressors really work. Each
//! content kind is cached in its own directory.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Bump when the generator's output changes, so stale caches are rebuilt.
const GENERATOR_VERSION: u32 = 1;

/// One entry inside a store path.
#[derive(Debug)]
enum Entry {
    File { rel: String, size: u64, exec: bool },
    Symlink { rel: String, target: String },
}

/// One store path: `<hash>-<name>` and what it holds.
#[derive(Debug)]
struct StorePath {
    name: String,
    entries: Vec<Entry>,
}

/// A whole synthetic store: its paths and how they are layered.
#[derive(Debug)]
struct Spec {
    paths: Vec<StorePath>,
    /// Indices into `paths`, one list per layer.
    layers: Vec<Vec<usize>>,
}

/// A store ready on disk.
pub struct Store {
    pub name: &'static str,
    pub store_dir: PathBuf,
    pub conf: PathBuf,
    pub files: u64,
    pub bytes: u64,
    pub paths: usize,
    /// Store layers in the conf; for the graph form, the layering's budget.
    pub layers: usize,
    /// The conf is in the graph (`layering`) form.
    pub graph: bool,
}

/// The stores the bench runs, in order.
pub const KINDS: [&str; 4] = ["small-files", "big-files", "many-paths", "graph-paths"];

/// `maxLayers` of the graph-form conf, nixpkgs' default.
const MAX_LAYERS: usize = 100;

/// Builds (or reuses from `cache`) the store `kind`.
pub fn prepare(kind: &'static str, quick: bool, cache: &Path) -> io::Result<Store> {
    let spec = match kind {
        "small-files" => small_files(quick),
        "big-files" => big_files(quick),
        "many-paths" | "graph-paths" => many_paths(quick),
        _ => return Err(io::Error::other(format!("unknown store kind {kind}"))),
    };
    let graph = kind == "graph-paths";
    // The graph case streams the many-paths store: share it on disk.
    let on_disk = if graph { "many-paths" } else { kind };
    let suffix = match (quick, compressible()) {
        (false, false) => "",
        (true, false) => "-quick",
        (false, true) => "-compressible",
        (true, true) => "-quick-compressible",
    };
    let root = cache.join(format!("{on_disk}{suffix}"));
    let store_dir = root.join("store");
    let names: Vec<PathBuf> = spec
        .paths
        .iter()
        .map(|p| store_dir.join(format!("{}-{}", nix_hash(&p.name), p.name)))
        .collect();
    generate(&spec, &names, &root)?;
    let layering = if graph {
        let closure = root.join("closure-info");
        write_registration(&spec, &names, &closure)?;
        Layering::Graph(closure)
    } else {
        Layering::Store
    };
    let conf = root.join(format!("conf-{kind}.json"));
    let custom = root.join("customisation");
    write_conf(kind, &spec, &names, &store_dir, &custom, &layering, &conf)?;
    let (files, bytes) = totals(&spec);
    Ok(Store {
        name: kind,
        store_dir,
        conf,
        files,
        bytes,
        paths: spec.paths.len(),
        layers: if graph {
            MAX_LAYERS - 1
        } else {
            spec.layers.len()
        },
        graph,
    })
}

/// Writes the store paths and the customisation layer under `root`, unless
/// its stamp says they are there already.
fn generate(spec: &Spec, names: &[PathBuf], root: &Path) -> io::Result<()> {
    let stamp = stamp_of(spec);
    let stamp_file = root.join("stamp");
    if fs::read_to_string(&stamp_file).ok().as_deref() == Some(stamp.as_str()) {
        return Ok(());
    }
    eprintln!(
        "bench: generating store {} (cached for later runs)",
        root.display()
    );
    if root.exists() {
        fs::remove_dir_all(root)?;
    }
    for (path, dir) in spec.paths.iter().zip(names) {
        write_store_path(path, dir)?;
    }
    write_customisation(&root.join("customisation"))?;
    // Written last: an interrupted generation is redone next time.
    fs::write(&stamp_file, &stamp)
}

/// Tens of thousands of small files (0 B to 64 KiB, most under 8 KiB, as in
/// real store paths), 100 per directory: one layer per store path but the
/// last, which holds a quarter of the paths (as popularity layering's last
/// layer gathers the rest).
fn small_files(quick: bool) -> Spec {
    let (npaths, per_path) = if quick { (4, 1_000) } else { (16, 2_500) };
    let mut rng = Rng::new(0x5a11);
    let paths: Vec<StorePath> = (0..npaths)
        .map(|p| StorePath {
            name: format!("small-{p:02}"),
            entries: (0..per_path)
                .map(|i| Entry::File {
                    rel: format!("share/d{:03}/f{:03}.txt", i / 100, i % 100),
                    size: small_size(&mut rng),
                    exec: false,
                })
                .collect(),
        })
        .collect();
    let singles = npaths - npaths / 4;
    let mut layers: Vec<Vec<usize>> = (0..singles).map(|p| vec![p]).collect();
    layers.push((singles..npaths).collect());
    Spec { paths, layers }
}

fn small_size(rng: &mut Rng) -> u64 {
    match rng.below(100) {
        0..=49 => rng.below(1024),
        50..=89 => 1024 + rng.below(7 * 1024),
        _ => 8 * 1024 + rng.below(56 * 1024),
    }
}

/// A few files of hundreds of MB in two layers, one of them shared with a
/// small store path.
fn big_files(quick: bool) -> Spec {
    const MIB: u64 = 1024 * 1024;
    let scale = if quick { MIB / 10 } else { MIB };
    let file = |rel: &str, mib: u64| Entry::File {
        rel: rel.to_owned(),
        size: mib * scale + 12_345,
        exec: false,
    };
    let paths = vec![
        StorePath {
            name: "blob-a".into(),
            entries: vec![file("data/a.bin", 400)],
        },
        StorePath {
            name: "blob-b".into(),
            entries: vec![file("data/b.bin", 300), file("data/c.bin", 200)],
        },
        StorePath {
            name: "blob-meta".into(),
            entries: vec![
                Entry::File {
                    rel: "share/README".into(),
                    size: 1000,
                    exec: false,
                },
                Entry::Symlink {
                    rel: "share/README.txt".into(),
                    target: "README".into(),
                },
            ],
        },
    ];
    Spec {
        paths,
        layers: vec![vec![0], vec![1, 2]],
    }
}

/// Hundreds of package-like store paths (a binary, a shared library with
/// its symlink, headers, docs), 98 single-path layers and one for the rest.
fn many_paths(quick: bool) -> Spec {
    let (npaths, singles) = if quick { (120, 19) } else { (600, 98) };
    let mut rng = Rng::new(0x9a75);
    let paths: Vec<StorePath> = (0..npaths).map(|i| package(i, &mut rng)).collect();
    let mut layers: Vec<Vec<usize>> = (0..singles).map(|i| vec![i]).collect();
    layers.push((singles..npaths).collect());
    Spec { paths, layers }
}

fn package(i: usize, rng: &mut Rng) -> StorePath {
    let file = |rel: String, size: u64, exec: bool| Entry::File { rel, size, exec };
    let mut entries = vec![
        file(
            format!("bin/prog{i}"),
            8 * 1024 + rng.below(120 * 1024),
            true,
        ),
        file(
            format!("lib/libp{i}.so.1"),
            16 * 1024 + rng.below(496 * 1024),
            true,
        ),
        Entry::Symlink {
            rel: format!("lib/libp{i}.so"),
            target: format!("libp{i}.so.1"),
        },
        file("share/doc/README".into(), 1024 + rng.below(3 * 1024), false),
        file(
            format!("share/man/man1/prog{i}.1"),
            2048 + rng.below(6 * 1024),
            false,
        ),
    ];
    for h in 0..rng.below(12) {
        entries.push(file(
            format!("include/p{i}/h{h}.h"),
            512 + rng.below(3584),
            false,
        ));
    }
    StorePath {
        name: format!("pkg{i:04}-1.{}", i % 7),
        entries,
    }
}

/// Files and bytes the floor reads (symlinks excluded, as `find -type f`).
fn totals(spec: &Spec) -> (u64, u64) {
    let sizes = spec
        .paths
        .iter()
        .flat_map(|p| &p.entries)
        .filter_map(|e| match e {
            Entry::File { size, .. } => Some(*size),
            Entry::Symlink { .. } => None,
        });
    sizes.fold((0, 0), |(n, b), s| (n + 1, b + s))
}

/// The fingerprint of what is on disk: regenerate whenever any name or size
/// changes (layers only change the conf, which is rewritten every run).
fn stamp_of(spec: &Spec) -> String {
    let digest = Sha256::digest(format!(
        "v{GENERATOR_VERSION} compressible={} {:?}",
        compressible(),
        spec.paths
    ));
    hex(&digest)
}

fn write_store_path(path: &StorePath, dir: &Path) -> io::Result<()> {
    let mut buf = Vec::new();
    for entry in &path.entries {
        match entry {
            Entry::File { rel, size, exec } => {
                let file = dir.join(rel);
                make_parent(&file)?;
                let mut rng = Rng::new(fnv(format!("{}/{rel}", path.name).as_bytes()));
                write_file(&file, *size, *exec, &mut rng, &mut buf)?;
            }
            Entry::Symlink { rel, target } => {
                let link = dir.join(rel);
                make_parent(&link)?;
                std::os::unix::fs::symlink(target, &link)?;
            }
        }
    }
    Ok(())
}

fn make_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent),
        None => Ok(()),
    }
}

/// Whether file contents are compressible (`SLI_BENCH_CONTENT=compressible`).
pub fn compressible() -> bool {
    std::env::var("SLI_BENCH_CONTENT").is_ok_and(|v| v == "compressible")
}

/// Writes `size` pseudo-random bytes (incompressible, or compressible with
/// [`compressible`]) in 1 MiB chunks.
fn write_file(
    path: &Path,
    size: u64,
    exec: bool,
    rng: &mut Rng,
    buf: &mut Vec<u8>,
) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = io::BufWriter::new(fs::File::create(path)?);
    let mut left = size;
    while left > 0 {
        let n = left.min(1 << 20) as usize;
        if compressible() {
            rng.fill_compressible(buf, n);
        } else {
            rng.fill(buf, n);
        }
        out.write_all(buf)?;
        left -= n as u64;
    }
    out.flush()?;
    let mode = if exec { 0o555 } else { 0o444 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// An empty customisation layer in nixpkgs' form: `layer.tar` (an empty
/// archive padded to tar's 10 KiB record) and `checksum` (its sha256).
fn write_customisation(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let tar = vec![0u8; 10_240];
    fs::write(dir.join("layer.tar"), &tar)?;
    fs::write(dir.join("checksum"), hex(&Sha256::digest(&tar)))
}

/// How a conf says which store paths go into which layer.
enum Layering {
    /// nixpkgs' `store_layers`, from the spec.
    Store,
    /// Our `layering` form: the closureInfo directory holding `registration`.
    Graph(PathBuf),
}

fn write_conf(
    kind: &str,
    spec: &Spec,
    names: &[PathBuf],
    store_dir: &Path,
    customisation: &Path,
    layering: &Layering,
    conf: &Path,
) -> io::Result<()> {
    let mut value = serde_json::json!({
        "store_dir": store_dir.display().to_string(),
        "from_image": null,
        "customisation_layer": customisation.display().to_string(),
        "repo_tag": format!("sli-bench-{kind}:latest"),
        "created": "1970-01-01T00:00:01Z",
        "mtime": "1970-01-01T00:00:01Z",
        "uid": 0,
        "gid": 0,
        "uname": "root",
        "gname": "root",
        "architecture": "amd64",
        "config": { "Cmd": ["/bin/sh"] },
    });
    match layering {
        Layering::Store => {
            let store_layers: Vec<Vec<String>> = spec
                .layers
                .iter()
                .map(|layer| {
                    layer
                        .iter()
                        .map(|&i| names[i].display().to_string())
                        .collect()
                })
                .collect();
            value["store_layers"] = serde_json::json!(store_layers);
        }
        Layering::Graph(closure) => {
            value["layering"] = serde_json::json!({
                "graph": closure.display().to_string(),
                "max_layers": MAX_LAYERS,
            });
        }
    }
    let text = serde_json::to_string_pretty(&value).map_err(io::Error::other)?;
    fs::write(conf, text)
}

/// closureInfo's `registration` for the store: per path, the path, a
/// narHash, the narSize, an empty deriver line, the reference count and
/// the references. The graph is package-like: everything refers to the
/// first path (a libc), each path to two earlier ones and to itself.
fn write_registration(spec: &Spec, names: &[PathBuf], dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let nar_hash = format!("sha256:{}", "0".repeat(52));
    let mut text = String::new();
    for (i, (path, name)) in spec.paths.iter().zip(names).enumerate() {
        let nar_size: u64 = path
            .entries
            .iter()
            .map(|e| match e {
                Entry::File { size, .. } => size + 512,
                Entry::Symlink { .. } => 512,
            })
            .sum();
        let mut refs = std::collections::BTreeSet::from([i]);
        if i > 0 {
            refs.extend([0, (i * 7 + 3) % i, (i * 13 + 5) % i]);
        }
        let _ = write!(
            text,
            "{}\n{nar_hash}\n{nar_size}\n\n{}\n",
            name.display(),
            refs.len()
        );
        for r in refs {
            let _ = writeln!(text, "{}", names[r].display());
        }
    }
    fs::write(dir.join("registration"), text)
}

/// A 32-character Nix-base32 hash part derived from the name.
fn nix_hash(name: &str) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let mut rng = Rng::new(fnv(name.as_bytes()));
    (0..32)
        .map(|_| ALPHABET[rng.below(32) as usize] as char)
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// FNV-1a, to seed per-file generators from their names.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// splitmix64: fast, deterministic, good enough for test data.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn fill(&mut self, buf: &mut Vec<u8>, n: usize) {
        buf.clear();
        while buf.len() < n {
            buf.extend_from_slice(&self.next().to_le_bytes());
        }
        buf.truncate(n);
    }

    /// Like binaries: mostly tokens from a fixed vocabulary of 1024 (2 to
    /// 12 bytes, so deflate finds matches within its window), with random
    /// bytes between them; gzip -6 shrinks it to about a third.
    fn fill_compressible(&mut self, buf: &mut Vec<u8>, n: usize) {
        static VOCABULARY: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
        let vocabulary = VOCABULARY.get_or_init(|| {
            let mut rng = Rng::new(0xc0de);
            (0..1024)
                .map(|_| {
                    let len = 2 + rng.below(11) as usize;
                    let mut t = Vec::new();
                    rng.fill(&mut t, len);
                    t
                })
                .collect()
        });
        buf.clear();
        while buf.len() < n {
            let r = self.next();
            if r & 3 != 0 {
                buf.extend_from_slice(&vocabulary[((r >> 2) % 1024) as usize]);
            } else {
                buf.extend_from_slice(&r.to_le_bytes()[4..7]);
            }
        }
        buf.truncate(n);
    }
}
