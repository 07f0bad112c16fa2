//! Issue 12, "Hardening": each test fails without its fix.
//!
//! 1. `-o`: only regular files are replaced (symlinks followed, devices and
//!    `/proc` descriptors written in place), signals leave no file, a
//!    closed stdout is an error. (Planted temporary names: the unit test
//!    `output::tests::planted_symlinks_and_files_at_temp_names_are_never_used`.)
//! 2. Base images: bounded memory on huge headers and bombs (peak RSS
//!    measured with wait4), FIFOs refused at once, diff_ids verified, a
//!    shared member decompressed once.
//! 3. Customisation: FIFOs refused at once, layer.tar must be a tar.
//! 4. Conf checks: repo_tag, duplicate store paths, paths below a store
//!    path, a file growing while streamed, more than 125 layers.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, fixture, one_line_error, run, stream, vector, Scratch};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

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

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn mkfifo(p: &Path) {
    assert!(Command::new("mkfifo").arg(p).status().unwrap().success());
}

/// Runs the executable; fails the test if it has not ended after `limit`.
fn run_within(args: &[&OsStr], limit: Duration) -> std::process::Output {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running after {limit:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// Runs the executable to completion and returns its output and peak RSS
/// in MiB (from wait4's rusage: this child only). wait4 reaps the child,
/// which `Child::wait` cannot report the rusage of.
#[allow(clippy::zombie_processes)]
fn run_measured(args: &[&OsStr]) -> (std::process::Output, u64) {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = Vec::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid; wait4 reaps our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    let out = std::process::Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout: Vec::new(),
        stderr,
    };
    (out, usage.ru_maxrss as u64 / 1024)
}

// ------------------------------------------------------------- 1. output

/// `-o LINK` where LINK is a symlink to a regular file: the file is
/// replaced, the link stays a link.
#[test]
fn output_through_a_symlink_replaces_its_target() {
    let dir = Scratch::new("o-link");
    let conf = dir.conf("conf.json", &basic_conf());
    let expected = stream(&conf, &[]).stdout;
    fs::create_dir(dir.path("real")).unwrap();
    fs::write(dir.path("real/img.tar"), b"old").unwrap();
    std::os::unix::fs::symlink("real/img.tar", dir.path("link")).unwrap();
    stream(&conf, &["-o", dir.path("link").to_str().unwrap()]);
    assert!(fs::symlink_metadata(dir.path("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(fs::read(dir.path("real/img.tar")).unwrap() == expected);
    assert_eq!(entries(&dir.path("real")), ["img.tar"]);
}

/// `-o /dev/stdout` with stdout redirected to a file writes into that file
/// (the bug renamed the image over the /dev/stdout symlink). A symlink of
/// our own to /proc/self/fd/1 stands for /dev/stdout, so that a regression
/// could only replace the link in the scratch directory.
#[test]
fn output_to_dev_stdout_redirected_to_a_file_writes_the_file() {
    let dir = Scratch::new("o-stdout");
    let conf = dir.conf("conf.json", &basic_conf());
    let expected = stream(&conf, &[]).stdout;
    let link = dir.path("stdout");
    std::os::unix::fs::symlink("/proc/self/fd/1", &link).unwrap();
    for how in [link.as_path(), Path::new("/dev/fd/1")] {
        let redirected = dir.path("redirected.tar");
        let out = Command::new(bin())
            .args([conf.as_os_str(), OsStr::new("-o"), how.as_os_str()])
            .stdout(fs::File::create(&redirected).unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(fs::read(&redirected).unwrap() == expected, "{how:?}");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }
    assert_eq!(entries(&dir.0), ["conf.json", "redirected.tar", "stdout"]);
}

/// `>&-`: Rust reopens a closed stdout on /dev/null; that is an error, not
/// an image silently lost. `>/dev/null` stays allowed.
#[test]
fn closed_stdout_is_an_error() {
    let dir = Scratch::new("o-closed");
    let conf = dir.conf("conf.json", &basic_conf());
    let out = Command::new("sh")
        .args(["-c", "exec \"$0\" \"$1\" >&-"])
        .arg(bin())
        .arg(&conf)
        .output()
        .unwrap();
    one_line_error(&out, "stdout is closed");
    let out = Command::new("sh")
        .args(["-c", "exec \"$0\" \"$1\" >/dev/null"])
        .arg(bin())
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A store with one big sparse file, so that streaming takes long enough
/// to be interrupted.
fn slow_conf(dir: &Scratch) -> PathBuf {
    let store = dir.path("store");
    fs::create_dir_all(store.join("aaaa-big")).unwrap();
    let f = fs::File::create(store.join("aaaa-big/sparse")).unwrap();
    f.set_len(2 << 30).unwrap();
    let mut conf = basic_conf();
    conf["store_dir"] = json!(store);
    conf["store_layers"] = json!([[store.join("aaaa-big")]]);
    dir.conf("conf.json", &conf)
}

/// SIGINT, SIGTERM and SIGHUP mid-stream: the temporary file is removed
/// and the process dies of the signal (status 128+N in a shell).
#[test]
fn signals_mid_stream_leave_no_file() {
    let dir = Scratch::new("signals");
    let conf = slow_conf(&dir);
    let out_dir = dir.path("out");
    fs::create_dir(&out_dir).unwrap();
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        let target = out_dir.join("img.tar");
        let mut child = Command::new(bin())
            .args([conf.as_os_str(), OsStr::new("-o"), target.as_os_str()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait until the temporary file has bytes in it: mid-stream.
        let start = Instant::now();
        loop {
            let busy = fs::read_dir(&out_dir)
                .unwrap()
                .any(|e| e.unwrap().metadata().is_ok_and(|m| m.len() > 0));
            if busy {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no temporary file appeared"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let names = entries(&out_dir);
        assert!(
            names.len() == 1 && names[0].starts_with(".img.tar.") && names[0].ends_with(".sli-tmp"),
            "an obviously temporary name: {names:?}"
        );
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(sig),
            "dies of signal {sig}: {status:?}"
        );
        assert!(
            entries(&out_dir).is_empty(),
            "signal {sig} left {:?}",
            entries(&out_dir)
        );
    }
}

// -------------------------------------------------------- 2. base images

/// A ustar header for `name` with type `kind` and a claimed `size`.
fn header(name: &str, kind: u8, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"00000000001\0");
    h[156] = kind;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    h
}

/// A tar of (name, data) regular files, ended properly.
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut t = Vec::new();
    for (name, data) in files {
        t.extend_from_slice(&header(name, b'0', data.len() as u64));
        t.extend_from_slice(data);
        t.resize(t.len().div_ceil(512) * 512, 0);
    }
    t.extend_from_slice(&[0u8; 1024]);
    t
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", common::hex(&Sha256::digest(b)))
}

/// A docker-archive with the given layers, the config claiming `diff_ids`.
fn docker_archive(layers: &[Vec<u8>], diff_ids: &[String], names: &[&str]) -> Vec<u8> {
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": {"Env": ["BASE=1"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(
        &json!([{"Config": "config.json", "RepoTags": ["b:1"], "Layers": names}]),
    )
    .unwrap();
    let mut files: Vec<(&str, &[u8])> = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        files.push((names[i], l));
    }
    files.push(("config.json", &config));
    files.push(("manifest.json", &manifest));
    tar_of(&files)
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn base_conf(base: &Path) -> Value {
    let mut conf = basic_conf();
    conf["from_image"] = json!(base);
    conf
}

/// A gzip base of `header` followed by `size` zero bytes (the zeros
/// compress to almost nothing: a small file claiming a huge header).
fn huge_header_base(dir: &Scratch, name: &str, kind: u8, size: u64) -> PathBuf {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&header("././@LongLink", kind, size)).unwrap();
    let zeros = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        e.write_all(&zeros[..n]).unwrap();
        left -= n as u64;
    }
    e.write_all(&header("x", b'0', 0)).unwrap();
    e.write_all(&[0u8; 1024]).unwrap();
    let p = dir.path(name);
    fs::write(&p, e.finish().unwrap()).unwrap();
    p
}

/// Peak memory stays bounded whatever the headers claim: a 256 MiB PAX
/// record or GNU long name, a huge manifest.json, a gzip bomb.
#[test]
fn hostile_base_images_cost_bounded_memory() {
    let dir = Scratch::new("bomb");
    let mut cases = Vec::new();
    for (name, kind) in [
        ("pax.tar.gz", b'x'),
        ("longname.tar.gz", b'L'),
        ("longlink.tar.gz", b'K'),
    ] {
        cases.push((
            huge_header_base(&dir, name, kind, 256 << 20),
            "the limit is",
        ));
    }
    // manifest.json of 100 MiB of spaces (valid JSON whitespace, if read).
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&header("manifest.json", b'0', 100 << 20))
        .unwrap();
    let spaces = vec![b' '; 1 << 20];
    for _ in 0..100 {
        e.write_all(&spaces).unwrap();
    }
    e.write_all(&[0u8; 1024]).unwrap();
    let p = dir.path("manifest.tar.gz");
    fs::write(&p, e.finish().unwrap()).unwrap();
    cases.push((p, "too large"));
    // A gzip bomb: 256 MiB of zeros in a member, from a file of 256 KiB.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&header("bomb", b'0', 256 << 20)).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        e.write_all(&zeros).unwrap();
    }
    let p = dir.path("bomb.tar.gz");
    fs::write(&p, e.finish().unwrap()).unwrap();
    cases.push((p, "base image"));
    // The largest manifest.json and config accepted, made of the JSON that
    // costs the most memory per byte (one-letter strings, empty lists).
    // Built as text: a tree of JSON values here would stay in this
    // process's heap, and wait4's peak counts the parent's pages a child
    // was spawned with.
    let layers = vec!["\"a\""; (1 << 20) / 4 - 20].join(",");
    let manifest = format!("[{{\"Config\":\"c.json\",\"Layers\":[{layers}]}}]");
    let config = format!(
        "{{\"history\":[{}]}}",
        vec!["[]"; (2 << 20) / 3 - 40].join(",")
    );
    let p = dir.path("json.tar");
    fs::write(
        &p,
        tar_of(&[
            ("manifest.json", manifest.as_bytes()),
            ("c.json", config.as_bytes()),
        ]),
    )
    .unwrap();
    cases.push((p, "image config c.json"));
    // 200 000 empty members (a small file): the index stops growing.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for i in 0..200_000 {
        e.write_all(&header(&format!("m{i}"), b'0', 0)).unwrap();
    }
    let p = dir.path("members.tar.gz");
    fs::write(&p, e.finish().unwrap()).unwrap();
    cases.push((p, "more than 100000 members"));
    // The same as a zstd bomb.
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    e.write_all(&header("bomb", b'0', 256 << 20)).unwrap();
    for _ in 0..256 {
        e.write_all(&zeros).unwrap();
    }
    let p = dir.path("bomb.tar.zst");
    fs::write(&p, e.finish().unwrap()).unwrap();
    cases.push((p, "base image"));
    for (base, needle) in cases {
        let conf = dir.conf("conf.json", &base_conf(&base));
        let out_file = dir.path("out.tar");
        let (out, peak_mib) =
            run_measured(&[conf.as_os_str(), OsStr::new("-o"), out_file.as_os_str()]);
        assert!(
            peak_mib < 100,
            "{}: peak RSS {peak_mib} MiB",
            base.display()
        );
        let line = one_line_error(&out, needle);
        assert!(line.contains(&base.display().to_string()), "{line}");
        assert!(!out_file.exists(), "no image");
    }
}

