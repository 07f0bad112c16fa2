//! No-panic robustness: deterministic mutation tests (stable Rust, seeded
//! xorshift, no fuzzing toolchain) over every parser of user input and the
//! executable itself.
//!
//! The project's promise for bad input is a clear one-line error naming the
//! input, exit status 1, and no partial `-o` file; never a panic (Rust's
//! exit status 101 and a backtrace), where nixpkgs' Python streamer and
//! layering programs would print a traceback. The enumerated bad inputs
//! live in each module's own tests; here thousands of mutated inputs
//! (nixpkgs confs, the reference base image, exported reference graphs,
//! layering pipelines) are derived from the reference vectors. Each case
//! runs under `catch_unwind`; a test lists every panicking or badly
//! reported case (with its seed and number, so it reproduces) and fails.

#[path = "no_panic/support.rs"]
mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use stream_layered_image::base_image::{merge_config, BaseImage};
use stream_layered_image::conf::Conf;
use stream_layered_image::graph::Graph;
use stream_layered_image::image::IsoTime;
use stream_layered_image::layering::{self, Spec};
use stream_layered_image::nix;
use support::{
    damage_bytes, odd_values, random_mutation, read_json, structural_mutations, vectors, Rng,
    Scratch, Tally,
};

// ---------------------------------------------------------------- confs --

/// The nixpkgs confs of the streamer vectors, plus one in our `layering`
/// form (graph-based layering decided at stream time).
fn base_confs() -> Vec<(String, Value)> {
    let mut confs: Vec<(String, Value)> = ["basic", "owner", "from-image"]
        .iter()
        .map(|name| {
            let v = read_json(&vectors().join(format!("{name}.json")));
            (name.to_string(), v["conf"].clone())
        })
        .collect();
    let mut layered = confs[0].1.clone();
    if let Value::Object(m) = &mut layered {
        m.shift_remove("store_layers");
        m.insert(
            "layering".into(),
            json!({
                "graph": "/nonexistent/graph.json",
                "max_layers": 100,
                "exclude_paths": ["/tmp/sli-fixture/store/0a8pbm0xc7l1q0gx7q6p1zbnz6jm7vyd-glibc-2.38-27"],
                "pipeline": [["popularity_contest"], ["limit_layers", 10]],
                "debug": false
            }),
        );
    }
    confs.push(("layering".into(), layered));
    confs
}

/// Parses one conf (from `file` when given, checking that errors name it;
/// else from memory, sparing the disk) and, when it parses, what the
/// executable derives from it next: both times and the layering pipeline.
fn conf_case(tally: &mut Tally, case: &str, bytes: &[u8], file: Option<&Path>) {
    let conf = match file {
        Some(path) => {
            std::fs::write(path, bytes).unwrap();
            let shown = path.display().to_string();
            tally.check(case, Some(&shown), || Conf::load(path))
        }
        None => tally.check(case, None, || Conf::parse(bytes)),
    };
    let Some(conf) = conf else {
        return;
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for text in [&conf.created, &conf.mtime] {
        if let Some(t) = tally.check(case, Some(text), || IsoTime::parse(text, now)) {
            tally.call(case, || (t.isoformat(), t.unix_seconds()));
        }
    }
    if let Some(spec) = &conf.layering {
        tally.check(case, Some("layeringPipeline"), || {
            layering::load_pipeline(spec.pipeline.as_ref())
        });
    }
}

#[test]
fn conf_survives_type_swaps_removals_and_byte_damage() {
    let mut tally = Tally::new("conf");
    let dir = Scratch::new("conf");
    let path = dir.path("conf.json");
    for (name, conf) in base_confs() {
        // The unmutated conf must load: otherwise every case below would
        // only exercise the first error.
        std::fs::write(&path, serde_json::to_vec(&conf).unwrap()).unwrap();
        Conf::load(&path).unwrap_or_else(|e| panic!("{name}: unmutated conf fails: {e:#}"));

        // All single-node mutations of two confs; a sample of the others,
        // which differ only in a few fields.
        let sample = if name == "basic" || name == "layering" {
            1
        } else {
            7
        };
        for (i, (what, m)) in structural_mutations(&conf)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % sample == 0)
        {
            let file = (i % 10 == 0).then_some(path.as_path());
            conf_case(
                &mut tally,
                &format!("conf {name} structural #{i} ({what})"),
                &serde_json::to_vec(&m).unwrap(),
                file,
            );
        }
        let text = serde_json::to_vec_pretty(&conf).unwrap();
        let seed = 0xC0F + name.len() as u64;
        let mut rng = Rng::new(seed);
        for i in 0..200 {
            let (mut what, mut bytes) = damage_bytes(&mut rng, &text);
            if rng.chance(30) {
                let (more, b) = damage_bytes(&mut rng, &bytes);
                what = format!("{what}, {more}");
                bytes = b;
            }
            let file = (i % 10 == 0).then_some(path.as_path());
            conf_case(
                &mut tally,
                &format!("conf {name} seed {seed:#x} bytes #{i} ({what})"),
                &bytes,
                file,
            );
        }
    }
    // Not a conf at all.
    conf_case(&mut tally, "empty conf file", b"", Some(&path));
    for (what, p) in [
        ("conf is a directory", dir.0.clone()),
        ("missing conf", dir.path("missing.json")),
    ] {
        let shown = p.display().to_string();
        tally.check(what, Some(&shown), || Conf::load(&p));
    }
    tally.finish();
}

#[test]
fn times_json_output_env_merge_and_store_paths_survive_odd_input() {
    let mut tally = Tally::new("small parsers");
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut rng = Rng::new(0x715E);
    let times = [
        "1970-01-01T00:00:01Z",
        "2024-02-29T23:59:59.999999+14:00",
        "0001-01-01T00:00:00-23:59",
        "9999-12-31T23:59:59.000001",
        "2000-01-01 00:00:00",
        "now",
    ];
    for i in 0..1500 {
        let base = rng.pick(&times);
        let (what, bytes) = damage_bytes(&mut rng, base.as_bytes());
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let case = format!("IsoTime #{i} ({what} of {base:?}) = {text:?}");
        if let Some(t) = tally.check(&case, None, || IsoTime::parse(&text, now)) {
            tally.call(&case, || (t.isoformat(), t.unix_seconds()));
        }
    }
    for text in [
        "99999999999999999999-01-01T00:00:00",
        "0000-00-00T00:00:00",
        "9999-12-31T23:59:59-99:99",
    ] {
        if let Some(t) = tally.check(text, None, || IsoTime::parse(text, now)) {
            tally.call(text, || (t.isoformat(), t.unix_seconds()));
        }
    }

    // The image config is written by our Python-compatible JSON writer;
    // nixpkgs merges a base image's Env into it.
    let mut odd = odd_values();
    odd.extend([
        json!(5e-324),
        json!(-1e-7),
        json!(1.5e16),
        json!({"Env": "PATH=/x"}),
        json!({"Env": [1, null, "A"]}),
    ]);
    for (i, a) in odd.iter().enumerate() {
        let case = format!("pyjson/merge_config value #{i} {a}");
        tally.call(&case, || stream_layered_image::pyjson::dumps_indent4(a));
        for b in &odd {
            tally.call(&case, || merge_config(a, b));
        }
    }
    for i in 0..2000 {
        let x = f64::from_bits(rng.next());
        tally.call(&format!("float_repr #{i} {x:e}"), || {
            stream_layered_image::pyjson::float_repr(x)
        });
    }

    let stores = [
        "/nix/store",
        "/nix/store/",
        "/",
        "",
        "nix/store",
        "//nix//store",
        "/nix/é",
    ];
    let good = "/nix/store/zzdm2y7j47jfipc1va7hkdbhdp4jpzdy-glibc-2.40-66";
    for i in 0..1500 {
        let (what, bytes) = damage_bytes(&mut rng, good.as_bytes());
        let path = String::from_utf8_lossy(&bytes).into_owned();
        let store = rng.pick(&stores);
        let case = format!("store path #{i} ({what}) {path:?} in {store:?}");
        tally.check(&case, None, || nix::check_store_path(&path, store));
        tally.check(&case, None, || {
            stream_layered_image::layer::checked_store_path(&path, store)
        });
    }
    tally.finish();
}

// ----------------------------------------------------------- base image --

/// A member of the reference base image: where its header and data start.
struct Member {
    name: String,
    header: usize,
    data: usize,
    size: usize,
}

