//! One image, many destinations: `--format dual|oci`, `--oci-dir`,
//! `--layer-compression`, the digest cache and digests files, each fed to
//! the real consumers (docker load, containerd, podman, skopeo, umoci), and
//! each checked for the same image ID as the docker-archive, deterministic
//! bytes, and one-line errors on bad input with nothing half-written.
//!
//! Consumers that are missing make their part print a loud `SKIPPED (…)`.
//! zstd layers are tested with skopeo, podman and umoci only: Docker 20.10
//! cannot load them.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

#[path = "support/interop.rs"]
mod support;
use support::*;

const CODECS: [&str; 3] = ["none", "gzip", "zstd"];

/// The members of a tar archive by name.
fn members(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut tar = tar::Archive::new(archive);
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
        assert!(
            out.insert(name.clone(), bytes).is_none(),
            "duplicate {name}"
        );
    }
    out
}

fn blob<'a>(members: &'a BTreeMap<String, Vec<u8>>, digest: &str) -> &'a [u8] {
    let name = format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    members
        .get(&name)
        .unwrap_or_else(|| panic!("no blob {name}"))
}

fn value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// The docker-archive's image ID: what every format must reproduce.
fn docker_image_id(fx: &Fixture, cache: &Path) -> String {
    let out = ok(stream(fx, cache, &[]));
    format!("sha256:{}", Image::parse(&out.stdout).id())
}

/// A scratch cache directory inside the fixture.
fn cache_dir(fx: &Fixture, name: &str) -> PathBuf {
    fx.root.join(format!("cache-{name}"))
}

