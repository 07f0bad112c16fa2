//! The `stream-layered-image` executable: conf in, docker-archive out.
//! Reads like the pipeline: parse the command line, load the conf, open the
//! base image, decide the layers and check their store paths, check the
//! customisation layer, open the output, stream the image, commit the output.

use std::io;
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};
use clap::Parser;

use stream_layered_image::base_image::{merge_config, BaseImage};
use stream_layered_image::cli::Cli;
use stream_layered_image::conf::Conf;
use stream_layered_image::customisation::Customisation;
use stream_layered_image::escape::{one_line, to_stderr};
use stream_layered_image::image::IsoTime;
use stream_layered_image::output::Output;
use stream_layered_image::stream::{self, Job, Summary};
use stream_layered_image::tar::Owner;
use stream_layered_image::{layer, layering};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let started = Instant::now();
    match run(&cli) {
        Ok(s) => {
            if !cli.quiet {
                to_stderr(&format!(
                    "stream-layered-image: {} layer{} ({} new), {:.1} MiB, image {}, in {:.2} s\n",
                    s.layers,
                    if s.layers == 1 { "" } else { "s" },
                    s.new_layers,
                    s.bytes as f64 / (1024.0 * 1024.0),
                    s.image_id,
                    started.elapsed().as_secs_f64()
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

fn run(cli: &Cli) -> Result<Summary> {
    // Hardening (issue 12): SIGINT/SIGTERM/SIGHUP remove a half-written `-o` file.
    stream_layered_image::output::install_signal_cleanup()?;
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
    let store_layers = decide_layers(&conf, base_count, cli.explain_layers)?;
    // Hardening (issue 12): repo_tag as Docker parses it; warn beyond 125 layers.
    stream_layered_image::conf::check_image(
        cli.repo_tag_or(&conf.repo_tag),
        base_count,
        store_layers.len(),
    )?;
    layer::check_paths(&store_layers, &conf.store_dir)?;
    let customisation = Customisation::open(&conf.customisation_layer)?;
    let config = match &base {
        Some(b) => merge_config(&b.config()["config"], &conf.config),
        None => conf.config.clone(),
    };
    let customisation_dir = conf.customisation_layer.to_string_lossy();
    let job = Job {
        store_dir: &conf.store_dir,
        base: base.as_ref(),
        store_layers: &store_layers,
        customisation: &customisation,
        customisation_dir: &customisation_dir,
        created: &created,
        owner: &owner,
        architecture: &conf.architecture,
        variant: conf.variant.as_deref(),
        os: &conf.os,
        config: &config,
        repo_tag: cli.repo_tag_or(&conf.repo_tag),
        progress: !cli.quiet,
    };
    // `-o -` is stdout, as usual for Unix tools.
    let target = cli.output.as_deref().filter(|p| p.as_os_str() != "-");
    let output = Output::open(target, cli.compress)?;
    let (output, summary) = stream::write_image(&job, output)?;
    output.commit()?;
    Ok(summary)
}

/// The store layers: the conf's `store_layers`, or decided from the graph.
fn decide_layers(conf: &Conf, base_count: usize, explain: bool) -> Result<Vec<Vec<String>>> {
    match (&conf.store_layers, &conf.layering) {
        (Some(layers), _) => {
            if explain {
                // Say so rather than ignore the flag the user asked for.
                to_stderr(
                    "stream-layered-image: --explain-layers: this conf has `store_layers`, \
                     decided when the image was built; there is nothing to explain\n",
                );
            }
            Ok(layers.clone())
        }
        (None, Some(spec)) => {
            let spec = layering::Spec {
                debug: spec.debug || explain,
                ..spec.clone()
            };
            Ok(layering::decide(&spec, &conf.store_dir, base_count)?.layers)
        }
        (None, None) => anyhow::bail!("conf: needs `store_layers` or `layering`"),
    }
}

/// A closed consumer (`docker load` failing) shows up as EPIPE somewhere in
/// the chain, since Rust ignores SIGPIPE.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}