fn members(archive: &[u8]) -> Vec<Member> {
    let mut ar = tar::Archive::new(archive);
    ar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            Member {
                name: e.path().unwrap().to_string_lossy().into_owned(),
                header: e.raw_header_position() as usize,
                data: e.raw_file_position() as usize,
                size: e.size() as usize,
            }
        })
        .collect()
}

/// Recomputes a ustar header's checksum so that a mutated header passes
/// the reader's first check and the mutation reaches the parser behind it.
fn fix_checksum(header: &mut [u8]) {
    header[148..156].fill(b' ');
    let sum: u32 = header[..512].iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

fn tar_member(name: &str, data: &[u8], out: &mut Vec<u8>) {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).unwrap();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// basic.tar rebuilt with every layer member cut to at most 10 KiB (the
/// opening never reads layer contents) and the two JSON members replaced.
fn rebuild(basic: &[u8], ms: &[Member], config: &[u8], manifest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in ms {
        let data: &[u8] = if m.name == "manifest.json" {
            manifest
        } else if m.name.ends_with(".json") {
            config
        } else {
            &basic[m.data..m.data + m.size.min(10240)]
        };
        tar_member(&m.name, data, &mut out);
    }
    out.extend_from_slice(&[0; 1024]);
    out
}

/// Opens one damaged archive and, when that succeeds, streams every layer
/// to the end and merges its config, as the streamer would.
fn open_and_stream(tally: &mut Tally, case: &str, path: &Path) {
    let shown = format!("base image {}", path.display());
    let Some(image) = tally.check(case, Some(&shown), || BaseImage::open(path)) else {
        return;
    };
    tally.check(case, Some(&shown), || {
        image.stream_layers(&mut |_, layer, reader| {
            let n = std::io::copy(reader, &mut std::io::sink())?;
            anyhow::ensure!(n == layer.size, "short read");
            Ok(())
        })
    });
    tally.call(case, || {
        merge_config(&image.config()["config"], &json!({"Env": ["A=1"]}))
    });
}

/// The bytes of manifest.json and of the image config in `archive`.
fn json_members<'a>(archive: &'a [u8], ms: &[Member]) -> (&'a [u8], &'a [u8]) {
    let bytes = |m: &Member| &archive[m.data..m.data + m.size];
    let manifest = ms.iter().find(|m| m.name == "manifest.json").unwrap();
    let config = ms
        .iter()
        .find(|m| m.name.ends_with(".json") && m.name != "manifest.json")
        .unwrap();
    (bytes(manifest), bytes(config))
}

/// Damages `flips` bytes of every member header, one case each: the
/// fields the reader interprets, then anywhere; half the time with a
/// valid checksum so the damage gets past the reader's first check. Then
/// each header turned into a PAX or GNU long-name header.
fn damage_headers(
    tally: &mut Tally,
    rng: &mut Rng,
    path: &Path,
    (label, archive, ms): (&str, &[u8], &[Member]),
    flips: usize,
) {
    let fields = [
        (0, 100),
        (100, 108),
        (124, 136),
        (148, 156),
        (156, 157),
        (157, 257),
        (257, 265),
        (345, 500),
    ];
    let specials = [
        b'0', b'1', b'2', b'5', b'7', b'L', b'x', b'g', b'/', b'.', b' ', 0, 0xff,
    ];
    for (k, m) in ms.iter().enumerate() {
        for i in 0..flips {
            let mut bytes = archive.to_vec();
            let (lo, hi) = if i < flips * 2 / 3 {
                fields[rng.below(fields.len())]
            } else {
                (0, 512)
            };
            let at = m.header + lo + rng.below(hi - lo);
            let value = if rng.chance(50) {
                *rng.pick(&specials)
            } else {
                rng.next() as u8
            };
            bytes[at] = value;
            let fixed = rng.chance(50);
            if fixed {
                fix_checksum(&mut bytes[m.header..m.header + 512]);
            }
            std::fs::write(path, &bytes).unwrap();
            let case = format!(
                "{label} member {k} ({}) header byte {} := {value:#04x}, checksum fixed {fixed}",
                m.name,
                at - m.header
            );
            open_and_stream(tally, &case, path);
        }
        for flag in [b'x', b'L', b'K', b'g'] {
            let mut bytes = archive.to_vec();
            bytes[m.header + 156] = flag;
            fix_checksum(&mut bytes[m.header..m.header + 512]);
            std::fs::write(path, &bytes).unwrap();
            let case = format!("{label} member {k} typeflag {}", flag as char);
            open_and_stream(tally, &case, path);
        }
    }
}

/// Offsets to cut `archive` at: around every header, through the JSON
/// members, at the end-of-archive blocks, and some at random.
fn truncation_points(rng: &mut Rng, archive: &[u8], ms: &[Member]) -> Vec<usize> {
    let mut cuts: Vec<usize> = Vec::new();
    for m in ms {
        for d in [0, 1, 100, 156, 511, 512, 513] {
            cuts.push(m.header + d);
        }
        if m.name.ends_with(".json") {
            cuts.extend((1..8).map(|j| m.data + m.size * j / 8));
        }
    }
    let n = archive.len();
    cuts.extend([n - 1, n - 512, n - 1024, 10, 0]);
    cuts.extend((0..20).map(|_| rng.below(n)));
    cuts
}

#[test]
fn base_image_survives_damaged_headers_truncation_and_bad_json() {
    let mut tally = Tally::new("base image");
    let dir = Scratch::new("base");
    let path = dir.path("base.tar");
    let basic = std::fs::read(vectors().join("basic.tar")).unwrap();
    let ms = members(&basic);
    let mut rng = Rng::new(0xBA5E);

    // The reference archive itself, and the same archive with its layer
    // members cut to 10 KiB (same headers and JSON, a thirtieth of the
    // bytes to write per case), damaged the same ways.
    let (manifest_bytes, config_bytes) = json_members(&basic, &ms);
    let small = rebuild(&basic, &ms, config_bytes, manifest_bytes);
    let small_ms = members(&small);
    let archives = [
        ("basic.tar", &basic, &ms, 3),
        ("basic.tar (10 KiB layers)", &small, &small_ms, 14),
    ];
    for (label, archive, ms, flips) in archives {
        damage_headers(&mut tally, &mut rng, &path, (label, archive, ms), flips);
        let cuts = if archive.len() == basic.len() {
            (0..12).map(|_| rng.below(basic.len())).collect()
        } else {
            truncation_points(&mut rng, archive, ms)
        };
        for cut in cuts {
            std::fs::write(&path, &archive[..cut]).unwrap();
            let case = format!("{label} truncated to {cut} bytes");
            open_and_stream(&mut tally, &case, &path);
        }
    }

    // manifest.json and the image config replaced by mutated JSON.
    let manifest: Value = serde_json::from_slice(manifest_bytes).unwrap();
    let config: Value = serde_json::from_slice(config_bytes).unwrap();
    std::fs::write(&path, &small).unwrap();
    BaseImage::open(&path).unwrap_or_else(|e| panic!("rebuilt basic.tar must open: {e:#}"));

    for (i, (what, m)) in structural_mutations(&manifest).into_iter().enumerate() {
        let bytes = rebuild(&basic, &ms, config_bytes, &serde_json::to_vec(&m).unwrap());
        std::fs::write(&path, &bytes).unwrap();
        open_and_stream(
            &mut tally,
            &format!("manifest.json structural #{i} ({what})"),
            &path,
        );
    }
    for i in 0..150 {
        let (what, m) = random_mutation(&mut rng, &config);
        let bytes = rebuild(
            &basic,
            &ms,
            &serde_json::to_vec(&m).unwrap(),
            manifest_bytes,
        );
        std::fs::write(&path, &bytes).unwrap();
        open_and_stream(
            &mut tally,
            &format!("image config sample #{i} ({what})"),
            &path,
        );
    }
    for i in 0..100 {
        let (what, damaged) = damage_bytes(&mut rng, manifest_bytes);
        std::fs::write(&path, rebuild(&basic, &ms, config_bytes, &damaged)).unwrap();
        open_and_stream(
            &mut tally,
            &format!("manifest.json bytes #{i} ({what})"),
            &path,
        );
        let (what, damaged) = damage_bytes(&mut rng, config_bytes);
        std::fs::write(&path, rebuild(&basic, &ms, &damaged, manifest_bytes)).unwrap();
        open_and_stream(
            &mut tally,
            &format!("image config bytes #{i} ({what})"),
            &path,
        );
    }
    tally.finish();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 1).unwrap()
}

