//! Multi-platform images (issue 11): several confs, one per platform, give
//! one OCI image index, on the interop fixture (busybox + a script). The
//! second conf is the same closure recorded as another platform (arm64/v8
//! on an amd64 machine): its binaries need not run, and every layer is
//! shared, which is what "shared layers are written/uploaded once" checks.
//!
//! - `--oci-dir`: skopeo sees the index with both platforms, copies both
//!   (`copy --all`), and reads each one; umoci unpacks each platform;
//!   output is deterministic;
//! - `--format oci|dual`: the same layout as one tar, deterministic; `dual`
//!   lists the host platform's image for `docker load`;
//! - `--push`: the index in the loopback registry (OCI and Docker manifest
//!   list), shared layers uploaded once, `docker pull --platform` runs it;
//! - bad input: one line each, nothing written.

mod registry_support;
#[path = "support/interop.rs"]
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use registry_support::server::{Registry, Setup};
use serde_json::Value;
use support::*;

/// The host platform and the other one the second conf is recorded as.
fn platforms() -> (String, String, Option<&'static str>) {
    let host = format!("linux/{}", host_architecture());
    if host_architecture() == "arm64" {
        (host, "amd64".into(), None)
    } else {
        (host, "arm64".into(), Some("v8"))
    }
}

/// The fixture's conf recorded as the other platform, at `name`.
fn other_conf(fx: &Fixture, name: &str, edit: impl Fn(&mut Value)) -> PathBuf {
    let (_, arch, variant) = platforms();
    let mut conf: Value = serde_json::from_slice(&fs::read(&fx.conf).unwrap()).unwrap();
    conf["architecture"] = Value::from(arch);
    conf["variant"] = variant.map_or(Value::Null, Value::from);
    edit(&mut conf);
    let path = fx.root.join(name);
    fs::write(&path, serde_json::to_vec_pretty(&conf).unwrap()).unwrap();
    path
}

fn other_name() -> String {
    let (_, arch, variant) = platforms();
    match variant {
        Some(v) => format!("linux/{arch}/{v}"),
        None => format!("linux/{arch}"),
    }
}

fn stream(confs: &[&Path], args: &[&str]) -> Output {
    Command::new(exe())
        .args(confs)
        .arg("--no-cache")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "streamer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The printed `PLATFORM sha256:…` lines and the index digest.
fn printed(text: &str) -> (Vec<(String, String)>, String) {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "two platforms and the index: {text}");
    let platforms = lines[..2]
        .iter()
        .map(|l| {
            let (p, d) = l.split_once(' ').unwrap();
            assert!(d.starts_with("sha256:"), "{l}");
            (p.to_owned(), d.to_owned())
        })
        .collect();
    let index = lines[2].rsplit(['@', ' ']).next().unwrap().to_owned();
    assert!(index.starts_with("sha256:"), "{text}");
    (platforms, index)
}

/// Checks an index document names both platforms' manifests as printed.
fn check_index(raw: &str, media_type: &str, manifests: &[(String, String)]) {
    check_platforms(raw, media_type, manifests, true);
}

/// Checks an index document names both platforms (and, with `digests`,
/// the printed manifests).
fn check_platforms(raw: &str, media_type: &str, manifests: &[(String, String)], digests: bool) {
    let index = json(raw);
    assert_eq!(index["mediaType"], media_type, "{raw}");
    let list = index["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{raw}");
    for (entry, (platform, digest)) in list.iter().zip(manifests) {
        let p = &entry["platform"];
        let mut name = format!(
            "{}/{}",
            p["os"].as_str().unwrap(),
            p["architecture"].as_str().unwrap()
        );
        if let Some(v) = p["variant"].as_str() {
            name = format!("{name}/{v}");
        }
        assert_eq!(&name, platform);
        if digests {
            assert_eq!(entry["digest"], digest.as_str());
        }
    }
}

fn one_line_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "exit 1: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(err.contains(needle), "names {needle:?}: {err}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
}

fn have(tool: &str) -> bool {
    tool_works(tool, &["--version"])
}

