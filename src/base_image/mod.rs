//! Base images (`fromImage`): opening a docker-archive tarball, checking
//! it, and streaming its layers verbatim into the new image.
//!
//! Mirrors nixpkgs' `load_from_image` / `add_base_layers`: the first entry
//! of `manifest.json` names the image config and the layer members, the
//! config's `rootfs.diff_ids` give each layer's diff_id (a gzip-compressed
//! layer member passes through as stored), and only `Env` of the base's
//! `config` is inherited ([`merge_config`]).
//!
//! Formats read: legacy `docker save` (`<id>/layer.tar`, possibly a symlink
//! to another id's layer), Engine ≥ 25 `docker save` (OCI layout whose
//! docker `manifest.json` names `blobs/sha256/<hex>` members),
//! dockerTools' buildImage / buildLayeredImage / streamLayeredImage output;
//! each plain, gzip- or zstd-compressed (detected by magic bytes).
//!
//! Unlike the reference, which trusts the archive, every problem is a
//! one-line error naming the base image: not a tar, truncated, no
//! `manifest.json`, a manifest naming missing members, member names that
//! are absolute or contain `..`, layer members that are not files, a
//! layer count that differs from the diff_id count, a file that is not a
//! regular file (refused before it is read: a FIFO would hang), and a layer
//! whose bytes do not match its diff_id (checked while it is copied, see
//! `verify`). The archive is untrusted: memory stays bounded whatever its
//! headers claim ([`tar_reader`]'s limits, [`MAX_MANIFEST`], [`MAX_JSON`]
//! for the config, [`MAX_MEMBERS`], [`MAX_NAME_BYTES`], zstd windows of at
//! most 128 MiB).

mod env;
mod index;
mod source;
pub mod tar_reader;
mod verify;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::escape::one_line;
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

pub use env::merge_config;
use index::{tar_error, Index, Member};
pub use index::{MAX_JSON, MAX_MANIFEST, MAX_MEMBERS, MAX_NAME_BYTES};
pub use source::index_bytes_read;
use source::Compression;
use tar_reader::TarReader;

/// One layer of the base image, in manifest order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseLayer {
    /// The member name the manifest gives (normalised: no `./`), e.g.
    /// `<id>/layer.tar` or `blobs/sha256/<hex>`. Several layers may share
    /// one member.
    pub member: String,
    /// `sha256:<hex>`, from the base config's `rootfs.diff_ids`.
    pub diff_id: String,
    /// Stored size in bytes (of the link target when the member is a link).
    pub size: u64,
}

/// An opened, checked base image.
#[derive(Debug)]
pub struct BaseImage {
    path: PathBuf,
    file_size: u64,
    compression: Compression,
    layers: Vec<BaseLayer>,
    /// Per layer: offset of its data in the decoded tar stream.
    data_pos: Vec<u64>,
    config: Value,
}

impl BaseImage {
    /// Opens and checks the base image at `path`. Errors read
    /// `base image PATH: problem`.
    pub fn open(path: &Path) -> Result<BaseImage> {
        BaseImage::open_inner(path).map_err(|e| {
            // Flattened and escaped: names come from the archive and may
            // hold newlines, yet the error must stay on one line.
            anyhow::anyhow!(
                "base image {}: {}",
                path.display(),
                one_line(&format!("{e:#}"))
            )
        })
    }

    fn open_inner(path: &Path) -> Result<BaseImage> {
        let compression = source::sniff(path)?;
        let file_size = source::open_regular(path)?
            .metadata()
            .context("cannot stat")?
            .len();
        let index = scan(path, compression)?;
        let reader = MemberReader {
            path,
            compression,
            index: &index,
        };

        if !index.contains("manifest.json") {
            if index.contains("oci-layout") {
                bail!(
                    "has no manifest.json: an OCI archive, not a docker-archive \
                     (convert it with `skopeo copy oci-archive:IN docker-archive:OUT`)"
                );
            }
            bail!("has no manifest.json (not a docker-archive)");
        }
        let manifest = reader.json("manifest.json", MAX_MANIFEST)?;
        let (config_name, layer_names) = parse_manifest(&manifest)?;
        // The parsed manifest costs many times its size: gone before the
        // config is parsed, so the two peaks never add up.
        drop(manifest);
        let config = reader
            .config_json(&config_name, MAX_JSON)
            .with_context(|| format!("image config {config_name} of manifest.json"))?;
        let diff_ids = diff_ids(&config, &config_name)?;
        check_config_env(&config, &config_name)?;
        ensure!(
            diff_ids.len() == layer_names.len(),
            "manifest.json lists {} layers but {config_name} has {} rootfs.diff_ids",
            layer_names.len(),
            diff_ids.len()
        );

        let mut layers = Vec::with_capacity(layer_names.len());
        let mut data_pos = Vec::with_capacity(layer_names.len());
        for (name, diff_id) in layer_names.into_iter().zip(diff_ids) {
            let member = index::normalize(&name).context("manifest.json names an unsafe member")?;
            let (_, m) = index
                .resolve(&member)
                .with_context(|| format!("layer {name} of manifest.json"))?;
            data_pos.push(m.data_pos);
            layers.push(BaseLayer {
                member,
                diff_id,
                size: m.size,
            });
        }
        Ok(BaseImage {
            path: path.to_owned(),
            file_size,
            compression,
            layers,
            data_pos,
            config,
        })
    }