#[test]
fn base_image_survives_damaged_gzip_and_zstd() {
    let mut tally = Tally::new("compressed base image");
    let dir = Scratch::new("compressed");
    let path = dir.path("base.tar.x");
    let basic = std::fs::read(vectors().join("basic.tar")).unwrap();
    let ms = members(&basic);
    let (manifest, config) = json_members(&basic, &ms);
    let small = rebuild(&basic, &ms, config, manifest);
    let mut rng = Rng::new(0x6217);
    // Layers sharing one member (legacy `docker save` does this): every
    // layer must still be served, whatever the member order.
    let (manifest_v, config_v): (Value, Value) = (
        serde_json::from_slice(manifest).unwrap(),
        serde_json::from_slice(config).unwrap(),
    );
    let mut shared = Vec::new();
    for pick in [vec![0, 0], vec![3, 1, 3, 0, 3], vec![6, 5, 4, 3, 2, 1, 0]] {
        let (mut m, mut c) = (manifest_v.clone(), config_v.clone());
        let layers = m[0]["Layers"].as_array().unwrap().clone();
        let ids = c["rootfs"]["diff_ids"].as_array().unwrap().clone();
        m[0]["Layers"] = pick.iter().map(|&i| layers[i].clone()).collect();
        c["rootfs"]["diff_ids"] = pick.iter().map(|&i| ids[i].clone()).collect();
        let archive = rebuild(
            &basic,
            &ms,
            &serde_json::to_vec(&c).unwrap(),
            &serde_json::to_vec(&m).unwrap(),
        );
        shared.push((format!("layers {pick:?}"), archive, pick.len()));
    }
    for (kind, compress) in [("gzip", gzip as fn(&[u8]) -> Vec<u8>), ("zstd", zstd)] {
        let whole = compress(&small);
        std::fs::write(&path, &whole).unwrap();
        BaseImage::open(&path)
            .unwrap_or_else(|e| panic!("{kind} of the rebuilt basic.tar must open: {e:#}"));
        for (what, archive, count) in &shared {
            std::fs::write(&path, compress(archive)).unwrap();
            let case = format!("{kind} with shared members, {what}");
            open_and_stream(&mut tally, &case, &path);
            let served = BaseImage::open(&path).ok().map(|image| {
                let mut n = 0;
                let r = image.stream_layers(&mut |_, _, _| {
                    n += 1;
                    Ok(())
                });
                (r.is_ok(), n)
            });
            if served != Some((true, *count)) {
                tally.fail(format!(
                    "{case}: expected {count} layers served, got {served:?}"
                ));
            }
        }
        for j in 0..12 {
            let cut = small.len() * j / 12 + rng.below(512);
            std::fs::write(&path, compress(&small[..cut])).unwrap();
            open_and_stream(
                &mut tally,
                &format!("{kind} of basic.tar truncated to {cut}"),
                &path,
            );
        }
        let mut cuts: Vec<usize> = (0..12)
            .map(|j| whole.len() * j / 12 + rng.below(64))
            .collect();
        cuts.extend([
            1,
            2,
            3,
            4,
            9,
            whole.len() - 1,
            whole.len() - 4,
            whole.len() - 8,
        ]);
        for cut in cuts {
            std::fs::write(&path, &whole[..cut.min(whole.len())]).unwrap();
            open_and_stream(
                &mut tally,
                &format!("{kind} stream truncated to {cut}"),
                &path,
            );
        }
        for i in 0..40 {
            let mut bytes = whole.clone();
            // Headers and trailers hold the checksums and sizes: aim there often.
            let at = match i % 3 {
                0 => rng.below(20.min(bytes.len())),
                1 => bytes.len() - 1 - rng.below(8),
                _ => rng.below(bytes.len()),
            };
            bytes[at] ^= 1 << rng.below(8);
            std::fs::write(&path, &bytes).unwrap();
            open_and_stream(
                &mut tally,
                &format!("{kind} stream bit flip #{i} at byte {at}"),
                &path,
            );
        }
        // Compressed garbage after a valid stream, and a stream of garbage.
        let mut trailing = whole.clone();
        trailing.extend_from_slice(b"trailing garbage");
        std::fs::write(&path, &trailing).unwrap();
        open_and_stream(&mut tally, &format!("{kind} with trailing garbage"), &path);
        std::fs::write(&path, compress(b"not a tar at all")).unwrap();
        open_and_stream(&mut tally, &format!("{kind} of a non-tar"), &path);
    }
    tally.finish();
}

// ---------------------------------------------------- graphs, layering --

fn layering_vector(name: &str) -> Value {
    read_json(&vectors().join("layering").join(format!("{name}.json")))
}

/// closureInfo's `registration` for an exportReferencesGraph list.
fn registration(graph: &Value) -> String {
    let mut out = String::new();
    for e in graph.as_array().unwrap() {
        let refs = e["references"].as_array().unwrap();
        out.push_str(&format!(
            "{}\n{}\n{}\n\n{}\n",
            e["path"].as_str().unwrap(),
            e["narHash"].as_str().unwrap(),
            e["narSize"],
            refs.len()
        ));
        for r in refs {
            out.push_str(&format!("{}\n", r.as_str().unwrap()));
        }
    }
    out
}

fn string_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The two forms a reference graph comes in.
#[derive(Clone, Copy)]
enum Form {
    /// exportReferencesGraph JSON (`.attrs.json` or the bare list).
    Json,
    /// closureInfo's `registration`, as a file.
    Registration,
    /// closureInfo's output directory holding `registration`.
    ClosureInfo,
}

/// Decides layers from one damaged graph as the executable would,
/// alternating auto-layer and the pipeline-era default over a range of
/// layer budgets, and explains the decision. Every eighth case goes
/// through a file and [`layering::decide`], checking that errors name the
/// file; the others are parsed in memory to spare the disk.
fn graph_case(
    tally: &mut Tally,
    rng: &mut Rng,
    case: &str,
    form: Form,
    bytes: &[u8],
    dir: &Scratch,
    exclude: &[String],
) {
    let max_layers = *rng.pick(&[0, 1, 2, 3, 5, 60, 100, 200, usize::MAX]);
    let pipeline = match rng.below(3) {
        0 => Some(json!([
            ["popularity_contest"],
            ["limit_layers", max_layers.clamp(1, 1000)]
        ])),
        _ => None,
    };
    let base_layers = rng.below(4);
    let via_file = rng.below(8) == 0;
    let case = format!(
        "{case}, max_layers {max_layers}, base layers {base_layers}, pipeline {}, via file {via_file}",
        pipeline.is_some()
    );
    if via_file {
        let graph = match form {
            Form::Json => dir.write("graph.json", bytes),
            Form::Registration => dir.write("registration", bytes),
            Form::ClosureInfo => {
                std::fs::create_dir_all(dir.path("closure-info")).unwrap();
                std::fs::write(dir.path("closure-info/registration"), bytes).unwrap();
                dir.path("closure-info")
            }
        };
        decide_from_file(
            tally,
            &case,
            graph,
            exclude,
            max_layers,
            base_layers,
            pipeline,
        );
        return;
    }
    let parsed = tally.check(&case, None, || match form {
        Form::Json => nix::parse_references_graph(bytes),
        Form::Registration | Form::ClosureInfo => {
            nix::parse_registration(std::str::from_utf8(bytes)?)
        }
    });
    let Some(entries) = parsed else {
        return;
    };
    let Some(graph) = tally.check(&case, None, || Graph::from_entries(entries, "/nix/store"))
    else {
        return;
    };
    let Some(steps) = tally.check(&case, None, || layering::load_pipeline(pipeline.as_ref()))
    else {
        return;
    };
    let decided = tally.check(&case, None, || {
        layering::decide_graph(&graph, exclude, max_layers, base_layers, steps.as_deref())
    });
    if let Some(d) = decided {
        tally.call(&case, || d.explain());
    }
}

fn decide_from_file(
    tally: &mut Tally,
    case: &str,
    graph: PathBuf,
    exclude: &[String],
    max_layers: usize,
    base_layers: usize,
    pipeline: Option<Value>,
) {
    let shown = graph.display().to_string();
    tally.check(case, Some(&shown), || nix::load_graph(&graph));
    let spec = Spec {
        graph,
        exclude_paths: exclude.to_vec(),
        max_layers,
        pipeline,
        debug: false,
    };
    if let Some(d) = tally.check(case, None, || {
        layering::decide(&spec, "/nix/store", base_layers)
    }) {
        tally.call(case, || d.explain());
    }
}