#[test]
fn index_into_an_oci_dir() {
    let Some(fx) = Fixture::build("multi-dir") else {
        return;
    };
    let arm = other_conf(&fx, "other.json", |_| {});
    let dir = fx.root.join("layout");
    let out = ok(stream(
        &[&fx.conf, &arm],
        &["--oci-dir", dir.to_str().unwrap()],
    ));
    let (manifests, index) = printed(&stdout(&out));
    let (host, ..) = platforms();
    assert_eq!(manifests[0].0, host);
    assert_eq!(manifests[1].0, other_name());
    // 3 shared layers, 2 configs, 2 manifests, the index: each blob once.
    let blobs = fs::read_dir(dir.join("blobs/sha256")).unwrap().count();
    assert_eq!(blobs, 8, "shared layers are written once");
    let top = json(&fs::read_to_string(dir.join("index.json")).unwrap());
    assert_eq!(
        top["manifests"][0]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(top["manifests"][0]["digest"], index.as_str());

    // The same inputs give the same bytes.
    let again = fx.root.join("layout-again");
    let out2 = ok(stream(
        &[&fx.conf, &arm],
        &["--oci-dir", again.to_str().unwrap()],
    ));
    assert_eq!(stdout(&out2), stdout(&out));
    assert_eq!(
        fs::read(dir.join("index.json")).unwrap(),
        fs::read(again.join("index.json")).unwrap()
    );

    let tag = fx.tag.rsplit(':').next().unwrap().to_owned();
    if !have("skopeo") {
        skipped("index_into_an_oci_dir", "no skopeo");
        fx.cleanup();
        return;
    }
    let at = |d: &Path, t: &str| format!("oci:{}:{t}", d.display());
    let raw = run(Command::new("skopeo").args(["inspect", "--raw", &at(&dir, &tag)]));
    check_index(&raw, "application/vnd.oci.image.index.v1+json", &manifests);
    assert_eq!(format!("sha256:{}", sha256_hex(raw.as_bytes())), index);

    // copy --all takes both platforms (skopeo compresses the
    // uncompressed layers on the way, so the manifests are new ones).
    let other = fx.root.join("copied");
    run(Command::new("skopeo").args(["copy", "--all", &at(&dir, &tag), &at(&other, &tag)]));
    let copied = run(Command::new("skopeo").args(["inspect", "--raw", &at(&other, &tag)]));
    check_platforms(
        &copied,
        "application/vnd.oci.image.index.v1+json",
        &manifests,
        false,
    );
    for entry in json(&copied)["manifests"].as_array().unwrap() {
        let d = entry["digest"].as_str().unwrap();
        let blob = other
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"));
        assert!(blob.exists(), "{d} copied");
    }

    // Each platform on its own: skopeo picks it from the index (as a tag
    // of its own, which umoci needs: it resolves a tag to one manifest).
    let (_, arch, variant) = platforms();
    let picks = [
        (host_architecture().to_owned(), None, "host"),
        (arch, variant, "other"),
    ];
    for ((a, v, name), (_, digest)) in picks.iter().zip(&manifests) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["--override-arch", a, "--override-os", "linux"]);
        if let Some(v) = v {
            cmd.args(["--override-variant", v]);
        }
        run(cmd.args(["copy", &at(&dir, &tag), &at(&dir, name)]));
        let raw = run(Command::new("skopeo").args(["inspect", "--raw", &at(&dir, name)]));
        assert_eq!(
            &format!("sha256:{}", sha256_hex(raw.as_bytes())),
            digest,
            "{name}: the platform's own manifest, unchanged"
        );
        let config = run(Command::new("skopeo").args(["inspect", "--config", &at(&dir, name)]));
        assert_eq!(json(&config)["architecture"], a.as_str());
        if have("umoci") {
            let bundle = fx.root.join(format!("bundle-{name}"));
            let mut cmd = Command::new("umoci");
            cmd.arg("unpack");
            if !is_root() {
                cmd.arg("--rootless");
            }
            run(cmd
                .arg("--image")
                .arg(format!("{}:{name}", dir.display()))
                .arg(&bundle));
            assert!(bundle.join("rootfs/bin/sh").exists(), "{name} unpacked");
        } else {
            skipped("index_into_an_oci_dir", "no umoci");
        }
    }
    fx.cleanup();
}