/// The OCI layout inside an `oci`/`dual` archive is complete and
/// consistent: index → manifest → config and layers, digests matching
/// content, media types matching the codec, diff_ids matching the
/// uncompressed layers; `dual` also has Docker's manifest.json on the same
/// blobs.
#[test]
fn archives_are_consistent_layouts_for_every_codec() {
    let Some(fx) = Fixture::build("dest-layout") else {
        return;
    };
    let cache = cache_dir(&fx, "layout");
    let id = docker_image_id(&fx, &cache);
    for format in ["oci", "dual"] {
        for codec in CODECS {
            let out = ok(stream(
                &fx,
                &cache,
                &["--format", format, "--layer-compression", codec],
            ));
            let m = members(&out.stdout);
            assert_eq!(value(&m["oci-layout"])["imageLayoutVersion"], "1.0.0");
            let index = value(&m["index.json"]);
            let entry = &index["manifests"][0];
            assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
            let tag = fx.tag.split(':').nth(1).unwrap();
            assert_eq!(
                entry["annotations"]["org.opencontainers.image.ref.name"],
                tag
            );
            assert_eq!(
                entry["annotations"]["io.containerd.image.name"],
                format!("docker.io/library/{}", fx.tag)
            );
            let manifest_bytes = blob(&m, entry["digest"].as_str().unwrap());
            assert_eq!(
                entry["digest"],
                format!("sha256:{}", sha256_hex(manifest_bytes))
            );
            let manifest = value(manifest_bytes);
            assert_eq!(
                manifest["config"]["digest"],
                id.as_str(),
                "{format} {codec}"
            );
            let config = value(blob(&m, &id));
            let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
            let media = match codec {
                "none" => "application/vnd.oci.image.layer.v1.tar",
                "gzip" => "application/vnd.oci.image.layer.v1.tar+gzip",
                _ => "application/vnd.oci.image.layer.v1.tar+zstd",
            };
            for (l, diff_id) in manifest["layers"].as_array().unwrap().iter().zip(diff_ids) {
                assert_eq!(l["mediaType"], media);
                let bytes = blob(&m, l["digest"].as_str().unwrap());
                assert_eq!(l["digest"], format!("sha256:{}", sha256_hex(bytes)));
                assert_eq!(l["size"], bytes.len());
                let plain = match codec {
                    "none" => bytes.to_vec(),
                    "gzip" => {
                        let mut v = Vec::new();
                        std::io::Read::read_to_end(
                            &mut flate2::read::GzDecoder::new(bytes),
                            &mut v,
                        )
                        .unwrap();
                        v
                    }
                    _ => zstd::decode_all(bytes).unwrap(),
                };
                assert_eq!(diff_id, &format!("sha256:{}", sha256_hex(&plain)));
            }
            if format == "dual" {
                let docker = value(&m["manifest.json"]);
                assert_eq!(docker[0]["RepoTags"][0], fx.tag.as_str());
                assert_eq!(
                    docker[0]["Config"],
                    format!("blobs/sha256/{}", id.trim_start_matches("sha256:"))
                );
                for (name, l) in docker[0]["Layers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .zip(manifest["layers"].as_array().unwrap())
                {
                    let digest = l["digest"].as_str().unwrap();
                    assert_eq!(name, &format!("blobs/sha256/{}", &digest[7..]));
                }
            } else {
                assert!(!m.contains_key("manifest.json"));
            }
        }
    }
    fx.cleanup();
}

/// Same inputs, same bytes: every format and codec, one thread or two,
/// cold cache or warm or none.
#[test]
fn output_is_deterministic_across_runs_threads_and_cache_states() {
    let Some(fx) = Fixture::build("dest-determinism") else {
        return;
    };
    for format in ["docker", "oci", "dual"] {
        for codec in CODECS {
            if format == "docker" && codec != "none" {
                continue;
            }
            let cache = cache_dir(&fx, &format!("det-{format}-{codec}"));
            let args = ["--format", format, "--layer-compression", codec];
            let mut outputs = Vec::new();
            for threads in ["1", "2", "2"] {
                outputs.push(ok(stream_on_threads(&fx, &cache, &args, threads)).stdout);
            }
            outputs.push(ok(stream(&fx, &cache, &[&args[..], &["--no-cache"]].concat())).stdout);
            for o in &outputs[1..] {
                assert!(
                    o == &outputs[0],
                    "{format} {codec}: bytes differ between runs"
                );
            }
        }
    }
    fx.cleanup();
}

/// `--format dual` loads with Docker's classic loader, containerd's
/// importer and podman, and skopeo reads it both as an oci-archive and as
/// a docker-archive: the same image ID as `--format docker` everywhere.
#[test]
fn dual_archive_loads_everywhere_with_the_docker_image_id() {
    let Some(fx) = Fixture::build("dest-dual") else {
        return;
    };
    let cache = cache_dir(&fx, "dual");
    let id = docker_image_id(&fx, &cache);
    for codec in ["none", "gzip"] {
        let path = fx.root.join(format!("dual-{codec}.tar"));
        let tag = fx.tag.replace(":t", &format!("-dual-{codec}:t"));
        let p = path.display().to_string();
        let args = [
            "--format",
            "dual",
            "--layer-compression",
            codec,
            "-t",
            &tag,
            "-o",
            &p,
        ];
        ok(stream(&fx, &cache, &args));
        if tool_works("docker", &["info"]) {
            let _rmi = Cleanup(vec![
                "docker".into(),
                "rmi".into(),
                "-f".into(),
                tag.clone(),
            ]);
            let said = run(Command::new("docker").arg("load").arg("-i").arg(&path));
            assert!(said.contains(&format!("Loaded image: {tag}")), "{said}");
            let got = run(Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", &tag]));
            assert_eq!(got.trim(), id, "docker, {codec} layers");
            let ran = run(Command::new("docker").args(["run", "--rm", "--network=none", &tag]));
            assert_eq!(ran, "cmd-ok hello-env\n");
        } else {
            skipped("dual_archive_loads_everywhere", "no docker daemon");
        }
        if let Some(address) = containerd_address() {
            let ns = format!("sli-dest-{}-{codec}", std::process::id());
            let _rm = containerd_cleanup(&address, &ns);
            run(Command::new("ctr")
                .args(["-a", &address, "-n", &ns, "images", "import"])
                .arg(&path));
            let listed = run(Command::new("ctr").args(["-a", &address, "-n", &ns, "images", "ls"]));
            let name = format!("docker.io/library/{tag}");
            let line = listed
                .lines()
                .find(|l| l.split_whitespace().next() == Some(name.as_str()))
                .unwrap_or_else(|| panic!("ctr lists no {name}:\n{listed}"));
            let digest = line
                .split_whitespace()
                .find(|w| w.starts_with("sha256:"))
                .unwrap();
            let manifest = json(&run(
                Command::new("ctr").args(["-a", &address, "-n", &ns, "content", "get", digest])
            ));
            assert_eq!(
                manifest["config"]["digest"],
                id.as_str(),
                "containerd, {codec}"
            );
        } else {
            skipped("dual_archive_loads_everywhere", "no containerd");
        }
        if tool_works("podman", &["--version"]) {
            let (loaded, _guard) = podman_load(&path);
            let got =
                run(Command::new("podman").args(["image", "inspect", "-f", "{{.Id}}", &loaded]));
            assert_eq!(format!("sha256:{}", got.trim()), id, "podman, {codec}");
        } else {
            skipped("dual_archive_loads_everywhere", "no podman");
        }
        if tool_works("skopeo", &["--version"]) {
            for transport in ["oci-archive", "docker-archive"] {
                let raw = run_bytes(Command::new("skopeo").args([
                    "inspect",
                    "--raw",
                    "--config",
                    &format!("{transport}:{}", path.display()),
                ]));
                assert_eq!(
                    format!("sha256:{}", sha256_hex(&raw)),
                    id,
                    "skopeo {transport}, {codec}"
                );
            }
        } else {
            skipped("dual_archive_loads_everywhere", "no skopeo");
        }
    }
    fx.cleanup();
}

fn containerd_cleanup(address: &str, ns: &str) -> Cleanup {
    Cleanup(vec![
        "sh".into(),
        "-c".into(),
        format!(
            "ctr -a {address} -n {ns} images ls -q | xargs -r ctr -a {address} -n {ns} images rm --sync; \
             ctr -a {address} -n {ns} content ls -q | xargs -r ctr -a {address} -n {ns} content rm; \
             ctr -a {address} namespaces rm {ns}"
        ),
    ])
}

/// `--format oci` and `dual` with every codec: skopeo copies the image out
/// of the archive, umoci unpacks the files, links and modes we put in, and
/// podman loads it with the docker-archive's image ID.
#[test]
fn oci_and_dual_archives_read_with_skopeo_umoci_and_podman() {
    for tool in ["skopeo", "umoci"] {
        if !tool_works(tool, &["--version"]) {
            skipped(
                "oci_and_dual_archives_read_with_skopeo_umoci_and_podman",
                &format!("no {tool}"),
            );
            return;
        }
    }
    let Some(fx) = Fixture::build("dest-oci") else {
        return;
    };
    let cache = cache_dir(&fx, "oci");
    let id = docker_image_id(&fx, &cache);
    for (format, codec) in ["oci", "dual"].iter().flat_map(|f| CODECS.map(|c| (*f, c))) {
        let path = fx.root.join(format!("{format}-{codec}.tar"));
        let p = path.display().to_string();
        ok(stream(
            &fx,
            &cache,
            &["--format", format, "--layer-compression", codec, "-o", &p],
        ));
        let layout = fx.root.join(format!("copied-{format}-{codec}"));
        run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            &format!("oci-archive:{p}"),
            &format!("oci:{}:x", layout.display()),
        ]));
        // Debian's umoci 0.4 predates zstd layers.
        if codec != "zstd" {
            let bundle = fx.root.join(format!("bundle-{format}-{codec}"));
            umoci_unpack(&format!("{}:x", layout.display()), &bundle);
            check_rootfs(&fx, &bundle.join("rootfs"));
        }
        if tool_works("podman", &["--version"]) {
            let (loaded, _guard) = podman_load(&path);
            let got =
                run(Command::new("podman").args(["image", "inspect", "-f", "{{.Id}}", &loaded]));
            assert_eq!(
                format!("sha256:{}", got.trim()),
                id,
                "podman, {format} {codec}"
            );
        }
    }
    fx.cleanup();
}

