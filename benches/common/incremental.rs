//! The images the load and push benches (issues 8 and 9) move: a benchmark
//! store's layers plus one small "app" store path as the last store layer,
//! as a Nix user's own package sits on top of its dependencies.
//!
//! - image A: the store's layers + app 1.0;
//! - image B: the same + app 1.1 instead (a one-leaf change: one new store
//!   path, so exactly one new store layer and a new config);
//! - image "one": app 1.1 alone (plus the customisation layer): the cost of
//!   moving that one layer, the one-leaf change's baseline.
//!
//! The store is a copy of the stream bench's, generated under its own root,
//! because the app paths must lie in the conf's `store_dir` and the stream
//! bench's floor reads every file of its store.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::store::{self, Store};

/// The app's binary: small, incompressible, different in every version.
const APP_BIN_BYTES: usize = 1 << 20;

/// The confs of one store's images.
pub struct Images {
    pub store: Store,
    /// Store layers + app 1.0.
    pub a: PathBuf,
    /// Store layers + app 1.1.
    pub b: PathBuf,
    /// App 1.1 alone.
    pub one: PathBuf,
    /// Store layers in A and B (the app's included).
    pub layers: usize,
}

/// Prepares the store `kind` (a `store_layers` kind) under `root` and the
/// three confs beside it; `keep_layers` keeps only the first few store
/// layers (a tiny image for smoke runs).
pub fn prepare(
    kind: &'static str,
    quick: bool,
    root: &Path,
    keep_layers: Option<usize>,
) -> io::Result<Images> {
    let store = store::prepare(kind, quick, root)?;
    let text = fs::read_to_string(&store.conf)?;
    let conf: serde_json::Value = serde_json::from_str(&text).map_err(io::Error::other)?;
    let mut layers: Vec<serde_json::Value> = conf["store_layers"]
        .as_array()
        .ok_or_else(|| {
            io::Error::other(format!(
                "{}: no store_layers (the load and push benches need a store_layers kind)",
                store.conf.display()
            ))
        })?
        .clone();
    if let Some(n) = keep_layers {
        layers.truncate(n);
    }
    let v1 = write_app(&store.store_dir, "1.0")?;
    let v2 = write_app(&store.store_dir, "1.1")?;
    let path = |p: &Path| serde_json::json!([p.display().to_string()]);
    let write = |name: &str, layers: Vec<serde_json::Value>| -> io::Result<PathBuf> {
        let mut c = conf.clone();
        c["store_layers"] = serde_json::Value::Array(layers);
        c["repo_tag"] = format!("sli-bench-{kind}-{name}:latest").into();
        let file = store
            .conf
            .with_file_name(format!("conf-{kind}-{name}.json"));
        let text = serde_json::to_string_pretty(&c).map_err(io::Error::other)?;
        fs::write(&file, text)?;
        Ok(file)
    };
    let with = |app: &Path| {
        let mut l = layers.clone();
        l.push(path(app));
        l
    };
    let a = write("a", with(&v1))?;
    let b = write("b", with(&v2))?;
    let one = write("one", vec![path(&v2)])?;
    Ok(Images {
        store,
        a,
        b,
        one,
        layers: layers.len() + 1,
    })
}

/// Writes the store path of the app's `version` (idempotent: same bytes
/// every time) and returns it.
fn write_app(store_dir: &Path, version: &str) -> io::Result<PathBuf> {
    let name = format!("sli-bench-app-{version}");
    let hash: String = Sha256::digest(name.as_bytes())
        .iter()
        .take(32)
        .map(|b| b"0123456789abcdfghijklmnpqrsvwxyz"[usize::from(b % 32)] as char)
        .collect();
    let dir = store_dir.join(format!("{hash}-{name}"));
    let version_file = dir.join("share/app/VERSION");
    if fs::read_to_string(&version_file).ok().as_deref() == Some(&format!("{version}\n")) {
        return Ok(dir);
    }
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(dir.join("bin"))?;
    fs::create_dir_all(dir.join("share/app"))?;
    let mut bin = io::BufWriter::new(fs::File::create(dir.join("bin/app"))?);
    let mut block = Sha256::digest(name.as_bytes());
    let mut written = 0;
    while written < APP_BIN_BYTES {
        bin.write_all(&block)?;
        written += block.len();
        block = Sha256::digest(block);
    }
    bin.flush()?;
    drop(bin);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dir.join("bin/app"), fs::Permissions::from_mode(0o555))?;
    // Written last: a half-written app is rewritten next time.
    fs::write(&version_file, format!("{version}\n"))?;
    Ok(dir)
}
