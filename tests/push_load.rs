//! The executable's `--push` (issue 8) and `--load` (issue 9) end to end,
//! on the interop fixture (busybox + a script, runnable):
//!
//! - push to Debian's `docker-registry` on 127.0.0.1: skopeo sees our image
//!   ID and gzip layers; a second push uploads nothing and reads no store
//!   byte; a one-leaf change uploads exactly that layer and the config, and
//!   pushed again to a new tag sends no HEAD (the cache remembers what was
//!   pushed to the repository); a
//!   cold cache with a `--digests` file reads no store file, and with a
//!   base image (`fromImage`: a plain and a gzip-stored layer) reads no
//!   base layer either, for gzip and zstd layers (the gzip-stored base layer
//!   keeps its codec); a wrong base entry in the digests file is caught when
//!   the layer must be uploaded; Docker pulls
//!   the pushed image from the loopback registry and runs it; bad REFs and
//!   unreachable registries are one line;
//! - load into Docker: fresh, unchanged reload (no layer sent), one-leaf
//!   change (only it sent), a reload after `docker rmi` while a sibling
//!   keeps layers; the same image ID as `| docker load`; podman; no daemon
//!   is one line.
//!
//! Docker parts print a loud `SKIPPED (no docker daemon)` without one.

mod registry_support;
#[path = "support/interop.rs"]
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use registry_support::server::{Registry, Setup};
use serde_json::Value;
use support::*;

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The layer count the summary line says was sent or uploaded (`(N new)`).
fn new_layers(out: &Output) -> usize {
    let err = stderr(out);
    let at = err
        .find(" new)")
        .unwrap_or_else(|| panic!("no summary: {err}"));
    let start = err[..at].rfind('(').unwrap() + 1;
    err[start..at].parse().unwrap()
}

/// The fixture with its hello store path replaced by a changed copy (a
/// new store path, as a rebuild of one leaf gives): a second conf.
fn one_leaf_change(fx: &Fixture) -> PathBuf {
    let new = fx.store_dir.join(HELLO_PATH.replacen("1d5s", "2d5s", 1));
    let _ = fs::remove_dir_all(&new);
    let status = Command::new("cp")
        .arg("-a")
        .arg(fx.store_dir.join(HELLO_PATH))
        .arg(&new)
        .status()
        .unwrap();
    assert!(status.success());
    fs::write(new.join("share/changed.txt"), "a rebuilt leaf\n").unwrap();
    let mut conf: Value = serde_json::from_slice(&fs::read(&fx.conf).unwrap()).unwrap();
    conf["store_layers"][1] = serde_json::json!([new]);
    let path = fx.root.join("changed.json");
    fs::write(&path, serde_json::to_vec(&conf).unwrap()).unwrap();
    path
}

fn image_id(fx: &Fixture, cache: &Path) -> String {
    let out = ok(stream_conf(&fx.conf, cache, &["-q"]));
    format!("sha256:{}", Image::parse(&out.stdout).id())
}

