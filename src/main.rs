//! The `stream-layered-image` executable: conf in, image out.
//! Reads like the pipeline: parse the command line, load the conf, open the
//! base image, decide the layers and check their store paths, check the
//! customisation layer, describe the image (the model, with what the digest
//! cache already knows), choose the destination, write the image.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use anyhow::{bail, Context, Result};
use clap::Parser;

use stream_layered_image::base_image::{merge_config, BaseImage};
use stream_layered_image::cache::Known;
use stream_layered_image::cli::Cli;
use stream_layered_image::compression::Codec;
use stream_layered_image::conf::Conf;
use stream_layered_image::customisation::Customisation;
use stream_layered_image::destination::{self, Format};
use stream_layered_image::escape::{one_line, to_stderr};
use stream_layered_image::image::IsoTime;
use stream_layered_image::model::{self, Destination, Image, Written};
use stream_layered_image::output::Output;
use stream_layered_image::progress::{Reporter, Stderr};
use stream_layered_image::reference::Reference;
use stream_layered_image::registry::{self, Credential};
use stream_layered_image::tar::Owner;
use stream_layered_image::{layer, layering, sbom};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let started = Instant::now();
    match run(&cli) {
        Ok(w) => {
            for line in &w.notes {
                println!("{line}");
            }
            if !cli.quiet {
                to_stderr(&summary(&w, started));
            }
            if cli.verbose {
                to_stderr(&format!(
                    "stream-layered-image: read {} bytes from the store\n",
                    layer::store_bytes_read()
                ));
            }
            ExitCode::SUCCESS
        }
        Err(e) if is_broken_pipe(&e) => {
            to_stderr(
                "stream-layered-image: output closed early (broken pipe); image incomplete\n",
            );
            ExitCode::from(1)
        }
        Err(e) => {
            to_stderr(&format!(
                "stream-layered-image: {}\n",
                one_line(&format!("{e:#}"))
            ));
            ExitCode::from(1)
        }
    }
}

fn run(cli: &Cli) -> Result<Written> {
    let conf = Conf::load(&cli.conf)?;
    let shown = cli.conf.display();
    let now = SystemTime::now();
    let created =
        IsoTime::parse(&conf.created, now).with_context(|| format!("conf {shown}: `created`"))?;
    let mtime =
        IsoTime::parse(&conf.mtime, now).with_context(|| format!("conf {shown}: `mtime`"))?;
    let owner = Owner {
        uid: conf.uid.into(),
        gid: conf.gid.into(),
        uname: conf.uname.clone(),
        gname: conf.gname.clone(),
        mtime: mtime.unix_seconds(),
    };
    let base = conf
        .from_image
        .as_deref()
        .map(BaseImage::open)
        .transpose()?;
    let base_count = base.as_ref().map_or(0, |b| b.layers().len());
    let sbom_outputs = sbom::pair_outputs(&cli.sbom, &cli.sbom_out)?;
    let (store_layers, nar_hashes) = decide_layers(&conf, base_count, cli.explain_layers)?;
    layer::check_paths(&store_layers, &conf.store_dir)?;
    let customisation = Customisation::open(&conf.customisation_layer)?;
    let config = match &base {
        Some(b) => merge_config(&b.config()["config"], &conf.config),
        None => conf.config.clone(),
    };
    let customisation_dir = conf.customisation_layer.to_string_lossy();
    let layers = model::layer_specs(
        base.as_ref(),
        &store_layers,
        &customisation,
        &customisation_dir,
        &conf.store_dir,
        &owner,
        &|p| nar_hashes.get(p).cloned(),
    );
    let known = open_known(cli);
    if let Some(file) = &cli.digests {
        let keys: Vec<_> = layers.iter().filter_map(|l| l.key.clone()).collect();
        known.load_digests_file(file, &keys)?;
    }
    let reporter = Stderr::new(cli.quiet, layers.len());
    let image = Image {
        store_dir: &conf.store_dir,
        base: base.as_ref(),
        layers,
        customisation: &customisation,
        owner: &owner,
        created: &created,
        architecture: &conf.architecture,
        variant: conf.variant.as_deref(),
        os: &conf.os,
        config: &config,
        repo_tag: cli.repo_tag_or(&conf.repo_tag),
        known: &known,
        reporter: &reporter,
    };
    let destination = choose_destination(cli)?;
    let written = destination.write(&image);
    for w in known.take_warnings() {
        reporter.warn(&w);
    }
    reporter.finish();
    let written = written?;
    if !sbom_outputs.is_empty() {
        let diff_ids: Vec<String> = written.layers.iter().map(|l| l.diff_id.clone()).collect();
        let layers = sbom::image_layers(&diff_ids, base_count, &store_layers)?;
        let identity = sbom::ImageIdentity {
            created_unix: Some(created.unix_seconds()),
            reproducible: conf.created != "now" && conf.mtime != "now",
            architecture: Some(conf.architecture.clone()),
            manifest_digest: written.manifest_digest.clone(),
            ..sbom::ImageIdentity::for_repo_tag(image.repo_tag, &written.image_id)
        };
        let graph = conf.layering.as_ref().map(|l| l.graph.as_path());
        let (input, mut warnings) = sbom::load_input(&cli.conf, graph, layers, identity)?;
        warnings.extend(sbom::write_sbom_files(&sbom_outputs, &input)?);
        for w in warnings {
            reporter.warn(&format!("SBOM: {w}"));
        }
    }
    Ok(written)
}

