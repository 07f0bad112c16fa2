//! Issue 9 against this machine's Docker (and podman): loading through
//! `stream_layered_image::daemon`, with the layer members the daemon
//! already has left out of the archive.
//!
//! The archives are streamed by the executable from small test stores (a
//! static busybox, a script, a customisation layer), then rewritten here to
//! drop chosen layer members (manifest and config kept), which is what the
//! image writer will do itself. Every store carries a marker unique to the
//! run, so no layer is shared with other tests or images on the daemon and
//! nothing else's `docker rmi` can change what ours expect.
//!
//! Images are named `sli-daemon-test-*` and exactly those are removed
//! afterwards (a guard runs even when an assertion fails). Without a
//! daemon (or podman), the test prints a loud `SKIPPED (…)` and passes.

mod common;

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde_json::Value;

use common::{sha256_hex, Scratch};
use stream_layered_image::daemon::{
    chain_ids, is_missing_layer, layers_to_omit, load_podman, Daemon,
};

const BUSYBOX: &str = "/bin/busybox";
const BUSYBOX_PATH: &str = "0c8bq2v4kjxj1gwzrxl5bzvmsc8yw3jx-busybox-static-1.35.0";
const HELLO_PATH: &str = "1d5s3v7h0kxbh2f9zq1n4m8c6p0w2r7y-hello-script-1.0";

// ---------------------------------------------------------------------------
// Tests

/// The whole incremental story on one daemon, in order: a fresh full load;
/// the chain IDs the daemon reports (checked against its layer database);
/// a sibling image sharing the two store layers; `docker rmi` of the image,
/// then a reload with the sibling's layers left out, which gives the same
/// `docker image inspect` as the full load and runs; an unchanged reload
/// with no layer member at all; a one-leaf change sending exactly the
/// changed layers.
#[test]
fn docker_incremental_load() {
    let Some(daemon) = docker("docker_incremental_load") else {
        return;
    };
    if let Some(why) = daemon.omit_blocker() {
        skipped("docker_incremental_load", why);
        return;
    }
    let Some(scratch) = test_store("incr") else {
        return;
    };
    let tag = image_name("incr");
    let sibling_tag = image_name("incr-sibling");
    let leaf_tag = image_name("incr-leaf");
    let _rmi = Rmi::docker(&[&tag, &sibling_tag, &leaf_tag]);

    let full = scratch.archive(&tag, Variant::default());
    let image = Image::parse(&full);
    let chains = chain_ids(&image.diff_ids);

    // 1. Fresh: every layer is new to the daemon.
    let known = daemon.known_chain_ids().unwrap();
    assert!(chains.iter().all(|c| !known.contains(c)), "fresh layers");
    let report = daemon.load(|out| Ok(out.write_all(&full)?)).unwrap();
    assert_eq!(report.images, std::slice::from_ref(&tag), "{report:?}");
    assert_eq!(report.layers_unpacked, 3, "{report:?}");
    let inspect_full = inspect(&tag);
    assert_eq!(inspect_full["Id"], Value::from(image.id()));

    // 2. The daemon now knows every chain of the image, and its layer
    // database (named by chain ID) agrees with our computation.
    let known = daemon.known_chain_ids().unwrap();
    for chain in &chains {
        assert!(known.contains(chain), "{chain} known");
    }
    if let Some(layerdb) = layerdb() {
        for chain in &chains {
            let hex = chain.trim_start_matches("sha256:");
            assert!(layerdb.join(hex).is_dir(), "layerdb has {chain}");
        }
    }

    // 3. A sibling: same store layers, another customisation layer.
    let sibling = scratch.archive(
        &sibling_tag,
        Variant {
            custom: "sibling",
            ..Variant::default()
        },
    );
    let sibling_image = Image::parse(&sibling);
    assert_eq!(sibling_image.diff_ids[..2], image.diff_ids[..2]);
    assert_ne!(sibling_image.diff_ids[2], image.diff_ids[2]);
    let report = daemon.load(|out| Ok(out.write_all(&sibling)?)).unwrap();
    assert_eq!(
        report.layers_unpacked, 1,
        "moby skips what it has: {report:?}"
    );

    // 4. rmi the image: its own top layer goes, the shared ones stay.
    docker_ok(&["rmi", &tag]);
    let wanted: HashSet<String> = chains.iter().cloned().collect();
    let known = daemon.known_among(&wanted).unwrap();
    assert_eq!(
        known,
        chains[..2].iter().cloned().collect(),
        "only the shared chains"
    );
    let diff_ids: Vec<Option<String>> = image.diff_ids.iter().cloned().map(Some).collect();
    let omit = layers_to_omit(&diff_ids, &known);
    assert_eq!(omit, [true, true, false]);
    let partial = omit_members(&full, &omit);
    assert_eq!(layer_members(&partial), 1, "one layer member sent");
    let report = daemon
        .load_incremental(&omit, |omit, out| {
            Ok(out.write_all(&omit_members(&full, omit))?)
        })
        .unwrap();
    assert_eq!(report.images, std::slice::from_ref(&tag), "{report:?}");
    assert_eq!(report.layers_unpacked, 1, "{report:?}");
    assert!(report.notes.is_empty(), "no resend: {report:?}");
    assert_eq!(
        comparable(inspect(&tag)),
        comparable(inspect_full.clone()),
        "same image"
    );
    assert_eq!(docker_run(&tag), "hello from the store\n");

    // 5. Unchanged reload: nothing to send but manifest and config.
    let started = Instant::now();
    let known = daemon.known_among(&wanted).unwrap();
    let omit = layers_to_omit(&diff_ids, &known);
    assert_eq!(omit, [true, true, true]);
    let empty = omit_members(&full, &omit);
    assert_eq!(layer_members(&empty), 0, "no layer member sent");
    let report = daemon.load(|out| Ok(out.write_all(&empty)?)).unwrap();
    let took = started.elapsed();
    assert_eq!(report.images, std::slice::from_ref(&tag));
    assert_eq!(report.layers_unpacked, 0);
    assert_eq!(comparable(inspect(&tag)), comparable(inspect_full));
    say(&format!(
        "unchanged reload (check + load of {} bytes): {:.3} s",
        empty.len(),
        took.as_secs_f64()
    ));

    // 6. A one-leaf change (the script): its layer and every layer above
    // it are new; only those are sent.
    let leaf = scratch.archive(
        &leaf_tag,
        Variant {
            hello: "changed",
            ..Variant::default()
        },
    );
    let leaf_image = Image::parse(&leaf);
    let leaf_ids: Vec<Option<String>> = leaf_image.diff_ids.iter().cloned().map(Some).collect();
    let leaf_chains: HashSet<String> = chain_ids(&leaf_image.diff_ids).into_iter().collect();
    let omit = layers_to_omit(&leaf_ids, &daemon.known_among(&leaf_chains).unwrap());
    // The customisation layer's bytes are unchanged, but not its chain.
    assert_eq!(leaf_image.diff_ids[2], image.diff_ids[2]);
    assert_eq!(omit, [true, false, false]);
    let report = daemon
        .load_incremental(&omit, |omit, out| {
            Ok(out.write_all(&omit_members(&leaf, omit))?)
        })
        .unwrap();
    assert_eq!(report.layers_unpacked, 2, "{report:?}");
    assert_eq!(inspect(&leaf_tag)["Id"], Value::from(leaf_image.id()));
    assert_eq!(docker_run(&leaf_tag), "hello, changed\n");
    scratch.done();
}

