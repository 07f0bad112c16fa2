//! Test blobs: gzip'd tar layers made here, and a config naming their
//! diff_ids.

use std::io::Write;

use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

/// A layer: the gzip'd tar, its digest, its diff_id.
#[derive(Clone)]
pub struct Layer {
    pub gz: Vec<u8>,
    pub digest: String,
    pub diff_id: String,
}

/// Deterministic bytes that do not compress (xorshift).
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A layer holding `files` (path, bytes, mode).
pub fn layer(files: &[(&str, &[u8], u32)]) -> Layer {
    let mut tar = tar::Builder::new(Vec::new());
    for (path, data, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(1);
        h.set_cksum();
        tar.append_data(&mut h, path, *data).unwrap();
    }
    let tar = tar.into_inner().unwrap();
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    Layer {
        digest: sha256(&gz),
        diff_id: sha256(&tar),
        gz,
    }
}

pub fn sha256(b: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(b))
}

/// An image config for `layers`, running `cmd`.
pub fn config(layers: &[&Layer], cmd: &[&str]) -> Vec<u8> {
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Cmd": cmd },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .unwrap()
}
