//! Interop: the images we stream are accepted by the tools users feed them
//! to (issue 2, item 10) — `docker load` + `docker run`, `podman load`,
//! containerd's `ctr images import`, `skopeo inspect`/`copy`, and `umoci
//! unpack` of the copied OCI image; plain, gzip and zstd archives.
//!
//! The fixture is the smallest runnable Nix-style image: a store path holding
//! Debian's static busybox, a second store path with a script, a long
//! (PAX-named) file and a UTF-8 name, and a customisation layer in nixpkgs'
//! form (`layer.tar` + `checksum`) that adds `/bin/sh` → busybox. The conf is
//! nixpkgs' `store_layers` form, as `streamLayeredImage` writes it, except in
//! `docker_runs_graph_layered_image`, which uses our `layering` (graph) form
//! with a closureInfo `registration`, as `nix/stream-layered-image.nix` does.
//!
//! Tools that are missing (no docker daemon, no podman, …) make their test
//! print a loud `SKIPPED (…)` line on stderr, past the test harness's
//! capture, and pass. `SLI_EXE=PATH` runs the same checks against another
//! streamer.

use std::fs;
use std::io::Read;
use std::process::Command;

use serde_json::Value;

#[path = "support/interop.rs"]
mod support;
use support::*;

// ---------------------------------------------------------------------------
// Tests

/// The archive is a well-formed docker-archive whose content checks out:
/// each `rootfs.diff_ids` entry is the sha256 of its `layer.tar`, and the
/// tag is the conf's. (Outer member names are free: docker, podman and skopeo
/// follow `manifest.json`, so the streamer may name layers before hashing.)
#[test]
fn archive_is_content_addressed() {
    let Some(fx) = Fixture::build("archive") else {
        return;
    };
    let archive = fx.stream_to_memory();
    let image = Image::parse(&archive);
    assert_eq!(image.repo_tags, vec![fx.tag.clone()]);
    // Two store layers and the customisation layer, in conf order.
    assert_eq!(image.layers.len(), 3, "layers: {:?}", image.layer_names);
    assert_eq!(image.diff_ids.len(), 3, "diff_ids: {:?}", image.diff_ids);
    for (i, bytes) in image.layers.iter().enumerate() {
        let digest = sha256_hex(bytes);
        assert_eq!(image.diff_ids[i], format!("sha256:{digest}"), "layer {i}");
    }
    let custom = fs::read(fx.root.join("customisation/layer.tar")).unwrap();
    assert_eq!(
        image.layers[2], custom,
        "customisation layer is copied verbatim"
    );
    fx.cleanup();
}

