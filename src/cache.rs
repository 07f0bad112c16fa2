//! What is known about layers before their bytes are read.
//!
//! A store layer's bytes are a function of its store paths' contents (Nix
//! store paths are immutable; the graph's `narHash` pins them), the owner,
//! the mtime and our tar format. So a [`LayerKey`] made of those names the
//! layer's bytes, and [`Facts`] recorded under it (diff_id, size, and per
//! codec the compressed blob's digest and size) can name a blob before it
//! is streamed, or skip work a destination already has.
//!
//! Keys, by kind (each a sha256 over length-prefixed fields, starting with
//! the format version below):
//!
//! - store layer ([`LayerKey::store`]): `store`, the store directory, owner
//!   and mtime, then each store path with its NAR hash;
//! - base-image layer ([`LayerKey::base`]): `base`, the base image file's
//!   path (immutable in the Nix store) and size, the layer's index and
//!   member name in its `manifest.json`, and its diff_id. The diff_id pins
//!   the uncompressed bytes whatever the file; a base layer stored
//!   compressed passes through as stored, and its facts say so
//!   ([`Facts::stored`]);
//! - customisation layer ([`LayerKey::diff_id`]): its diff_id.
//!
//! Facts come from a cache directory (`$XDG_CACHE_HOME/stream-layered-image`,
//! `layers-v1/`: one small JSON file per key, written atomically so
//! concurrent runs never see half a file) and from a digests file (`--digests FILE`, written by
//! `--digests-only FILE`: a whole image's facts, for a Nix derivation to
//! compute once and a binary cache to carry).
//!
//! The cache also remembers, per registry repository (`pushed-v1/`), the
//! digests of the last few manifests pushed there ([`Known::pushed`]): a
//! push to a new tag fetches them by digest to learn which blobs the
//! repository holds, instead of asking for each blob.
//!
//! The rule: facts only ever *skip* work. Whenever bytes are streamed they
//! are hashed, and a mismatch with a fact is an error that drops the entry
//! ([`Known::forget`]). A cache file that does not parse is ignored with a
//! warning; cache and digests files are read with a size cap.
#![warn(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::compression::Codec;
use crate::digest::{hex, is_sha256_digest};
use crate::tar::Owner;

/// Bumped whenever the bytes we write for the same inputs change (tar
/// format, compression parameters): old entries are then never looked at.
const FORMAT: &str = "stream-layered-image layer v1";
/// Largest cache entry or digests file read.
const MAX_FILE: u64 = 16 << 20;

/// Names a layer's uncompressed bytes (hex sha256 of what determines them).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LayerKey(pub String);

impl LayerKey {
    /// A store layer: its store paths in order, each with its NAR hash
    /// when the graph gives one, written with `owner` under `store_dir`.
    pub fn store(
        paths: &[String],
        nar_hash: &dyn Fn(&str) -> Option<String>,
        store_dir: &str,
        owner: &Owner,
    ) -> LayerKey {
        let mut h = Sha256::new();
        let mut field = |b: &[u8]| {
            h.update((b.len() as u64).to_le_bytes());
            h.update(b);
        };
        field(FORMAT.as_bytes());
        field(b"store");
        field(store_dir.as_bytes());
        field(owner.uid.to_string().as_bytes());
        field(owner.gid.to_string().as_bytes());
        field(owner.uname.as_bytes());
        field(owner.gname.as_bytes());
        field(owner.mtime.to_string().as_bytes());
        for p in paths {
            field(p.as_bytes());
            field(nar_hash(p).unwrap_or_default().as_bytes());
        }
        LayerKey(hex(&h.finalize()))
    }

    /// Layer `index` of the base image file at `path` (of `file_size`
    /// bytes), the member `member` of its manifest, whose config gives it
    /// `diff_id`.
    pub fn base(
        path: &[u8],
        file_size: u64,
        index: usize,
        member: &str,
        diff_id: &str,
    ) -> LayerKey {
        let mut h = Sha256::new();
        let mut field = |b: &[u8]| {
            h.update((b.len() as u64).to_le_bytes());
            h.update(b);
        };
        field(FORMAT.as_bytes());
        field(b"base");
        field(path);
        field(file_size.to_string().as_bytes());
        field(index.to_string().as_bytes());
        field(member.as_bytes());
        field(diff_id.as_bytes());
        LayerKey(hex(&h.finalize()))
    }