/// Graph mutations a Nix export never has but a hand-written or corrupted
/// file may: sizes that overflow any sum, cycles, duplicates, dangling and
/// foreign references.
fn targeted_graph_mutations(graph: &Value) -> Vec<(String, Value)> {
    let n = graph.as_array().map_or(0, Vec::len);
    let mut out = Vec::new();
    let mut all_max = graph.clone();
    for e in all_max.as_array_mut().unwrap() {
        e["narSize"] = json!(u64::MAX);
    }
    out.push(("every narSize u64::MAX".into(), all_max));
    for k in [0, n / 2, n.saturating_sub(1)] {
        let mut m = graph.clone();
        m[k]["narSize"] = json!(u64::MAX);
        m[(k + 1) % n.max(1)]["narSize"] = json!(u64::MAX - 1);
        out.push((
            format!("narSize u64::MAX on entries {k} and {}", (k + 1) % n.max(1)),
            m,
        ));
    }
    if n >= 2 {
        let (a, b) = (graph[0]["path"].clone(), graph[1]["path"].clone());
        let mut cycle = graph.clone();
        cycle[0]["references"] = json!([b]);
        cycle[1]["references"] = json!([a]);
        out.push(("two-path cycle".into(), cycle));
        let mut dup = graph.clone();
        let first = dup[0].clone();
        dup.as_array_mut().unwrap().push(first);
        out.push(("first entry listed twice".into(), dup));
    }
    let mut dangling = graph.clone();
    dangling[0]["references"] = json!(["/nix/store/00000000000000000000000000000000-gone"]);
    out.push(("dangling reference".into(), dangling));
    let mut foreign = graph.clone();
    foreign[0]["path"] = json!("/gnu/store/00000000000000000000000000000000-x");
    out.push(("path outside the store".into(), foreign));
    out.push(("empty list".into(), json!([])));
    out.push(("graph key null".into(), json!({"graph": null})));
    out.push(("closure key".into(), json!({"closure": graph})));
    out.push(("list of lists".into(), json!([graph])));
    out
}

#[test]
fn graph_loaders_and_layering_survive_mutated_graphs() {
    let mut tally = Tally::new("graphs");
    let dir = Scratch::new("graphs");
    let mut rng = Rng::new(0x6A4F);
    for name in ["al-chain-max3", "al-ties-max5", "al-realistic-max100"] {
        let v = layering_vector(name);
        let graph = &v["graph"];
        let exclude = string_list(&v["exclude_paths"]);

        let mut cases = targeted_graph_mutations(graph);
        for _ in 0..180 {
            cases.push(random_mutation(&mut rng, graph));
        }
        for (i, (what, m)) in cases.iter().enumerate() {
            let text = serde_json::to_vec(&json!({"graph": m})).unwrap();
            graph_case(
                &mut tally,
                &mut rng,
                &format!("{name} graph JSON #{i} ({what})"),
                Form::Json,
                &text,
                &dir,
                &exclude,
            );
        }
        let text = serde_json::to_vec_pretty(graph).unwrap();
        for i in 0..100 {
            let (what, bytes) = damage_bytes(&mut rng, &text);
            graph_case(
                &mut tally,
                &mut rng,
                &format!("{name} graph JSON bytes #{i} ({what})"),
                Form::Json,
                &bytes,
                &dir,
                &exclude,
            );
        }

        // closureInfo's registration, as a file and as the closureInfo directory.
        let reg = registration(graph);
        let lines: Vec<&str> = reg.lines().collect();
        let odd_lines = [
            "",
            "-1",
            "0",
            "18446744073709551616",
            "99999999999",
            "/nix/store/short",
            "nul\0",
            "sha256:x",
            " 3 ",
            "/",
        ];
        for i in 0..200 {
            let mut ls: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
            let at = rng.below(ls.len());
            let what = match rng.below(5) {
                0 => {
                    ls.remove(at);
                    format!("delete line {}", at + 1)
                }
                1 => {
                    let dup = ls[at].clone();
                    ls.insert(at, dup);
                    format!("duplicate line {}", at + 1)
                }
                2 => {
                    let other = rng.below(ls.len());
                    ls.swap(at, other);
                    format!("swap lines {} and {}", at + 1, other + 1)
                }
                _ => {
                    let odd = rng.pick(&odd_lines);
                    ls[at] = odd.to_string();
                    format!("line {} := {odd:?}", at + 1)
                }
            };
            let mut bytes = (ls.join("\n") + "\n").into_bytes();
            let what = if rng.chance(20) {
                let (more, b) = damage_bytes(&mut rng, &bytes);
                bytes = b;
                format!("{what}, {more}")
            } else {
                what
            };
            let form = if i % 2 == 0 {
                Form::Registration
            } else {
                Form::ClosureInfo
            };
            graph_case(
                &mut tally,
                &mut rng,
                &format!("{name} registration #{i} ({what})"),
                form,
                &bytes,
                &dir,
                &exclude,
            );
        }
    }
    decide_from_file(
        &mut tally,
        "missing graph",
        dir.path("missing"),
        &[],
        100,
        0,
        None,
    );
    std::fs::create_dir_all(dir.path("empty-dir")).unwrap();
    decide_from_file(
        &mut tally,
        "directory without registration",
        dir.path("empty-dir"),
        &[],
        100,
        0,
        None,
    );
    std::fs::write(dir.path("bad-utf8"), b"/nix/store/\xff\n").unwrap();
    decide_from_file(
        &mut tally,
        "registration not UTF-8",
        dir.path("bad-utf8"),
        &[],
        100,
        0,
        None,
    );
    tally.finish();
}

const OPS: [&str; 14] = [
    "popularity_contest",
    "limit_layers",
    "split_every",
    "subcomponent_in",
    "subcomponent_out",
    "split_paths",
    "over",
    "map",
    "flatten",
    "reverse",
    "remove_paths",
    "pipe",
    "reorder",
    "",
];

/// A random pipeline step: right or wrong operation names, arities and
/// argument types, nested up to `depth`.
fn random_step(rng: &mut Rng, paths: &[String], depth: u32) -> Value {
    let op = *rng.pick(&OPS);
    let argc = if rng.chance(80) {
        [0, 1, 1, 1, 1, 1, 2, 1, 0, 0, 1, 1, 0, 0][OPS.iter().position(|o| *o == op).unwrap()]
    } else {
        rng.below(4)
    };
    let mut step = vec![json!(op)];
    for _ in 0..argc {
        step.push(random_arg(rng, paths, depth));
    }
    Value::Array(step)
}

fn random_arg(rng: &mut Rng, paths: &[String], depth: u32) -> Value {
    let path = || -> Value { json!(paths[0]) };
    match rng.below(if depth == 0 { 8 } else { 11 }) {
        0 => json!(*rng.pick(&[0i64, 1, 2, 5, 100, -1, i64::MAX])),
        1 => json!(*rng.pick(&["main", "common", "rest", "zzz", ""])),
        2 => json!(paths[rng.below(paths.len())]),
        3 => json!((0..rng.below(4))
            .map(|_| paths[rng.below(paths.len())].clone())
            .collect::<Vec<_>>()),
        4 => json!([{"children_of": paths[rng.below(paths.len())]}, path()]),
        5 => json!({"children_of": [1, 2]}),
        6 => rng.pick(&odd_values()).clone(),
        7 => json!("/nix/store/00000000000000000000000000000000-unknown"),
        8 => random_step(rng, paths, depth - 1),
        _ => json!((0..rng.below(3))
            .map(|_| random_step(rng, paths, depth - 1))
            .collect::<Vec<_>>()),
    }
}

