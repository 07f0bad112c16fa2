//! The customisation layer (nixpkgs' `layer.tar` + `checksum` directory):
//! the reference fixture opens with the diff_id the reference streamer
//! wrote, and every broken directory is a one-line error naming the path.

use std::path::{Path, PathBuf};

use serde_json::Value;
use stream_layered_image::customisation::Customisation;

fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

/// A scratch copy of the fixture's customisation directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn copy_of_fixture(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("sli-custom-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["layer.tar", "checksum"] {
            std::fs::copy(vectors().join("customisation").join(f), dir.join(f)).unwrap();
        }
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open_err(dir: &Path) -> String {
    let e = format!("{:#}", Customisation::open(dir).unwrap_err());
    eprintln!("{e}");
    assert!(!e.contains('\n'), "one line: {e}");
    assert!(
        e.contains(&dir.display().to_string()),
        "names the path: {e}"
    );
    e
}

/// The reference streamer's last diff_id of the from-image vector is the
/// customisation layer's, and that is what we report.
#[test]
fn fixture_opens_with_the_reference_diff_id() {
    let dir = vectors().join("customisation");
    let c = Customisation::open(&dir).unwrap();
    let vector: Value =
        serde_json::from_slice(&std::fs::read(vectors().join("from-image.json")).unwrap()).unwrap();
    let config: Value = serde_json::from_str(vector["config_json"].as_str().unwrap()).unwrap();
    let last = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .last()
        .unwrap();
    assert_eq!(Some(c.diff_id.as_str()), last.as_str());
    assert_eq!(
        c.size,
        std::fs::metadata(dir.join("layer.tar")).unwrap().len()
    );
    assert_eq!(c.layer_tar, dir.join("layer.tar"));
}

/// `sha256sum layer.tar | cut -d' ' -f1 > checksum` leaves a newline.
#[test]
fn checksum_with_trailing_newline_is_accepted() {
    let dir = Scratch::copy_of_fixture("newline");
    let sum = std::fs::read_to_string(dir.0.join("checksum")).unwrap();
    std::fs::write(dir.0.join("checksum"), format!("{}\n", sum.trim())).unwrap();
    let c = Customisation::open(&dir.0).unwrap();
    assert_eq!(c.diff_id, format!("sha256:{}", sum.trim()));
}

#[test]
fn tampered_layer_is_a_mismatch() {
    let dir = Scratch::copy_of_fixture("tampered");
    let mut bytes = std::fs::read(dir.0.join("layer.tar")).unwrap();
    bytes[0] ^= 1;
    std::fs::write(dir.0.join("layer.tar"), bytes).unwrap();
    let e = open_err(&dir.0);
    assert!(e.contains("does not match"), "{e}");
}

#[test]
fn checksum_not_64_hex_digits() {
    let dir = Scratch::copy_of_fixture("short");
    for bad in ["", "abc", &"g".repeat(64), &"a".repeat(65)] {
        std::fs::write(dir.0.join("checksum"), bad).unwrap();
        let e = open_err(&dir.0);
        assert!(e.contains("64 hex digits"), "{e}");
    }
}

#[test]
fn missing_pieces() {
    let dir = Scratch::copy_of_fixture("missing");
    std::fs::remove_file(dir.0.join("layer.tar")).unwrap();
    let e = open_err(&dir.0);
    assert!(e.contains("layer.tar: is missing"), "{e}");
    std::fs::remove_file(dir.0.join("checksum")).unwrap();
    let e = open_err(&dir.0);
    assert!(e.contains("checksum: is missing"), "{e}");
    std::fs::remove_dir(&dir.0).unwrap();
    let e = open_err(&dir.0);
    assert!(e.contains("not a directory"), "{e}");
}
