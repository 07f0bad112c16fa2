//! The interop fixture shared by the test crates that feed real tools
//! (docker, podman, containerd, skopeo, umoci): the smallest runnable
//! Nix-style image — a store path holding Debian's static busybox, a second
//! with a script, a long (PAX) name and a UTF-8 name, and a customisation
//! layer in nixpkgs' form — plus helpers to stream it and run the tools.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use sha2::{Digest, Sha256};

pub const BUSYBOX: &str = "/bin/busybox";
pub const BUSYBOX_PATH: &str = "0c8bq2v4kjxj1gwzrxl5bzvmsc8yw3jx-busybox-static-1.35.0";
pub const HELLO_PATH: &str = "1d5s3v7h0kxbh2f9zq1n4m8c6p0w2r7y-hello-script-1.0";
/// Over 100 bytes once under the store directory: tar needs PAX `path`.
pub const LONG_NAME: &str = "share/a-directory-name-long-enough-that-ustar-cannot-hold-it/\
                         and-a-file-name-that-makes-sure-of-it.txt";
pub const LONG_TEXT: &str = "long names survive\n";
pub const UTF8_NAME: &str = "share/grüße-ünïcödé.txt";

/// A store, customisation layer and conf under a per-test directory.
pub struct Fixture {
    pub root: PathBuf,
    pub store_dir: PathBuf,
    pub conf: PathBuf,
    pub tag: String,
}

impl Fixture {
    /// Builds the fixture, or returns None (after a loud SKIPPED line) when
    /// no static busybox is installed.
    pub fn build(test: &str) -> Option<Fixture> {
        Fixture::build_with(test, Layering::Store)
    }

    pub fn build_with(test: &str, layering: Layering) -> Option<Fixture> {
        match static_busybox() {
            Ok(()) => {}
            Err(why) => {
                skipped(test, &why);
                return None;
            }
        }
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("interop-{test}-{}", std::process::id()));
        if root.exists() {
            fs::remove_dir_all(&root).unwrap();
        }
        let store_dir = root.join("store");
        write_busybox_path(&store_dir.join(BUSYBOX_PATH));
        write_hello_path(&store_dir.join(HELLO_PATH));
        let custom = root.join("customisation");
        write_customisation(&custom, &store_dir.join(BUSYBOX_PATH).join("bin/busybox"));
        let tag = format!("sli-interop-{test}-{}:t{}", std::process::id(), nanos());
        let conf = root.join("conf.json");
        let mut value = serde_json::json!({
            "store_dir": store_dir,
            "from_image": null,
            "customisation_layer": custom,
            "repo_tag": tag,
            "created": "1970-01-01T00:00:01Z",
            "mtime": "1970-01-01T00:00:01Z",
            "uid": 0,
            "gid": 0,
            "uname": "root",
            "gname": "root",
            "architecture": host_architecture(),
            "config": {
                "Cmd": ["/bin/sh", "-c", "echo cmd-ok $GREETING"],
                "Env": ["GREETING=hello-env"],
            },
        });
        value["store_layers"] = match layering {
            Layering::Store => {
                serde_json::json!([[store_dir.join(BUSYBOX_PATH)], [store_dir.join(HELLO_PATH)]])
            }
            Layering::Graph => Value::Null,
        };
        if layering == Layering::Graph {
            let closure = root.join("closure-info");
            write_registration(&closure, &store_dir);
            value["layering"] = serde_json::json!({ "graph": closure, "max_layers": 100 });
        }
        fs::write(&conf, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
        Some(Fixture {
            root,
            store_dir,
            conf,
            tag,
        })
    }

    pub fn streamer(&self) -> Command {
        let mut cmd = Command::new(exe());
        cmd.arg(&self.conf)
            .stdin(Stdio::null())
            .stderr(fs::File::create(self.root.join("stderr")).unwrap());
        cmd
    }

    /// Streams the image to memory (it is a few MB).
    pub fn stream_to_memory(&self) -> Vec<u8> {
        let out = self.streamer().output().unwrap();
        self.check_streamed(out.status);
        out.stdout
    }

    /// Streams the image with `-o path` and extra streamer `args`.
    pub fn stream_to_path(&self, args: &[&str], path: &Path) {
        let status = self
            .streamer()
            .args(args)
            .arg("-o")
            .arg(path)
            .status()
            .unwrap();
        self.check_streamed(status);
    }

