//! The executable's `--push` (issue 8) and `--load` (issue 9) end to end,
//! on the interop fixture (busybox + a script, runnable):
//!
//! - push to Debian's `docker-registry` on 127.0.0.1: skopeo sees our image
//!   ID and gzip layers; a second push uploads nothing and reads no store
//!   byte; a one-leaf change uploads exactly that layer and the config; a
//!   cold cache with a `--digests` file reads no store file; Docker pulls
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
