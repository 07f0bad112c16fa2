//! `--digests-only FILE`: every layer's facts (diff_id and size, and the
//! blob digest and size for the chosen codec) for the whole image, base
//! layers included, written without writing the image. A Nix derivation
//! computes it once; a binary cache carries it to CI, where `--digests
//! FILE` names every blob before a byte of the store is read. A base layer
//! stored compressed in its archive keeps its own codec there, whatever
//! codec was asked for (its facts say which).

use std::path::Path;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

use crate::blob;
use crate::cache::{self, DigestsEntry, DigestsFile};
use crate::compression::Codec;
use crate::destination::oci_archive::bytes_blob;
use crate::model::{Image, Layer, Written};

/// Computes (or takes from what is known) every layer's facts for `codec`
/// and writes them to `path` atomically.
pub fn write(img: &Image, path: &Path, codec: Codec) -> Result<Written> {
    let base = img.base_count();
    // Base layers come from one pass over the base image, made only when
    // one of them is not known yet; it records what it learns.
    let base_new = if (0..base).any(|i| img.known_blob(i, codec).is_none()) {
        blob::produce_base(img, codec, &mut |_| Ok(std::io::sink()), &mut |_, _, _| {
            Ok(())
        })?;
        base
    } else {
        0
    };
    let own: Vec<usize> = (base..img.layers.len()).collect();
    let produced: Vec<bool> = own
        .par_iter()
        .map(|&i| -> Result<bool> {
            if img.known_blob(i, codec).is_some() {
                return Ok(false);
            }
            blob::produce(img, i, codec, std::io::sink())?;
            Ok(true)
        })
        .collect::<Result<_>>()?;
    let mut entries = Vec::with_capacity(own.len());
    let mut layers = Vec::with_capacity(img.layers.len());
    for i in 0..img.layers.len() {
        let (Some(facts), Some((used, blob))) = (img.known_facts(i), img.known_blob(i, codec))
        else {
            bail!("internal: no digests for {}", img.describe(i));
        };
        layers.push(Layer {
            diff_id: facts.diff_id.clone(),
            blob,
            codec: used,
            history: img.layers[i].history.clone(),
        });
        if let Some(key) = &img.layers[i].key {
            entries.push(DigestsEntry {
                key: key.clone(),
                facts,
            });
        }
    }
    let file = DigestsFile {
        version: 1,
        layers: entries,
    };
    let name = path
        .file_name()
        .with_context(|| format!("--digests-only {}: names no file", path.display()))?
        .to_string_lossy()
        .into_owned();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    cache::write_atomically(dir, &name, &file.to_bytes())
        .with_context(|| format!("--digests-only {}", path.display()))?;
    let config = img.config_json(&layers);
    Ok(Written {
        layers,
        new_layers: base_new + produced.iter().filter(|p| **p).count(),
        bytes: 0,
        image_id: bytes_blob(&config).digest,
        manifest_digest: None,
        notes: Vec::new(),
        detail: None,
    })
}