#[test]
fn index_into_archives() {
    let Some(fx) = Fixture::build("multi-archive") else {
        return;
    };
    let arm = other_conf(&fx, "other.json", |_| {});
    let oci = fx.root.join("multi.tar");
    let out = ok(stream(
        &[&fx.conf, &arm],
        &["--format", "oci", "-o", oci.to_str().unwrap()],
    ));
    let (manifests, index) = printed(&stdout(&out));
    let again = fx.root.join("again.tar");
    let out2 = ok(stream(
        &[&fx.conf, &arm],
        &["--format", "oci", "-o", again.to_str().unwrap()],
    ));
    assert_eq!(stdout(&out2), stdout(&out));
    assert_eq!(
        fs::read(&oci).unwrap(),
        fs::read(&again).unwrap(),
        "deterministic"
    );

    // To stdout: the archive only; the digests go to stderr.
    let piped = ok(stream(&[&fx.conf, &arm], &["--format", "oci"]));
    assert_eq!(piped.stdout, fs::read(&oci).unwrap());
    assert!(String::from_utf8_lossy(&piped.stderr).contains(&index));

    let dual = fx.root.join("dual.tar");
    ok(stream(
        &[&fx.conf, &arm],
        &["--format", "dual", "-o", dual.to_str().unwrap()],
    ));
    let list = run(Command::new("tar")
        .arg("-xOf")
        .arg(&dual)
        .arg("manifest.json"));
    let docker = json(&list);
    assert_eq!(
        docker.as_array().unwrap().len(),
        1,
        "the host platform only"
    );
    assert_eq!(docker[0]["RepoTags"][0], fx.tag.as_str());
    let config_member = docker[0]["Config"].as_str().unwrap().to_owned();
    let config = run(Command::new("tar")
        .arg("-xOf")
        .arg(&dual)
        .arg(&config_member));
    assert_eq!(json(&config)["architecture"], host_architecture());

    if have("skopeo") {
        let tag = fx.tag.rsplit(':').next().unwrap().to_owned();
        let raw = run(Command::new("skopeo").args([
            "inspect",
            "--raw",
            &format!("oci-archive:{}:{tag}", oci.display()),
        ]));
        check_index(&raw, "application/vnd.oci.image.index.v1+json", &manifests);
        assert_eq!(format!("sha256:{}", sha256_hex(raw.as_bytes())), index);
    } else {
        skipped("index_into_archives", "no skopeo");
    }
    if tool_works("docker", &["info"]) {
        let _rmi = Cleanup(vec![
            "docker".into(),
            "rmi".into(),
            "-f".into(),
            fx.tag.clone(),
        ]);
        run(Command::new("docker").arg("load").arg("-i").arg(&dual));
        let ran = run(Command::new("docker").args(["run", "--rm", "--network=none", &fx.tag]));
        assert_eq!(ran, "cmd-ok hello-env\n");
    } else {
        skipped("index_into_archives", "no docker daemon");
    }
    fx.cleanup();
}