/// A layer the archive leaves out but the daemon does not have (what a
/// layer deleted between the check and the load looks like): moby fails on
/// the missing file, which the module types as `MissingLayer`; no image is
/// left behind; `load_incremental` resends every layer once and succeeds.
#[test]
fn docker_missing_layer_is_resent() {
    let Some(daemon) = docker("docker_missing_layer_is_resent") else {
        return;
    };
    let Some(scratch) = test_store("missing") else {
        return;
    };
    let tag = image_name("missing");
    let _rmi = Rmi::docker(&[&tag]);
    let full = scratch.archive(&tag, Variant::default());
    let image = Image::parse(&full);
    let omit = [true, true, false];

    let err = daemon
        .load(|out| Ok(out.write_all(&omit_members(&full, &omit))?))
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(is_missing_layer(&err), "{text}");
    say(&format!("missing layer: {text}"));
    assert!(text.starts_with("docker daemon at "), "{text}");
    assert!(!text.contains('\n'), "{text}");
    assert!(!image_exists(&tag), "no image after a failed load");
    assert!(!image_exists(&image.id()), "no image after a failed load");

    let mut sent = Vec::new();
    let report = daemon
        .load_incremental(&omit, |omit, out| {
            sent.push(omit.to_vec());
            Ok(out.write_all(&omit_members(&full, omit))?)
        })
        .unwrap();
    assert_eq!(sent, [omit.to_vec(), vec![false; 3]]);
    assert_eq!(report.images, std::slice::from_ref(&tag));
    assert_eq!(report.layers_unpacked, 3);
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("resent every layer")),
        "{report:?}"
    );
    assert_eq!(inspect(&tag)["Id"], Value::from(image.id()));
    assert_eq!(docker_run(&tag), "hello from the store\n");
    scratch.done();
}

