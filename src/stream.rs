//! Writes the whole image in one pass, in nixpkgs' order: base layers
//! (verbatim), one layer per `store_layers` entry, the customisation layer,
//! then the image configuration and `manifest.json`. Progress lines on
//! stderr are the reference's (`Creating layer N from paths: [...]`).
//!
//! Outer member names: nixpkgs names a layer `<sha256>/layer.tar`, which
//! needs the layer built twice; ours are `<N>/layer.tar` (N = the layer's
//! position in the image) so the bytes are read once. Base layers keep their
//! member names. Layer bytes, diff_ids and the config (hence the image ID)
//! are the reference's.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;

use anyhow::{bail, Context, Result};

use crate::archive::{ArchiveWriter, Sha};
use crate::base_image::BaseImage;
use crate::customisation::Customisation;
use crate::image::{self, ImageMeta, IsoTime, LayerInfo};
use crate::tar::{self, Owner};
use crate::{digest, layer, pyjson};

/// Everything the image is made of, already opened and checked.
pub struct Job<'a> {
    pub store_dir: &'a str,
    pub base: Option<&'a BaseImage>,
    pub store_layers: &'a [Vec<String>],
    pub customisation: &'a Customisation,
    /// The conf's `customisation_layer` text, verbatim for its history comment.
    pub customisation_dir: &'a str,
    pub created: &'a IsoTime,
    pub owner: &'a Owner,
    pub architecture: &'a str,
    pub variant: Option<&'a str>,
    pub os: &'a str,
    /// The image's `config` object (Env already merged with the base's).
    pub config: &'a serde_json::Value,
    pub repo_tag: &'a str,
    /// Print the reference's progress lines on stderr.
    pub progress: bool,
}

/// What was written, for the summary line.
#[derive(Debug, Clone)]
pub struct Summary {
    pub layers: usize,
    pub new_layers: usize,
    pub bytes: u64,
    /// `sha256:<hex>` of the config: what `docker load` reports.
    pub image_id: String,
}

/// Streams the docker-archive into `out`; returns `out` for committing.
pub fn write_image<W: Write + Send + 'static>(job: &Job, out: W) -> Result<(W, Summary)> {
    let mut aw = ArchiveWriter::new(out);
    let mut infos = write_base_layers(job, &mut aw)?;
    let base_count = infos.len();
    let taken: HashSet<String> = infos.iter().map(|l| l.member.clone()).collect();
    let mut pending = write_store_layers(job, base_count, &taken, &mut aw)?;

    let num = base_count + job.store_layers.len() + 1;
    say(
        job,
        format_args!("Creating layer {num} with customisation..."),
    );
    let custom = LayerInfo {
        diff_id: job.customisation.diff_id.clone(),
        paths: vec![job.customisation_dir.to_owned()],
        member: member_name(num, &taken),
    };
    write_customisation(job.customisation, &custom.member, job.owner.mtime, &mut aw)?;
    pending.push(custom);
    infos.extend(with_digests(job, pending, &aw.digests()?)?);

    say(job, format_args!("Adding manifests..."));
    let image_id = write_config_and_manifest(job, &infos, &mut aw)?;
    let end = tar::end_len(aw.offset());
    aw.write_zeros(end)?;
    let bytes = aw.offset();
    let out = aw.finish()?;
    say(job, format_args!("Done."));
    let summary = Summary {
        layers: infos.len(),
        new_layers: infos.len() - base_count,
        bytes,
        image_id,
    };
    Ok((out, summary))
}

/// One layer per `store_layers` entry, hashed on the way; their diff_ids
/// are filled in later by [`with_digests`].
fn write_store_layers<W: Write + Send + 'static>(
    job: &Job,
    base_count: usize,
    taken: &HashSet<String>,
    aw: &mut ArchiveWriter<W>,
) -> Result<Vec<LayerInfo>> {
    let mut pending = Vec::with_capacity(job.store_layers.len());
    for (k, paths) in job.store_layers.iter().enumerate() {
        let num = base_count + k + 1;
        let listed = pyjson::repr_str_list(paths);
        say(
            job,
            format_args!("Creating layer {num} from paths: {listed}"),
        );
        let plan = layer::plan(paths, job.store_dir, job.owner)?;
        let member = member_name(num, taken);
        member_header(aw, &member, plan.size, job.owner.mtime)?;
        aw.begin_hashed()?;
        layer::stream(plan, job.store_dir, job.owner, aw)?;
        aw.end_hashed()?;
        pending.push(LayerInfo {
            diff_id: String::new(),
            paths: paths.clone(),
            member,
        });
    }
    Ok(pending)
}

