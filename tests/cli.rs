//! The executable end to end: bad inputs give one clear line and exit 1
//! without partial output; output is deterministic; odd and huge entries
//! are written as CPython's tarfile writes them (checked against an oracle
//! that uses tarfile itself, tests/common/oracle.py); -o, --compress,
//! --help, --version and a consumer closing the pipe early.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixture, one_line_error, run, sha256_hex, stream, vector, Archive, Scratch};
use serde_json::{json, Value};

fn basic_conf() -> Value {
    fixture();
    vector("basic")["conf"].clone()
}

fn run_conf(dir: &Scratch, conf: &Value, extra: &[&str]) -> std::process::Output {
    let path = dir.conf("conf.json", conf);
    let mut args: Vec<&OsStr> = vec![path.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    run(&args, &[])
}

// ---- bad inputs ----

#[test]
fn conf_missing() {
    let out = run(&[OsStr::new("/nonexistent/conf.json")], &[]);
    one_line_error(&out, "conf /nonexistent/conf.json: cannot read");
}

#[test]
fn conf_unreadable() {
    let dir = Scratch::new("unreadable-conf");
    // A directory cannot be read as a file, even by root.
    let out = run(&[dir.0.as_os_str()], &[]);
    one_line_error(&out, "cannot read");
}

#[test]
fn conf_not_json() {
    let dir = Scratch::new("notjson");
    let p = dir.path("conf.json");
    fs::write(&p, "{ not json").unwrap();
    let out = run(&[p.as_os_str()], &[]);
    let line = one_line_error(&out, "is not valid JSON");
    assert!(line.contains(&p.display().to_string()), "{line}");
}

#[test]
fn conf_missing_field() {
    let dir = Scratch::new("missing-field");
    let mut conf = basic_conf();
    conf.as_object_mut().unwrap().remove("repo_tag");
    one_line_error(&run_conf(&dir, &conf, &[]), "missing field `repo_tag`");
}

#[test]
fn conf_wrong_types() {
    let dir = Scratch::new("wrong-type");
    for (field, bad) in [
        ("uid", json!([0])),
        ("gid", json!("abc")),
        ("store_layers", json!("x")),
        ("config", json!(3)),
    ] {
        let mut conf = basic_conf();
        conf[field] = bad;
        one_line_error(&run_conf(&dir, &conf, &[]), &format!("`{field}` must be"));
    }
    let mut conf = basic_conf();
    conf["created"] = json!("yesterday");
    one_line_error(&run_conf(&dir, &conf, &[]), "`created`");
}

#[test]
fn store_path_missing() {
    let dir = Scratch::new("missing-path");
    let mut conf = basic_conf();
    conf["store_layers"] = json!([["/tmp/sli-fixture/store/0000-not-there"]]);
    one_line_error(
        &run_conf(&dir, &conf, &[]),
        "/tmp/sli-fixture/store/0000-not-there",
    );
}

/// A missing path in the last layer fails before any byte is written, so
/// `docker load` is not fed the layers before it.
#[test]
fn store_path_missing_in_a_later_layer_writes_nothing() {
    let dir = Scratch::new("missing-later");
    let mut conf = basic_conf();
    let missing = "/tmp/sli-fixture/store/0000-not-there";
    let mut layers = conf["store_layers"].as_array().unwrap().clone();
    assert!(!layers.is_empty());
    layers.push(json!([missing]));
    conf["store_layers"] = Value::Array(layers);
    let out = run_conf(&dir, &conf, &[]);
    one_line_error(&out, missing);
    assert!(out.stdout.is_empty(), "{} bytes written", out.stdout.len());
}

#[test]
fn store_path_outside_store_dir() {
    let dir = Scratch::new("outside");
    let mut conf = basic_conf();
    conf["store_layers"] = json!([["/etc"]]);
    one_line_error(
        &run_conf(&dir, &conf, &[]),
        "store path \"/etc\" is outside store_dir",
    );
}

/// Runs the executable on `conf` as an unprivileged user when we are root
/// (root reads files whatever their mode); None when that is impossible.
fn run_unprivileged(dir: &Scratch, conf: &Value) -> Option<std::process::Output> {
    if !common::is_root() {
        return Some(run_conf(dir, conf, &[]));
    }
    if !common::have("setpriv") {
        return None;
    }
    let path = dir.conf("conf.json", conf);
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(common::bin())
        .arg(&path)
        .output()
        .unwrap();
    Some(out)
}

#[test]
fn store_path_unreadable() {
    let dir = Scratch::new("unreadable");
    let store = dir.path("store");
    for (path, mode, needle) in [
        ("aaaa-file/secret", 0o000, "secret: cannot open"),
        ("bbbb-dir/sub", 0o000, "sub: cannot read directory"),
    ] {
        let target = store.join(path);
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        if path.ends_with("sub") {
            fs::create_dir(&target).unwrap();
        } else {
            fs::write(&target, "s").unwrap();
        }
        fs::set_permissions(&target, fs::Permissions::from_mode(mode)).unwrap();
        let mut conf = basic_conf();
        conf["store_dir"] = json!(store);
        conf["store_layers"] = json!([[target.parent().unwrap()]]);
        let Some(out) = run_unprivileged(&dir, &conf) else {
            println!("SKIPPED (root without setpriv: file permissions do not stop reads)");
            return;
        };
        one_line_error(&out, needle);
    }
}

#[test]
fn customisation_checksum_wrong() {
    let dir = Scratch::new("custom");
    let custom = dir.path("custom");
    fs::create_dir(&custom).unwrap();
    fs::copy(
        Path::new(common::FIXTURE).join("customisation/layer.tar"),
        custom.join("layer.tar"),
    )
    .unwrap();
    fs::write(custom.join("checksum"), "0".repeat(64)).unwrap();
    let mut conf = basic_conf();
    conf["customisation_layer"] = json!(custom);
    one_line_error(&run_conf(&dir, &conf, &[]), "customisation layer");
}

#[test]
fn base_image_missing() {
    let dir = Scratch::new("base");
    let mut conf = basic_conf();
    conf["from_image"] = json!("/nonexistent/base.tar");
    one_line_error(
        &run_conf(&dir, &conf, &[]),
        "base image /nonexistent/base.tar",
    );
}

/// A failure after some layers were written leaves nothing at `-o FILE`.
#[test]
fn failed_output_file_leaves_nothing() {
    let dir = Scratch::new("partial");
    let mut conf = basic_conf();
    let mut layers = conf["store_layers"].as_array().unwrap().clone();
    layers.push(json!(["/tmp/sli-fixture/store/0000-not-there"]));
    conf["store_layers"] = Value::Array(layers);
    let target = dir.path("out/image.tar");
    fs::create_dir(dir.path("out")).unwrap();
    let out = run_conf(&dir, &conf, &["-o", target.to_str().unwrap()]);
    one_line_error(&out, "0000-not-there");
    assert_eq!(
        fs::read_dir(dir.path("out")).unwrap().count(),
        0,
        "no image and no temporary file"
    );
}

/// `docker load` failing closes the pipe: we stop promptly with one line.
#[test]
fn consumer_closing_pipe() {
    let dir = Scratch::new("epipe");
    let conf = dir.conf("conf.json", &basic_conf());
    let mut child = Command::new(common::bin())
        .arg(&conf)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "did not exit after the pipe closed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.ends_with(
            "stream-layered-image: output closed early (broken pipe); image incomplete\n"
        ),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

// ---- output options ----

#[test]
fn output_file_equals_stdout() {
    let dir = Scratch::new("ofile");
    let conf = dir.conf("conf.json", &basic_conf());
    let stdout = stream(&conf, &[]).stdout;
    let target = dir.path("image.tar");
    stream(&conf, &["-o", target.to_str().unwrap()]);
    assert!(fs::read(&target).unwrap() == stdout);
}

/// `--explain-layers` on a conf whose layers were decided at build time
/// says there is nothing to explain instead of silently ignoring the flag,
/// and the image is the same.
#[test]
fn explain_layers_with_store_layers_says_why_it_is_silent() {
    let dir = Scratch::new("explain");
    let conf = dir.conf("conf.json", &basic_conf());
    let plain = stream(&conf, &[]).stdout;
    let explained = stream(&conf, &["--explain-layers"]);
    let stderr = String::from_utf8_lossy(&explained.stderr);
    assert!(
        stderr.contains("--explain-layers") && stderr.contains("store_layers"),
        "{stderr}"
    );
    assert!(explained.stdout == plain);
}

#[test]
fn compressed_outputs_decompress_to_the_same_image() {
    let dir = Scratch::new("compress");
    let conf = dir.conf("conf.json", &basic_conf());
    let plain = stream(&conf, &[]).stdout;
    let gz = stream(&conf, &["--compress", "gz"]).stdout;
    let mut unpacked = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut unpacked)
        .unwrap();
    assert!(unpacked == plain, "gzip round trip");
    assert!(
        stream(&conf, &["--compress", "gz"]).stdout == gz,
        "gzip deterministic"
    );
    let zst = stream(&conf, &["--compress", "zstd"]).stdout;
    assert!(
        zstd::decode_all(&zst[..]).unwrap() == plain,
        "zstd round trip"
    );
}

