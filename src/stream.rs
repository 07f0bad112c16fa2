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

use crate::archive::ArchiveWriter;
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
    let mut paths_of_new = Vec::new();
    for (k, paths) in job.store_layers.iter().enumerate() {
        let num = base_count + k + 1;
        say(
            job,
            format_args!(
                "Creating layer {num} from paths: {}",
                pyjson::repr_str_list(paths)
            ),
        );
        let plan = layer::plan(paths, job.store_dir, job.owner)?;
        let member = member_name(num, &taken);
        member_header(&mut aw, &member, plan.size, job.owner.mtime)?;
        aw.begin_hashed()?;
        layer::stream(plan, job.store_dir, job.owner, &mut aw)?;
        aw.end_hashed()?;
        paths_of_new.push((paths.clone(), member));
    }
    let num = base_count + job.store_layers.len() + 1;
    say(
        job,
        format_args!("Creating layer {num} with customisation..."),
    );
    let custom_member = member_name(num, &taken);
    write_customisation(job, &custom_member, &mut aw)?;

    let digests = aw.digests()?;
    let (custom_digest, store_digests) = digests
        .split_last()
        .context("internal: customisation layer digest missing")?;
    for ((paths, member), d) in paths_of_new.into_iter().zip(store_digests) {
        infos.push(LayerInfo {
            diff_id: digest::diff_id(d),
            paths,
            member,
        });
    }
    let custom_id = digest::diff_id(custom_digest);
    if custom_id != job.customisation.diff_id {
        bail!(
            "customisation layer {}: changed while streaming (now {custom_id}, checksum says {})",
            job.customisation.layer_tar.display(),
            job.customisation.diff_id
        );
    }
    infos.push(LayerInfo {
        diff_id: custom_id,
        paths: vec![job.customisation_dir.to_owned()],
        member: custom_member,
    });

    say(job, format_args!("Adding manifests..."));
    let meta = ImageMeta {
        created: job.created,
        architecture: job.architecture,
        variant: job.variant,
        os: job.os,
        config: job.config,
    };
    let config = image::config_json(&meta, &infos);
    let config_hex = digest::sha256_hex(&config);
    let config_member = format!("{config_hex}.json");
    write_bytes_member(&mut aw, &config_member, &config, job.owner.mtime)?;
    let manifest = image::manifest_json(&config_member, job.repo_tag, &infos);
    write_bytes_member(&mut aw, "manifest.json", &manifest, job.owner.mtime)?;
    let end = tar::end_len(aw.offset());
    aw.write_zeros(end)?;
    let bytes = aw.offset();
    let out = aw.finish()?;
    say(job, format_args!("Done."));
    let summary = Summary {
        layers: infos.len(),
        new_layers: infos.len() - base_count,
        bytes,
        image_id: format!("sha256:{config_hex}"),
    };
    Ok((out, summary))
}

fn say(job: &Job, line: std::fmt::Arguments) {
    if job.progress {
        eprintln!("{line}");
    }
}

/// `<N>/layer.tar`, unless a base layer already uses that name.
fn member_name(num: usize, taken: &HashSet<String>) -> String {
    let plain = format!("{num}/layer.tar");
    if taken.contains(&plain) {
        format!("sli-{num}/layer.tar")
    } else {
        plain
    }
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

/// The customisation layer's `layer.tar`, hashed again on the way so a
/// file changed since it was checked cannot slip through.
fn write_customisation<W: Write + Send + 'static>(
    job: &Job,
    member: &str,
    aw: &mut ArchiveWriter<W>,
) -> Result<()> {
    let c = job.customisation;
    let mut f = File::open(&c.layer_tar)
        .with_context(|| format!("customisation layer {}: cannot open", c.layer_tar.display()))?;
    member_header(aw, member, c.size, job.owner.mtime)?;
    aw.begin_hashed()?;
    aw.copy_exact(&mut f, c.size, &c.layer_tar)?;
    aw.end_hashed()?;
    aw.write_zeros(tar::padding(c.size))
}
