//! Base images (`fromImage`): every archive format users hand to nixpkgs'
//! streamer opens with the right layers, diff_ids and bytes, and every
//! malformed archive is a one-line error naming the file and the problem.
//!
//! Archives are built here, in temporary directories, with a minimal ustar
//! writer (so that names `tar::Builder` refuses, like `../x`, can be
//! written too); `tests/vectors/basic.tar` is the reference streamer's own
//! output and the base image of the `from-image` vector.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use stream_layered_image::base_image::{merge_config, BaseImage, BaseLayer};

// ---------------------------------------------------------------- helpers

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("sli-base-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A minimal ustar writer: regular files, directories and links.
#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    fn entry(mut self, name: &str, kind: u8, link: &str, data: &[u8]) -> Tar {
        let mut h = [0u8; 512];
        assert!(
            name.len() <= 100 && link.len() <= 100,
            "test names must fit ustar"
        );
        h[..name.len()].copy_from_slice(name.as_bytes());
        let mode = if kind == b'5' {
            "0000755\0"
        } else {
            "0000644\0"
        };
        h[100..108].copy_from_slice(mode.as_bytes());
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[136..148].copy_from_slice(b"00000000001\0");
        h[156] = kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.0.extend_from_slice(&h);
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
        self
    }
    fn file(self, name: &str, data: &[u8]) -> Tar {
        self.entry(name, b'0', "", data)
    }
    fn dir(self, name: &str) -> Tar {
        self.entry(name, b'5', "", &[])
    }
    fn symlink(self, name: &str, target: &str) -> Tar {
        self.entry(name, b'2', target, &[])
    }
    fn hardlink(self, name: &str, target: &str) -> Tar {
        self.entry(name, b'1', target, &[])
    }
    fn finish(mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        self.0
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn diff_id(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn zstd(bytes: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(bytes, 3).unwrap()
}

/// Two small but real layer tarballs.
fn layer_a() -> Vec<u8> {
    Tar::default()
        .dir("etc/")
        .file("etc/hostname", b"base\n")
        .finish()
}

fn layer_b() -> Vec<u8> {
    Tar::default()
        .dir("bin/")
        .file("bin/tool", &[7u8; 3000])
        .finish()
}

/// An image config in docker's shape.
fn image_config(diff_ids: &[String], env: &[&str]) -> Vec<u8> {
    serde_json::to_vec_pretty(&json!({
        "architecture": "amd64",
        "config": {"Env": env, "Cmd": ["/bin/sh"], "WorkingDir": "/"},
        "created": "2024-01-01T00:00:00Z",
        "history": diff_ids.iter().map(|_| json!({"created_by": "test"})).collect::<Vec<_>>(),
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

fn manifest(config: &str, layers: &[&str]) -> Vec<u8> {
    serde_json::to_vec(&json!([{"Config": config, "RepoTags": ["base:latest"], "Layers": layers}]))
        .unwrap()
}

/// Every layer's streamed bytes, by manifest index, checking that each
/// index is served exactly once.
fn stream_all(image: &BaseImage) -> Vec<Vec<u8>> {
    let mut out: Vec<Option<Vec<u8>>> = vec![None; image.layers().len()];
    image
        .stream_layers(&mut |i, layer: &BaseLayer, r: &mut dyn Read| {
            let mut bytes = Vec::new();
            r.read_to_end(&mut bytes)?;
            assert_eq!(
                bytes.len() as u64,
                layer.size,
                "layer {i} streamed its size"
            );
            assert_eq!(layer, &image.layers()[i]);
            assert!(out[i].replace(bytes).is_none(), "layer {i} served twice");
            Ok(())
        })
        .unwrap();
    out.into_iter()
        .enumerate()
        .map(|(i, b)| b.unwrap_or_else(|| panic!("layer {i} never served")))
        .collect()
}

/// `open`'s error as the CLI prints it; it must be one line naming `path`.
fn open_err(path: &Path) -> String {
    let e = format!("{:#}", BaseImage::open(path).unwrap_err());
    eprintln!("{e}");
    assert!(!e.contains('\n'), "one line: {e}");
    assert!(
        e.contains(&path.display().to_string()),
        "names the file: {e}"
    );
    e
}

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

// ------------------------------------------------- the reference's output

/// basic.tar's layers are its manifest's `Layers`, with the config's
/// diff_ids, and stream as the bytes whose sha256 is that diff_id.
fn check_basic(image: &BaseImage) {
    let tar_path = vectors().join("basic.tar");
    let mut archive = tar::Archive::new(std::fs::File::open(tar_path).unwrap());
    let mut members = std::collections::HashMap::new();
    for e in archive.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).unwrap();
        members.insert(name, bytes);
    }
    let manifest: Value = serde_json::from_slice(&members["manifest.json"]).unwrap();
    let names: Vec<&str> = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 7);
    let got: Vec<&str> = image.layers().iter().map(|l| l.member.as_str()).collect();
    assert_eq!(got, names);

    let streamed = stream_all(image);
    for (i, layer) in image.layers().iter().enumerate() {
        assert_eq!(
            streamed[i], members[&layer.member],
            "layer {i} passes verbatim"
        );
        assert_eq!(layer.diff_id, diff_id(&streamed[i]), "layer {i} diff_id");
        assert_eq!(
            image.config()["rootfs"]["diff_ids"][i].as_str(),
            Some(layer.diff_id.as_str())
        );
    }
}

#[test]
fn reference_basic_tar_opens_with_its_layers() {
    let image = BaseImage::open(&vectors().join("basic.tar")).unwrap();
    check_basic(&image);
}

#[test]
fn gzip_and_zstd_compressed_basic_tar_open_the_same() {
    let plain = std::fs::read(vectors().join("basic.tar")).unwrap();
    let dir = Scratch::new("compressed");
    // Names say nothing: detection is by magic bytes.
    for (name, bytes) in [("a.tar", gzip(&plain)), ("b.tar", zstd(&plain))] {
        let image = BaseImage::open(&dir.write(name, &bytes)).unwrap();
        check_basic(&image);
    }
}

#[test]
fn from_image_vector_config_is_basic_config_merged_with_the_conf() {
    let vector: Value =
        serde_json::from_slice(&std::fs::read(vectors().join("from-image.json")).unwrap()).unwrap();
    let expected: Value = serde_json::from_str(vector["config_json"].as_str().unwrap()).unwrap();
    let image = BaseImage::open(&vectors().join("basic.tar")).unwrap();

    let merged = merge_config(&image.config()["config"], &vector["conf"]["config"]);
    // Same keys in the same order: the image ID hashes these bytes.
    assert_eq!(
        serde_json::to_string(&merged).unwrap(),
        serde_json::to_string(&expected["config"]).unwrap()
    );
    let base_ids: Vec<&str> = image.layers().iter().map(|l| l.diff_id.as_str()).collect();
    let expected_ids: Vec<&str> = expected["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(base_ids, expected_ids[..base_ids.len()]);
}

// ---------------------------------------------------------------- formats

/// Legacy `docker save` (Engine < 25): `<id>/layer.tar|json|VERSION`,
/// `<config>.json`, `repositories`, manifest.json last; a layer shared by
/// two IDs is a symlink to the other ID's layer.tar.
#[test]
fn legacy_docker_save_with_a_symlinked_shared_layer() {
    let (a, b) = (layer_a(), layer_b());
    let ids = [diff_id(&a), diff_id(&b), diff_id(&a)];
    let config = image_config(&ids, &["PATH=/usr/bin"]);
    let config_name = format!("{}.json", sha256_hex(&config));
    let (i1, i2, i3) = ("1".repeat(64), "2".repeat(64), "3".repeat(64));
    let mut tar = Tar::default();
    for (id, layer) in [(&i1, Some(&a)), (&i2, Some(&b)), (&i3, None)] {
        tar = tar
            .dir(&format!("{id}/"))
            .file(&format!("{id}/VERSION"), b"1.0")
            .file(&format!("{id}/json"), b"{}");
        tar = match layer {
            Some(l) => tar.file(&format!("{id}/layer.tar"), l),
            None => tar.symlink(&format!("{id}/layer.tar"), &format!("../{i1}/layer.tar")),
        };
    }
    let layers = [
        format!("{i1}/layer.tar"),
        format!("{i2}/layer.tar"),
        format!("{i3}/layer.tar"),
    ];
    let layer_refs: Vec<&str> = layers.iter().map(String::as_str).collect();
    let archive = tar
        .file(&config_name, &config)
        .file("repositories", b"{\"base\":{\"latest\":\"x\"}}")
        .file("manifest.json", &manifest(&config_name, &layer_refs))
        .finish();
    let dir = Scratch::new("legacy");
    for (name, bytes) in [("plain", archive.clone()), ("gz", gzip(&archive))] {
        let image = BaseImage::open(&dir.write(name, &bytes)).unwrap();
        let got: Vec<&str> = image.layers().iter().map(|l| l.member.as_str()).collect();
        assert_eq!(got, layer_refs);
        assert_eq!(
            image.layers()[2].size,
            a.len() as u64,
            "symlink sized by its target"
        );
        assert_eq!(stream_all(&image), [a.clone(), b.clone(), a.clone()]);
        let ids_got: Vec<&str> = image.layers().iter().map(|l| l.diff_id.as_str()).collect();
        assert_eq!(ids_got, ids);
        assert_eq!(image.config()["config"]["Env"], json!(["PATH=/usr/bin"]));
    }
}

/// Engine ≥ 25 `docker save`: OCI layout (`oci-layout`, `index.json`,
/// `blobs/sha256/…`) plus a docker manifest.json naming blobs; a layer
/// used twice is the same blob twice.
fn engine25_archive() -> (Vec<u8>, Vec<String>, Vec<Vec<u8>>) {
    let (a, b) = (layer_a(), layer_b());
    let ids = vec![diff_id(&a), diff_id(&b), diff_id(&a)];
    let config = image_config(&ids, &["PATH=/usr/bin"]);
    let blob = |bytes: &[u8]| format!("blobs/sha256/{}", sha256_hex(bytes));
    let oci_manifest = serde_json::to_vec(&json!({"schemaVersion": 2,
        "config": {"digest": format!("sha256:{}", sha256_hex(&config))}}))
    .unwrap();
    let layers = [blob(&a), blob(&b), blob(&a)];
    let refs: Vec<&str> = layers.iter().map(String::as_str).collect();
    let archive = Tar::default()
        .dir("blobs/")
        .dir("blobs/sha256/")
        .file(&blob(&a), &a)
        .file(&blob(&b), &b)
        .file(&blob(&config), &config)
        .file(&blob(&oci_manifest), &oci_manifest)
        .file("index.json", b"{\"schemaVersion\":2,\"manifests\":[]}")
        .file("manifest.json", &manifest(&blob(&config), &refs))
        .file("oci-layout", b"{\"imageLayoutVersion\":\"1.0.0\"}")
        .finish();
    (archive, ids, vec![a.clone(), b, a])
}

#[test]
fn engine25_oci_layout_with_a_shared_blob() {
    let (archive, ids, layers) = engine25_archive();
    let dir = Scratch::new("engine25");
    for (name, bytes) in [
        ("plain", archive.clone()),
        ("gz", gzip(&archive)),
        ("zst", zstd(&archive)),
    ] {
        let image = BaseImage::open(&dir.write(name, &bytes)).unwrap();
        assert_eq!(image.layers().len(), 3);
        assert_eq!(image.layers()[0].member, image.layers()[2].member);
        assert!(image.layers()[1].member.starts_with("blobs/sha256/"));
        let ids_got: Vec<&str> = image.layers().iter().map(|l| l.diff_id.as_str()).collect();
        assert_eq!(ids_got, ids);
        assert_eq!(stream_all(&image), layers, "{name}");
    }
}

/// dockerTools.buildImage: the legacy layout, gzip-compressed, with a
/// leading `./` on names as some tar invocations write.
#[test]
fn build_image_style_gzip_with_dot_slash_names() {
    let a = layer_a();
    let ids = [diff_id(&a)];
    let config = image_config(&ids, &[]);
    let id = "4".repeat(64);
    let archive = Tar::default()
        .dir("./")
        .dir(&format!("./{id}/"))
        .file(&format!("./{id}/json"), b"{}")
        .file(&format!("./{id}/layer.tar"), &a)
        .file(&format!("./{id}/VERSION"), b"1.0")
        .file("./repositories", b"{}")
        .file("./abc.json", &config)
        .file(
            "./manifest.json",
            &manifest("abc.json", &[&format!("{id}/layer.tar")]),
        )
        .finish();
    let dir = Scratch::new("buildimage");
    let image = BaseImage::open(&dir.write("image.tar.gz", &gzip(&archive))).unwrap();
    assert_eq!(image.layers()[0].member, format!("{id}/layer.tar"));
    assert_eq!(stream_all(&image), [a]);
}

/// A layer stored compressed passes through as stored; its diff_id is the
/// config's (the uncompressed digest), never a hash of the stored bytes.
#[test]
fn compressed_layer_member_passes_through_verbatim() {
    let a = layer_a();
    let stored = gzip(&a);
    let ids = [diff_id(&a)];
    let config = image_config(&ids, &[]);
    let archive = Tar::default()
        .file("layer.tar.gz", &stored)
        .file("config.json", &config)
        .file("manifest.json", &manifest("config.json", &["layer.tar.gz"]))
        .finish();
    let dir = Scratch::new("gzlayer");
    let image = BaseImage::open(&dir.write("x", &archive)).unwrap();
    assert_eq!(image.layers()[0].diff_id, diff_id(&a));
    assert_eq!(image.layers()[0].size, stored.len() as u64);
    assert_eq!(stream_all(&image), [stored]);
}

/// A hardlinked layer member reads as its target.
#[test]
fn hardlinked_layer_member_reads_as_its_target() {
    let a = layer_a();
    let config = image_config(&[diff_id(&a), diff_id(&a)], &[]);
    let archive = Tar::default()
        .file("x/layer.tar", &a)
        .hardlink("y/layer.tar", "x/layer.tar")
        .file("c.json", &config)
        .file(
            "manifest.json",
            &manifest("c.json", &["x/layer.tar", "y/layer.tar"]),
        )
        .finish();
    let dir = Scratch::new("hardlink");
    let image = BaseImage::open(&dir.write("x", &archive)).unwrap();
    assert_eq!(stream_all(&image), [a.clone(), a]);
}

/// Engine ≥ 25 with containerd may name the config with a digest only and
/// put it before the manifest: a compressed scan must still find it.
#[test]
fn big_config_blob_after_manifest_in_gzip() {
    let a = layer_a();
    let mut config: Value =
        serde_json::from_slice(&image_config(&[diff_id(&a)], &["A=1"])).unwrap();
    // Bigger than what the scan keeps in memory, so it needs another pass.
    config["history"] = json!(vec![json!({"created_by": "x".repeat(1000)}); 1500]);
    let config = serde_json::to_vec(&config).unwrap();
    assert!(config.len() > 1 << 20);
    let name = format!("blobs/sha256/{}", sha256_hex(&config));
    let archive = Tar::default()
        .file("manifest.json", &manifest(&name, &["blobs/sha256/l"]))
        .file("blobs/sha256/l", &a)
        .file(&name, &config)
        .finish();
    let dir = Scratch::new("bigconfig");
    let image = BaseImage::open(&dir.write("x", &gzip(&archive))).unwrap();
    assert_eq!(image.config()["config"]["Env"], json!(["A=1"]));
    assert_eq!(stream_all(&image), [a]);
}

// ----------------------------------------------------------------- errors

#[test]
fn missing_file_or_a_directory() {
    let dir = Scratch::new("missing");
    let e = open_err(&dir.0.join("nope.tar"));
    assert!(e.contains("cannot open"), "{e}");
    let e = open_err(&dir.0);
    assert!(e.contains("is a directory"), "{e}");
}

#[test]
fn not_a_tar() {
    let dir = Scratch::new("notatar");
    let e = open_err(&dir.write("x.tar", &b"{\"hello\": \"world\"}\n".repeat(40)));
    assert!(e.contains("not a valid tar"), "{e}");
    let e = open_err(&dir.write("empty.tar", b""));
    assert!(e.contains("empty"), "{e}");
    let e = open_err(&dir.write("garbage.gz", &[0x1f, 0x8b, 0, 1, 2, 3, 4, 5, 6, 7]));
    assert!(
        e.contains("not a valid tar") || e.contains("corrupt"),
        "{e}"
    );
}

#[test]
fn truncated_archives() {
    let (archive, _, _) = engine25_archive();
    let dir = Scratch::new("truncated");
    // Cut inside the second layer blob: its data runs past the end.
    let cut = 512 * 3 + layer_a().len() + 512 + 100;
    let e = open_err(&dir.write("plain", &archive[..cut]));
    assert!(e.contains("truncated"), "{e}");
    // Cut inside a header.
    let e = open_err(&dir.write("header", &archive[..512 * 3 + layer_a().len() + 200]));
    assert!(
        e.contains("truncated") || e.contains("not a valid tar"),
        "{e}"
    );
    let gz = gzip(&archive);
    let e = open_err(&dir.write("gz", &gz[..gz.len() / 2]));
    assert!(e.contains("truncated") || e.contains("corrupt"), "{e}");
}

#[test]
fn no_manifest() {
    let dir = Scratch::new("nomanifest");
    let archive = Tar::default().file("a/layer.tar", &layer_a()).finish();
    let e = open_err(&dir.write("x", &archive));
    assert!(e.contains("no manifest.json"), "{e}");
    let e = open_err(&dir.write("y", &gzip(&archive)));
    assert!(e.contains("no manifest.json"), "{e}");
}

#[test]
fn manifest_names_missing_members() {
    let a = layer_a();
    let config = image_config(&[diff_id(&a)], &[]);
    let dir = Scratch::new("missingmember");
    let archive = Tar::default()
        .file("c.json", &config)
        .file("manifest.json", &manifest("c.json", &["gone/layer.tar"]))
        .finish();
    let e = open_err(&dir.write("layer", &archive));
    assert!(e.contains("gone/layer.tar"), "{e}");
    let archive = Tar::default()
        .file("l.tar", &a)
        .file("manifest.json", &manifest("missing.json", &["l.tar"]))
        .finish();
    let e = open_err(&dir.write("config", &archive));
    assert!(e.contains("missing.json"), "{e}");
    // A name holding a newline still gives a one-line error.
    let archive = Tar::default()
        .file("c.json", &config)
        .file("manifest.json", &manifest("c.json", &["bad\nname"]))
        .finish();
    let e = open_err(&dir.write("newline", &archive));
    assert!(e.contains("bad\\nname"), "{e}");
}

#[test]
fn member_names_with_dotdot_or_absolute() {
    let a = layer_a();
    let config = image_config(&[diff_id(&a)], &[]);
    let dir = Scratch::new("unsafe");
    for bad in ["../evil/layer.tar", "a/../../evil", "/etc/layer.tar"] {
        let archive = Tar::default()
            .file(bad, &a)
            .file("c.json", &config)
            .file("manifest.json", &manifest("c.json", &["l.tar"]))
            .finish();
        let e = open_err(&dir.write("x", &archive));
        assert!(e.contains(bad), "{e}");
        // Named by the manifest only.
        let archive = Tar::default()
            .file("l.tar", &a)
            .file("c.json", &config)
            .file("manifest.json", &manifest("c.json", &[bad]))
            .finish();
        let e = open_err(&dir.write("y", &archive));
        assert!(e.contains(bad), "{e}");
    }
}

#[test]
fn layer_members_that_are_not_files() {
    let a = layer_a();
    let config = image_config(&[diff_id(&a)], &[]);
    let dir = Scratch::new("notfile");
    let cases: [(Tar, &str); 3] = [
        (Tar::default().dir("l.tar/"), "directory"),
        (Tar::default().symlink("l.tar", "../outside"), "outside"),
        (
            Tar::default()
                .symlink("l.tar", "m.tar")
                .symlink("m.tar", "l.tar"),
            "loop",
        ),
    ];
    for (tar, what) in cases {
        let archive = tar
            .file("c.json", &config)
            .file("manifest.json", &manifest("c.json", &["l.tar"]))
            .finish();
        let e = open_err(&dir.write("x", &archive));
        assert!(e.contains(what) && e.contains("l.tar"), "{e}");
    }
}

#[test]
fn layer_and_diff_id_counts_must_agree() {
    let a = layer_a();
    let config = image_config(&[diff_id(&a), diff_id(&a)], &[]);
    let archive = Tar::default()
        .file("l.tar", &a)
        .file("c.json", &config)
        .file("manifest.json", &manifest("c.json", &["l.tar"]))
        .finish();
    let dir = Scratch::new("count");
    let e = open_err(&dir.write("x", &archive));
    assert!(
        e.contains("1 layers") && e.contains("2 rootfs.diff_ids"),
        "{e}"
    );
}

#[test]
fn invalid_json_members() {
    let a = layer_a();
    let dir = Scratch::new("badjson");
    let archive = Tar::default()
        .file("l.tar", &a)
        .file("manifest.json", b"[{\"Config\": ")
        .finish();
    let e = open_err(&dir.write("x", &archive));
    assert!(e.contains("manifest.json is not valid JSON"), "{e}");
    let archive = Tar::default()
        .file("l.tar", &a)
        .file("c.json", b"not json")
        .file("manifest.json", &manifest("c.json", &["l.tar"]))
        .finish();
    let e = open_err(&dir.write("y", &archive));
    assert!(e.contains("c.json is not valid JSON"), "{e}");
}

// ---------------------------------------------------------- real docker

fn docker_available() -> bool {
    Command::new("docker")
        .arg("info")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn docker(args: &[&str], stdin: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    if let Some(p) = stdin {
        cmd.stdin(std::fs::File::open(p).unwrap());
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `docker import` a one-file tar, `docker save` it, and open the result:
/// the layer streams as bytes whose digest is the config's diff_id.
#[test]
fn real_docker_save_opens() {
    if !docker_available() {
        eprintln!("SKIPPED (no docker daemon): real_docker_save_opens");
        return;
    }
    let dir = Scratch::new("docker");
    let rootfs = dir.write(
        "rootfs.tar",
        &Tar::default()
            .file("hello.txt", b"hello from a test\n")
            .finish(),
    );
    let tag = format!("sli-base-test:{}", std::process::id());
    docker(
        &["import", "--change", "ENV GREETING=hi", "-", &tag],
        Some(&rootfs),
    );
    let saved = dir.0.join("saved.tar");
    let saved_str = saved.to_str().unwrap();
    let result = std::panic::catch_unwind(|| {
        docker(&["save", "-o", saved_str, &tag], None);
        let image = BaseImage::open(&saved).unwrap();
        assert_eq!(image.layers().len(), 1);
        let streamed = stream_all(&image);
        assert_eq!(image.layers()[0].diff_id, diff_id(&streamed[0]));
        let env = image.config()["config"]["Env"].as_array().unwrap();
        assert!(env.contains(&json!("GREETING=hi")), "{env:?}");
        // `docker save | gzip` opens the same.
        let gz = dir.write("saved.tar.gz", &gzip(&std::fs::read(&saved).unwrap()));
        let gz_image = BaseImage::open(&gz).unwrap();
        assert_eq!(gz_image.layers(), image.layers());
        assert_eq!(stream_all(&gz_image), streamed);
    });
    docker(&["rmi", &tag], None);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

// ---------------------------------------------------------------- skopeo

fn skopeo_copy(from: &Path, to: &str) -> bool {
    let status = Command::new("skopeo")
        .args(["copy", "-q"])
        .arg(format!("docker-archive:{}", from.display()))
        .arg(to)
        .status();
    match status {
        Ok(s) if s.success() => true,
        Ok(s) => panic!("skopeo copy to {to} failed: {s}"),
        Err(_) => false,
    }
}

/// skopeo's docker-archive (`<digest>.tar` layers, legacy `<id>/layer.tar`
/// symlinks to them) opens as the same image; its OCI archive has no
/// manifest.json and is refused by name.
#[test]
fn skopeo_archives() {
    let dir = Scratch::new("skopeo");
    let basic = vectors().join("basic.tar");
    let out = dir.0.join("sk.tar");
    if !skopeo_copy(
        &basic,
        &format!("docker-archive:{}:fixture:latest", out.display()),
    ) {
        eprintln!("SKIPPED (no skopeo): skopeo_archives");
        return;
    }
    let reference = BaseImage::open(&basic).unwrap();
    let image = BaseImage::open(&out).unwrap();
    let ids = |i: &BaseImage| {
        i.layers()
            .iter()
            .map(|l| l.diff_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&image), ids(&reference));
    assert_eq!(stream_all(&image), stream_all(&reference));
    assert_eq!(image.config()["config"], reference.config()["config"]);

    let oci = dir.0.join("oci.tar");
    assert!(skopeo_copy(
        &basic,
        &format!("oci-archive:{}", oci.display())
    ));
    let e = open_err(&oci);
    assert!(e.contains("no manifest.json"), "{e}");
}

/// Member names longer than ustar's 100 bytes (GNU long-name and PAX
/// headers precede the member) still locate the right data.
#[test]
fn long_member_names() {
    let (a, b) = (layer_a(), layer_b());
    let long_a = format!("{}/layer.tar", "d".repeat(120));
    let long_b = format!("{}/layer.tar", "e".repeat(150));
    let config = image_config(&[diff_id(&a), diff_id(&b)], &[]);
    let mut gnu = tar::Builder::new(Vec::new());
    let mut pax = tar::Builder::new(Vec::new());
    for (name, data) in [
        (long_a.as_str(), a.as_slice()),
        (long_b.as_str(), b.as_slice()),
        ("c.json", config.as_slice()),
        ("manifest.json", &manifest("c.json", &[&long_a, &long_b])),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        gnu.append_data(&mut h.clone(), name, data).unwrap();
        // PAX `path` records, as Python's tarfile writes them.
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        if name.len() > 100 {
            pax.append_pax_extensions([("path", name.as_bytes())])
                .unwrap();
            h.set_path(&name[name.len() - 20..]).unwrap();
            h.set_cksum();
            pax.append(&h, data).unwrap();
        } else {
            h.set_path(name).unwrap();
            h.set_cksum();
            pax.append(&h, data).unwrap();
        }
    }
    let dir = Scratch::new("longnames");
    for (kind, archive) in [
        ("gnu", gnu.into_inner().unwrap()),
        ("pax", pax.into_inner().unwrap()),
    ] {
        for (name, bytes) in [("plain", archive.clone()), ("gz", gzip(&archive))] {
            let image = BaseImage::open(&dir.write(&format!("{kind}-{name}"), &bytes)).unwrap();
            assert_eq!(image.layers()[1].member, long_b);
            assert_eq!(stream_all(&image), [a.clone(), b.clone()], "{kind} {name}");
        }
    }
}
