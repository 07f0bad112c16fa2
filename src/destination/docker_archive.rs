//! The docker-archive, in one pass and nixpkgs' order: base layers
//! (verbatim), one layer per store layer, the customisation layer, then the
//! image configuration and `manifest.json`. Progress lines are the
//! reference's (`Creating layer N from paths: [...]`).
//!
//! Outer member names: nixpkgs names a layer `<sha256>/layer.tar`, which
//! needs the layer built twice; ours are `<N>/layer.tar` (N = the layer's
//! position in the image) so the bytes are read once. Base layers keep their
//! member names. Layer bytes, diff_ids and the config (hence the image ID)
//! are the reference's.
//!
//! For an incremental `docker load`, chosen layer members can be left out
//! (`omit`): their manifest and config entries stay, and their diff_ids
//! must be known beforehand. Docker's classic loader only opens a layer
//! member when it lacks that layer.

use std::collections::HashSet;
use std::io::Write;

use anyhow::{bail, Result};

use crate::archive::ArchiveWriter;
use crate::blob;
use crate::cache::Facts;
use crate::digest;
use crate::image::{self, LayerInfo};
use crate::model::{Image, Layer, Origin, Written};
use crate::pyjson;
use crate::tar;

/// Streams the docker-archive into `out`, leaving out the members of the
/// layers marked in `omit` (empty: none); returns `out` for committing.
pub fn write<W: Write + Send + 'static>(
    img: &Image,
    out: W,
    omit: &[bool],
) -> Result<(W, Written)> {
    let omitted = |i: usize| omit.get(i).copied().unwrap_or(false);
    // Only a left-out layer needs its diff_id before reading; looking them
    // all up would cost every plain stream a cache read per layer.
    let known = if omit.contains(&true) {
        img.known_diff_ids()
    } else {
        vec![None; img.layers.len()]
    };
    for (i, d) in known.iter().enumerate() {
        if omitted(i) && d.is_none() {
            bail!(
                "internal: {} left out without a known diff_id",
                img.describe(i)
            );
        }
    }
    let mut aw = ArchiveWriter::new(out);
    let mut infos = write_base_layers(img, &mut aw, &omitted)?;
    let taken: HashSet<String> = infos.iter().map(|l| l.member.clone()).collect();
    // Layers streamed (hashed) in order; their diff_ids come back together.
    let mut hashed = Vec::new();
    for (i, spec) in img.layers.iter().enumerate().skip(img.base_count()) {
        let num = i + 1;
        match &spec.origin {
            Origin::Store(paths) => img.reporter.step(&format!(
                "Creating layer {num} from paths: {}",
                pyjson::repr_str_list(paths)
            )),
            _ => img
                .reporter
                .step(&format!("Creating layer {num} with customisation...")),
        }
        let member = member_name(num, &taken);
        infos.push(LayerInfo {
            diff_id: known[i].clone().unwrap_or_default(),
            paths: spec.history.clone(),
            member: member.clone(),
        });
        if omitted(i) {
            continue;
        }
        let prepared = blob::prepare(img, i)?;
        let size = prepared.size();
        aw.member_header(&member, size, img.owner.mtime)?;
        aw.begin_hashed()?;
        blob::stream_tar(img, prepared, &mut aw)?;
        aw.end_hashed()?;
        aw.write_zeros(tar::padding(size))?;
        img.reporter.progress(size, true);
        hashed.push((i, size));
    }
    let digests = aw.digests()?;
    if digests.len() != hashed.len() {
        bail!(
            "internal: {} layer digests for {} layers",
            digests.len(),
            hashed.len()
        );
    }
    for ((i, size), d) in hashed.iter().zip(&digests) {
        let learnt = Facts {
            diff_id: digest::diff_id(d),
            size: *size,
            ..Facts::default()
        };
        blob::settle(img, *i, &learnt)?;
        infos[*i].diff_id = learnt.diff_id;
    }

    img.reporter.step("Adding manifests...");
    let config = img.config_json_from(&infos);
    let config_hex = digest::sha256_hex(&config);
    let config_member = format!("{config_hex}.json");
    aw.bytes_member(&config_member, &config, img.owner.mtime)?;
    let manifest = image::manifest_json(&config_member, img.repo_tag, &infos);
    aw.bytes_member("manifest.json", &manifest, img.owner.mtime)?;
    let end = tar::end_len(aw.offset());
    aw.write_zeros(end)?;
    let bytes = aw.offset();
    let out = aw.finish()?;
    img.reporter.step("Done.");
    let layers = infos
        .iter()
        .map(|l| Layer {
            diff_id: l.diff_id.clone(),
            blob: crate::cache::Blob {
                digest: l.diff_id.clone(),
                size: 0,
            },
            codec: crate::compression::Codec::None,
            history: l.paths.clone(),
        })
        .collect();
    let written = Written {
        layers,
        new_layers: hashed.len(),
        bytes,
        image_id: format!("sha256:{config_hex}"),
        manifest_digest: None,
        notes: Vec::new(),
        detail: None,
    };
    Ok((out, written))
}

/// `<N>/layer.tar`, unless a base layer already uses that name; then
/// `sli-<N>/layer.tar`, `sli-sli-<N>/layer.tar` … (base member names come
/// from an arbitrary archive, so any one name may be taken).
fn member_name(num: usize, taken: &HashSet<String>) -> String {
    let mut dir = num.to_string();
    while taken.contains(&format!("{dir}/layer.tar")) {
        dir.insert_str(0, "sli-");
    }
    format!("{dir}/layer.tar")
}

/// Base layers pass through verbatim, in whatever order the base image
/// yields them; the manifest lists them in order.
fn write_base_layers<W: Write + Send + 'static>(
    img: &Image,
    aw: &mut ArchiveWriter<W>,
    omitted: &dyn Fn(usize) -> bool,
) -> Result<Vec<LayerInfo>> {
    let Some(base) = img.base else {
        img.reporter.step("No 'fromImage' provided");
        return Ok(Vec::new());
    };
    let mtime = img.owner.mtime;
    let mut written = HashSet::new();
    base.stream_layers(&mut |i, l, reader| {
        img.reporter
            .step(&format!("Adding base layer {} from {}", i + 1, l.member));
        // Several layers may share a member; it is written once. A left-out
        // layer's member is still written when a kept layer shares it.
        let needed =
            (0..base.layers().len()).any(|j| !omitted(j) && base.layers()[j].member == l.member);
        if !needed || !written.insert(l.member.clone()) {
            return Ok(());
        }
        aw.member_header(&l.member, l.size, mtime)?;
        aw.copy_exact(reader, l.size, std::path::Path::new(&l.member))?;
        img.reporter.progress(l.size, true);
        aw.write_zeros(tar::padding(l.size))
    })?;
    Ok(base
        .layers()
        .iter()
        .map(|l| LayerInfo {
            diff_id: l.diff_id.clone(),
            paths: vec![l.member.clone()],
            member: l.member.clone(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_avoid_every_base_member() {
        let none = HashSet::new();
        assert_eq!(member_name(3, &none), "3/layer.tar");
        let taken: HashSet<String> = ["3/layer.tar", "sli-3/layer.tar"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(member_name(3, &taken), "sli-sli-3/layer.tar");
        assert_eq!(member_name(4, &taken), "4/layer.tar");
    }
}