#[test]
fn pipelines_survive_mutation_and_random_trees() {
    let mut tally = Tally::new("pipelines");
    let dir = Scratch::new("pipelines");
    let v = layering_vector("al-realistic-max100");
    let exclude = string_list(&v["exclude_paths"]);
    let entries = nix::parse_references_graph(&serde_json::to_vec(&v["graph"]).unwrap()).unwrap();
    let graph = Graph::from_entries(entries, "/nix/store").unwrap();
    let paths: Vec<String> = graph.paths().to_vec();
    let mut rng = Rng::new(0x919E);

    let mut budgets = Rng::new(0xB06E7);
    let mut run = |tally: &mut Tally, case: &str, pipeline: &Value| {
        let Some(steps) = tally.check(case, Some("layeringPipeline"), || {
            layering::load_pipeline(Some(pipeline))
        }) else {
            return;
        };
        let steps = steps.unwrap_or_default();
        let (max, base) = (*budgets.pick(&[0, 1, 2, 100]), budgets.below(3));
        if let Some(d) = tally.check(case, None, || {
            layering::decide_graph(&graph, &exclude, max, base, Some(&steps))
        }) {
            tally.call(case, || d.explain());
        }
    };

    let mut pipelines: Vec<(String, Value)> = std::fs::read_dir(vectors().join("layering"))
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            name.starts_with("pl-").then_some(name)
        })
        .map(|name| {
            let p = read_json(&vectors().join("layering").join(&name))["pipeline"].clone();
            (name, p)
        })
        .collect();
    pipelines.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, p) in &pipelines {
        for (i, (what, m)) in structural_mutations(p).into_iter().enumerate() {
            if i % 3 == 0 || p.to_string().len() < 120 {
                run(&mut tally, &format!("{name} structural #{i} ({what})"), &m);
            }
        }
        // Wrapped, doubled and spliced into random trees.
        for i in 0..30 {
            let wrapped = match rng.below(4) {
                0 => json!([["pipe", p]]),
                1 => json!([["popularity_contest"], ["map", ["pipe", p]]]),
                2 => json!([
                    ["split_every", 7],
                    ["over", "main", ["pipe", p]],
                    ["flatten"]
                ]),
                _ => {
                    let mut steps = p.as_array().cloned().unwrap_or_default();
                    let at = rng.below(steps.len() + 1);
                    steps.insert(at, random_step(&mut rng, &paths, 2));
                    Value::Array(steps)
                }
            };
            run(
                &mut tally,
                &format!("{name} wrapped #{i}: {wrapped}"),
                &wrapped,
            );
        }
    }
    for i in 0..700 {
        let tree = Value::Array(
            (0..1 + rng.below(4))
                .map(|_| random_step(&mut rng, &paths, 3))
                .collect(),
        );
        run(&mut tally, &format!("random tree #{i}: {tree}"), &tree);
    }
    // A pipeline given as a file name, as nixpkgs accepts too.
    for (what, bytes) in [
        ("missing", None),
        ("empty", Some(&b""[..])),
        ("damaged", Some(&b"[[\"popularity_contest\"], [\"limit"[..])),
        ("not a list", Some(&b"{\"a\": 1}"[..])),
    ] {
        let file = dir.path(what);
        if let Some(b) = bytes {
            std::fs::write(&file, b).unwrap();
        }
        run(
            &mut tally,
            &format!("pipeline file {what}"),
            &json!(file.display().to_string()),
        );
    }
    tally.finish();
}

// ----------------------------------------------------------- executable --

const EXE: &str = env!("CARGO_BIN_EXE_stream-layered-image");
const PREFIX: &str = "stream-layered-image: ";

/// A scratch store with a 4 MiB store path (more than a pipe holds) and a
/// small one, the reference customisation layer, and a conf that streams
/// them.
struct Setup {
    dir: Scratch,
    conf: Value,
    blob: String,
    small: String,
}

fn setup(tag: &str) -> Setup {
    let dir = Scratch::new(tag);
    let store = dir.path("store");
    let blob = format!("{}/0a8pbm0xc7l1q0gx7q6p1zbnz6jm7vyd-blob", store.display());
    let small = format!("{}/1hmpw41d3ldqlzxmy5ad4skaqsbsxd6k-small", store.display());
    std::fs::create_dir_all(&blob).unwrap();
    std::fs::create_dir_all(format!("{small}/bin")).unwrap();
    let mut rng = Rng::new(0xB10B);
    let data: Vec<u8> = (0..4 << 20).map(|_| rng.next() as u8).collect();
    std::fs::write(format!("{blob}/data"), data).unwrap();
    std::fs::write(format!("{small}/bin/hello"), b"#!/bin/sh\necho hello\n").unwrap();
    let custom = dir.path("customisation");
    std::fs::create_dir_all(&custom).unwrap();
    for f in ["layer.tar", "checksum"] {
        std::fs::copy(vectors().join("customisation").join(f), custom.join(f)).unwrap();
    }
    let conf = json!({
        "store_dir": store,
        "from_image": null,
        "store_layers": [[small], [blob]],
        "customisation_layer": custom,
        "repo_tag": "robust:latest",
        "created": "1970-01-01T00:00:01Z",
        "mtime": "1970-01-01T00:00:01Z",
        "uid": 0,
        "gid": 0,
        "uname": "root",
        "gname": "root",
        "architecture": "amd64",
        "config": {"Cmd": [format!("{small}/bin/hello")]}
    });
    Setup {
        dir,
        conf,
        blob,
        small,
    }
}

/// How a run of the executable ended.
struct Run {
    /// None: killed by a signal, or still running at the deadline (killed then).
    code: Option<i32>,
    timed_out: bool,
    stderr: String,
}

/// Waits up to 20 s for `child`, killing it after that.
fn finish(mut child: std::process::Child) -> Run {
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (code, timed_out) = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break (status.code(), false);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code,
        timed_out,
        stderr: reader.join().unwrap(),
    }
}

fn run_to_file(conf: &Path, output: &Path, quiet: bool) -> Run {
    let mut cmd = std::process::Command::new(EXE);
    cmd.arg(conf).arg("-o").arg(output);
    if quiet {
        cmd.arg("-q");
    }
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    finish(child)
}

/// What a user relies on when the input is bad: exit status 1 (not 101, a
/// panic; not a signal), the error as the last stderr line, starting with
/// the program's name, and with `-q` nothing else.
fn bad_input_problems(run: &Run, quiet: bool) -> Vec<String> {
    let mut problems = Vec::new();
    if run.timed_out {
        problems.push("still running after 20 s".to_owned());
    }
    if run.code != Some(1) {
        problems.push(format!("exit status {:?}, expected 1", run.code));
    }
    if run.stderr.contains("panicked") || run.stderr.contains("RUST_BACKTRACE") {
        problems.push("panicked".to_owned());
    }
    let lines: Vec<&str> = run.stderr.lines().collect();
    match lines.last() {
        Some(last) if last.starts_with(PREFIX) && last.len() > PREFIX.len() => {}
        _ => problems.push("last stderr line is not `stream-layered-image: <error>`".to_owned()),
    }
    if quiet && lines.len() != 1 {
        problems.push(format!("{} stderr lines with -q, expected 1", lines.len()));
    }
    if !run.stderr.ends_with('\n') {
        problems.push("stderr does not end with a newline".to_owned());
    }
    problems
}

/// Files anywhere below `dir` whose name marks a temporary output.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            found.extend(temp_files(&path));
        } else if entry.file_name().to_string_lossy().contains(".tmp") {
            found.push(path);
        }
    }
    found
}

/// The exportReferencesGraph JSON of the scratch store: small refers to
/// itself, blob to small.
fn store_graph(s: &Setup) -> Value {
    let entry = |path: &str, size: u64, refs: Value| json!({"closureSize": size, "narHash": "sha256:0", "narSize": size, "path": path, "references": refs});
    let mut graph = vec![
        entry(&s.blob, 4 << 20, json!([s.blob, s.small])),
        entry(&s.small, 600, json!([s.small])),
    ];
    graph.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    Value::Array(graph)
}

/// The scratch conf in the `layering` form, reading the graph from `graph`.
fn graph_conf(s: &Setup, graph: &Path) -> Value {
    let mut c = s.conf.clone();
    c.as_object_mut().unwrap().shift_remove("store_layers");
    c["layering"] = json!({"graph": graph, "max_layers": 100});
    c
}