    /// The file, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes when it was opened.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// The layers, in manifest order.
    pub fn layers(&self) -> &[BaseLayer] {
        &self.layers
    }

    /// The parts of the base image configuration a new image uses:
    /// `config` (key order kept) and `rootfs`; the rest is never parsed
    /// into memory. Pass `config()["config"]` to [`merge_config`].
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// Streams every layer's stored bytes (exactly `size` bytes each) once,
    /// calling `f(index_in_manifest, layer, reader)`.
    ///
    /// The reader verifies the layer against its diff_id as it goes: the
    /// sha256 of the bytes, or of the decompressed bytes when the member is
    /// itself gzip- or zstd-compressed (hashed, and decompressed, on another
    /// thread). The read that delivers the last byte fails if they differ,
    /// naming the layer, so a wrong base never becomes an image. A reader
    /// that hits the end of the file early fails the same way.
    ///
    /// A plain tar is read by seeking, in manifest order. A compressed one
    /// is decompressed once, front to back, and each layer is handed over
    /// as its member is met (archive order); a member listed by several
    /// layers is kept in an unnamed temporary file from that one pass and
    /// served again from there.
    pub fn stream_layers(
        &self,
        f: &mut dyn FnMut(usize, &BaseLayer, &mut dyn Read) -> Result<()>,
    ) -> Result<()> {
        match self.compression {
            Compression::None => self.stream_seeking(f),
            Compression::Gzip | Compression::Zstd => self.stream_one_pass(f),
        }
    }

    fn stream_seeking(
        &self,
        f: &mut dyn FnMut(usize, &BaseLayer, &mut dyn Read) -> Result<()>,
    ) -> Result<()> {
        let mut file = source::open_regular(&self.path)
            .with_context(|| format!("base image {}", self.path.display()))?;
        let mut digests = HashMap::new();
        for i in 0..self.layers.len() {
            file.seek(SeekFrom::Start(self.data_pos[i]))
                .with_context(|| format!("base image {}: cannot seek", self.path.display()))?;
            self.serve(i, &mut file, true, None, &mut digests, f)?;
        }
        Ok(())
    }

    fn stream_one_pass(
        &self,
        f: &mut dyn FnMut(usize, &BaseLayer, &mut dyn Read) -> Result<()>,
    ) -> Result<()> {
        let ctx = || format!("base image {}", self.path.display());
        let mut served = vec![false; self.layers.len()];
        let mut digests = HashMap::new();
        let decoded =
            source::open_decoded(&self.path, self.compression, false).with_context(ctx)?;
        let mut reader = TarReader::new(decoded);
        while served.contains(&false) {
            let Some(raw) = reader
                .next_member()
                .map_err(|e| tar_error(&e, None))
                .with_context(ctx)?
            else {
                break;
            };
            let users: Vec<usize> = (0..self.layers.len())
                .filter(|&i| !served[i] && self.data_pos[i] == raw.data_pos)
                .collect();
            let Some((&first, again)) = users.split_first() else {
                continue;
            };
            // Decompressing the archive again per extra use would cost a
            // whole pass each; an unnamed file vanishes even on SIGKILL.
            let mut spool = if again.is_empty() {
                None
            } else {
                Some(
                    tempfile::tempfile()
                        .with_context(|| format!("{}: cannot create a temporary file", ctx()))?,
                )
            };
            self.serve(
                first,
                &mut reader.data(),
                true,
                spool.as_mut(),
                &mut digests,
                f,
            )?;
            served[first] = true;
            if let Some(mut spool) = spool {
                for &i in again {
                    spool
                        .seek(SeekFrom::Start(0))
                        .with_context(|| format!("{}: cannot re-read a layer", ctx()))?;
                    self.serve(i, &mut spool, false, None, &mut digests, f)?;
                    served[i] = true;
                }
            }
        }
        if let Some(i) = served.iter().position(|s| !s) {
            bail!(
                "{}: layer member {} not found on re-reading (did the file change?)",
                ctx(),
                one_line(&self.layers[i].member)
            );
        }
        Ok(())
    }