#[test]
fn push_skips_what_the_registry_has() {
    if !registry_support::have("docker-registry") {
        skipped("push_skips_what_the_registry_has", "no docker-registry");
        return;
    }
    let Some(fx) = Fixture::build("push") else {
        return;
    };
    let cache = fx.root.join("cache");
    let id = image_id(&fx, &cache);
    let reg = Registry::start(Setup::default());
    let r = format!("{}/sli/app:v1", reg.host());
    let digest_file = fx.root.join("digest");
    let first = ok(stream_conf(
        &fx.conf,
        &cache,
        &[
            "--push",
            &r,
            "--push",
            &format!("{}/sli/app:v2", reg.host()),
            "--digest-file",
            digest_file.to_str().unwrap(),
            "-v",
        ],
    ));
    let printed = String::from_utf8(first.stdout.clone()).unwrap();
    let digest = fs::read_to_string(&digest_file).unwrap().trim().to_owned();
    assert_eq!(
        printed,
        format!("{r}@{digest}\n{}/sli/app:v2@{digest}\n", reg.host())
    );
    assert!(store_bytes_read(&first) > 0);
    assert_eq!(reg.uploads(), 4, "3 layers and the config");

    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{r}"),
    ]));
    let manifest: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(manifest["config"]["digest"], id.as_str());
    assert_eq!(format!("sha256:{}", sha256_hex(raw.as_bytes())), digest);
    for l in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            l["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
    }

    // Unchanged: HEADs only, no store byte read.
    let again = ok(stream_conf(&fx.conf, &cache, &["--push", &r, "-v"]));
    assert_eq!(store_bytes_read(&again), 0);
    assert_eq!(reg.uploads(), 4, "a second push uploads nothing");
    assert_eq!(
        String::from_utf8(again.stdout).unwrap(),
        format!("{r}@{digest}\n")
    );

    // One leaf changed: that layer and the config.
    let changed = one_leaf_change(&fx);
    ok(stream_conf(&changed, &cache, &["--push", &r]));
    assert_eq!(reg.uploads(), 6, "one new store layer and the config");

    // The same image to a new tag: no tag holds a manifest, but the cache
    // remembers the one just pushed; fetched by digest, it spares every HEAD.
    let heads = reg.requests("\"HEAD /v2/sli/app/blobs/");
    let v3 = ok(stream_conf(
        &changed,
        &cache,
        &["--push", &format!("{}/sli/app:v3", reg.host()), "-v"],
    ));
    assert!(
        stderr(&v3).contains(&format!("{}/sli/app@sha256:", reg.host()))
            && stderr(&v3).contains("holds manifest"),
        "{}",
        stderr(&v3)
    );
    assert_eq!(reg.requests("\"HEAD /v2/sli/app/blobs/"), heads);
    assert_eq!(reg.uploads(), 6);

    // A cold runner with the digests file reads no store file.
    let digests = fx.root.join("digests.json");
    ok(stream_conf(
        &changed,
        &cache,
        &["--digests-only", digests.to_str().unwrap()],
    ));
    let cold = ok(stream_conf(
        &changed,
        &cache,
        &[
            "--no-cache",
            "--digests",
            digests.to_str().unwrap(),
            "--push",
            &r,
            "-v",
        ],
    ));
    assert_eq!(store_bytes_read(&cold), 0);
    assert_eq!(reg.uploads(), 6);

    if tool_works("docker", &["info"]) {
        let _rmi = Cleanup(vec!["docker".into(), "rmi".into(), "-f".into(), r.clone()]);
        run(Command::new("docker").args(["pull", "-q", &r]));
        let got = run(Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", &r]));
        assert_ne!(got.trim(), id, "the changed image was pushed last");
        let ran = run(Command::new("docker").args(["run", "--rm", "--network=none", &r]));
        assert_eq!(ran, "cmd-ok hello-env\n");
    } else {
        skipped("push_skips_what_the_registry_has", "no docker daemon");
    }

    // Bad references and unreachable registries: one line each.
    one_line_error(
        &stream_conf(&fx.conf, &cache, &["--push", "Bad/Name:x"]),
        "upper-case",
    );
    let closed = format!("127.0.0.1:{}/x:y", registry_support::server::free_port());
    one_line_error(
        &stream_conf(&fx.conf, &cache, &["--push", &closed]),
        &closed[..closed.len() - 4],
    );
    fx.cleanup();
}

/// A tar of one regular file `name` holding `data` (mtime 0, root-owned).
fn one_file_tar(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, name, data).unwrap();
    b.into_inner().unwrap()
}

/// Pseudo-random (incompressible) bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A docker-archive base image at `path`: a plain layer and a layer
/// stored gzip-compressed (which passes through as stored); returns the
/// bytes of both layer members.
fn base_image(path: &Path) -> u64 {
    use std::io::Write;
    let plain = one_file_tar("etc/base-plain", &noise(1, 300_000));
    let inner = one_file_tar("etc/base-gz", &noise(2, 200_000));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&inner).unwrap();
    let gz = gz.finish().unwrap();
    let diff_ids = [sha256_hex(&plain), sha256_hex(&inner)].map(|h| format!("sha256:{h}"));
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": host_architecture(), "os": "linux",
        "config": {"Env": ["BASE=1"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": "config.json", "RepoTags": ["base:1"],
        "Layers": ["plain/layer.tar", "gz/layer.tar"],
    }]))
    .unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("plain/layer.tar", &plain),
        ("gz/layer.tar", &gz),
        ("config.json", &config),
        ("manifest.json", &manifest),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    fs::write(path, b.into_inner().unwrap()).unwrap();
    (plain.len() + gz.len()) as u64
}

/// What `-v` says was read to index the base image and read its config.
fn index_bytes_read(out: &Output) -> u64 {
    let err = stderr(out);
    err.lines()
        .find_map(|l| l.split("(and ").nth(1))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no index bytes: {err}"))
}

/// The layer media types of the manifest at `reference`.
fn layer_media_types(reference: &str) -> Vec<String> {
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]));
    let m: Value = serde_json::from_str(&raw).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_owned())
        .collect()
}