    /// Streams the image (with extra streamer `args`) through a pipe into
    /// `sink` (e.g. `docker load`), keeping a copy; returns the copy and `sink`'s stdout and stderr.
    pub fn stream_into(&self, args: &[&str], sink: &mut Command) -> (Vec<u8>, String) {
        let mut streamer = self
            .streamer()
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = sink
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut from = streamer.stdout.take().unwrap();
        let mut to = child.stdin.take().unwrap();
        let mut copy = Vec::new();
        let mut buf = vec![0; 1 << 16];
        loop {
            let n = from.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            to.write_all(&buf[..n]).unwrap();
            copy.extend_from_slice(&buf[..n]);
        }
        drop(to);
        self.check_streamed(streamer.wait().unwrap());
        let out = child.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{sink:?} failed: {said}");
        (copy, said)
    }

    pub fn check_streamed(&self, status: std::process::ExitStatus) {
        let stderr = fs::read_to_string(self.root.join("stderr")).unwrap_or_default();
        assert!(
            status.success(),
            "{} {} failed ({status}):\n{stderr}",
            exe().display(),
            self.conf.display()
        );
    }

    /// Removes the fixture; only on success, so a failure leaves it to read.
    pub fn cleanup(self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// How the conf says which store paths go into which layer.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Layering {
    /// nixpkgs' `store_layers`: decided at build time.
    Store,
    /// Our `layering` form: decided at stream time from closureInfo's graph.
    Graph,
}

/// closureInfo's output directory: its `registration` holds, per path, the
/// path, narHash, narSize, an empty deriver line, the reference count and
/// the references. hello refers to busybox (its `#!` resolves there).
pub fn write_registration(dir: &Path, store_dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    let busybox = store_dir.join(BUSYBOX_PATH);
    let hello = store_dir.join(HELLO_PATH);
    let nar_hash = format!("sha256:{}", "0".repeat(52));
    let record = |path: &Path, size: u64, refs: &[&Path]| {
        let mut r = format!("{}\n{nar_hash}\n{size}\n\n{}\n", path.display(), refs.len());
        for reference in refs {
            r += &format!("{}\n", reference.display());
        }
        r
    };
    let busybox_size = fs::metadata(busybox.join("bin/busybox")).unwrap().len() + 512;
    let text = record(&busybox, busybox_size, &[]) + &record(&hello, 4096, &[&busybox, &hello]);
    fs::write(dir.join("registration"), text).unwrap();
}

pub fn write_busybox_path(path: &Path) {
    fs::create_dir_all(path.join("bin")).unwrap();
    fs::copy(BUSYBOX, path.join("bin/busybox")).unwrap();
    set_mode(&path.join("bin/busybox"), 0o555);
}

pub fn write_hello_path(path: &Path) {
    let file = |rel: &str, text: &str, mode: u32| {
        let p = path.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        set_mode(&p, mode);
    };
    file("bin/hello", "#!/bin/sh\necho hello from the store\n", 0o555);
    std::os::unix::fs::symlink("hello", path.join("bin/greet")).unwrap();
    file(LONG_NAME, LONG_TEXT, 0o444);
    file(UTF8_NAME, "utf-8\n", 0o444);
    file("share/original.txt", "shared\n", 0o444);
    fs::hard_link(path.join("share/original.txt"), path.join("share/copy.txt")).unwrap();
}

/// nixpkgs' customisation layer: `layer.tar` (here `/bin/sh` → busybox in
/// the store) and `checksum`, the sha256 hex of `layer.tar`.
pub fn write_customisation(dir: &Path, busybox: &Path) {
    fs::create_dir_all(dir).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(1);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        h
    };
    let mut dir_header = header(tar::EntryType::Directory, 0o755);
    tar.append_data(&mut dir_header, "bin/", io::empty())
        .unwrap();
    let mut link_header = header(tar::EntryType::Symlink, 0o777);
    tar.append_link(&mut link_header, "bin/sh", busybox)
        .unwrap();
    let bytes = tar.into_inner().unwrap();
    fs::write(dir.join("layer.tar"), &bytes).unwrap();
    fs::write(dir.join("checksum"), sha256_hex(&bytes)).unwrap();
}