/// A zstd base whose frame asks for a 256 MiB window is refused (zstd's
/// default limit is 128 MiB), in one line.
#[test]
fn zstd_window_over_the_limit_is_refused() {
    let dir = Scratch::new("zstd-window");
    let layer = tar_of(&[("etc/a", b"a\n")]);
    let archive = docker_archive(
        std::slice::from_ref(&layer),
        &[sha256(&layer)],
        &["1/layer.tar"],
    );
    let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    e.window_log(28).unwrap();
    e.long_distance_matching(true).unwrap();
    e.write_all(&archive).unwrap();
    let base = dir.path("base.tar.zst");
    fs::write(&base, e.finish().unwrap()).unwrap();
    let out = run_conf(&dir, &base_conf(&base), &[]);
    let line = one_line_error(&out, "base image");
    assert!(line.contains("memory limit (a zstd window"), "{line}");
}

/// A FIFO (or a device) as `from_image` is refused at once, not read.
#[test]
fn fifo_and_device_base_images_are_refused_at_once() {
    let dir = Scratch::new("base-fifo");
    let fifo = dir.path("base.tar");
    mkfifo(&fifo);
    for base in [fifo.as_path(), Path::new("/dev/zero")] {
        let conf = dir.conf("conf.json", &base_conf(base));
        let out = run_within(&[conf.as_os_str()], Duration::from_secs(1));
        let line = one_line_error(&out, "not a docker-archive tarball");
        assert!(
            line.contains("is a FIFO") || line.contains("is a device"),
            "{line}"
        );
    }
}