/// `exe conf -t TAG | docker load` (the wrapper's `-t` overrides the conf's
/// tag, as in nixpkgs) loads the image under TAG with our config's sha256 as
/// its ID and our diff_ids, and it runs: `/bin/sh` from
/// the customisation layer, busybox from the store layer, `Cmd` and `Env`
/// from the conf, long and UTF-8 names intact.
#[test]
fn docker_loads_and_runs() {
    if !tool_works("docker", &["info"]) {
        skipped("docker_loads_and_runs", "no docker daemon");
        return;
    }
    let Some(fx) = Fixture::build("docker") else {
        return;
    };
    let tag = fx.tag.replace(":t", "-cli:t");
    let _rmi = Cleanup(vec![
        "docker".into(),
        "rmi".into(),
        "-f".into(),
        tag.clone(),
    ]);
    let (archive, loaded) = fx.stream_into(&["-t", &tag], Command::new("docker").arg("load"));
    assert!(
        loaded.contains(&format!("Loaded image: {tag}")),
        "docker load said: {loaded}"
    );
    let image = Image::parse(&archive);
    assert_eq!(image.repo_tags, vec![tag.clone()], "-t overrides the tag");
    let id = run(Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", &tag]));
    assert_eq!(id.trim(), format!("sha256:{}", image.id()), "image ID");
    let layers = run(Command::new("docker").args([
        "image",
        "inspect",
        "-f",
        "{{json .RootFS.Layers}}",
        &tag,
    ]));
    assert_eq!(json(&layers), Value::from(image.diff_ids.clone()));

    let docker_run = |args: &[&str]| {
        run(Command::new("docker")
            .args(["run", "--rm", "--network=none", &tag])
            .args(args))
    };
    assert_eq!(docker_run(&["/bin/sh", "-c", "echo ok"]), "ok\n");
    assert_eq!(
        docker_run(&[]),
        "cmd-ok hello-env\n",
        "Cmd and Env from conf"
    );
    let hello = format!("{}/{HELLO_PATH}/bin/hello", fx.store_dir.display());
    assert_eq!(docker_run(&[&hello]), "hello from the store\n");
    let long = format!("{}/{HELLO_PATH}/{LONG_NAME}", fx.store_dir.display());
    assert_eq!(
        docker_run(&["/bin/sh", "-c", &format!("cat '{long}'")]),
        LONG_TEXT
    );
    let utf8 = format!("{}/{HELLO_PATH}/{UTF8_NAME}", fx.store_dir.display());
    assert_eq!(
        docker_run(&["/bin/sh", "-c", &format!("cat '{utf8}'")]),
        "utf-8\n"
    );
    fx.cleanup();
}

/// A conf in our graph form (`layering`: layers decided at stream time from
/// closureInfo's registration) gives an image docker loads and runs.
#[test]
fn docker_runs_graph_layered_image() {
    if !tool_works("docker", &["info"]) {
        skipped("docker_runs_graph_layered_image", "no docker daemon");
        return;
    }
    let Some(fx) = Fixture::build_with("graph", Layering::Graph) else {
        return;
    };
    let _rmi = Cleanup(vec![
        "docker".into(),
        "rmi".into(),
        "-f".into(),
        fx.tag.clone(),
    ]);
    let (archive, loaded) = fx.stream_into(&[], Command::new("docker").arg("load"));
    assert!(
        loaded.contains(&format!("Loaded image: {}", fx.tag)),
        "docker load said: {loaded}"
    );
    let image = Image::parse(&archive);
    let id = run(Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", &fx.tag]));
    assert_eq!(id.trim(), format!("sha256:{}", image.id()), "image ID");
    let hello = format!("{}/{HELLO_PATH}/bin/hello", fx.store_dir.display());
    let out = run(Command::new("docker").args(["run", "--rm", "--network=none", &fx.tag, &hello]));
    assert_eq!(out, "hello from the store\n");
    fx.cleanup();
}

/// `podman load` accepts the archive and keeps our image ID and diff_ids.
#[test]
fn podman_loads() {
    if !tool_works("podman", &["--version"]) {
        skipped("podman_loads", "no podman");
        return;
    }
    let Some(fx) = Fixture::build("podman") else {
        return;
    };
    let archive_path = fx.root.join("image.tar");
    fs::write(&archive_path, fx.stream_to_memory()).unwrap();
    let image = Image::parse(&fs::read(&archive_path).unwrap());
    let (loaded, _rmi) = podman_load(&archive_path);
    assert!(
        loaded.ends_with(&fx.tag),
        "podman loaded {loaded}, want {}",
        fx.tag
    );
    let id = run(Command::new("podman").args(["image", "inspect", "--format", "{{.Id}}", &loaded]));
    assert_eq!(id.trim(), image.id(), "image ID");
    let layers = run(Command::new("podman").args([
        "image",
        "inspect",
        "--format",
        "{{json .RootFS.Layers}}",
        &loaded,
    ]));
    assert_eq!(json(&layers), Value::from(image.diff_ids.clone()));
    fx.cleanup();
}

/// buildLayeredImage's default `compressor = "gz"`: `-o FILE --compress gz`
/// gives a file `docker load` takes, with the image ID of its tar content.
#[test]
fn docker_loads_gzip_archive() {
    if !tool_works("docker", &["info"]) {
        skipped("docker_loads_gzip_archive", "no docker daemon");
        return;
    }
    let Some(fx) = Fixture::build("gz") else {
        return;
    };
    let path = fx.root.join("image.tar.gz");
    fx.stream_to_path(&["--compress", "gz"], &path);
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(&path).unwrap())
        .read_to_end(&mut tar)
        .unwrap();
    let image = Image::parse(&tar);
    let _rmi = Cleanup(vec![
        "docker".into(),
        "rmi".into(),
        "-f".into(),
        fx.tag.clone(),
    ]);
    let loaded = run(Command::new("docker").arg("load").arg("-i").arg(&path));
    assert!(
        loaded.contains(&format!("Loaded image: {}", fx.tag)),
        "{loaded}"
    );
    let id = run(Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", &fx.tag]));
    assert_eq!(id.trim(), format!("sha256:{}", image.id()), "image ID");
    fx.cleanup();
}

/// `compressor = "zstd"`: podman loads the zstd archive (docker 20.10 and
/// podman 4.3 differ: docker reads gzip but not zstd, podman the reverse).
#[test]
fn podman_loads_zstd_archive() {
    if !tool_works("podman", &["--version"]) {
        skipped("podman_loads_zstd_archive", "no podman");
        return;
    }
    let Some(fx) = Fixture::build("zstd") else {
        return;
    };
    let path = fx.root.join("image.tar.zst");
    fx.stream_to_path(&["--compress", "zstd"], &path);
    let tar = zstd::decode_all(fs::File::open(&path).unwrap()).unwrap();
    let image = Image::parse(&tar);
    let (loaded, _rmi) = podman_load(&path);
    let id = run(Command::new("podman").args(["image", "inspect", "--format", "{{.Id}}", &loaded]));
    assert_eq!(id.trim(), image.id(), "image ID");
    fx.cleanup();
}

/// containerd's importer (`ctr images import`, what `k3s ctr` and kind's
/// `load image-archive` use) takes the archive, unpacks its layers (checking
/// them against the diff_ids) and keeps our config as the image config.
#[test]
fn containerd_imports() {
    let Some(address) = containerd_address() else {
        skipped("containerd_imports", "no ctr or no containerd socket");
        return;
    };
    let Some(fx) = Fixture::build("ctr") else {
        return;
    };
    let archive_path = fx.root.join("image.tar");
    fs::write(&archive_path, fx.stream_to_memory()).unwrap();
    let image = Image::parse(&fs::read(&archive_path).unwrap());
    // A namespace of our own, emptied and removed afterwards.
    let ns = format!("sli-interop-{}", std::process::id());
    let ctr = |args: &[&str]| {
        let mut cmd = Command::new("ctr");
        cmd.args(["-a", &address, "-n", &ns]).args(args);
        cmd
    };
    let cleanup = format!(
        "ctr -a {address} -n {ns} images ls -q | xargs -r ctr -a {address} -n {ns} images rm --sync; \
         ctr -a {address} -n {ns} content ls -q | xargs -r ctr -a {address} -n {ns} content rm; \
         ctr -a {address} namespaces rm {ns}"
    );
    let _rm = Cleanup(vec!["sh".into(), "-c".into(), cleanup]);
    run(ctr(&["images", "import"]).arg(&archive_path));
    let listed = run(&mut ctr(&["images", "ls"]));
    let name = format!("docker.io/library/{}", fx.tag);
    let line = listed
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .unwrap_or_else(|| panic!("ctr lists no {name}:\n{listed}"));
    let manifest_digest = line
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in {line:?}"));
    let manifest = json(&run(&mut ctr(&["content", "get", manifest_digest])));
    assert_eq!(
        manifest["config"]["digest"],
        Value::from(format!("sha256:{}", image.id())),
        "config digest"
    );
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(3));
    fx.cleanup();
}

/// `skopeo inspect docker-archive:` reports our layers (count and digests),
/// and its raw config is byte-identical to ours.
#[test]
fn skopeo_inspects() {
    if !tool_works("skopeo", &["--version"]) {
        skipped("skopeo_inspects", "no skopeo");
        return;
    }
    let Some(fx) = Fixture::build("skopeo") else {
        return;
    };
    let archive_path = fx.root.join("image.tar");
    fs::write(&archive_path, fx.stream_to_memory()).unwrap();
    let image = Image::parse(&fs::read(&archive_path).unwrap());
    let transport = format!("docker-archive:{}", archive_path.display());
    let info = json(&run(Command::new("skopeo").args(["inspect", &transport])));
    assert_eq!(
        info["Layers"],
        Value::from(image.diff_ids.clone()),
        "{info}"
    );
    assert_eq!(info["Architecture"], Value::from(host_architecture()));
    assert_eq!(info["Env"], serde_json::json!(["GREETING=hello-env"]));
    let raw = run_bytes(Command::new("skopeo").args(["inspect", "--raw", "--config", &transport]));
    assert_eq!(sha256_hex(&raw), image.id(), "skopeo's raw config is ours");
    fx.cleanup();
}

/// `skopeo copy` to an OCI layout, then `umoci unpack`: a third tar reader
/// (Go's) extracts the same files, links and modes we put in.
#[test]
fn skopeo_copy_then_umoci_unpack() {
    for tool in ["skopeo", "umoci"] {
        if !tool_works(tool, &["--version"]) {
            skipped("skopeo_copy_then_umoci_unpack", &format!("no {tool}"));
            return;
        }
    }
    let Some(fx) = Fixture::build("umoci") else {
        return;
    };
    let archive_path = fx.root.join("image.tar");
    fs::write(&archive_path, fx.stream_to_memory()).unwrap();
    let oci = fx.root.join("oci");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        &format!("docker-archive:{}", archive_path.display()),
        &format!("oci:{}:latest", oci.display()),
    ]));
    let bundle = fx.root.join("bundle");
    umoci_unpack(&format!("{}:latest", oci.display()), &bundle);
    check_rootfs(&fx, &bundle.join("rootfs"));
    fx.cleanup();
}