/// Debian's busybox-static installs `/bin/busybox`; a dynamically linked
/// busybox would not run in an image without libc.
pub fn static_busybox() -> Result<(), String> {
    let elf =
        fs::read(BUSYBOX).map_err(|e| format!("no {BUSYBOX} ({e}); install busybox-static"))?;
    if has_interpreter(&elf) {
        return Err(format!(
            "{BUSYBOX} is dynamically linked; install busybox-static"
        ));
    }
    Ok(())
}

/// Whether a 64-bit little-endian ELF file has a PT_INTERP program header,
/// i.e. needs a dynamic loader.
pub fn has_interpreter(elf: &[u8]) -> bool {
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
    };
    let (Some(phoff), Some(size), Some(count)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38)) else {
        return true;
    };
    (0..count).any(|i| elf.get(phoff + i * size..phoff + i * size + 4) == Some(&[3, 0, 0, 0]))
}

// ---------------------------------------------------------------------------
// Reading our archive

/// The parts of a docker-archive the checks need.
pub struct Image {
    pub config: Vec<u8>,
    pub repo_tags: Vec<String>,
    pub layer_names: Vec<String>,
    pub layers: Vec<Vec<u8>>,
    pub diff_ids: Vec<String>,
}

impl Image {
    pub fn parse(archive: &[u8]) -> Image {
        let mut members = BTreeMap::new();
        let mut tar = tar::Archive::new(archive);
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            members.insert(name, bytes);
        }
        let member = |name: &str| {
            members
                .get(name)
                .unwrap_or_else(|| panic!("archive has no {name}; it has {:?}", members.keys()))
                .clone()
        };
        let manifest: Value = serde_json::from_slice(&member("manifest.json")).unwrap();
        let strings = |v: &Value| -> Vec<String> {
            let list = v.as_array().unwrap_or_else(|| panic!("not a list: {v}"));
            list.iter()
                .map(|s| s.as_str().unwrap().to_owned())
                .collect()
        };
        let config_name = manifest[0]["Config"].as_str().unwrap().to_owned();
        let config = member(&config_name);
        let parsed: Value = serde_json::from_slice(&config).unwrap();
        let layer_names = strings(&manifest[0]["Layers"]);
        Image {
            layers: layer_names.iter().map(|n| member(n)).collect(),
            layer_names,
            repo_tags: strings(&manifest[0]["RepoTags"]),
            diff_ids: strings(&parsed["rootfs"]["diff_ids"]),
            config,
        }
    }

    /// The image ID: the sha256 of the config bytes.
    pub fn id(&self) -> String {
        sha256_hex(&self.config)
    }
}

// ---------------------------------------------------------------------------
// Helpers

/// The streamer under test.
pub fn exe() -> PathBuf {
    std::env::var_os("SLI_EXE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_stream-layered-image")))
}

/// Prints past libtest's capture (which only takes `print!`/`eprint!`), so
/// a skip is seen in a normal `cargo test` run.
pub fn skipped(test: &str, why: &str) {
    let _ = writeln!(io::stderr(), "\n*** {test}: SKIPPED ({why}) ***");
}