/// Bad archives: the daemon's rejection is one line naming the daemon; a
/// producer failing half-way leaves no image.
#[test]
fn docker_rejections_are_one_line() {
    let Some(daemon) = docker("docker_rejections_are_one_line") else {
        return;
    };
    let Some(scratch) = test_store("reject") else {
        return;
    };
    let tag = image_name("reject");
    let _rmi = Rmi::docker(&[&tag]);

    let err = daemon
        .load(|out| Ok(out.write_all(&[b'x'; 4096])?))
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.starts_with(&format!(
            "docker daemon at {}: POST /images/load: ",
            daemon.host()
        )),
        "{text}"
    );
    assert!(text.contains("rejected the archive"), "{text}");
    say(&format!("garbage archive: {text}"));
    assert!(!text.contains('\n') && !is_missing_layer(&err), "{text}");

    // A config that does not match the layers (moby checks diff_ids).
    let full = scratch.archive(&tag, Variant::default());
    let swapped = swap_first_layers(&full);
    let err = daemon.load(|out| Ok(out.write_all(&swapped)?)).unwrap_err();
    assert!(
        format!("{err:#}").contains("rejected the archive"),
        "{err:#}"
    );
    say(&format!("swapped layers: {err:#}"));
    assert!(!image_exists(&tag));

    // The producer fails after half the archive: nothing is loaded.
    let err = daemon
        .load(|out| {
            out.write_all(&full[..full.len() / 2])?;
            anyhow::bail!("reading the store failed")
        })
        .unwrap_err();
    assert_eq!(format!("{err:#}"), "reading the store failed");
    assert!(!image_exists(&tag), "a truncated upload loads nothing");
    scratch.done();
}

/// `podman load` through `load_podman`: the image gets our ID.
#[test]
fn podman_loads_through_the_module() {
    if !works("podman", &["--version"]) {
        skipped("podman_loads_through_the_module", "no podman");
        return;
    }
    let Some(scratch) = test_store("podman") else {
        return;
    };
    let tag = image_name("podman");
    let full = scratch.archive(&tag, Variant::default());
    let image = Image::parse(&full);
    let started = Instant::now();
    let report = load_podman(|out| Ok(out.write_all(&full)?));
    let took = started.elapsed();
    // Remove what it loaded, by the names podman reported, before asserting.
    let names = report
        .as_ref()
        .map(|r| r.images.clone())
        .unwrap_or_default();
    let _rmi = Rmi(names
        .iter()
        .map(|n| vec!["podman".into(), "rmi".into(), "-f".into(), n.clone()])
        .collect());
    let report = report.unwrap();
    assert_eq!(report.images.len(), 1, "{report:?}");
    assert!(report.images[0].ends_with(&tag), "{report:?}");
    let id = output(Command::new("podman").args([
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        &report.images[0],
    ]));
    assert_eq!(id.trim(), image.id().trim_start_matches("sha256:"));
    say(&format!(
        "podman load of {} bytes: {:.3} s, {} layers stored",
        full.len(),
        took.as_secs_f64(),
        report.layers_unpacked
    ));
    scratch.done();
}

// ---------------------------------------------------------------------------
// The test store and its archives

/// A store (busybox, a script), a customisation layer per variant, and the
/// executable to stream them.
struct TestStore {
    scratch: Scratch,
    marker: String,
}

/// What differs between the images of one test.
#[derive(Clone, Copy)]
struct Variant {
    /// Text in the script's output (`hello from the store` by default).
    hello: &'static str,
    /// Text of `/etc/variant` in the customisation layer.
    custom: &'static str,
}

impl Default for Variant {
    fn default() -> Variant {
        Variant {
            hello: "",
            custom: "base",
        }
    }
}

/// A test store, or `None` (after SKIPPED) without a static busybox.
fn test_store(test: &str) -> Option<TestStore> {
    let static_busybox = fs::read(BUSYBOX).is_ok_and(|elf| !has_interpreter(&elf));
    if !static_busybox {
        skipped(test, "no static /bin/busybox; install busybox-static");
        return None;
    }
    Some(TestStore {
        scratch: Scratch::new(&format!("daemon-{test}")),
        marker: format!("{test}-{}-{}", std::process::id(), nanos()),
    })
}

