//! The reference vectors: for each case, our image has the reference's
//! layer bytes (diff_ids and sizes, member by member), the same image
//! configuration bytes (so the same image ID), its progress lines, and a
//! manifest naming the repo tag.

mod common;

use common::{fixture, sha256_hex, stream, vector, Archive, Scratch};
use serde_json::Value;

/// Streams the vector's conf and checks everything a user relies on.
fn check_vector(name: &str) {
    fixture();
    let v = vector(name);
    let dir = Scratch::new(name);
    let conf = dir.conf("conf.json", &v["conf"]);
    let out = stream(&conf, &[]);
    let ar = Archive::parse(&out.stdout);

    let layers = ar.layers();
    let expected = v["layers"].as_array().unwrap();
    assert_eq!(layers.len(), expected.len(), "layer count");
    for (i, (got, want)) in layers.iter().zip(expected).enumerate() {
        check_members(name, i, got, want);
        assert_eq!(
            got.len() as u64,
            want["size"].as_u64().unwrap(),
            "{name} layer {i} size"
        );
        assert_eq!(
            format!("sha256:{}", sha256_hex(got)),
            want["diff_id"].as_str().unwrap(),
            "{name} layer {i} diff_id"
        );
    }

    let config = ar.config();
    assert_eq!(
        std::str::from_utf8(config).unwrap(),
        v["config_json"].as_str().unwrap(),
        "{name} config bytes"
    );
    assert_eq!(
        format!("sha256:{}", sha256_hex(config)),
        v["image_id"].as_str().unwrap()
    );
    let manifest = ar.manifest();
    assert_eq!(
        manifest[0]["Config"].as_str().unwrap(),
        format!("{}.json", sha256_hex(config))
    );
    assert_eq!(manifest[0]["RepoTags"][0], v["conf"]["repo_tag"]);

    let stderr = String::from_utf8(out.stderr).unwrap();
    let reference = v["stderr"].as_str().unwrap();
    assert!(
        stderr.starts_with(reference),
        "{name} progress lines\n--- ours\n{stderr}--- reference\n{reference}"
    );
    let summary = stderr[reference.len()..].trim_end();
    assert!(
        summary.starts_with("stream-layered-image: ") && !summary.contains('\n'),
        "one summary line: {summary}"
    );
}

/// Member names, types and header offsets first, so a mismatch names the
/// member where our bytes start to differ.
fn check_members(name: &str, i: usize, layer: &[u8], want: &Value) {
    let mut ar = tar::Archive::new(layer);
    let got: Vec<(String, u64)> = ar
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let p = String::from_utf8(e.path_bytes().to_vec()).unwrap();
            (p.trim_end_matches('/').to_owned(), e.raw_header_position())
        })
        .collect();
    let members = want["members"].as_array().unwrap();
    let want: Vec<(String, u64)> = members
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_owned(),
                m["header_offset"].as_u64().unwrap(),
            )
        })
        .collect();
    let names = |v: &[(String, u64)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want), "{name} layer {i} member names");
    // The reference's offsets count from a member's PAX header, the tar
    // crate's from its ustar header: compare where there is no PAX header.
    for (((n, g), (_, w)), m) in got.iter().zip(&want).zip(members) {
        if m["pax_headers"].as_object().unwrap().is_empty() {
            assert_eq!(g, w, "{name} layer {i} header offset of {n}");
        }
    }
}

#[test]
fn basic_vector() {
    check_vector("basic");
}

#[test]
fn owner_vector() {
    check_vector("owner");
}

#[test]
fn from_image_vector() {
    check_vector("from-image");
}

/// nixpkgs' `-t`: the tag given at stream time wins over the conf's.
#[test]
fn repo_tag_override() {
    fixture();
    let v = vector("basic");
    let dir = Scratch::new("tag");
    let conf = dir.conf("conf.json", &v["conf"]);
    for flag in ["-t", "--repo_tag"] {
        let out = stream(&conf, &[flag, "other:v2"]);
        let ar = Archive::parse(&out.stdout);
        assert_eq!(ar.manifest()[0]["RepoTags"][0], "other:v2");
        assert_eq!(
            format!("sha256:{}", sha256_hex(ar.config())),
            v["image_id"].as_str().unwrap(),
            "tag is not in the config"
        );
    }
}

/// The basic vector's base image is the reference's own output: its layers
/// are byte-identical to ours.
#[test]
fn layers_equal_reference_archive_bytes() {
    fixture();
    let v = vector("basic");
    let dir = Scratch::new("bytes");
    let conf = dir.conf("conf.json", &v["conf"]);
    let ours = Archive::parse(&stream(&conf, &[]).stdout);
    let reference =
        Archive::parse(&std::fs::read(common::repo().join("tests/vectors/basic.tar")).unwrap());
    for (i, (a, b)) in ours.layers().iter().zip(reference.layers()).enumerate() {
        assert!(*a == b, "layer {i} bytes differ");
    }
    assert_eq!(ours.config(), reference.config());
}

/// A gzip-compressed base image gives the same image: base layers pass
/// through with their diff_ids, whatever the archive's compression.
#[test]
fn from_image_gzip_base_gives_same_image_id() {
    use std::io::Write;
    fixture();
    let v = vector("from-image");
    let dir = Scratch::new("gzbase");
    let gz_path = dir.path("base.tar.gz");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz_path).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all(&std::fs::read(common::repo().join("tests/vectors/basic.tar")).unwrap())
        .unwrap();
    gz.finish().unwrap();
    let mut conf = v["conf"].clone();
    conf["from_image"] = serde_json::json!(gz_path);
    let out = stream(&dir.conf("conf.json", &conf), &[]);
    let ar = Archive::parse(&out.stdout);
    assert_eq!(
        format!("sha256:{}", sha256_hex(ar.config())),
        v["image_id"].as_str().unwrap()
    );
    for (got, want) in ar.layers().iter().zip(v["layers"].as_array().unwrap()) {
        assert_eq!(
            format!("sha256:{}", sha256_hex(got)),
            want["diff_id"].as_str().unwrap()
        );
    }
}