#[test]
fn help_explains_every_conf_field_and_version() {
    let out = run(&[OsStr::new("--help")], &[]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for field in [
        "store_dir",
        "from_image",
        "store_layers",
        "layering",
        "customisation_layer",
        "repo_tag",
        "created",
        "mtime",
        "uid",
        "gid",
        "uname",
        "gname",
        "architecture",
        "variant",
        "os",
        "config",
        "--repo_tag",
        "-o",
        "--compress",
    ] {
        assert!(help.contains(field), "--help mentions {field}");
    }
    let out = run(&[OsStr::new("--version")], &[]);
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .starts_with("stream-layered-image 0."));
}

// ---- determinism ----

#[test]
fn same_bytes_every_run_and_thread_count() {
    let dir = Scratch::new("determinism");
    let conf = dir.conf("conf.json", &vector("from-image")["conf"]);
    fixture();
    let a = run(&[conf.as_os_str()], &[]);
    let b = run(&[conf.as_os_str()], &[]);
    let one = run(&[conf.as_os_str()], &[("RAYON_NUM_THREADS", "1")]);
    assert!(a.status.success() && b.status.success() && one.status.success());
    assert!(a.stdout == b.stdout, "two runs differ");
    assert!(a.stdout == one.stdout, "RAYON_NUM_THREADS=1 differs");
}