/// `fromImage` with a `--digests` file: base layers have entries like any
/// other, so a cold runner pushing an unchanged image reads no byte of the
/// base image's layers (only its index and config); a base layer stored
/// gzip-compressed keeps its codec in the file and in the manifest, also
/// when zstd is asked for.
#[test]
fn push_from_image_with_digests_reads_no_base_layer() {
    if !registry_support::have("docker-registry") {
        skipped(
            "push_from_image_with_digests_reads_no_base_layer",
            "no docker-registry",
        );
        return;
    }
    let Some(fx) = Fixture::build("push-base") else {
        return;
    };
    let base = fx.root.join("base.tar");
    let base_layer_bytes = base_image(&base);
    let mut conf: Value = serde_json::from_slice(&fs::read(&fx.conf).unwrap()).unwrap();
    conf["from_image"] = serde_json::json!(base);
    let conf_path = fx.root.join("with-base.json");
    fs::write(&conf_path, serde_json::to_vec(&conf).unwrap()).unwrap();
    let cache = fx.root.join("cache");
    let reg = Registry::start(Setup::default());
    let gzip = format!("{}/sli/base:gzip", reg.host());
    let zstd = format!("{}/sli/base:zstd", reg.host());

    let first = ok(stream_conf(&conf_path, &cache, &["--push", &gzip, "-v"]));
    assert!(
        store_bytes_read(&first) >= base_layer_bytes,
        "base layers count as store reads: {}",
        stderr(&first)
    );
    assert_eq!(reg.uploads(), 6, "2 base + 3 own layers and the config");
    let pushed = String::from_utf8(first.stdout).unwrap();
    assert_eq!(
        layer_media_types(&gzip),
        vec!["application/vnd.oci.image.layer.v1.tar+gzip"; 5]
    );

    for (reference, codec) in [(&gzip, "gzip"), (&zstd, "zstd")] {
        let digests = fx.root.join(format!("digests-{codec}.json"));
        let c = ["--layer-compression", codec];
        if codec == "zstd" {
            ok(stream_conf(
                &conf_path,
                &cache,
                &[&c[..], &["--push", reference]].concat(),
            ));
        }
        ok(stream_conf(
            &conf_path,
            &cache,
            &[&c[..], &["--digests-only", digests.to_str().unwrap()]].concat(),
        ));
        let file: Value = serde_json::from_slice(&fs::read(&digests).unwrap()).unwrap();
        let layers = file["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 5, "one entry per layer, base layers too");
        assert_eq!(layers[0].get("stored"), None, "the plain base layer");
        // Blobs we compress are keyed by our encoder, stored ones by codec.
        let key = match codec {
            "gzip" => "gzip-blocks-4",
            _ => "zstd-frames-1",
        };
        assert!(layers[0]["blobs"].get(key).is_some(), "{file}");
        assert_eq!(layers[1]["stored"], "gzip", "the gzip-stored base layer");
        assert_eq!(
            layers[1]["blobs"]
                .as_object()
                .unwrap()
                .keys()
                .collect::<Vec<_>>(),
            vec!["gzip"]
        );

        // A cold runner: no cache, the digests file; nothing uploaded, no
        // store byte read, base layers included.
        let uploads = reg.uploads();
        let cold = ok(stream_conf(
            &conf_path,
            &fx.root.join(format!("cold-{codec}")),
            &[
                &c[..],
                &[
                    "--no-cache",
                    "--digests",
                    digests.to_str().unwrap(),
                    "--push",
                    reference,
                    "-v",
                ],
            ]
            .concat(),
        ));
        assert_eq!(store_bytes_read(&cold), 0, "{}", stderr(&cold));
        // The base image's index and config only: a few blocks per member.
        let index = index_bytes_read(&cold);
        assert!(
            index > 0 && index < 64 << 10,
            "{index} bytes read to index a base with {base_layer_bytes} bytes of layers"
        );
        assert_eq!(reg.uploads(), uploads, "an unchanged push uploads nothing");
        if codec == "gzip" {
            assert_eq!(String::from_utf8(cold.stdout).unwrap(), pushed);
        }
        let z = "application/vnd.oci.image.layer.v1.tar+zstd";
        let g = "application/vnd.oci.image.layer.v1.tar+gzip";
        let want = if codec == "zstd" {
            vec![z, g, z, z, z]
        } else {
            vec![g; 5]
        };
        assert_eq!(layer_media_types(reference), want);
    }

    // A repository lacking the base layers: named from the digests file,
    // then read (once) to upload them; the same image.
    let digests = fx.root.join("digests-gzip.json");
    let other = format!("{}/sli/other:gzip", reg.host());
    let fresh = ok(stream_conf(
        &conf_path,
        &fx.root.join("cold-fresh"),
        &[
            "--no-cache",
            "--digests",
            digests.to_str().unwrap(),
            "--push",
            &other,
            "-v",
        ],
    ));
    assert!(store_bytes_read(&fresh) >= base_layer_bytes);
    let digest_of = |out: &str| out.rsplit('@').next().unwrap().trim().to_owned();
    assert_eq!(
        digest_of(&String::from_utf8(fresh.stdout).unwrap()),
        digest_of(&pushed)
    );

    // A wrong blob digest for the gzip-stored base layer: caught when the
    // layer must be uploaded (its bytes are read then), one line.
    let mut file: Value = serde_json::from_slice(&fs::read(&digests).unwrap()).unwrap();
    file["layers"][1]["blobs"]["gzip"]["digest"] = format!("sha256:{}", "0".repeat(64)).into();
    let bad = fx.root.join("bad-digests.json");
    fs::write(&bad, serde_json::to_vec(&file).unwrap()).unwrap();
    let out = stream_conf(
        &conf_path,
        &fx.root.join("cold-bad"),
        &[
            "--no-cache",
            "--digests",
            bad.to_str().unwrap(),
            "--push",
            &format!("{}/sli/third:gzip", reg.host()),
        ],
    );
    one_line_error(&out, "base layer 2: the digests recorded for it");
    fx.cleanup();
}

#[test]
fn load_sends_only_what_docker_lacks() {
    if !tool_works("docker", &["info"]) {
        skipped("load_sends_only_what_docker_lacks", "no docker daemon");
        return;
    }
    let Some(fx) = Fixture::build("load") else {
        return;
    };
    let cache = fx.root.join("cache");
    let id = image_id(&fx, &cache);
    let tag = fx.tag.clone();
    let sibling = fx.tag.replace(":t", "-sibling:t");
    let changed_tag = fx.tag.replace(":t", "-changed:t");
    let _rmi = Cleanup(vec![
        "docker".into(),
        "rmi".into(),
        "-f".into(),
        tag.clone(),
        sibling.clone(),
        changed_tag.clone(),
    ]);
    let fresh = ok(stream_conf(&fx.conf, &cache, &["--load"]));
    assert_eq!(
        String::from_utf8_lossy(&fresh.stdout),
        format!("Loaded image: {tag}\n")
    );
    assert_eq!(new_layers(&fresh), 3);
    let got = run(Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", &tag]));
    assert_eq!(got.trim(), id, "same image ID as the docker-archive");

    let reload = ok(stream_conf(&fx.conf, &cache, &["--load", "docker", "-v"]));
    assert_eq!(new_layers(&reload), 0, "an unchanged reload sends no layer");
    assert_eq!(store_bytes_read(&reload), 0);

    let changed = one_leaf_change(&fx);
    let one = ok(stream_conf(
        &changed,
        &cache,
        &["--load", "-t", &changed_tag],
    ));
    // Docker keys a layer by its chain (all layers below it), so the
    // changed layer and the one above it (customisation) are sent; the
    // busybox layer below is not.
    assert_eq!(new_layers(&one), 2, "only the changed chain is sent");
    let ran = run(Command::new("docker").args(["run", "--rm", "--network=none", &changed_tag]));
    assert_eq!(ran, "cmd-ok hello-env\n");

    // The image removed while a sibling keeps its layers: nothing to send
    // but the tag comes back with the same ID.
    ok(stream_conf(&fx.conf, &cache, &["--load", "-t", &sibling]));
    run(Command::new("docker").args(["rmi", &tag]));
    let back = ok(stream_conf(&fx.conf, &cache, &["--load"]));
    assert_eq!(new_layers(&back), 0);
    let got = run(Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", &tag]));
    assert_eq!(got.trim(), id);

    // No daemon: one line.
    let out = Command::new(exe())
        .arg(&fx.conf)
        .arg("--load")
        .env(
            "DOCKER_HOST",
            format!("unix://{}/no.sock", fx.root.display()),
        )
        .output()
        .unwrap();
    one_line_error(&out, "no.sock");
    fx.cleanup();
}

#[test]
fn load_into_podman() {
    if !tool_works("podman", &["--version"]) {
        skipped("load_into_podman", "no podman");
        return;
    }
    let Some(fx) = Fixture::build("load-podman") else {
        return;
    };
    let cache = fx.root.join("cache");
    let id = image_id(&fx, &cache);
    let out = ok(stream_conf(&fx.conf, &cache, &["--load", "podman"]));
    let name = format!("localhost/{}", fx.tag);
    let _rmi = Cleanup(vec![
        "podman".into(),
        "rmi".into(),
        "-f".into(),
        name.clone(),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Loaded image"),
        "{out:?}"
    );
    let got = run(Command::new("podman").args(["image", "inspect", "-f", "{{.Id}}", &name]));
    assert_eq!(format!("sha256:{}", got.trim()), id);
    fx.cleanup();
}