/// Bad confs for the executable, each a conf file's bytes. Some fail at
/// once, some only after a 4 MiB layer was streamed (the `-o` temporary
/// file must go then too).
fn bad_confs(s: &Setup) -> Vec<(&'static str, Vec<u8>)> {
    let store = s.dir.path("store");
    let gone = format!("{}/2f9w8xlbvv6mvdj3zvr4g1b0q0y7dn5c-gone", store.display());
    let fifo_path = format!("{}/3vq3bz1q9w1sdr6y7n1zq5l1x1i3s2f4-fifo", store.display());
    let with_fifo = format!(
        "{}/4c1q5k0z7r9pmlsw6d4a0y8vmd2y3h9n-with-fifo",
        store.display()
    );
    std::fs::create_dir_all(&with_fifo).unwrap();
    for p in [fifo_path.clone(), format!("{with_fifo}/pipe")] {
        let made = std::process::Command::new("mkfifo").arg(&p).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo {p} failed");
    }
    let bad_custom = s.dir.path("customisation-bad");
    std::fs::create_dir_all(&bad_custom).unwrap();
    std::fs::copy(
        vectors().join("customisation/layer.tar"),
        bad_custom.join("layer.tar"),
    )
    .unwrap();
    std::fs::write(bad_custom.join("checksum"), "0".repeat(64)).unwrap();
    let basic = std::fs::read(vectors().join("basic.tar")).unwrap();
    let truncated = s.dir.write("truncated.tar", &basic[..100_000]);

    let with = |key: &str, value: Value| -> Vec<u8> {
        let mut c = s.conf.clone();
        c[key] = value;
        serde_json::to_vec_pretty(&c).unwrap()
    };
    let text = serde_json::to_vec_pretty(&s.conf).unwrap();
    let mut both = s.conf.clone();
    both["layering"] = json!({"graph": s.dir.path("graph.json")});
    let mut layering_only = both.clone();
    layering_only
        .as_object_mut()
        .unwrap()
        .shift_remove("store_layers");
    let layered = |name: &str, graph: &Value, extra: Value| -> Vec<u8> {
        let file = s.dir.write(name, &serde_json::to_vec(graph).unwrap());
        let mut c = graph_conf(s, &file);
        if let (Value::Object(spec), Value::Object(extra)) = (&mut c["layering"], extra) {
            spec.extend(extra);
        }
        serde_json::to_vec_pretty(&c).unwrap()
    };
    let good = store_graph(s);
    let mut cycle = good.clone();
    // Entries are sorted by path: 0 is blob, 1 is small.
    cycle[0]["references"] = json!([s.small]);
    cycle[1]["references"] = json!([s.blob]);
    let mut huge = good.clone();
    huge[0]["narSize"] = json!(u64::MAX);
    huge[1]["narSize"] = json!(u64::MAX);
    // A closed graph naming a path that is not on disk: layering works,
    // streaming fails after the first layer.
    let mut missing_path = good.clone();
    missing_path[1]["references"] = json!([s.small, gone]);
    missing_path.as_array_mut().unwrap().push(
        json!({"closureSize": 1, "narHash": "sha256:0", "narSize": 1, "path": gone, "references": []}),
    );
    let graph_text = serde_json::to_vec(&good).unwrap();
    let truncated_graph = s
        .dir
        .write("truncated-graph.json", &graph_text[..graph_text.len() / 2]);
    let mut truncated_conf = graph_conf(s, &truncated_graph);
    truncated_conf["layering"]["max_layers"] = json!(10);
    vec![
        ("truncated JSON", text[..text.len() / 2].to_vec()),
        ("empty file", Vec::new()),
        ("not UTF-8", b"{\"repo_tag\": \"\xff\"}".to_vec()),
        ("uid -1", with("uid", json!(-1))),
        ("uid not numeric", with("uid", json!("abc"))),
        ("gid over 32 bits", with("gid", json!(4_294_967_296u64))),
        ("store_layers a string", with("store_layers", json!("x"))),
        (
            "store path outside the store",
            with("store_layers", json!([["/etc"]])),
        ),
        ("store path missing", with("store_layers", json!([[gone]]))),
        (
            "second layer missing (after 4 MiB streamed)",
            with("store_layers", json!([[s.blob], [gone]])),
        ),
        (
            "store path is a FIFO",
            with("store_layers", json!([[s.small], [fifo_path]])),
        ),
        (
            "store path holds a FIFO",
            with("store_layers", json!([[s.blob], [with_fifo]])),
        ),
        (
            "store path name with a newline",
            with(
                "store_layers",
                json!([[format!(
                    "{}/5xk0f2q9a3z7cdj1nq8b6r4w2m0vp1ls-a\nb",
                    store.display()
                )]]),
            ),
        ),
        ("store_dir relative", with("store_dir", json!("store"))),
        ("created not a time", with("created", json!("yesterday"))),
        (
            "mtime out of range",
            with("mtime", json!("99999-99-99T99:99:99")),
        ),
        (
            "customisation layer missing",
            with("customisation_layer", json!(s.dir.path("nope"))),
        ),
        (
            "customisation checksum wrong",
            with("customisation_layer", json!(bad_custom)),
        ),
        ("from_image truncated", with("from_image", json!(truncated))),
        ("from_image a directory", with("from_image", json!(s.dir.0))),
        ("config a list", with("config", json!([]))),
        (
            "store_layers and layering",
            serde_json::to_vec(&both).unwrap(),
        ),
        (
            "layering graph missing",
            serde_json::to_vec(&layering_only).unwrap(),
        ),
        (
            "graph truncated",
            serde_json::to_vec(&truncated_conf).unwrap(),
        ),
        // Paths holding NUL, which no system call takes.
        (
            "store path with NUL",
            with("store_layers", json!([[format!("{}\0x", s.small)]])),
        ),
        (
            "store_dir with NUL",
            with("store_dir", json!(format!("{}\0", store.display()))),
        ),
        (
            "customisation layer with NUL",
            with("customisation_layer", json!("/tmp\0x")),
        ),
        ("from_image with NUL", with("from_image", json!("/tmp\0x"))),
        ("graph path with NUL", {
            let mut c = graph_conf(s, Path::new("/tmp"));
            c["layering"]["graph"] = json!("/tmp\0graph.json");
            serde_json::to_vec(&c).unwrap()
        }),
        (
            "graph with a cycle",
            layered("cycle.json", &cycle, json!({})),
        ),
        (
            "graph narSizes overflow",
            layered("huge.json", &huge, json!({})),
        ),
        (
            "graph path not on disk",
            layered("missing-path.json", &missing_path, json!({})),
        ),
        (
            "max_layers 1",
            layered("g1.json", &good, json!({"max_layers": 1})),
        ),
        (
            "max_layers negative",
            layered("g2.json", &good, json!({"max_layers": -3})),
        ),
        (
            "pipeline unknown operation",
            layered("g3.json", &good, json!({"pipeline": [["sort_by_size"]]})),
        ),
        (
            "pipeline ends in a graph",
            layered("g4.json", &good, json!({"pipeline": []})),
        ),
        (
            "pipeline file missing",
            layered(
                "g5.json",
                &good,
                json!({"pipeline": s.dir.path("nope.json")}),
            ),
        ),
    ]
}