// ---- big and odd entries ----

fn bytes_path(dir: &Path, name: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(name))
}

/// A store whose entries need every PAX case tarfile has.
fn odd_store(dir: &Scratch) -> (PathBuf, Vec<PathBuf>) {
    let store = dir.path("store");
    let odd = store.join("aaaa-odd");
    fs::create_dir_all(&odd).unwrap();
    let long_dir = odd.join("D".repeat(120));
    fs::create_dir_all(long_dir.join("E".repeat(130))).unwrap();
    fs::write(long_dir.join("E".repeat(130)).join("x"), "deep").unwrap();
    for name in [
        &b"caf\xe9"[..],
        "café".as_bytes(),
        b"\x80",
        "\u{80}".as_bytes(),
        b".hidden",
        b"nl\nname",
        b"sp ace",
    ] {
        fs::write(bytes_path(&odd, name), name).unwrap();
    }
    fs::write(odd.join("N".repeat(150)), "long name").unwrap();
    fs::write(
        odd.join("big-utf8-".to_owned() + &"é".repeat(60)),
        "utf8 > 100 bytes, < 100 chars",
    )
    .unwrap();
    std::os::unix::fs::symlink("T".repeat(300), odd.join("long-target")).unwrap();
    std::os::unix::fs::symlink(OsStr::from_bytes(b"tar\xffget"), odd.join("binary-target"))
        .unwrap();
    std::os::unix::fs::symlink("D".repeat(120), odd.join("dir-link")).unwrap();
    fs::create_dir(odd.join("empty")).unwrap();
    fs::write(odd.join("h1"), "hard").unwrap();
    fs::hard_link(odd.join("h1"), odd.join("h2")).unwrap();
    fs::write(odd.join("suid"), "s").unwrap();
    fs::set_permissions(odd.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    let single = store.join("bbbb-single-file");
    fs::write(&single, vec![7u8; 70_000]).unwrap();
    let link = store.join("cccc-link");
    std::os::unix::fs::symlink(&odd, &link).unwrap();
    (store, vec![odd, single, link])
}

#[test]
fn odd_entries_match_python_tarfile() {
    if !common::have("python3") {
        println!("SKIPPED (no python3 for the tarfile oracle)");
        return;
    }
    let dir = Scratch::new("odd");
    let (store, paths) = odd_store(&dir);
    let mut conf = basic_conf();
    conf["store_dir"] = json!(store);
    conf["store_layers"] = json!([[paths[0]], [paths[1], paths[2]]]);
    // Owner and time fields that overflow or are not ASCII need PAX records.
    conf["uid"] = json!(3_000_000);
    conf["gid"] = json!("70000");
    conf["uname"] = json!("ünïcode-user");
    conf["gname"] = json!("g".repeat(40));
    conf["mtime"] = json!("1960-01-01T00:00:00Z");
    conf["created"] = json!("2001-02-03T04:05:06.789+05:30");
    let conf_path = dir.conf("conf.json", &conf);
    let ours = Archive::parse(&stream(&conf_path, &[]).stdout);
    let config: Value = serde_json::from_slice(ours.config()).unwrap();
    assert_eq!(config["created"], "2001-02-03T04:05:06.789000+05:30");

    let prefix = dir.path("oracle-");
    let status = Command::new("python3")
        .env("PYTHONUTF8", "1")
        .arg(common::repo().join("tests/common/oracle.py"))
        .arg(&conf_path)
        .arg(&prefix)
        .status()
        .unwrap();
    assert!(status.success(), "oracle failed");
    for (i, layer) in ours.layers().iter().take(2).enumerate() {
        let reference = fs::read(format!("{}{i}.tar", prefix.display())).unwrap();
        if *layer != &reference[..] {
            let at = layer
                .iter()
                .zip(&reference)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            panic!(
                "layer {i} differs from tarfile's at byte {at} (ours {} bytes, tarfile {})",
                layer.len(),
                reference.len()
            );
        }
        assert_eq!(
            config["rootfs"]["diff_ids"][i],
            format!("sha256:{}", sha256_hex(layer))
        );
    }
}

/// Files of 8 GiB and more get a PAX `size` record (sparse file, so the
/// test needs no disk space; it still streams 8 GiB through sha256).
#[test]
fn file_over_8_gib() {
    if !common::have("python3") {
        println!("SKIPPED (no python3 for the tarfile oracle)");
        return;
    }
    let dir = Scratch::new("huge");
    let store = dir.path("store");
    fs::create_dir(&store).unwrap();
    let huge = store.join("dddd-huge");
    let size: u64 = 8 * 1024 * 1024 * 1024 + 1;
    fs::File::create(&huge).unwrap().set_len(size).unwrap();
    fs::set_permissions(&huge, fs::Permissions::from_mode(0o644)).unwrap();
    let mut conf = basic_conf();
    conf["store_dir"] = json!(store);
    conf["store_layers"] = json!([[huge]]);
    let conf_path = dir.conf("conf.json", &conf);
    let expected_header = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys,tarfile\n\
             t=tarfile.TarInfo(sys.argv[1]); t.size=int(sys.argv[2]); t.mode=0o644\n\
             t.uname=t.gname='root'; t.mtime=1\n\
             sys.stdout.buffer.write(t.tobuf(tarfile.PAX_FORMAT,'utf-8','surrogateescape'))",
        )
        .arg(&huge)
        .arg(size.to_string())
        .output()
        .unwrap()
        .stdout;
    assert_eq!(expected_header.len(), 1536, "PAX header + ustar header");

    let mut child = Command::new(common::bin())
        .arg(&conf_path)
        .arg("-q")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut outer = tar::Archive::new(stdout);
    let mut layer_digest = None;
    let mut config = None;
    for e in outer.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8(e.path_bytes().to_vec()).unwrap();
        if name == "1/layer.tar" {
            let mut head = vec![0u8; 1024 + 1536];
            e.read_exact(&mut head).unwrap();
            assert!(
                head[1024..] == expected_header[..],
                "the huge file's header is tarfile's"
            );
            let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
            sha2::Digest::update(&mut hasher, &head);
            let mut buf = vec![0u8; 1 << 20];
            let mut rest = 0u64;
            loop {
                let n = e.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                rest += n as u64;
                sha2::Digest::update(&mut hasher, &buf[..n]);
            }
            let total = head.len() as u64 + rest;
            assert_eq!(total % 10240, 0);
            assert!(total >= size + 2560 + 1024);
            layer_digest = Some(common::hex(&sha2::Digest::finalize(hasher)));
        } else if name.ends_with(".json") && name != "manifest.json" {
            let mut text = Vec::new();
            e.read_to_end(&mut text).unwrap();
            config = Some(serde_json::from_slice::<Value>(&text).unwrap());
        }
    }
    assert!(child.wait().unwrap().success());
    let config = config.unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{}", layer_digest.unwrap())
    );
}