/// Gives the hashed layers (store layers, then the customisation layer)
/// their diff_ids. The customisation layer was verified when opened; its
/// digest here catches a file changed since.
fn with_digests(job: &Job, mut pending: Vec<LayerInfo>, digests: &[Sha]) -> Result<Vec<LayerInfo>> {
    if digests.len() != pending.len() {
        bail!(
            "internal: {} layer digests for {} layers",
            digests.len(),
            pending.len()
        );
    }
    let checked = job.customisation.diff_id.clone();
    for (info, d) in pending.iter_mut().zip(digests) {
        info.diff_id = digest::diff_id(d);
    }
    if pending.last().is_some_and(|c| c.diff_id != checked) {
        bail!(
            "customisation layer {}: changed while streaming (checksum says {checked})",
            job.customisation.layer_tar.display()
        );
    }
    Ok(pending)
}

/// The config (named by its sha256, the image ID) and `manifest.json`.
fn write_config_and_manifest<W: Write + Send + 'static>(
    job: &Job,
    infos: &[LayerInfo],
    aw: &mut ArchiveWriter<W>,
) -> Result<String> {
    let meta = ImageMeta {
        created: job.created,
        architecture: job.architecture,
        variant: job.variant,
        os: job.os,
        config: job.config,
    };
    let config = image::config_json(&meta, infos);
    let config_hex = digest::sha256_hex(&config);
    let config_member = format!("{config_hex}.json");
    write_bytes_member(aw, &config_member, &config, job.owner.mtime)?;
    let manifest = image::manifest_json(&config_member, job.repo_tag, infos);
    write_bytes_member(aw, "manifest.json", &manifest, job.owner.mtime)?;
    Ok(format!("sha256:{config_hex}"))
}

fn say(job: &Job, line: std::fmt::Arguments) {
    if job.progress {
        crate::escape::to_stderr(&format!("{line}\n"));
    }
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

fn member_header<W: Write + Send + 'static>(
    aw: &mut ArchiveWriter<W>,
    name: &str,
    size: u64,
    mtime: i64,
) -> Result<()> {
    let mut header = Vec::with_capacity(1024);
    tar::encode_plain_file_header(name, size, mtime, &mut header);
    aw.write_all(&header)
}

fn write_bytes_member<W: Write + Send + 'static>(
    aw: &mut ArchiveWriter<W>,
    name: &str,
    bytes: &[u8],
    mtime: i64,
) -> Result<()> {
    member_header(aw, name, bytes.len() as u64, mtime)?;
    aw.write_all(bytes)?;
    aw.write_zeros(tar::padding(bytes.len() as u64))
}

/// Base layers pass through verbatim, in whatever order the base image
/// yields them; the manifest lists them in order.
fn write_base_layers<W: Write + Send + 'static>(
    job: &Job,
    aw: &mut ArchiveWriter<W>,
) -> Result<Vec<LayerInfo>> {
    let Some(base) = job.base else {
        say(job, format_args!("No 'fromImage' provided"));
        return Ok(Vec::new());
    };
    let mtime = job.owner.mtime;
    base.stream_layers(&mut |i, l, reader| {
        say(
            job,
            format_args!("Adding base layer {} from {}", i + 1, l.member),
        );
        member_header(aw, &l.member, l.size, mtime)?;
        aw.copy_exact(reader, l.size, std::path::Path::new(&l.member))?;
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

/// The customisation layer's `layer.tar`, hashed again on the way: from the
/// bytes kept when it was checked, or read again (a big one), in which case
/// the hash catches a file changed since.
fn write_customisation<W: Write + Send + 'static>(
    c: &Customisation,
    member: &str,
    mtime: i64,
    aw: &mut ArchiveWriter<W>,
) -> Result<()> {
    member_header(aw, member, c.size, mtime)?;
    aw.begin_hashed()?;
    match c.kept() {
        Some(bytes) => aw.write_all(bytes)?,
        None => {
            let mut f = File::open(&c.layer_tar).with_context(|| {
                format!("customisation layer {}: cannot open", c.layer_tar.display())
            })?;
            aw.copy_exact(&mut f, c.size, &c.layer_tar)?;
        }
    }
    aw.end_hashed()?;
    aw.write_zeros(tar::padding(c.size))
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

    /// Kept in memory or read again, the customisation member is the same.
    #[test]
    fn customisation_member_is_the_same_kept_or_reread() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/customisation");
        let mut outputs = Vec::new();
        for keep in [u64::MAX, 0] {
            let c = Customisation::open_keeping(&dir, keep).unwrap();
            assert_eq!(c.kept().is_some(), keep > 0);
            let mut aw = ArchiveWriter::new(Vec::new());
            write_customisation(&c, "9/layer.tar", 1, &mut aw).unwrap();
            let digests = aw.digests().unwrap();
            assert_eq!(digest::diff_id(&digests[0]), c.diff_id);
            outputs.push(aw.finish().unwrap());
        }
        assert!(outputs[0] == outputs[1]);
        assert_eq!(outputs[0].len() as u64 % tar::BLOCK, 0);
    }
}