    /// Hands layer `i` (read from `inner`) to `f`, verified, copied into
    /// `spool` on the way if given. A member whose digest is already known
    /// (listed before) is compared with this layer's diff_id up front. The
    /// bytes `f` reads count as store bytes read when `from_file` (not
    /// when served again from a temporary copy).
    fn serve(
        &self,
        i: usize,
        inner: &mut dyn Read,
        from_file: bool,
        spool: Option<&mut File>,
        digests: &mut HashMap<u64, String>,
        f: &mut dyn FnMut(usize, &BaseLayer, &mut dyn Read) -> Result<()>,
    ) -> Result<()> {
        let layer = &self.layers[i];
        let what = format!(
            "base image {}: layer {} ({})",
            self.path.display(),
            i + 1,
            one_line(&layer.member)
        );
        let known = digests.get(&self.data_pos[i]).cloned();
        if let Some(d) = &known {
            verify::check(&what, &layer.diff_id, d)?;
        }
        let mut reader = verify::Verifying::new(inner, layer.size, &layer.diff_id, what, spool);
        if known.is_some() {
            reader.skip_hashing();
        }
        if from_file {
            reader.count_store_reads();
        }
        f(i, layer, &mut reader)?;
        if let Some(d) = reader.finish()? {
            digests.insert(self.data_pos[i], d);
        }
        Ok(())
    }
}

/// Buffer of the scan of a plain (seekable) archive.
const SCAN_BUFFER: usize = 8 << 10;

/// Indexes the archive: seeking over data for a plain file, decompressing
/// (and keeping small JSON members) otherwise.
fn scan(path: &Path, compression: Compression) -> Result<Index> {
    if compression == Compression::None {
        let file = source::open_regular(path)?;
        let len = file.metadata().context("cannot stat")?.len();
        // A small buffer: each member's headers are read after a seek over
        // the previous member's data, and a big one would read ahead into
        // layer data that is never used (small members still come in one
        // read or a few).
        let mut reader = TarReader::new(BufReader::with_capacity(
            SCAN_BUFFER,
            source::Indexing(file),
        ));
        let index = Index::scan(&mut reader, false)?;
        index.check_within(len)?;
        Ok(index)
    } else {
        let mut reader = TarReader::new(source::open_decoded(path, compression, true)?);
        Index::scan(&mut reader, true)
    }
}

/// Reads whole (small) members, from the scan's keepings or the file.
struct MemberReader<'a> {
    path: &'a Path,
    compression: Compression,
    index: &'a Index,
}

impl MemberReader<'_> {
    /// Parses member `name` (at most `limit` bytes) as JSON, key order kept.
    fn json(&self, name: &str, limit: u64) -> Result<Value> {
        let bytes = self.bytes(name, limit)?;
        serde_json::from_slice(&bytes).with_context(|| format!("member {name} is not valid JSON"))
    }

    /// A JSON member's bytes, at most `limit` of them.
    fn bytes(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let normal = index::normalize(name).context("manifest.json names an unsafe member")?;
        let (i, m) = self.index.resolve(&normal)?;
        ensure!(
            m.size <= limit,
            "member {} is too large ({} bytes; the limit is {limit})",
            one_line(name),
            m.size
        );
        match self.index.kept(i) {
            Some(b) => Ok(b.to_vec()),
            None => self.read(m),
        }
    }

    /// The image config's `config` and `rootfs`, the only parts a new image
    /// uses, as one object. The rest (`history`, …) is skipped while parsed,
    /// never built: a config full of tiny JSON values costs many times its
    /// size once parsed, and base images are untrusted.
    fn config_json(&self, name: &str, limit: u64) -> Result<Value> {
        #[derive(serde::Deserialize)]
        struct Used {
            #[serde(default)]
            config: Option<Value>,
            #[serde(default)]
            rootfs: Option<Value>,
        }
        let bytes = self.bytes(name, limit)?;
        let kept = match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => serde_json::from_slice::<Used>(&bytes)
                .with_context(|| format!("member {name} is not valid JSON"))?,
            // Not an object: it has no rootfs, which diff_ids() reports.
            _ => {
                serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
                    .with_context(|| format!("member {name} is not valid JSON"))?;
                Used {
                    config: None,
                    rootfs: None,
                }
            }
        };
        let mut top = serde_json::Map::new();
        if let Some(c) = kept.config {
            top.insert("config".into(), c);
        }
        if let Some(r) = kept.rootfs {
            top.insert("rootfs".into(), r);
        }
        Ok(Value::Object(top))
    }

    /// Reads a member's bytes: seeking in a plain file, else another pass.
    fn read(&self, m: &Member) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        if self.compression == Compression::None {
            let mut file = source::Indexing(source::open_regular(self.path)?);
            file.seek(SeekFrom::Start(m.data_pos))
                .context("cannot seek")?;
            file.take(m.size)
                .read_to_end(&mut bytes)
                .context("cannot read")?;
        } else {
            let mut reader =
                TarReader::new(source::open_decoded(self.path, self.compression, true)?);
            while let Some(raw) = reader.next_member().map_err(|e| tar_error(&e, None))? {
                if raw.data_pos == m.data_pos {
                    reader.data().read_to_end(&mut bytes).with_context(|| {
                        format!("is truncated or corrupt (in member {})", one_line(&m.name))
                    })?;
                    break;
                }
            }
        }
        ensure!(
            bytes.len() as u64 == m.size,
            "is truncated: member {} ends early",
            one_line(&m.name)
        );
        Ok(bytes)
    }
}