// ---- graph-based layering ----

/// With `layering` instead of `store_layers`, the layers the layering step
/// decides are the layers streamed, within max_layers.
#[test]
fn layering_conf_streams_the_decided_layers() {
    let dir = Scratch::new("layering");
    let mut conf = basic_conf();
    let store = conf["store_dir"].as_str().unwrap().to_owned();
    let all: Vec<String> = conf["store_layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| {
            l.as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_owned())
        })
        .collect();
    // hello is used by everything else; the rest reference nothing.
    let hello = all.iter().find(|p| p.contains("hello")).unwrap().clone();
    let graph: Vec<Value> = all
        .iter()
        .map(|p| {
            let refs = if *p == hello {
                vec![]
            } else {
                vec![hello.clone()]
            };
            json!({"path": p, "narHash": "sha256:x", "narSize": 1000, "references": refs})
        })
        .collect();
    let graph_path = dir.path("graph.json");
    fs::write(&graph_path, serde_json::to_vec(&graph).unwrap()).unwrap();
    conf.as_object_mut().unwrap().remove("store_layers");
    conf["layering"] = json!({"graph": graph_path, "max_layers": 4});
    let conf_path = dir.conf("conf.json", &conf);
    let ar = Archive::parse(&stream(&conf_path, &[]).stdout);

    let spec: stream_layered_image::layering::Spec =
        serde_json::from_value(conf["layering"].clone()).unwrap();
    let decided = stream_layered_image::layering::decide(&spec, &store, 0)
        .unwrap()
        .layers;
    let config: Value = serde_json::from_slice(ar.config()).unwrap();
    let history = config["history"].as_array().unwrap();
    assert!(
        history.len() <= 4,
        "max_layers counts the customisation layer"
    );
    assert_eq!(history.len(), decided.len() + 1);
    for (h, paths) in history.iter().zip(&decided) {
        let quoted: Vec<String> = paths.iter().map(|p| format!("'{p}'")).collect();
        assert_eq!(
            h["comment"],
            format!("store paths: [{}]", quoted.join(", "))
        );
    }
    let mut streamed: Vec<&String> = decided.iter().flatten().collect();
    streamed.sort();
    let mut expected: Vec<&String> = all.iter().collect();
    expected.sort();
    assert_eq!(
        streamed, expected,
        "every graph path is in exactly one layer"
    );
}