/// A zstd layer longer than one frame's piece (2 MiB of tar) is several
/// frames in one blob: decoders read them as one stream (the diff_id in the
/// config is the sha256 of all of it), podman loads it with the
/// docker-archive's image ID, and the bytes do not depend on the threads.
#[test]
fn zstd_layers_of_several_frames_read_as_one() {
    let Some(fx) = Fixture::build("dest-zstd-frames") else {
        return;
    };
    // 5 MiB in the busybox path: its layer needs three frames.
    let text: String = (0..100_000)
        .map(|i| format!("line {i} of a large file in the store\n"))
        .collect();
    let big = fx.store_dir.join(BUSYBOX_PATH).join("share/large.txt");
    fs::create_dir_all(big.parent().unwrap()).unwrap();
    fs::write(&big, &text.repeat(2).as_bytes()[..5 << 20]).unwrap();
    let cache = cache_dir(&fx, "zstd-frames");
    let id = docker_image_id(&fx, &cache);
    let args = ["--format", "oci", "--layer-compression", "zstd"];
    let out = ok(stream(&fx, &cache, &args));
    let m = members(&out.stdout);
    let index = value(&m["index.json"]);
    let manifest = value(blob(&m, index["manifests"][0]["digest"].as_str().unwrap()));
    assert_eq!(manifest["config"]["digest"], id.as_str());
    let config = value(blob(&m, &id));
    let first = &manifest["layers"][0];
    let bytes = blob(&m, first["digest"].as_str().unwrap());
    let frame = zstd::zstd_safe::find_frame_compressed_size(bytes).unwrap();
    assert!(frame < bytes.len(), "one frame of {} bytes", bytes.len());
    let plain = zstd::decode_all(bytes).unwrap();
    assert!(plain.len() > 5 << 20);
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{}", sha256_hex(&plain))
    );
    let one = ok(stream_on_threads(&fx, &cache, &args, "1"));
    assert!(one.stdout == out.stdout, "one thread wrote other bytes");
    if tool_works("podman", &["--version"]) {
        let path = fx.root.join("zstd-frames.tar");
        fs::write(&path, &out.stdout).unwrap();
        let (loaded, _guard) = podman_load(&path);
        let got = run(Command::new("podman").args(["image", "inspect", "-f", "{{.Id}}", &loaded]));
        assert_eq!(format!("sha256:{}", got.trim()), id, "podman");
    } else {
        skipped("zstd_layers_of_several_frames_read_as_one", "no podman");
    }
    fx.cleanup();
}