/// The config member and layer members named by the first manifest entry
/// (nixpkgs reads `manifest_json[0]` only).
fn parse_manifest(manifest: &Value) -> Result<(String, Vec<String>)> {
    let first = manifest
        .as_array()
        .and_then(|a| a.first())
        .and_then(Value::as_object)
        .context("manifest.json is not a non-empty list of image entries")?;
    let config = first
        .get("Config")
        .and_then(Value::as_str)
        .context("manifest.json: the first entry has no string `Config`")?;
    let layers = first
        .get("Layers")
        .and_then(Value::as_array)
        .context("manifest.json: the first entry has no `Layers` list")?
        .iter()
        .map(|l| l.as_str().map(str::to_owned))
        .collect::<Option<Vec<String>>>()
        .context("manifest.json: `Layers` holds a non-string")?;
    Ok((config.to_owned(), layers))
}

/// `rootfs.diff_ids`, each `sha256:` and 64 lowercase hex digits.
fn diff_ids(config: &Value, config_name: &str) -> Result<Vec<String>> {
    let ids = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .with_context(|| format!("image config {config_name} has no rootfs.diff_ids list"))?;
    ids.iter()
        .map(|id| match id.as_str() {
            Some(s) if is_sha256_digest(s) => Ok(s.to_owned()),
            _ => bail!("image config {config_name}: diff_id {id} is not sha256:<64 hex digits>"),
        })
        .collect()
}

fn is_sha256_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The inherited `config.Env` must be a list of strings (or absent/null),
/// so that [`merge_config`] has nothing to guess.
fn check_config_env(config: &Value, config_name: &str) -> Result<()> {
    match config.get("config") {
        None | Some(Value::Null) | Some(Value::Object(_)) => {}
        Some(_) => bail!("image config {config_name}: `config` is not an object"),
    }
    match config.pointer("/config/Env") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => Ok(()),
        Some(_) => bail!("image config {config_name}: config.Env is not a list of strings"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn manifest_first_entry_is_used() {
        let m =
            json!([{"Config": "c.json", "Layers": ["a/layer.tar"]}, {"Config": "x", "Layers": []}]);
        let (c, l) = parse_manifest(&m).unwrap();
        assert_eq!((c.as_str(), l), ("c.json", vec!["a/layer.tar".to_owned()]));
    }

    #[test]
    fn malformed_manifests_are_named() {
        for bad in [
            json!({}),
            json!([]),
            json!([{"Layers": []}]),
            json!([{"Config": "c", "Layers": [1]}]),
        ] {
            let e = parse_manifest(&bad).unwrap_err().to_string();
            assert!(e.contains("manifest.json"), "{e}");
        }
    }

    #[test]
    fn diff_ids_must_be_sha256() {
        let hex = "a".repeat(64);
        let ok = json!({"rootfs": {"diff_ids": [format!("sha256:{hex}")]}});
        assert_eq!(diff_ids(&ok, "c").unwrap(), [format!("sha256:{hex}")]);
        for bad in [
            json!({}),
            json!({"rootfs": {"diff_ids": [hex]}}),
            json!({"rootfs": {"diff_ids": ["sha256:abc"]}}),
        ] {
            let e = diff_ids(&bad, "c.json").unwrap_err().to_string();
            assert!(e.contains("c.json"), "{e}");
        }
    }

    #[test]
    fn base_env_must_be_strings() {
        assert!(check_config_env(&json!({"config": {"Env": ["A=1"]}}), "c").is_ok());
        assert!(check_config_env(&json!({}), "c").is_ok());
        assert!(check_config_env(&json!({"config": {"Env": "A=1"}}), "c").is_err());
        assert!(check_config_env(&json!({"config": []}), "c").is_err());
    }
}