impl TestStore {
    /// Streams the image for `variant` tagged `tag` into memory.
    fn archive(&self, tag: &str, variant: Variant) -> Vec<u8> {
        let name = format!("{}-{}", variant.hello, variant.custom);
        let root = self.scratch.path(&name);
        // One store for every variant: the store directory is part of
        // each member name, so it must not change for layers to match.
        let store = self.scratch.path("store");
        let busybox = store.join(BUSYBOX_PATH);
        fs::create_dir_all(busybox.join("bin")).unwrap();
        if !busybox.join("bin/busybox").exists() {
            fs::copy(BUSYBOX, busybox.join("bin/busybox")).unwrap();
        }
        fs::write(busybox.join("marker"), &self.marker).unwrap();
        let hello = store.join(HELLO_PATH);
        fs::create_dir_all(hello.join("bin")).unwrap();
        let greeting = if variant.hello.is_empty() {
            "hello from the store".to_owned()
        } else {
            format!("hello, {}", variant.hello)
        };
        let script = format!("#!/bin/sh\necho {greeting}\n# {}\n", self.marker);
        let _ = fs::remove_file(hello.join("bin/hello"));
        fs::write(hello.join("bin/hello"), script).unwrap();
        set_mode(&hello.join("bin/hello"), 0o555);
        let custom = root.join("customisation");
        write_customisation(
            &custom,
            &busybox.join("bin/busybox"),
            variant.custom,
            &self.marker,
        );
        let conf = serde_json::json!({
            "store_dir": store,
            "from_image": null,
            "store_layers": [[busybox], [hello]],
            "customisation_layer": custom,
            "repo_tag": tag,
            "created": "1970-01-01T00:00:01Z",
            "mtime": "1970-01-01T00:00:01Z",
            "uid": 0, "gid": 0, "uname": "root", "gname": "root",
            "architecture": host_architecture(),
            "config": { "Cmd": [hello.join("bin/hello")] },
        });
        let conf = self.scratch.conf(&format!("{name}.json"), &conf);
        // The variants rewrite the hello store path in place (a real rebuild
        // gives a new store path): the digest cache, which relies on store
        // paths being immutable, must stay out of it.
        common::stream(&conf, &["-q", "--no-cache"]).stdout
    }

    /// Removes the scratch directory (on success only; `Scratch` drops it anyway).
    fn done(self) {}
}

/// nixpkgs' customisation layer: `layer.tar` (`/bin/sh` → busybox and
/// `/etc/variant`) and `checksum`.
fn write_customisation(dir: &Path, busybox: &Path, variant: &str, marker: &str) {
    fs::create_dir_all(dir).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(1);
        h.set_size(size);
        h
    };
    let mut d = header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut d, "bin/", io::empty()).unwrap();
    let mut l = header(tar::EntryType::Symlink, 0o777, 0);
    tar.append_link(&mut l, "bin/sh", busybox).unwrap();
    let mut d = header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut d, "etc/", io::empty()).unwrap();
    let text = format!("{variant} {marker}\n");
    let mut f = header(tar::EntryType::Regular, 0o444, text.len() as u64);
    tar.append_data(&mut f, "etc/variant", text.as_bytes())
        .unwrap();
    let bytes = tar.into_inner().unwrap();
    fs::write(dir.join("layer.tar"), &bytes).unwrap();
    fs::write(dir.join("checksum"), sha256_hex(&bytes)).unwrap();
}

/// The parts of a docker-archive the checks need.
struct Image {
    config: Vec<u8>,
    diff_ids: Vec<String>,
}