/// A large compressed layer whose blob the cache names is compressed
/// straight into the archive (no spool): the same bytes as the cold run,
/// which spooled it, and a wrong recorded blob is caught with nothing
/// written.
#[test]
fn large_known_layers_are_compressed_in_place() {
    let Some(fx) = Fixture::build("dest-in-place") else {
        return;
    };
    // 17 MiB that no codec shrinks: the blob stays over the 16 MiB mark.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let noise: Vec<u8> = (0..17 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    let big = fx.store_dir.join(BUSYBOX_PATH).join("share/noise.bin");
    fs::create_dir_all(big.parent().unwrap()).unwrap();
    fs::write(&big, &noise).unwrap();
    for (codec, key) in [("gzip", "gzip-blocks-4"), ("zstd", "zstd-frames-1")] {
        let cache = cache_dir(&fx, &format!("in-place-{codec}"));
        let args = ["--format", "oci", "--layer-compression", codec];
        let cold = ok(stream(&fx, &cache, &args));
        let in_place = |out: &std::process::Output| {
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .filter(|l| l.contains("compressed in place"))
                .count()
        };
        assert_eq!(in_place(&cold), 0, "{codec}: cold runs spool");
        let warm = ok(stream(&fx, &cache, &args));
        assert_eq!(in_place(&warm), 1, "{codec}: the large layer only");
        assert!(cold.stdout == warm.stdout, "{codec}: other bytes in place");

        // A wrong blob digest recorded for the large layer.
        let entries: Vec<PathBuf> = fs::read_dir(cache.join("layers-v1"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let wrong = format!("sha256:{}", "0".repeat(64));
        let mut lied = 0;
        for entry in &entries {
            let mut v = value(&fs::read(entry).unwrap());
            if v["blobs"][key]["size"].as_u64().unwrap_or(0) >= 16 << 20 {
                v["blobs"][key]["digest"] = Value::String(wrong.clone());
                fs::write(entry, serde_json::to_vec(&v).unwrap()).unwrap();
                lied += 1;
            }
        }
        assert_eq!(lied, 1, "{codec}: one large layer in {entries:?}");
        let out = fx.root.join(format!("in-place-{codec}.tar"));
        let to_file = [&args[..], &["-o", out.to_str().unwrap()]].concat();
        let bad = stream(&fx, &cache, &to_file);
        one_line_error(&bad, &format!("its {key} blob: recorded {wrong}"));
        assert!(!out.exists(), "{codec}: no partial output");
        // The entry was dropped: the next run spools it again.
        ok(stream(&fx, &cache, &to_file));
        assert!(fs::read(&out).unwrap() == cold.stdout, "{codec}: recovered");
    }
    fx.cleanup();
}

/// `--oci-dir`: umoci unpacks it and skopeo copies it into Docker; a second
/// image with another tag joins the index; a rewrite with a warm cache
/// reads no store byte and leaves the blobs untouched.
#[test]
fn oci_dir_is_written_added_to_and_reused() {
    if !tool_works("umoci", &["--version"]) {
        skipped("oci_dir_is_written_added_to_and_reused", "no umoci");
        return;
    }
    let Some(fx) = Fixture::build("dest-ocidir") else {
        return;
    };
    let cache = cache_dir(&fx, "ocidir");
    let id = docker_image_id(&fx, &cache);
    for codec in CODECS {
        let dir = fx.root.join(format!("layout-{codec}"));
        let d = dir.display().to_string();
        let first = ok(stream(
            &fx,
            &cache,
            &["--oci-dir", &d, "--layer-compression", codec, "-v"],
        ));
        let tag = fx.tag.split(':').nth(1).unwrap().to_owned();
        if codec != "zstd" {
            let bundle = fx.root.join(format!("dir-bundle-{codec}"));
            umoci_unpack(&format!("{d}:{tag}"), &bundle);
            check_rootfs(&fx, &bundle.join("rootfs"));
        } else if tool_works("skopeo", &["--version"]) {
            let raw = run_bytes(Command::new("skopeo").args([
                "inspect",
                "--raw",
                "--config",
                &format!("oci:{d}:{tag}"),
            ]));
            assert_eq!(format!("sha256:{}", sha256_hex(&raw)), id);
        }
        let index = value(&fs::read(dir.join("index.json")).unwrap());
        let manifest = value(
            &fs::read(
                dir.join("blobs/sha256")
                    .join(&index["manifests"][0]["digest"].as_str().unwrap()[7..]),
            )
            .unwrap(),
        );
        assert_eq!(manifest["config"]["digest"], id.as_str());
        // The cache was warmed by the docker-archive run for `none`; for
        // gzip/zstd the first oci-dir run learnt the blob digests.
        let blobs = snapshot(&dir.join("blobs/sha256"));
        let again = ok(stream(
            &fx,
            &cache,
            &["--oci-dir", &d, "--layer-compression", codec, "-v"],
        ));
        assert_eq!(
            store_bytes_read(&again),
            0,
            "{codec}: warm rewrite reads no store byte"
        );
        assert!(store_bytes_read(&first) > 0);
        assert_eq!(
            snapshot(&dir.join("blobs/sha256")),
            blobs,
            "{codec}: blobs untouched"
        );
        // Another tag joins; the same tag again replaces.
        ok(stream(
            &fx,
            &cache,
            &[
                "--oci-dir",
                &d,
                "--layer-compression",
                codec,
                "-t",
                "other:two",
            ],
        ));
        ok(stream(
            &fx,
            &cache,
            &[
                "--oci-dir",
                &d,
                "--layer-compression",
                codec,
                "-t",
                "other:two",
            ],
        ));
        let index = value(&fs::read(dir.join("index.json")).unwrap());
        let tags: Vec<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(tags, [tag.as_str(), "two"]);
        if codec != "zstd"
            && tool_works("docker", &["info"])
            && tool_works("skopeo", &["--version"])
        {
            let target = format!("sli-dest-ocidir-{}:{codec}", std::process::id());
            let _rmi = Cleanup(vec![
                "docker".into(),
                "rmi".into(),
                "-f".into(),
                target.clone(),
            ]);
            run(Command::new("skopeo").args([
                "copy",
                "--quiet",
                &format!("oci:{d}:{tag}"),
                &format!("docker-daemon:{target}"),
            ]));
            let got =
                run(Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", &target]));
            assert_eq!(got.trim(), id, "skopeo oci: → docker-daemon:, {codec}");
        }
    }
    fx.cleanup();
}

/// Blob file name → (size, modification time): proof that nothing was
/// rewritten.
fn snapshot(dir: &Path) -> BTreeMap<String, (u64, std::time::SystemTime)> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                (m.len(), m.modified().unwrap()),
            )
        })
        .collect()
}