/// A base layer whose bytes do not match its diff_id: one line naming
/// the layer, and with `-o` no file.
#[test]
fn base_layer_with_a_wrong_diff_id_is_refused() {
    let dir = Scratch::new("base-diffid");
    let good = tar_of(&[("etc/a", b"a\n")]);
    let tampered = tar_of(&[("etc/a", b"b\n")]);
    for compress in [false, true] {
        let mut archive = docker_archive(
            &[good.clone(), tampered.clone()],
            &[sha256(&good), sha256(&good)],
            &["1/layer.tar", "2/layer.tar"],
        );
        if compress {
            archive = gzip(&archive);
        }
        let base = dir.path("base.tar");
        fs::write(&base, archive).unwrap();
        let out_dir = dir.path("out");
        let _ = fs::remove_dir_all(&out_dir);
        fs::create_dir(&out_dir).unwrap();
        let target = out_dir.join("img.tar");
        let out = run_conf(&dir, &base_conf(&base), &["-o", target.to_str().unwrap()]);
        let line = one_line_error(&out, "does not match its diff_id");
        assert!(line.contains("layer 2 (2/layer.tar)"), "{line}");
        assert!(line.contains(&sha256(&tampered)), "{line}");
        assert!(
            entries(&out_dir).is_empty(),
            "no file: {:?}",
            entries(&out_dir)
        );
    }
}