#[test]
fn executable_reports_bad_input_on_one_line_and_leaves_no_output() {
    let s = setup("exe");
    // The harness itself: the unmutated conf streams an image.
    let conf = s
        .dir
        .write("good.json", &serde_json::to_vec(&s.conf).unwrap());
    let out = s.dir.path("good.tar");
    let run = run_to_file(&conf, &out, true);
    assert_eq!(run.code, Some(0), "the good conf fails: {}", run.stderr);
    assert!(std::fs::metadata(&out).unwrap().len() > 4 << 20);
    std::fs::remove_file(&out).unwrap();
    // And so does the graph-based form, from the same store.
    let graph = s.dir.write(
        "good-graph.json",
        &serde_json::to_vec(&store_graph(&s)).unwrap(),
    );
    let layered = s.dir.write(
        "good-layered.json",
        &serde_json::to_vec(&graph_conf(&s, &graph)).unwrap(),
    );
    let run = run_to_file(&layered, &out, true);
    assert_eq!(
        run.code,
        Some(0),
        "the good graph conf fails: {}",
        run.stderr
    );
    std::fs::remove_file(&out).unwrap();

    let mut failures = Vec::new();
    for (i, (what, bytes)) in bad_confs(&s).into_iter().enumerate() {
        let conf = s.dir.write(&format!("bad-{i}.json"), &bytes);
        let out_dir = s.dir.path(&format!("out-{i}"));
        std::fs::create_dir_all(&out_dir).unwrap();
        // Quiet (the error alone) and with progress lines.
        for quiet in [true, false] {
            let run = run_to_file(&conf, &out_dir.join("image.tar"), quiet);
            let mut problems = bad_input_problems(&run, quiet);
            let left: Vec<_> = std::fs::read_dir(&out_dir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            if !left.is_empty() {
                problems.push(format!("left in the output directory: {left:?}"));
            }
            if !problems.is_empty() {
                failures.push(format!(
                    "{what} (quiet {quiet}): {}; stderr: {:?}",
                    problems.join("; "),
                    run.stderr
                ));
            }
        }
    }
    // A failure after 4 MiB went into a compressor leaves nothing either.
    let mut late = s.conf.clone();
    late["store_layers"] = json!([
        [s.blob],
        [s.dir.path("store/2f9w8xlbvv6mvdj3zvr4g1b0q0y7dn5c-gone")]
    ]);
    let late = s
        .dir
        .write("late.json", &serde_json::to_vec(&late).unwrap());
    for compress in ["gz", "zstd"] {
        let out_dir = s.dir.path(&format!("out-{compress}"));
        std::fs::create_dir_all(&out_dir).unwrap();
        let child = std::process::Command::new(EXE)
            .arg(&late)
            .args(["-q", "--compress", compress, "-o"])
            .arg(out_dir.join("image.tar"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let run = finish(child);
        let mut problems = bad_input_problems(&run, true);
        if std::fs::read_dir(&out_dir).unwrap().next().is_some() {
            problems.push("output directory not empty".into());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "late failure, --compress {compress}: {}",
                problems.join("; ")
            ));
        }
    }
    // Output problems: a missing directory, and a target that is a directory.
    let conf = s
        .dir
        .write("good.json", &serde_json::to_vec(&s.conf).unwrap());
    for (what, target) in [
        ("output directory missing", s.dir.path("missing/image.tar")),
        ("output is a directory", s.dir.path("out-0")),
    ] {
        let run = run_to_file(&conf, &target, true);
        let problems = bad_input_problems(&run, true);
        if !problems.is_empty() {
            failures.push(format!(
                "{what}: {}; stderr: {:?}",
                problems.join("; "),
                run.stderr
            ));
        }
    }
    let temps = temp_files(&s.dir.0);
    if !temps.is_empty() {
        failures.push(format!("temporary files left behind: {temps:?}"));
    }
    assert_no_failures(&failures);
}

#[test]
fn executable_stops_promptly_when_the_consumer_closes_the_pipe() {
    let s = setup("pipe");
    let conf = s
        .dir
        .write("conf.json", &serde_json::to_vec(&s.conf).unwrap());
    let mut failures = Vec::new();
    // Read nothing (`| true`), a few KB (a failing `docker load`), or
    // most of the image.
    let cases = [
        ("none", 0),
        ("none", 8192),
        ("none", 3 << 20),
        ("gz", 8192),
        ("zstd", 0),
        ("zstd", 8192),
    ];
    for (compress, read) in cases {
        let mut child = std::process::Command::new(EXE)
            .arg(&conf)
            .args(["-q", "--compress", compress])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut head = vec![0; read];
        stdout.read_exact(&mut head).unwrap();
        drop(stdout);
        let run = finish(child);
        let problems = bad_input_problems(&run, true);
        if !problems.is_empty() {
            failures.push(format!(
                "--compress {compress}, {read} bytes read: {}; stderr: {:?}",
                problems.join("; "),
                run.stderr
            ));
        }
    }
    assert_no_failures(&failures);
}

/// stderr may be a pipe its reader closed (`2>&1 | head -1`): progress
/// and errors are then lost, yet a good run still succeeds (exit 0, whole
/// image) and a bad one still fails with 1, never a panic (101).
#[test]
fn executable_survives_a_closed_stderr() {
    let s = setup("stderr");
    let conf = s
        .dir
        .write("conf.json", &serde_json::to_vec(&s.conf).unwrap());
    let missing = s.dir.path("missing.json");
    for (conf, want) in [(&conf, 0), (&missing, 1)] {
        let output = s.dir.path("image.tar");
        let _ = std::fs::remove_file(&output);
        let mut child = std::process::Command::new(EXE)
            .arg(conf)
            .arg("-o")
            .arg(&output)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stderr.take());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(want), "{}", conf.display());
        if want == 0 {
            let image = std::fs::read(&output).unwrap();
            assert!(image_problems(&image).is_ok(), "the image is whole");
        }
    }
}

/// A tar member: raw name and contents.
type TarMember = (Vec<u8>, Vec<u8>);

/// Every member of an archive with its bytes, or why it is not one.
fn read_tar(bytes: &[u8]) -> Result<Vec<TarMember>, String> {
    let mut ar = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for e in ar.entries().map_err(|e| e.to_string())? {
        let mut e = e.map_err(|e| e.to_string())?;
        let name = e.path_bytes().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).map_err(|e| e.to_string())?;
        out.push((name, data));
    }
    Ok(out)
}