pub fn tool_works(tool: &str, args: &[&str]) -> bool {
    Command::new(tool)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a command that must succeed; returns its stdout.
pub fn run(cmd: &mut Command) -> String {
    String::from_utf8(run_bytes(cmd)).unwrap()
}

pub fn run_bytes(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The containerd socket `ctr` should talk to: `$CONTAINERD_ADDRESS`, the
/// system one, or the one dockerd runs (Debian's docker.io), whichever answers.
pub fn containerd_address() -> Option<String> {
    let candidates = [
        std::env::var("CONTAINERD_ADDRESS").ok(),
        Some("/run/containerd/containerd.sock".to_owned()),
        Some("/run/docker/containerd/containerd.sock".to_owned()),
    ];
    candidates.into_iter().flatten().find(|a| {
        Path::new(a).exists()
            && tool_works("ctr", &["-a", a, "--timeout", "5s", "namespaces", "ls"])
    })
}

/// `podman load -i path`: the name podman gave the image (it qualifies it,
/// `localhost/…` or `docker.io/library/…`) and a guard that removes it.
pub fn podman_load(path: &Path) -> (String, Cleanup) {
    let out = run(Command::new("podman").arg("load").arg("-i").arg(path));
    let loaded = out
        .lines()
        .find_map(|l| l.strip_prefix("Loaded image: "))
        .map(|s| s.split(',').next().unwrap_or(s).trim().to_owned())
        .unwrap_or_else(|| panic!("podman load printed no image name: {out}"));
    let guard = Cleanup(vec![
        "podman".into(),
        "rmi".into(),
        "-f".into(),
        loaded.clone(),
    ]);
    (loaded, guard)
}

/// Runs a command when dropped, even when the test panics (image removal).
pub struct Cleanup(pub Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new(&self.0[0])
            .args(&self.0[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The OCI architecture of this machine, so the image runs here.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

pub fn is_root() -> bool {
    run(Command::new("id").arg("-u")).trim() == "0"
}

pub fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

// ---------------------------------------------------------------------------
// Running the streamer and checking what it did (destinations, push, load)

/// Runs the streamer on `conf` with its own cache dir and `args`.
pub fn stream_conf(conf: &Path, cache: &Path, args: &[&str]) -> std::process::Output {
    Command::new(exe())
        .arg(conf)
        .arg("--cache")
        .arg(cache)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The fixture's conf through [`stream_conf`].
pub fn stream(fx: &Fixture, cache: &Path, args: &[&str]) -> std::process::Output {
    stream_conf(&fx.conf, cache, args)
}

/// [`stream`] on `threads` threads (`RAYON_NUM_THREADS`, which also sizes
/// the compression pool).
pub fn stream_on_threads(
    fx: &Fixture,
    cache: &Path,
    args: &[&str],
    threads: &str,
) -> std::process::Output {
    Command::new(exe())
        .arg(&fx.conf)
        .arg("--cache")
        .arg(cache)
        .args(args)
        .env("RAYON_NUM_THREADS", threads)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `out`, after checking the run succeeded.
pub fn ok(out: std::process::Output) -> std::process::Output {
    assert!(
        out.status.success(),
        "streamer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The one error line of a failed run (exit 1), which must name `needle`;
/// nothing on stdout.
pub fn one_line_error(out: &std::process::Output, needle: &str) -> String {
    assert_eq!(out.status.code(), Some(1), "exit 1: {out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("stream-layered-image:"))
        .collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains(needle), "names {needle:?}: {err}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
    err
}

/// The store bytes a `--verbose` run reports having read.
pub fn store_bytes_read(out: &std::process::Output) -> u64 {
    let err = String::from_utf8_lossy(&out.stderr);
    err.lines()
        .find_map(|l| l.strip_prefix("stream-layered-image: read "))
        .and_then(|l| l.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'read N bytes' line: {err}"))
}

/// `umoci unpack --image IMAGE BUNDLE` (rootless when not root).
pub fn umoci_unpack(image: &str, bundle: &Path) {
    let mut unpack = Command::new("umoci");
    unpack.arg("unpack");
    if !is_root() {
        unpack.arg("--rootless");
    }
    run(unpack.arg("--image").arg(image).arg(bundle));
}

/// The unpacked root filesystem has the files, links and modes the
/// fixture put in: a third tar reader (Go's) extracts what we wrote.
pub fn check_rootfs(fx: &Fixture, rootfs: &Path) {
    let in_root = |p: &Path| rootfs.join(p.strip_prefix("/").unwrap());
    let busybox = in_root(&fx.store_dir.join(BUSYBOX_PATH).join("bin/busybox"));
    assert_eq!(fs::read(&busybox).unwrap(), fs::read(BUSYBOX).unwrap());
    assert_eq!(
        fs::read_link(rootfs.join("bin/sh")).unwrap(),
        fx.store_dir.join(BUSYBOX_PATH).join("bin/busybox")
    );
    let hello = in_root(&fx.store_dir.join(HELLO_PATH));
    assert_eq!(mode(&hello.join("bin/hello")), 0o555);
    assert_eq!(
        fs::read_link(hello.join("bin/greet")).unwrap(),
        Path::new("hello")
    );
    assert_eq!(
        fs::read_to_string(hello.join(LONG_NAME)).unwrap(),
        LONG_TEXT
    );
    assert_eq!(
        fs::read_to_string(hello.join(UTF8_NAME)).unwrap(),
        "utf-8\n"
    );
    // Hard links are copied as regular files (nixpkgs does the same).
    assert_eq!(
        fs::read_to_string(hello.join("share/copy.txt")).unwrap(),
        "shared\n"
    );
}