/// A compressed base listing one member as several layers decompresses
/// it once: the base file is replaced by garbage while the first layer is
/// served, and every layer still streams (a second pass would fail).
#[test]
fn shared_member_of_a_compressed_base_is_decompressed_once() {
    use stream_layered_image::base_image::BaseImage;
    let dir = Scratch::new("base-shared");
    let layer = tar_of(&[("etc/a", &[5u8; 100_000])]);
    let n = 5;
    let archive = docker_archive(
        std::slice::from_ref(&layer),
        &vec![sha256(&layer); n],
        &vec!["1/layer.tar"; n],
    );
    let base = dir.path("base.tar.gz");
    fs::write(&base, gzip(&archive)).unwrap();
    let image = BaseImage::open(&base).unwrap();
    let mut served = Vec::new();
    image
        .stream_layers(&mut |i, _, r| {
            if served.is_empty() {
                let junk = dir.path("junk");
                fs::write(&junk, b"not an archive any more").unwrap();
                fs::rename(&junk, &base).unwrap();
            }
            let mut bytes = Vec::new();
            r.read_to_end(&mut bytes)?;
            assert!(bytes == layer);
            served.push(i);
            Ok(())
        })
        .unwrap();
    served.sort();
    assert_eq!(served, (0..n).collect::<Vec<_>>());
}

// ------------------------------------------------------ 3. customisation

fn custom_dir(dir: &Scratch) -> PathBuf {
    let src = common::repo().join("tests/vectors/customisation");
    let c = dir.path("custom");
    fs::create_dir(&c).unwrap();
    for f in ["layer.tar", "checksum"] {
        fs::copy(src.join(f), c.join(f)).unwrap();
    }
    c
}

/// A FIFO as `checksum` or `layer.tar` is refused within a second.
#[test]
fn fifo_customisation_files_are_refused_at_once() {
    for name in ["checksum", "layer.tar"] {
        let dir = Scratch::new("custom-fifo");
        let c = custom_dir(&dir);
        fs::remove_file(c.join(name)).unwrap();
        mkfifo(&c.join(name));
        let mut conf = basic_conf();
        conf["customisation_layer"] = json!(c);
        let conf = dir.conf("conf.json", &conf);
        let out = run_within(&[conf.as_os_str()], Duration::from_secs(1));
        let line = one_line_error(&out, "is a FIFO");
        assert!(line.contains(name), "{line}");
    }
}

/// A layer.tar that is not a tar (but matches its checksum) is refused:
/// Docker would refuse the whole image.
#[test]
fn customisation_layer_tar_must_be_a_tar() {
    let dir = Scratch::new("custom-notar");
    let c = custom_dir(&dir);
    let junk = b"{\"this\": \"is not a tar\"}\n".repeat(50);
    fs::write(c.join("layer.tar"), &junk).unwrap();
    fs::write(c.join("checksum"), &sha256(&junk)["sha256:".len()..]).unwrap();
    let mut conf = basic_conf();
    conf["customisation_layer"] = json!(c);
    let out = run_conf(&dir, &conf, &[]);
    one_line_error(&out, "layer.tar: is not a valid tar archive");
    assert!(out.stdout.is_empty());
}

// --------------------------------------------------------- 4. conf checks