/// The one destination the command line asks for; an archive (opened
/// last, after every input was checked) unless told otherwise.
fn choose_destination(cli: &Cli) -> Result<Box<dyn Destination>> {
    let codec = cli.codec();
    if let Some(engine) = cli.load {
        return Ok(Box::new(destination::daemon::Load { engine }));
    }
    if !cli.push.is_empty() {
        return Ok(Box::new(push_destination(cli, codec)?));
    }
    if let Some(path) = &cli.digests_only {
        return Ok(Box::new(destination::DigestsOnly {
            path: path.clone(),
            codec,
        }));
    }
    if let Some(dir) = &cli.oci_dir {
        return Ok(Box::new(destination::OciDir {
            dir: dir.clone(),
            codec,
        }));
    }
    if cli.format == Format::Docker && codec != Codec::None {
        bail!("--layer-compression applies to --format oci|dual, --oci-dir and --digests-only; a docker-archive's layers are plain tars (use --compress for the whole archive)");
    }
    // `-o -` is stdout, as usual for Unix tools.
    let target = cli.output.as_deref().filter(|p| p.as_os_str() != "-");
    Ok(Box::new(destination::Archive {
        format: cli.format,
        codec,
        output: Output::open(target, cli.compress)?,
    }))
}

/// `--push` and its options.
fn push_destination(cli: &Cli, codec: Codec) -> Result<destination::registry::Push> {
    let refs = cli
        .push
        .iter()
        .map(|r| Reference::parse(r).context("--push"))
        .collect::<Result<Vec<_>>>()?;
    let creds = cli
        .creds
        .as_deref()
        .map(|c| Credential::parse_user_pass(c).context("--creds"))
        .transpose()?;
    let options = registry::Options {
        insecure_registries: cli.insecure_registry.clone(),
        creds,
        jobs: cli.jobs.max(1),
        ..registry::Options::default()
    };
    Ok(destination::registry::Push {
        refs,
        options,
        mount_from: cli.mount_from.clone(),
        format: cli.manifest_format,
        codec,
        digest_file: cli.digest_file.clone(),
    })
}

/// What is known before reading: the cache (unless --no-cache).
fn open_known(cli: &Cli) -> Known {
    if cli.no_cache {
        return Known::none();
    }
    match cli.cache.clone().or_else(Known::default_dir) {
        Some(dir) => Known::with_cache(dir),
        None => Known::none(),
    }
}

/// The summary line: what was written, how big, which image, how fast.
fn summary(w: &Written, started: Instant) -> String {
    let mut manifest = match &w.manifest_digest {
        Some(d) => format!(", manifest {d}"),
        None => String::new(),
    };
    if let Some(detail) = &w.detail {
        manifest.push_str(&format!("; {detail}"));
    }
    format!(
        "stream-layered-image: {} layer{} ({} new), {:.1} MiB, image {}{manifest}, in {:.2} s\n",
        w.layers.len(),
        if w.layers.len() == 1 { "" } else { "s" },
        w.new_layers,
        w.bytes as f64 / (1024.0 * 1024.0),
        w.image_id,
        started.elapsed().as_secs_f64()
    )
}

/// The store layers, and each store path's NAR hash where the graph says.
type Decided = (Vec<Vec<String>>, HashMap<String, String>);

/// The store layers: the conf's `store_layers`, or decided from the graph.
fn decide_layers(conf: &Conf, base_count: usize, explain: bool) -> Result<Decided> {
    match (&conf.store_layers, &conf.layering) {
        (Some(layers), _) => {
            if explain {
                // Say so rather than ignore the flag the user asked for.
                to_stderr(
                    "stream-layered-image: --explain-layers: this conf has `store_layers`, \
                     decided when the image was built; there is nothing to explain\n",
                );
            }
            Ok((layers.clone(), HashMap::new()))
        }
        (None, Some(spec)) => {
            let spec = layering::Spec {
                debug: spec.debug || explain,
                ..spec.clone()
            };
            let d = layering::decide(&spec, &conf.store_dir, base_count)?;
            if spec.debug {
                to_stderr(&d.explain());
            } else {
                for w in &d.warnings {
                    to_stderr(&format!("stream-layered-image: warning: {w}\n"));
                }
            }
            Ok((d.layers, d.nar_hashes))
        }
        (None, None) => bail!("conf: needs `store_layers` or `layering`"),
    }
}

/// A closed consumer (`docker load` failing) shows up as EPIPE somewhere in
/// the chain, since Rust ignores SIGPIPE.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