/// A tarball on a terminal is never wanted: refuse before writing anything.
#[test]
fn refuses_to_write_to_a_terminal() {
    if !common::have("script") {
        println!("SKIPPED (no `script` to provide a terminal)");
        return;
    }
    let dir = Scratch::new("tty");
    let conf = dir.conf("conf.json", &basic_conf());
    let cmd = format!("{} {}", common::bin().display(), conf.display());
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("refusing to write an image tarball to a terminal"),
        "{text}"
    );
    assert!(!text.contains("ustar"), "no tar bytes reached the terminal");
}

/// Nix stores hold no FIFOs, sockets or devices; one is named, not hung on.
#[test]
fn special_file_in_store_path() {
    let dir = Scratch::new("fifo");
    let store = dir.path("store");
    fs::create_dir_all(store.join("aaaa-x")).unwrap();
    let fifo = store.join("aaaa-x/pipe");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let mut conf = basic_conf();
    conf["store_dir"] = json!(store);
    conf["store_layers"] = json!([[store.join("aaaa-x")]]);
    let line = one_line_error(&run_conf(&dir, &conf, &[]), "is a FIFO");
    assert!(line.contains(&fifo.display().to_string()), "{line}");
}

/// `-o` to a FIFO (or a device such as /dev/stdout) writes into it; the
/// temporary-file-and-rename dance would replace it with a regular file.
#[test]
fn output_to_a_fifo_writes_in_place() {
    let dir = Scratch::new("ofifo");
    let conf = dir.conf("conf.json", &basic_conf());
    let expected = stream(&conf, &[]).stdout;
    let fifo = dir.path("pipe");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read(fifo).unwrap())
    };
    stream(&conf, &["-o", fifo.to_str().unwrap()]);
    assert!(reader.join().unwrap() == expected);
    use std::os::unix::fs::FileTypeExt;
    assert!(
        fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(),
        "still a FIFO"
    );
    assert_eq!(
        fs::read_dir(&dir.0).unwrap().count(),
        2,
        "no temporary file left"
    );
}

/// Disk full (or any write error) names the output and exits 1. The
/// device is reached through a symlink in a scratch directory, so even a
/// regression could only replace the symlink, never /dev/full itself.
#[test]
fn write_error_names_the_output() {
    if !fs::metadata("/dev/full").is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_char_device()
    }) {
        println!("SKIPPED (no /dev/full device)");
        return;
    }
    let dir = Scratch::new("full");
    let conf = dir.conf("conf.json", &basic_conf());
    let full = dir.path("full");
    std::os::unix::fs::symlink("/dev/full", &full).unwrap();
    let out = run(&[conf.as_os_str(), OsStr::new("-o"), full.as_os_str()], &[]);
    one_line_error(&out, "No space left on device");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("output {}", full.display())));
    assert!(fs::symlink_metadata(&full)
        .unwrap()
        .file_type()
        .is_symlink());
}