    /// A layer known by its diff_id (the customisation layer): the bytes
    /// are exactly those the diff_id names.
    pub fn diff_id(diff_id: &str) -> LayerKey {
        let mut h = Sha256::new();
        h.update(FORMAT.as_bytes());
        h.update(b"\0diff_id\0");
        h.update(diff_id.as_bytes());
        LayerKey(hex(&h.finalize()))
    }
}

/// A blob as stored: digest and size.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
}

/// What is known about one layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
    /// Size of the uncompressed tar; for a layer passed through compressed
    /// ([`Facts::stored`]), of the stored blob.
    pub size: u64,
    /// The compressed blobs, keyed by the encoder that made them
    /// ([`Codec::fact_key`]); for a layer passed through as stored, by
    /// the codec's name ([`Codec::name`]), since no encoder of ours made it.
    #[serde(default)]
    pub blobs: BTreeMap<String, Blob>,
    /// Set for a base-image layer stored compressed in its archive, which
    /// passes through as stored whatever codec was asked for: the name of
    /// the codec it is stored with. Its blob is `blobs[stored]`, the only
    /// blob it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<String>,
}

/// The codec called `name` by [`Codec::name`].
pub fn codec_named(name: &str) -> Option<Codec> {
    use clap::ValueEnum;
    Codec::value_variants()
        .iter()
        .copied()
        .find(|c| c.name() == name)
}

impl Facts {
    /// The blob for `codec` (the uncompressed tar itself for `none`); None
    /// for a layer passed through in another codec ([`Facts::blob_as`]).
    pub fn blob(&self, codec: Codec) -> Option<Blob> {
        match (&self.stored, codec) {
            (Some(s), c) if s != c.name() => None,
            (None, Codec::None) => Some(Blob {
                digest: self.diff_id.clone(),
                size: self.size,
            }),
            (Some(s), _) => self.blobs.get(s).cloned(),
            (None, c) => self.blobs.get(c.fact_key()).cloned(),
        }
    }

    /// The blob a destination asking for `codec` gets, with the codec it
    /// really has: `codec`'s blob, or for a layer passed through as stored
    /// ([`Facts::stored`]) that blob and its codec.
    pub fn blob_as(&self, codec: Codec) -> Option<(Codec, Blob)> {
        match &self.stored {
            Some(s) => {
                let c = codec_named(s)?;
                Some((c, self.blobs.get(s)?.clone()))
            }
            None => Some((codec, self.blob(codec)?)),
        }
    }

    /// Well-formed digests. Keys of encoders this version no longer has
    /// (written by an older version) are well-formed too: see [`Self::current`].
    fn is_valid(&self) -> bool {
        let compressed = |k: &str| codec_named(k).is_some_and(|c| c != Codec::None);
        is_sha256_digest(&self.diff_id)
            && self.blobs.iter().all(|(k, b)| {
                !k.is_empty()
                    && k.bytes()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
                    && is_sha256_digest(&b.digest)
            })
            && self.stored.as_deref().is_none_or(|s| {
                compressed(s) && self.blobs.len() == 1 && self.blobs.contains_key(s)
            })
    }

    /// `self` without the blobs of encoders other than this version's,
    /// so they are neither used nor carried into new entries and files.
    fn current(mut self) -> Facts {
        if self.stored.is_none() {
            let keys = [Codec::Gzip.fact_key(), Codec::Zstd.fact_key()];
            self.blobs.retain(|k, _| keys.contains(&k.as_str()));
        }
        self
    }

    /// `self` with `other`'s blobs added; None when the two disagree on
    /// the uncompressed bytes or on how the layer is stored.
    fn merged(mut self, other: &Facts) -> Option<Facts> {
        if self.diff_id != other.diff_id || self.size != other.size || self.stored != other.stored {
            return None;
        }
        for (k, b) in &other.blobs {
            self.blobs.insert(k.clone(), b.clone());
        }
        Some(self)
    }
}

/// The facts available to this run: from the cache directory (if any) and
/// a digests file (if given), plus what this run learns.
pub struct Known {
    dir: Option<PathBuf>,
    /// Where the manifests last pushed to each repository are remembered.
    pushed_dir: Option<PathBuf>,
    memory: Mutex<HashMap<LayerKey, Facts>>,
    /// Entries as the cache directory holds them (read or written by this
    /// run), so recording the same facts again writes nothing: a warm run
    /// would otherwise rewrite every entry.
    on_disk: Mutex<HashMap<LayerKey, Facts>>,
    warnings: Mutex<Vec<String>>,
}