/// Checks that a written image is a docker-archive a reader can take
/// apart: its manifest is JSON and every layer it names is a tarball.
/// Returns the layers' members.
fn image_problems(image: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, String> {
    let outer = read_tar(image)?;
    let find = |name: &str| outer.iter().find(|(n, _)| n == name.as_bytes());
    let manifest = find("manifest.json").ok_or("no manifest.json")?;
    let manifest: Value = serde_json::from_slice(&manifest.1).map_err(|e| e.to_string())?;
    let layers = manifest[0]["Layers"]
        .as_array()
        .ok_or("manifest has no Layers")?;
    let mut members = Vec::new();
    for layer in layers {
        let name = layer.as_str().ok_or("layer name not a string")?;
        let data = find(name).ok_or(format!("layer {name} missing"))?;
        let inner = read_tar(&data.1).map_err(|e| format!("layer {name}: {e}"))?;
        members.push(inner.into_iter().map(|(n, _)| n).collect());
    }
    Ok(members)
}

/// Runs a conf that is odd but not wrong: the run must either succeed
/// with a readable image or fail like bad input, never panic.
fn odd_conf_problems(s: &Setup, i: usize, conf: &Value) -> (Option<i32>, Vec<String>) {
    let file = s
        .dir
        .write(&format!("odd-{i}.json"), &serde_json::to_vec(conf).unwrap());
    let out = s.dir.path(&format!("odd-{i}.tar"));
    let run = run_to_file(&file, &out, true);
    let problems = match run.code {
        Some(0) => {
            let image = std::fs::read(&out).unwrap_or_default();
            let _ = std::fs::remove_file(&out);
            image_problems(&image).err().into_iter().collect()
        }
        _ => bad_input_problems(&run, true),
    };
    let problems = problems
        .into_iter()
        .map(|p| format!("{p}; stderr: {:?}", run.stderr))
        .collect();
    (run.code, problems)
}

#[test]
fn executable_handles_odd_but_valid_conf_values() {
    let s = setup("odd");
    let variants: Vec<(&str, Value)> = vec![
        ("created", json!("0001-01-01T00:00:00Z")),
        ("created", json!("9999-12-31T23:59:59.999999+23:59")),
        ("created", json!("2000-01-01T00:00:00.5")),
        ("mtime", json!("1969-12-31T23:59:59Z")),
        ("mtime", json!("0001-01-01T00:00:00Z")),
        ("mtime", json!("9999-12-31T23:59:59-23:59")),
        ("mtime", json!("2038-01-19T03:14:08Z")),
        ("mtime", json!("now")),
        ("uid", json!(4_294_967_295u64)),
        ("gid", json!("2097152")),
        ("uname", json!("")),
        ("uname", json!("u".repeat(40))),
        ("gname", json!("groupé")),
        ("uname", json!("a\nb")),
        ("repo_tag", json!("")),
        ("repo_tag", json!("a:b:c")),
        ("repo_tag", json!("é:1")),
        ("repo_tag", json!("x".repeat(300))),
        ("repo_tag", json!("a\nb:c")),
        ("architecture", json!("")),
        ("variant", json!("v8")),
        ("os", json!("")),
        (
            "config",
            json!({"Labels": {"f": 1e300, "z": -0.0, "t": 5e-324, "b": 12_345_678_901_234_567_890u64},
                   "Env": [1, null, "A=é\n"], "Cmd": "not a list"}),
        ),
        ("store_layers", json!([])),
        ("store_layers", json!([[]])),
        ("store_layers", json!([[s.small], [s.small]])),
        ("store_layers", json!([[s.small, s.small]])),
    ];
    let mut failures = Vec::new();
    for (i, (key, value)) in variants.into_iter().enumerate() {
        let mut conf = s.conf.clone();
        conf[key] = value.clone();
        let (_, problems) = odd_conf_problems(&s, i, &conf);
        if !problems.is_empty() {
            failures.push(format!("{key} = {value}: {}", problems.join("; ")));
        }
    }
    assert_no_failures(&failures);
}

/// A random file name: plain, spaced, non-UTF-8, newline, long, Unicode.
fn odd_name(rng: &mut Rng) -> Vec<u8> {
    let pieces: [&[u8]; 10] = [
        b"a",
        b"Z",
        b" ",
        b"\n",
        b"\xff",
        "é".as_bytes(),
        b"\\",
        b"-",
        b".x",
        b"\t",
    ];
    let mut name: Vec<u8> = (0..1 + rng.below(6))
        .flat_map(|_| rng.pick(&pieces).to_vec())
        .collect();
    if rng.chance(15) {
        name.extend(vec![b'L'; 100 + rng.below(150)]);
    }
    if name == b"." || name == b".." {
        name.push(b'_');
    }
    name
}

/// Fills `root` with random entries: files of edge-case sizes, nested
/// directories, symlinks (relative, absolute, dangling, long) and
/// hardlinks. Returns how many entries were made.
fn odd_tree(rng: &mut Rng, root: &Path) -> usize {
    use std::os::unix::ffi::OsStrExt;
    let mut dirs = vec![root.to_path_buf()];
    let mut files: Vec<PathBuf> = Vec::new();
    let mut made = 0;
    for _ in 0..40 {
        let parent = rng.pick(&dirs).clone();
        let path = parent.join(std::ffi::OsStr::from_bytes(&odd_name(rng)));
        if path.symlink_metadata().is_ok() {
            continue;
        }
        let ok = match rng.below(6) {
            0 | 1 => {
                let size = *rng.pick(&[0, 1, 511, 512, 513, 4096, 70_000]);
                std::fs::write(&path, vec![b'x'; size]).is_ok() && {
                    files.push(path.clone());
                    true
                }
            }
            2 => {
                std::fs::create_dir(&path).is_ok() && {
                    dirs.push(path.clone());
                    true
                }
            }
            3 => {
                let long = "t/".repeat(80);
                let target = *rng.pick(&["../x", "/nix/store/none", "a b", long.as_str(), ""]);
                let target = if target.is_empty() { "." } else { target };
                std::os::unix::fs::symlink(target, &path).is_ok()
            }
            4 if !files.is_empty() => std::fs::hard_link(rng.pick(&files), &path).is_ok(),
            _ => std::fs::write(&path, b"").is_ok(),
        };
        made += usize::from(ok);
    }
    made
}

#[test]
fn executable_streams_stores_with_odd_names_sizes_and_links() {
    let s = setup("odd-tree");
    let mut rng = Rng::new(0x0DD7);
    let mut failures = Vec::new();
    for round in 0..4 {
        let path = format!(
            "{}/{:032}-odd-{round}",
            s.dir.path("store").display(),
            round
        );
        std::fs::create_dir_all(&path).unwrap();
        let made = odd_tree(&mut rng, Path::new(&path));
        let mut conf = s.conf.clone();
        conf["store_layers"] = json!([[path], [s.small]]);
        let file = s
            .dir
            .write("odd-tree.json", &serde_json::to_vec(&conf).unwrap());
        let out = s.dir.path("odd-tree.tar");
        let run = run_to_file(&file, &out, true);
        if run.code != Some(0) {
            failures.push(format!(
                "round {round} (seed 0x0DD7): exit {:?}: {:?}",
                run.code, run.stderr
            ));
            continue;
        }
        let image = std::fs::read(&out).unwrap();
        match image_problems(&image) {
            // The layer holds /nix, /nix/store, the store path and what it holds.
            Ok(layers) if layers[0].len() == made + 3 => {}
            Ok(layers) => failures.push(format!(
                "round {round}: layer 1 has {} members, expected {}",
                layers[0].len(),
                made + 3
            )),
            Err(e) => failures.push(format!("round {round}: unreadable image: {e}")),
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn customisation_layer_survives_damaged_checksum_and_layer() {
    use stream_layered_image::customisation::Customisation;
    let mut tally = Tally::new("customisation");
    let dir = Scratch::new("custom");
    let checksum = std::fs::read(vectors().join("customisation/checksum")).unwrap();
    let layer = std::fs::read(vectors().join("customisation/layer.tar")).unwrap();
    let mut rng = Rng::new(0xC057);
    let shown = dir.0.display().to_string();
    for i in 0..150 {
        let (what, damaged) = if i % 3 == 0 {
            damage_bytes(&mut rng, &layer)
        } else {
            damage_bytes(&mut rng, &checksum)
        };
        let (c, l) = if i % 3 == 0 {
            (&checksum, &damaged)
        } else {
            (&damaged, &layer)
        };
        std::fs::write(dir.path("checksum"), c).unwrap();
        std::fs::write(dir.path("layer.tar"), l).unwrap();
        let case = format!(
            "customisation #{i} ({what} of {})",
            if i % 3 == 0 { "layer.tar" } else { "checksum" }
        );
        tally.check(&case, Some(&shown), || Customisation::open(&dir.0));
    }
    // Missing pieces and pieces of the wrong kind.
    let _ = std::fs::remove_file(dir.path("layer.tar"));
    tally.check("layer.tar missing", Some(&shown), || {
        Customisation::open(&dir.0)
    });
    std::fs::create_dir_all(dir.path("layer.tar")).unwrap();
    std::fs::write(dir.path("checksum"), &checksum).unwrap();
    tally.check("layer.tar a directory", Some(&shown), || {
        Customisation::open(&dir.0)
    });
    let _ = std::fs::remove_file(dir.path("checksum"));
    tally.check("checksum missing", Some(&shown), || {
        Customisation::open(&dir.0)
    });
    let file = dir.write("plain-file", b"x");
    let shown = file.display().to_string();
    tally.check("a file, not a directory", Some(&shown), || {
        Customisation::open(&file)
    });
    tally.finish();
}

#[test]
fn executable_usage_errors_exit_2_and_write_errors_exit_1() {
    use std::os::unix::ffi::OsStrExt;
    let s = setup("cli");
    let conf = s
        .dir
        .write("conf.json", &serde_json::to_vec(&s.conf).unwrap());
    let conf = conf.to_str().unwrap().to_owned();
    let not_utf8 = std::ffi::OsStr::from_bytes(b"\xff\xfe").to_owned();
    let usage: Vec<Vec<std::ffi::OsString>> = vec![
        vec![],
        vec!["--no-such-flag".into(), conf.clone().into()],
        vec![conf.clone().into(), "--compress".into(), "lz4".into()],
        vec![conf.clone().into(), "-t".into()],
        vec![conf.clone().into(), "-t".into(), not_utf8.clone()],
        // A second positional is a second conf (one image per platform,
        // issue 11), so a missing option value stands in for it here.
        vec![conf.clone().into(), "--oci-dir".into()],
        vec![conf.clone().into(), "-o".into()],
    ];
    let mut failures = Vec::new();
    for args in usage {
        let child = std::process::Command::new(EXE)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let run = finish(child);
        if run.code != Some(2) || run.stderr.contains("panicked") || run.stderr.is_empty() {
            failures.push(format!(
                "{args:?}: exit {:?}, stderr {:?}",
                run.code, run.stderr
            ));
        }
    }
    // A conf path that is not UTF-8 is just a missing file.
    let child = std::process::Command::new(EXE)
        .arg(&not_utf8)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let run = finish(child);
    let problems = bad_input_problems(&run, true);
    if !problems.is_empty() {
        failures.push(format!(
            "non-UTF-8 conf path: {}; stderr {:?}",
            problems.join("; "),
            run.stderr
        ));
    }
    // A full disk on stdout: a write error, reported like bad input.
    if let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") {
        let child = std::process::Command::new(EXE)
            .args([conf.as_str(), "-q"])
            .stdin(std::process::Stdio::null())
            .stdout(full)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let run = finish(child);
        let problems = bad_input_problems(&run, true);
        if !problems.is_empty() {
            failures.push(format!(
                "stdout /dev/full: {}; stderr {:?}",
                problems.join("; "),
                run.stderr
            ));
        }
    }
    assert_no_failures(&failures);
}

/// Fails the test listing every failed case, so one run shows them all.
fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