/// repo_tag, from the conf or `-t`, in Docker's grammar: the error shows
/// the rule and nothing is written.
#[test]
fn repo_tag_is_checked_as_docker_will() {
    let dir = Scratch::new("repo-tag");
    for bad in [
        "Upper:case",
        "with space:t",
        "new\nline:t",
        "no-tag",
        "a:b:c",
    ] {
        let mut conf = basic_conf();
        conf["repo_tag"] = json!(bad);
        let out = run_conf(&dir, &conf, &[]);
        let line = one_line_error(&out, "repo_tag");
        assert!(
            line.contains("NAME:TAG") || line.contains("NAME["),
            "{line}"
        );
        assert!(out.stdout.is_empty());
        let out = run_conf(&dir, &basic_conf(), &["-t", bad]);
        one_line_error(&out, "repo_tag");
    }
    // A bad conf tag overridden by a good -t is fine.
    let mut conf = basic_conf();
    conf["repo_tag"] = json!("Bad Tag");
    let out = run_conf(&dir, &conf, &["-t", "good:tag"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A store path listed twice, in one layer or across layers, is named.
#[test]
fn duplicate_store_paths_are_errors() {
    let dir = Scratch::new("dup");
    let conf = basic_conf();
    let layers = conf["store_layers"].as_array().unwrap().clone();
    let first = layers[0][0].as_str().unwrap().to_owned();
    for (layers, needle) in [
        (
            json!([[first.clone(), first.clone()]]),
            "listed twice in store layer 1",
        ),
        (
            json!([[first.clone()], [format!("{first}/")]]),
            "listed in store layers 1 and 2",
        ),
    ] {
        let mut c = conf.clone();
        c["store_layers"] = layers;
        let out = run_conf(&dir, &c, &[]);
        let line = one_line_error(&out, needle);
        assert!(line.contains(&first), "{line}");
        assert!(out.stdout.is_empty());
    }
}

/// `STORE/abc-x/passwd` where `abc-x` is a symlink to /etc: refused, and
/// nothing of /etc is archived.
#[test]
fn store_paths_below_a_store_path_are_refused() {
    let dir = Scratch::new("deep");
    let store = dir.path("store");
    fs::create_dir(&store).unwrap();
    std::os::unix::fs::symlink("/etc", store.join("abcd-x")).unwrap();
    let mut conf = basic_conf();
    conf["store_dir"] = json!(store);
    conf["store_layers"] = json!([[store.join("abcd-x/passwd")]]);
    let out = run_conf(&dir, &conf, &[]);
    one_line_error(&out, "not a direct child of store_dir");
    assert!(out.stdout.is_empty());
}

/// A file that grows while it is streamed is an error, as one that
/// shrinks is: its bytes past the planned size would be cut silently.
#[test]
fn a_file_growing_while_streamed_is_an_error() {
    let dir = Scratch::new("grow");
    let store = dir.path("store");
    let p = store.join("aaaa-grow");
    fs::create_dir_all(&p).unwrap();
    // Streamed first (sorted), slow enough for the next file to grow
    // while it is; the image goes to /dev/null, not the disk.
    fs::File::create(p.join("a-sparse"))
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    fs::write(p.join("b-growing"), b"start\n").unwrap();
    let mut conf = basic_conf();
    conf["store_dir"] = json!(store);
    conf["store_layers"] = json!([[p]]);
    let conf = dir.conf("conf.json", &conf);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let path = p.join("b-growing");
        std::thread::spawn(move || {
            let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(b"more\n").unwrap();
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let out = run(
        &[conf.as_os_str(), OsStr::new("-o"), OsStr::new("/dev/null")],
        &[],
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let line = one_line_error(&out, "grew while streaming");
    assert!(line.contains("b-growing"), "{line}");
}

/// More layers than Docker's 125: a warning naming the limit, still an
/// image (other consumers may take it).
#[test]
fn more_than_125_layers_warns() {
    let dir = Scratch::new("many");
    let store = dir.path("store");
    let mut layers = Vec::new();
    for i in 0..125 {
        let p = store.join(format!("{i:04}-p"));
        fs::create_dir_all(&p).unwrap();
        layers.push(json!([p]));
    }
    let mut conf = basic_conf();
    conf["store_dir"] = json!(store);
    conf["store_layers"] = Value::Array(layers);
    let out = run_conf(&dir, &conf, &["-q"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("126 layers") && err.contains("more than 125"),
        "{err}"
    );
    let mut conf2 = conf.clone();
    conf2["store_layers"].as_array_mut().unwrap().pop();
    let out = run_conf(&dir, &conf2, &["-q"]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("warning"));
}