impl Known {
    /// No cache: facts come only from what this run learns.
    pub fn none() -> Known {
        Known {
            dir: None,
            pushed_dir: None,
            memory: Mutex::new(HashMap::new()),
            on_disk: Mutex::new(HashMap::new()),
            warnings: Mutex::new(Vec::new()),
        }
    }

    /// The cache directory `dir` (created when first written to).
    pub fn with_cache(dir: PathBuf) -> Known {
        Known {
            pushed_dir: Some(dir.join("pushed-v1")),
            dir: Some(dir.join("layers-v1")),
            ..Known::none()
        }
    }

    /// The default cache directory: `$XDG_CACHE_HOME/stream-layered-image`,
    /// else `~/.cache/stream-layered-image`; None when neither is set.
    pub fn default_dir() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".cache"))
            })?;
        Some(base.join("stream-layered-image"))
    }

    /// Facts for `key`, from memory, then the cache directory.
    pub fn get(&self, key: &LayerKey) -> Option<Facts> {
        if let Some(f) = self.lock().get(key) {
            return Some(f.clone());
        }
        let path = self.dir.as_ref()?.join(&key.0);
        // An entry we cannot read (another user's cache) is simply not
        // known; only one that reads but does not parse is damage.
        let bytes = read_capped(&path).ok().flatten()?;
        // Each entry names its own key, so an entry copied or moved to
        // another key's file is damage, not a fact.
        let facts = serde_json::from_slice::<Entry>(&bytes)
            .ok()
            .filter(|e| e.key == *key && e.facts.is_valid())
            .map(|e| (e.facts.clone().current(), e.facts));
        match facts {
            Some((f, as_read)) => {
                // An entry holding stale codecs is rewritten without them.
                if f == as_read {
                    self.saved().insert(key.clone(), as_read);
                }
                self.lock().insert(key.clone(), f.clone());
                Some(f)
            }
            None => {
                self.warn(format!(
                    "cache entry {} is damaged; ignoring it",
                    path.display()
                ));
                None
            }
        }
    }

    /// Records what was learned about `key` (merging codecs with what is
    /// known), in memory and, atomically, in the cache directory. A cache
    /// that cannot be written costs a warning, never the image.
    pub fn record(&self, key: &LayerKey, facts: &Facts) {
        let merged = match self.get(key).and_then(|old| old.merged(facts)) {
            Some(m) => m,
            None => facts.clone(),
        };
        self.lock().insert(key.clone(), merged.clone());
        if let Some(dir) = &self.dir {
            if self.saved().get(key) == Some(&merged) {
                return;
            }
            let entry = Entry {
                key: key.clone(),
                facts: merged,
            };
            let bytes = serde_json::to_vec(&entry).unwrap_or_default();
            match write_entry(dir, &key.0, &bytes) {
                Ok(()) => {
                    self.saved().insert(entry.key, entry.facts);
                }
                Err(e) => self.warn(format!("cannot write the cache {}: {e:#}", dir.display())),
            }
        }
    }

    /// Drops `key` everywhere: its facts proved wrong.
    pub fn forget(&self, key: &LayerKey) {
        self.lock().remove(key);
        self.saved().remove(key);
        if let Some(dir) = &self.dir {
            let _ = fs::remove_file(dir.join(&key.0));
        }
    }

    /// Seeds facts from a digests file; `keys` are the image's layer keys
    /// in order, and the file must describe exactly those layers, or (a
    /// file written before base layers had keys) all but the first `base`.
    pub fn load_digests_file(&self, path: &Path, keys: &[LayerKey], base: usize) -> Result<()> {
        let shown = path.display();
        let bytes = read_capped(path)
            .with_context(|| format!("digests file {shown}"))?
            .with_context(|| format!("digests file {shown}: does not exist"))?;
        let file: DigestsFile = serde_json::from_slice(&bytes)
            .with_context(|| format!("digests file {shown}: is not a digests file"))?;
        if file.version != 1 {
            bail!("digests file {shown}: version {} is not 1", file.version);
        }
        let theirs: Vec<&LayerKey> = file.layers.iter().map(|l| &l.key).collect();
        let ours = |from: usize| keys.iter().skip(from).collect::<Vec<_>>();
        if theirs != ours(0) && (base == 0 || theirs != ours(base)) {
            bail!(
                "digests file {shown}: describes another image ({} layers there, {} here, or different store paths)",
                theirs.len(),
                keys.len()
            );
        }
        for l in &file.layers {
            if !l.facts.is_valid() {
                bail!(
                    "digests file {shown}: layer {} has a malformed digest",
                    l.key.0
                );
            }
            self.lock().insert(l.key.clone(), l.facts.clone().current());
        }
        Ok(())
    }

    /// The digests of the manifests last pushed to `repository` of
    /// `registry` from this cache, most recent first (none without a
    /// cache; an unreadable record is simply none).
    pub fn pushed(&self, registry: &str, repository: &str) -> Vec<String> {
        let Some(dir) = &self.pushed_dir else {
            return Vec::new();
        };
        let name = pushed_name(registry, repository);
        read_capped(&dir.join(name))
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<Pushed>(&b).ok())
            .filter(|p| p.registry == registry && p.repository == repository)
            .map(|p| {
                p.manifests
                    .into_iter()
                    .filter(|d| is_sha256_digest(d))
                    .take(MAX_PUSHED)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Remembers that `manifest` was pushed to `repository` of `registry`
    /// (first of the [`MAX_PUSHED`] most recent). A cache that cannot be
    /// written costs a warning.
    pub fn record_pushed(&self, registry: &str, repository: &str, manifest: &str) {
        let Some(dir) = &self.pushed_dir else {
            return;
        };
        let mut manifests = vec![manifest.to_owned()];
        for d in self.pushed(registry, repository) {
            if manifests.len() < MAX_PUSHED && !manifests.contains(&d) {
                manifests.push(d);
            }
        }
        let record = Pushed {
            registry: registry.to_owned(),
            repository: repository.to_owned(),
            manifests,
        };
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        if let Err(e) = write_entry(dir, &pushed_name(registry, repository), &bytes) {
            self.warn(format!("cannot write the cache {}: {e:#}", dir.display()));
        }
    }

    /// Takes the warnings gathered so far (damaged entries, unwritable cache).
    pub fn take_warnings(&self) -> Vec<String> {
        std::mem::take(&mut *self.warnings.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn warn(&self, w: String) {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(w);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LayerKey, Facts>> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn saved(&self) -> std::sync::MutexGuard<'_, HashMap<LayerKey, Facts>> {
        self.on_disk.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Manifests remembered per repository.
const MAX_PUSHED: usize = 4;

/// What was last pushed to one repository: `pushed-v1/<name>`, named by
/// [`pushed_name`]. Only ever a hint: a push fetches these manifests by
/// digest and checks them.
#[derive(Serialize, Deserialize)]
struct Pushed {
    registry: String,
    repository: String,
    /// Most recent first.
    manifests: Vec<String>,
}

/// The file name of a repository's [`Pushed`] record.
fn pushed_name(registry: &str, repository: &str) -> String {
    let mut h = Sha256::new();
    h.update(registry.as_bytes());
    h.update(b"\0");
    h.update(repository.as_bytes());
    hex(&h.finalize())
}

/// One cache file: the key it is for, and the facts.
#[derive(Serialize, Deserialize)]
struct Entry {
    key: LayerKey,
    #[serde(flatten)]
    facts: Facts,
}

/// The `--digests-only` file: every layer's key and facts, in image order.
#[derive(Debug, Serialize, Deserialize)]
pub struct DigestsFile {
    /// Format version: 1.
    pub version: u32,
    /// The image's layers, base layers included (a file written by an
    /// older version lists only the others).
    pub layers: Vec<DigestsEntry>,
}

/// One layer of a [`DigestsFile`].
#[derive(Debug, Serialize, Deserialize)]
pub struct DigestsEntry {
    /// The layer's key.
    pub key: LayerKey,
    /// What is known about it.
    #[serde(flatten)]
    pub facts: Facts,
}

impl DigestsFile {
    /// The file's bytes: pretty JSON, one layer after another.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// A file's bytes, None when it does not exist; an error when it is not a
/// regular file or is bigger than [`MAX_FILE`].
fn read_capped(path: &Path) -> Result<Option<Vec<u8>>> {
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("cannot stat"),
    };
    if !meta.is_file() {
        bail!("is not a regular file");
    }
    let mut bytes = Vec::new();
    fs::File::open(path)
        .context("cannot open")?
        .take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .context("cannot read")?;
    if bytes.len() as u64 > MAX_FILE {
        bail!("is over {} MiB", MAX_FILE >> 20);
    }
    Ok(Some(bytes))
}

/// Writes `dir/name` by a temporary file and a rename, so readers see the
/// old file or the new one, never half of one; synced to disk first, so
/// after a crash too (what a layout's `index.json` or a digests file
/// names must be there).
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    write_replacing(dir, name, bytes, true)
}

/// [`write_atomically`] without the sync: for the cache's own entries,
/// one per layer, whose sync (a disk flush each, a hundred in a cold push
/// of a hundred layers) bought nothing: after a crash a renamed entry may
/// be empty, which reads as damaged and so as missing, never as wrong.
fn write_entry(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    write_replacing(dir, name, bytes, false)
}

fn write_replacing(dir: &Path, name: &str, bytes: &[u8], sync: bool) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut tmp =
        temp_file_in(dir).with_context(|| format!("cannot create a file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| {
            if sync {
                tmp.as_file().sync_all()
            } else {
                Ok(())
            }
        })
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.persist(dir.join(name))
        .with_context(|| format!("cannot write {}", dir.join(name).display()))?;
    Ok(())
}

/// An exclusively created temporary file in `dir` with an unpredictable
/// name, mode 0644 less the umask (like any file the user creates; tempfile's
/// default 0600 would hide cache entries and layout blobs from other users).
pub fn temp_file_in(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(mtime: i64) -> Owner {
        Owner {
            uid: 0,
            gid: 0,
            uname: "root".into(),
            gname: "root".into(),
            mtime,
        }
    }

    fn facts(n: u8) -> Facts {
        Facts {
            diff_id: format!("sha256:{}", hex(&[n; 32])),
            size: 1024,
            blobs: BTreeMap::new(),
            stored: None,
        }
    }

    #[test]
    fn keys_depend_on_everything_that_shapes_the_bytes() {
        let paths = vec!["/nix/store/a".to_owned()];
        let none = |_: &str| None;
        let base = LayerKey::store(&paths, &none, "/nix/store", &owner(1));
        assert_eq!(
            base,
            LayerKey::store(&paths, &none, "/nix/store", &owner(1))
        );
        assert_ne!(
            base,
            LayerKey::store(&paths, &none, "/nix/store", &owner(2))
        );
        let hashed = |_: &str| Some("sha256:x".to_owned());
        assert_ne!(
            base,
            LayerKey::store(&paths, &hashed, "/nix/store", &owner(1))
        );
        let two = vec!["/nix/store/a".to_owned(), "/nix/store/b".to_owned()];
        assert_ne!(base, LayerKey::store(&two, &none, "/nix/store", &owner(1)));
        assert_ne!(LayerKey::diff_id("a"), LayerKey::diff_id("b"));
        let b = |path: &str, size, i, member: &str, diff_id: &str| {
            LayerKey::base(path.as_bytes(), size, i, member, diff_id)
        };
        let one = b("/nix/store/x-base.tar", 10, 0, "a/layer.tar", "sha256:1");
        assert_eq!(
            one,
            b("/nix/store/x-base.tar", 10, 0, "a/layer.tar", "sha256:1")
        );
        for other in [
            b("/nix/store/y-base.tar", 10, 0, "a/layer.tar", "sha256:1"),
            b("/nix/store/x-base.tar", 11, 0, "a/layer.tar", "sha256:1"),
            b("/nix/store/x-base.tar", 10, 1, "a/layer.tar", "sha256:1"),
            b("/nix/store/x-base.tar", 10, 0, "b/layer.tar", "sha256:1"),
            b("/nix/store/x-base.tar", 10, 0, "a/layer.tar", "sha256:2"),
        ] {
            assert_ne!(one, other);
        }
    }

    #[test]
    fn stored_blobs_keep_their_codec() {
        let blob = |n: u8, size| Blob {
            digest: format!("sha256:{}", hex(&[n; 32])),
            size,
        };
        let mut plain = facts(1);
        plain
            .blobs
            .insert(Codec::Gzip.fact_key().into(), blob(2, 9));
        assert_eq!(plain.blob_as(Codec::Gzip), Some((Codec::Gzip, blob(2, 9))));
        assert_eq!(plain.blob_as(Codec::Zstd), None);
        assert_eq!(
            plain.blob_as(Codec::None),
            Some((
                Codec::None,
                Blob {
                    digest: plain.diff_id.clone(),
                    size: 1024
                }
            ))
        );
        // A gzip member of a base image passes through for every codec.
        let mut stored = facts(1);
        stored.blobs.insert(Codec::Gzip.name().into(), blob(3, 7));
        stored.stored = Some(Codec::Gzip.name().into());
        assert!(stored.is_valid());
        for asked in [Codec::None, Codec::Gzip, Codec::Zstd] {
            assert_eq!(
                stored.blob_as(asked),
                Some((Codec::Gzip, blob(3, 7))),
                "{asked:?}"
            );
        }
        assert_eq!(stored.blob(Codec::None), None, "not the uncompressed tar");
        assert_eq!(stored.blob(Codec::Zstd), None);
        assert_eq!(stored.blob(Codec::Gzip), Some(blob(3, 7)));
        // Stored and plain facts never merge; malformed stored facts are damage.
        assert_eq!(plain.clone().merged(&stored), None);
        let mut bad = stored.clone();
        bad.stored = Some(Codec::Zstd.name().into());
        assert!(!bad.is_valid());
        bad.stored = Some(Codec::None.name().into());
        assert!(!bad.is_valid());
        let mut two = stored.clone();
        two.blobs.insert(Codec::Zstd.name().into(), blob(4, 1));
        assert!(!two.is_valid());
        // A key this version does not write (an older encoder's) is
        // well-formed but dropped; a path-like one is damage.
        let mut odd = plain.clone();
        odd.blobs.insert("gzip".into(), blob(4, 1));
        assert!(odd.is_valid());
        assert_eq!(odd.clone().current(), plain);
        odd.blobs.insert("../x".into(), blob(4, 1));
        assert!(!odd.is_valid());
        // The cache keeps the field.
        let dir = tempfile::tempdir().unwrap();
        let k = LayerKey::base(b"/b.tar", 1, 0, "m", &stored.diff_id);
        Known::with_cache(dir.path().to_owned()).record(&k, &stored);
        assert_eq!(
            Known::with_cache(dir.path().to_owned()).get(&k),
            Some(stored)
        );
    }

    #[test]
    fn pushed_manifests_per_repository() {
        let dir = tempfile::tempdir().unwrap();
        let d = |n: u8| format!("sha256:{}", hex(&[n; 32]));
        let known = Known::with_cache(dir.path().to_owned());
        assert!(known.pushed("r:5000", "a/b").is_empty());
        for n in 1..=6 {
            known.record_pushed("r:5000", "a/b", &d(n));
        }
        known.record_pushed("r:5000", "a/b", &d(5));
        let again = Known::with_cache(dir.path().to_owned());
        assert_eq!(again.pushed("r:5000", "a/b"), vec![d(5), d(6), d(4), d(3)]);
        assert!(again.pushed("r:5000", "a/c").is_empty());
        assert!(again.pushed("r:5001", "a/b").is_empty());
        Known::none().record_pushed("r:5000", "a/b", &d(9));
        assert!(Known::none().pushed("r:5000", "a/b").is_empty());
    }

    #[test]
    fn cache_round_trip_merge_forget_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let k = LayerKey::diff_id("x");
        let known = Known::with_cache(dir.path().to_owned());
        assert_eq!(known.get(&k), None);
        let mut f = facts(1);
        known.record(&k, &f);
        f.blobs.insert(
            Codec::Gzip.fact_key().into(),
            Blob {
                digest: format!("sha256:{}", hex(&[2; 32])),
                size: 9,
            },
        );
        let mut with_old_encoder = f.clone();
        // What an older version's gzip encoder recorded: kept out of use.
        with_old_encoder.blobs.insert(
            "gzip".into(),
            Blob {
                digest: format!("sha256:{}", hex(&[3; 32])),
                size: 8,
            },
        );
        known.record(&k, &with_old_encoder);
        let again = Known::with_cache(dir.path().to_owned());
        assert_eq!(again.get(&k), Some(f.clone()));
        assert_eq!(again.get(&k).unwrap().blob(Codec::Gzip).unwrap().size, 9);
        assert_eq!(again.get(&k).unwrap().blob(Codec::None).unwrap().size, 1024);
        again.forget(&k);
        assert_eq!(Known::with_cache(dir.path().to_owned()).get(&k), None);
        // A damaged entry is ignored with a warning.
        fs::write(dir.path().join("layers-v1").join(&k.0), b"{not json").unwrap();
        let damaged = Known::with_cache(dir.path().to_owned());
        assert_eq!(damaged.get(&k), None);
        assert_eq!(damaged.take_warnings().len(), 1);
        // An entry naming a path-like digest is damage too.
        let mut evil = facts(1);
        evil.diff_id = "sha256:../../etc".into();
        let entry = Entry {
            key: k.clone(),
            facts: evil,
        };
        let file = dir.path().join("layers-v1").join(&k.0);
        fs::write(&file, serde_json::to_vec(&entry).unwrap()).unwrap();
        assert_eq!(Known::with_cache(dir.path().to_owned()).get(&k), None);
        // An entry moved to another key's file is damage too.
        let good = Entry {
            key: LayerKey::diff_id("y"),
            facts: facts(3),
        };
        fs::write(&file, serde_json::to_vec(&good).unwrap()).unwrap();
        assert_eq!(Known::with_cache(dir.path().to_owned()).get(&k), None);
    }

    /// A warm run records what it already read: nothing is rewritten
    /// (each write is a file created and renamed), while new facts still are.
    #[test]
    fn unchanged_facts_are_not_rewritten() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let k = LayerKey::diff_id("x");
        let file = dir.path().join("layers-v1").join(&k.0);
        Known::with_cache(dir.path().to_owned()).record(&k, &facts(1));
        let ino = || fs::metadata(&file).unwrap().ino();
        let first = ino();
        let warm = Known::with_cache(dir.path().to_owned());
        assert_eq!(warm.get(&k), Some(facts(1)));
        warm.record(&k, &facts(1));
        assert_eq!(ino(), first, "same facts: the entry stays as it is");
        let mut more = facts(1);
        more.blobs.insert(
            Codec::Zstd.fact_key().into(),
            Blob {
                digest: format!("sha256:{}", hex(&[5; 32])),
                size: 7,
            },
        );
        warm.record(&k, &more);
        let second = ino();
        assert_ne!(second, first, "a new codec's blob is written");
        warm.record(&k, &more);
        assert_eq!(ino(), second, "and only once");
        assert_eq!(Known::with_cache(dir.path().to_owned()).get(&k), Some(more));
    }

    #[test]
    fn digests_file_must_describe_this_image() {
        let dir = tempfile::tempdir().unwrap();
        let keys = vec![LayerKey::diff_id("a"), LayerKey::diff_id("b")];
        let file = DigestsFile {
            version: 1,
            layers: keys
                .iter()
                .enumerate()
                .map(|(i, k)| DigestsEntry {
                    key: k.clone(),
                    facts: facts(i as u8),
                })
                .collect(),
        };
        let path = dir.path().join("d.json");
        fs::write(&path, file.to_bytes()).unwrap();
        let known = Known::none();
        known.load_digests_file(&path, &keys, 0).unwrap();
        assert_eq!(known.get(&keys[1]), Some(facts(1)));
        let err = Known::none()
            .load_digests_file(&path, &keys[..1], 0)
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("describes another image"),
            "{err:#}"
        );
        // A file of an older version, without the base layer's entry.
        let base = LayerKey::base(b"/b.tar", 1, 0, "m", "sha256:0");
        let with_base = [vec![base.clone()], keys.clone()].concat();
        Known::none()
            .load_digests_file(&path, &with_base, 1)
            .unwrap();
        assert!(Known::none()
            .load_digests_file(&path, &with_base, 0)
            .is_err());
        fs::write(&path, b"[1,2").unwrap();
        let err = Known::none()
            .load_digests_file(&path, &keys, 0)
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("is not a digests file"),
            "{err:#}"
        );
        let err = Known::none()
            .load_digests_file(&dir.path().join("missing"), &keys, 0)
            .unwrap_err();
        assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
    }
}