/// The digest cache: a cold `oci` archive reads the store twice, a warm one
/// once; a tampered entry is caught while streaming (one line, the entry
/// dropped, the next run fine); two concurrent runs share a cache safely.
#[test]
fn cache_skips_a_read_and_catches_tampering() {
    let Some(fx) = Fixture::build("dest-cache") else {
        return;
    };
    let cache = cache_dir(&fx, "cache");
    let cold = ok(stream(&fx, &cache, &["--format", "oci", "-v"]));
    let warm = ok(stream(&fx, &cache, &["--format", "oci", "-v"]));
    let once = store_bytes_read(&warm);
    assert!(once > 0);
    assert_eq!(
        store_bytes_read(&cold),
        2 * once,
        "cold: hash pass + stream"
    );
    assert!(cold.stdout == warm.stdout, "output bytes differ");
    let docker = ok(stream(&fx, &cache, &["-v"]));
    assert_eq!(store_bytes_read(&docker), once, "docker-archive reads once");

    // Tamper with every entry: each keeps its key but claims the next
    // entry's diff_id and size (a lie only streaming can catch).
    let entries: Vec<PathBuf> = fs::read_dir(cache.join("layers-v1"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(entries.len() >= 3, "{entries:?}");
    let parsed: Vec<Value> = entries
        .iter()
        .map(|p| value(&fs::read(p).unwrap()))
        .collect();
    for (k, p) in entries.iter().enumerate() {
        let mut lie = parsed[k].clone();
        let next = &parsed[(k + 1) % parsed.len()];
        lie["diff_id"] = next["diff_id"].clone();
        lie["size"] = next["size"].clone();
        fs::write(p, serde_json::to_vec(&lie).unwrap()).unwrap();
    }
    let out = fx.root.join("tampered.tar");
    let bad = stream(
        &fx,
        &cache,
        &["--format", "oci", "-o", out.to_str().unwrap()],
    );
    one_line_error(&bad, "do not match its bytes");
    assert!(!out.exists(), "no partial output");
    // The bad entries were dropped one by one; runs succeed again and
    // give the same image.
    let mut fixed = None;
    for _ in 0..entries.len() + 1 {
        // To a file: a lie found mid-stream cannot take back what stdout got.
        let o = stream(
            &fx,
            &cache,
            &["--format", "oci", "-o", out.to_str().unwrap()],
        );
        if o.status.success() {
            fixed = Some(fs::read(&out).unwrap());
            break;
        }
        one_line_error(&o, "do not match its bytes");
        assert!(!out.exists(), "no partial output");
    }
    let fixed = fixed.expect("recovers after dropping entries");
    assert!(fixed == warm.stdout, "same image after recovery");

    // Same tar, wrong compressed digest: the error names the blob.
    let gz_out = fx.root.join("gz.tar");
    let gz = [
        "--format",
        "oci",
        "--layer-compression",
        "gzip",
        "-o",
        gz_out.to_str().unwrap(),
    ];
    ok(stream(&fx, &cache, &gz));
    fs::remove_file(&gz_out).unwrap();
    // Every entry, the customisation layer's too: that one is a bad
    // cache entry as well, not a changed layer.
    let key = "gzip-blocks-4";
    let wrong = format!("sha256:{}", "0".repeat(64));
    let mut lied = 0;
    for entry in &entries {
        let mut lie = value(&fs::read(entry).unwrap());
        if lie["blobs"].get(key).is_some() {
            lie["blobs"][key]["digest"] = Value::String(wrong.clone());
            fs::write(entry, serde_json::to_vec(&lie).unwrap()).unwrap();
            lied += 1;
        }
    }
    assert_eq!(lied, entries.len(), "every layer has a gzip blob recorded");
    // Layers compressed at once may each catch theirs: every run that
    // fails names a blob and dropped what it caught; then the image
    // streams again.
    let mut failures = 0;
    loop {
        let o = stream(&fx, &cache, &gz);
        if o.status.success() {
            break;
        }
        one_line_error(&o, &format!("its {key} blob: recorded {wrong}"));
        assert!(!gz_out.exists(), "no partial output");
        failures += 1;
        assert!(failures <= entries.len(), "the bad entries are dropped");
    }
    assert!(failures >= 1, "a wrong blob digest is caught");

    // A damaged entry, or one moved to another key's file, is ignored
    // with a warning.
    let now: Vec<PathBuf> = fs::read_dir(cache.join("layers-v1"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    fs::copy(&now[0], &now[1]).unwrap();
    for p in &now[2..] {
        fs::write(p, b"{damaged").unwrap();
    }
    let o = ok(stream(&fx, &cache, &["--format", "oci"]));
    assert!(o.stdout == warm.stdout, "output bytes differ");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("warning: cache entry") && err.contains("is damaged"),
        "{err}"
    );

    // Two concurrent runs on a cold cache.
    let shared = cache_dir(&fx, "concurrent");
    let spawn = || {
        Command::new(exe())
            .arg(&fx.conf)
            .args(["--format", "dual", "--layer-compression", "gzip", "--cache"])
            .arg(&shared)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (
        ok(a.wait_with_output().unwrap()),
        ok(b.wait_with_output().unwrap()),
    );
    assert!(a.stdout == b.stdout, "output bytes differ");
    let third = ok(stream(
        &fx,
        &shared,
        &["--format", "dual", "--layer-compression", "gzip"],
    ));
    assert!(third.stdout == a.stdout, "the cache they wrote is sound");
    fx.cleanup();
}

/// `--digests-only` writes the facts without an image; `--digests` brings
/// them to a run with no cache, which then names every blob before reading
/// (an OCI dir that has them reads no store byte); a digests file for
/// another image, or a damaged one, is one line.
#[test]
fn digests_file_round_trip_and_misuse() {
    let Some(fx) = Fixture::build("dest-digests") else {
        return;
    };
    let cache = cache_dir(&fx, "digests");
    let file = fx.root.join("digests.json");
    let f = file.display().to_string();
    let out = ok(stream(&fx, &cache, &["--digests-only", &f, "--no-cache"]));
    assert!(out.stdout.is_empty(), "no image on stdout");
    let digests = value(&fs::read(&file).unwrap());
    assert_eq!(digests["version"], 1);
    assert_eq!(digests["layers"].as_array().unwrap().len(), 3);
    assert!(digests["layers"][0]["blobs"]["gzip-blocks-4"]["digest"].is_string());

    let dir = fx.root.join("layout");
    let d = dir.display().to_string();
    ok(stream(
        &fx,
        &cache,
        &["--oci-dir", &d, "--layer-compression", "gzip", "--no-cache"],
    ));
    let again = ok(stream(
        &fx,
        &cache,
        &[
            "--oci-dir",
            &d,
            "--layer-compression",
            "gzip",
            "--no-cache",
            "--digests",
            &f,
            "-v",
        ],
    ));
    assert_eq!(store_bytes_read(&again), 0);

    // Another image: a conf with one layer fewer.
    let mut other: Value = value(&fs::read(&fx.conf).unwrap());
    other["store_layers"] = serde_json::json!([other["store_layers"][0]]);
    let other_conf = fx.root.join("other.json");
    fs::write(&other_conf, serde_json::to_vec(&other).unwrap()).unwrap();
    let o = Command::new(exe())
        .arg(&other_conf)
        .args(["--no-cache", "--digests", &f, "-o"])
        .arg(fx.root.join("x.tar"))
        .output()
        .unwrap();
    one_line_error(&o, "describes another image");
    fs::write(&file, b"{\"version\": 1, \"layers\": [").unwrap();
    let o = stream(&fx, &cache, &["--digests", &f, "-o", "/dev/null"]);
    one_line_error(&o, "is not a digests file");
    fx.cleanup();
}

/// Bad destinations and damaged layouts: one line, exit 1, and a layout
/// left as it was (index.json unchanged).
#[test]
fn bad_destinations_are_one_line_and_leave_layouts_valid() {
    let Some(fx) = Fixture::build("dest-bad") else {
        return;
    };
    let cache = cache_dir(&fx, "bad");
    let o = stream(&fx, &cache, &["--format", "tarball"]);
    assert_eq!(o.status.code(), Some(2), "usage error");
    assert!(String::from_utf8_lossy(&o.stderr).contains("tarball"));

    let file = fx.root.join("a-file");
    fs::write(&file, "x").unwrap();
    one_line_error(
        &stream(&fx, &cache, &["--oci-dir", file.to_str().unwrap()]),
        "is not a directory",
    );
    one_line_error(
        &stream(&fx, &cache, &["--oci-dir", "/dev/null/layout"]),
        "/dev/null/layout",
    );
    let stranger = fx.root.join("not-a-layout");
    fs::create_dir_all(&stranger).unwrap();
    fs::write(stranger.join("README"), "mine").unwrap();
    one_line_error(
        &stream(&fx, &cache, &["--oci-dir", stranger.to_str().unwrap()]),
        "not an OCI layout",
    );

    let dir = fx.root.join("layout");
    let d = dir.display().to_string();
    ok(stream(&fx, &cache, &["--oci-dir", &d]));
    let index = fs::read(dir.join("index.json")).unwrap();
    // A blob whose content does not match its name is caught before it is
    // trusted (the cache names it, the layout has it).
    let manifest = value(
        &fs::read(
            dir.join("blobs/sha256")
                .join(&value(&index)["manifests"][0]["digest"].as_str().unwrap()[7..]),
        )
        .unwrap(),
    );
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    let path = dir.join("blobs/sha256").join(&layer[7..]);
    let mut bytes = fs::read(&path).unwrap();
    bytes[600] ^= 1;
    fs::write(&path, &bytes).unwrap();
    one_line_error(
        &stream(&fx, &cache, &["--oci-dir", &d, "-t", "x:y"]),
        "does not match its name",
    );
    assert_eq!(
        fs::read(dir.join("index.json")).unwrap(),
        index,
        "index untouched"
    );
    fs::write(dir.join("index.json"), b"{\"manifests\": [").unwrap();
    one_line_error(&stream(&fx, &cache, &["--oci-dir", &d]), "index.json");
    one_line_error(
        &stream(
            &fx,
            &cache,
            &["--layer-compression", "gzip", "-o", "/dev/null"],
        ),
        "--layer-compression applies to",
    );
    fx.cleanup();
}