#[test]
fn index_pushed_to_a_registry() {
    if !registry_support::have("docker-registry") || !have("skopeo") {
        skipped("index_pushed_to_a_registry", "no docker-registry or skopeo");
        return;
    }
    let Some(fx) = Fixture::build("multi-push") else {
        return;
    };
    let arm = other_conf(&fx, "other.json", |_| {});
    let reg = Registry::start(Setup::default());
    let r = format!("{}/sli/multi:v1", reg.host());
    let digest_file = fx.root.join("digest");
    let out = ok(stream(
        &[&fx.conf, &arm],
        &["--push", &r, "--digest-file", digest_file.to_str().unwrap()],
    ));
    let text = stdout(&out);
    let (manifests, index) = printed(&text);
    assert!(text.ends_with(&format!("{r}@{index}\n")), "{text}");
    assert_eq!(fs::read_to_string(&digest_file).unwrap().trim(), index);
    assert_eq!(reg.uploads(), 5, "3 shared layers once, and 2 configs");
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{r}"),
    ]));
    check_index(&raw, "application/vnd.oci.image.index.v1+json", &manifests);
    assert_eq!(format!("sha256:{}", sha256_hex(raw.as_bytes())), index);

    // Docker's manifest list, to another tag: nothing new to upload.
    let r2 = format!("{}/sli/multi:docker", reg.host());
    let out = ok(stream(
        &[&fx.conf, &arm],
        &["--push", &r2, "--manifest-format", "docker"],
    ));
    let (docker_manifests, _) = printed(&stdout(&out));
    // --no-cache: nothing names the layers before reading them, so they
    // are uploaded again, but once for both platforms; the configs are
    // known bytes, found present.
    assert_eq!(reg.uploads(), 8, "3 shared layers once more, no config");
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{r2}"),
    ]));
    check_index(
        &raw,
        "application/vnd.docker.distribution.manifest.list.v2+json",
        &docker_manifests,
    );
    assert_eq!(
        json(&raw)["manifests"][0]["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    // With the digest cache, a second push names every layer before
    // reading it and finds it there: nothing is uploaded.
    let cache = fx.root.join("cache");
    let cached = |r: &str| {
        ok(Command::new(exe())
            .args([&fx.conf, &arm])
            .arg("--cache")
            .arg(&cache)
            .args(["--push", r])
            .stdin(Stdio::null())
            .output()
            .unwrap())
    };
    let r3 = format!("{}/sli/multi:cached", reg.host());
    cached(&r3);
    let before = reg.uploads();
    let again = cached(&r3);
    assert_eq!(reg.uploads(), before, "a warm second push uploads nothing");
    assert!(
        stdout(&again).ends_with(&format!("{r3}@{index}\n")),
        "same index"
    );

    // copy --all from the registry to a layout takes both platforms.
    let copied = fx.root.join("copied");
    run(Command::new("skopeo").args([
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{r}"),
        &format!("oci:{}:v1", copied.display()),
    ]));

    if tool_works("docker", &["info"]) {
        let (host, ..) = platforms();
        let _rmi = Cleanup(vec!["docker".into(), "rmi".into(), "-f".into(), r.clone()]);
        run(Command::new("docker").args(["pull", "-q", "--platform", &host, &r]));
        let ran = run(Command::new("docker").args(["run", "--rm", "--network=none", &r]));
        assert_eq!(ran, "cmd-ok hello-env\n");
    } else {
        skipped("index_pushed_to_a_registry", "no docker daemon");
    }
    fx.cleanup();
}

#[test]
fn bad_input_is_one_line_and_writes_nothing() {
    let Some(fx) = Fixture::build("multi-bad") else {
        return;
    };
    let arm = other_conf(&fx, "other.json", |_| {});
    let dir = fx.root.join("never");
    let d = dir.to_str().unwrap();
    let same = other_conf(&fx, "same.json", |c| {
        c["architecture"] = Value::from(host_architecture());
        c["variant"] = Value::Null;
    });
    one_line_error(
        &stream(&[&fx.conf, &same], &["--oci-dir", d]),
        "are both for platform",
    );
    let unknown = other_conf(&fx, "unknown.json", |c| {
        c["architecture"] = Value::from("aarch64");
        c["variant"] = Value::Null;
    });
    one_line_error(
        &stream(&[&fx.conf, &unknown], &["--oci-dir", d]),
        "OCI calls it arm64",
    );
    let tagged = other_conf(&fx, "tagged.json", |c| {
        c["repo_tag"] = Value::from("other:tag");
    });
    one_line_error(
        &stream(&[&fx.conf, &tagged], &["--oci-dir", d]),
        "different repo tags",
    );
    // -t settles the tag for every platform.
    ok(stream(
        &[&fx.conf, &tagged],
        &["--oci-dir", d, "-t", "one:tag"],
    ));
    fs::remove_dir_all(&dir).unwrap();
    let out_file = fx.root.join("never.tar");
    let o = out_file.to_str().unwrap();
    one_line_error(
        &stream(&[&fx.conf, &arm], &["-o", o]),
        "docker-archive holds one platform",
    );
    one_line_error(
        &stream(&[&fx.conf, &arm], &["--load"]),
        "--load takes one image",
    );
    let missing = fx.root.join("missing.json");
    let out = stream(&[&fx.conf, &missing], &["--oci-dir", d]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.json"));
    assert!(!dir.exists(), "nothing written");
    assert!(!out_file.exists(), "nothing written");
    fx.cleanup();
}