impl Image {
    fn parse(archive: &[u8]) -> Image {
        let a = common::Archive::parse(archive);
        let config = a.config().to_vec();
        let parsed: Value = serde_json::from_slice(&config).unwrap();
        let diff_ids = parsed["rootfs"]["diff_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap().to_owned())
            .collect();
        Image { config, diff_ids }
    }

    fn id(&self) -> String {
        format!("sha256:{}", sha256_hex(&self.config))
    }
}

/// The archive without the members of the layers marked in `omit`; the
/// manifest and config stay, as the image writer will do it.
fn omit_members(archive: &[u8], omit: &[bool]) -> Vec<u8> {
    let manifest = common::Archive::parse(archive).manifest();
    let dropped: HashSet<String> = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .zip(omit)
        .filter(|(_, o)| **o)
        .map(|(l, _)| l.as_str().unwrap().to_owned())
        .collect();
    rewrite(archive, |name, data| {
        (!dropped.contains(name)).then(|| data.to_vec())
    })
}

/// The archive with the first two layers' contents swapped (the manifest
/// and config unchanged), so the diff_ids no longer match.
fn swap_first_layers(archive: &[u8]) -> Vec<u8> {
    let a = common::Archive::parse(archive);
    let layers: Vec<String> = a.manifest()[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect();
    rewrite(archive, |name, data| {
        Some(if name == layers[0] {
            a.members[&layers[1]].clone()
        } else if name == layers[1] {
            a.members[&layers[0]].clone()
        } else {
            data.to_vec()
        })
    })
}

/// Copies the archive's members through `keep` (None drops the member).
fn rewrite(archive: &[u8], keep: impl Fn(&str, &[u8]) -> Option<Vec<u8>>) -> Vec<u8> {
    let a = common::Archive::parse(archive);
    let mut out = tar::Builder::new(Vec::new());
    for name in &a.order {
        let data = &a.members[name];
        if name.ends_with('/') {
            continue;
        }
        if let Some(bytes) = keep(name, data) {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(bytes.len() as u64);
            out.append_data(&mut h, name, &bytes[..]).unwrap();
        }
    }
    out.into_inner().unwrap()
}

fn layer_members(archive: &[u8]) -> usize {
    common::Archive::parse(archive)
        .order
        .iter()
        .filter(|n| n.ends_with("layer.tar"))
        .count()
}

// ---------------------------------------------------------------------------
// Docker and podman

/// The daemon, or `None` after a loud SKIPPED when `docker info` fails.
fn docker(test: &str) -> Option<Daemon> {
    if !works("docker", &["info"]) {
        skipped(test, "no docker daemon");
        return None;
    }
    Some(Daemon::connect().unwrap_or_else(|e| panic!("docker info works but: {e:#}")))
}

/// A unique `sli-daemon-test-*` name with a tag.
fn image_name(what: &str) -> String {
    format!("sli-daemon-test-{what}-{}:t{}", std::process::id(), nanos())
}

/// `docker image inspect` of one image.
fn inspect(name: &str) -> Value {
    let text = output(Command::new("docker").args(["image", "inspect", name]));
    let list: Value = serde_json::from_str(&text).unwrap();
    list[0].clone()
}

/// The inspection without what differs between any two loads of one
/// image: the time it was tagged and the storage driver's directories
/// (named by a random cache ID per registered layer).
fn comparable(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("Metadata");
        if let Some(g) = o.get_mut("GraphDriver").and_then(Value::as_object_mut) {
            g.remove("Data");
        }
    }
    v
}

fn image_exists(name: &str) -> bool {
    works("docker", &["image", "inspect", name])
}

/// The daemon's layer database (directories named by chain ID), when this
/// process can read it (root, classic store).
fn layerdb() -> Option<PathBuf> {
    let info =
        output(Command::new("docker").args(["info", "-f", "{{.DockerRootDir}} {{.Driver}}"]));
    let (root, driver) = info.trim().split_once(' ')?;
    let dir = Path::new(root)
        .join("image")
        .join(driver)
        .join("layerdb/sha256");
    dir.is_dir().then_some(dir)
}

fn docker_run(name: &str) -> String {
    output(Command::new("docker").args(["run", "--rm", "--network=none", name]))
}

fn docker_ok(args: &[&str]) {
    output(Command::new("docker").args(args));
}

/// Removes exactly the images it names when dropped, even after a failed
/// assertion.
struct Rmi(Vec<Vec<String>>);

impl Rmi {
    fn docker(names: &[&str]) -> Rmi {
        Rmi(names
            .iter()
            .map(|n| vec!["docker".into(), "rmi".into(), "-f".into(), (*n).to_owned()])
            .collect())
    }
}

impl Drop for Rmi {
    fn drop(&mut self) {
        for cmd in &self.0 {
            let _ = Command::new(&cmd[0])
                .args(&cmd[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

// ---------------------------------------------------------------------------
// Helpers

/// Prints past libtest's capture, so a skip is seen.
fn skipped(test: &str, why: &str) {
    let _ = writeln!(io::stderr(), "\n*** {test}: SKIPPED ({why}) ***");
}

/// A measurement, printed past the capture.
fn say(text: &str) {
    let _ = writeln!(io::stderr(), "daemon test: {text}");
}

fn works(tool: &str, args: &[&str]) -> bool {
    Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a command that must succeed; returns its stdout.
fn output(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a 64-bit ELF file has a PT_INTERP program header.
fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(|b| u64::from_le_bytes(b) as usize)
    };
    let (Some(phoff), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return true;
    };
    (0..count).any(|i| elf.get(phoff + i * size..phoff + i * size + 4) == Some(&[3, 0, 0, 0]))
}

fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}
