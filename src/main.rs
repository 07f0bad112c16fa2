//! The `stream-layered-image` executable: conf in, image out.
//! Reads like the pipeline: parse the command line, load the conf, open the
//! base image, decide the layers and check their store paths, check the
//! customisation layer, describe the image (the model, with what the digest
//! cache already knows), choose the destination, write the image.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use anyhow::{bail, Context, Result};
use clap::Parser;

use stream_layered_image::base_image::{merge_config, BaseImage};
use stream_layered_image::cache::Known;
use stream_layered_image::cli::Cli;
use stream_layered_image::compression::Codec;
use stream_layered_image::conf::{self, Conf};
use stream_layered_image::customisation::Customisation;
use stream_layered_image::destination::index::{self, Platform};
use stream_layered_image::destination::{self, Format};
use stream_layered_image::escape::{one_line, to_stderr};
use stream_layered_image::image::IsoTime;
use stream_layered_image::model::{self, Destination, Image, LayerSpec, Written};
use stream_layered_image::output::Output;
use stream_layered_image::progress::{Reporter, Stderr};
use stream_layered_image::reference::Reference;
use stream_layered_image::registry::{self, Credential};
use stream_layered_image::tar::Owner;
use stream_layered_image::{layer, layering, sbom};

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    let started = Instant::now();
    match run(&cli) {
        Ok(done) => {
            for line in &done.notes {
                if done.notes_to_stderr {
                    to_stderr(&format!("stream-layered-image: {line}\n"));
                } else {
                    println!("{line}");
                }
            }
            if !cli.quiet {
                for (w, label) in &done.written {
                    to_stderr(&summary(w, label.as_deref(), started));
                }
            }
            if cli.verbose {
                // Store bytes: store paths' files and base layers' data.
                let index = match stream_layered_image::base_image::index_bytes_read() {
                    0 => String::new(),
                    n => format!(" (and {n} indexing the base image and reading its config)"),
                };
                to_stderr(&format!(
                    "stream-layered-image: read {} bytes from the store{index}\n",
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

/// Asks glibc's allocator to keep some of the memory it frees. Every
/// layer's pipeline allocates its buffers anew (chunks, compression
/// blocks, their output), and glibc trims each arena's freed top back to
/// the kernel at once, then faults the same pages in again, zeroed, for
/// the next layer: about 22,000 page faults in a cold push of the push
/// bench's hundred layers. With each arena's top padded by 16 MiB they are
/// 9,300, and the push takes 5 % less CPU (`perf stat`; peak RSS 36 -> 44
/// MiB). Only the executable does this: the library leaves its caller's
/// allocator be.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called first
    // thing, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, 16 << 20);
    }
}

/// What a run wrote: each image (with its platform when several confs
/// made an index) and the lines for stdout.
struct Done {
    written: Vec<(Written, Option<String>)>,
    notes: Vec<String>,
    /// The archive went to stdout: the lines go to stderr instead.
    notes_to_stderr: bool,
}

/// One conf, opened and checked: everything an [`Image`] borrows.
struct Prepared {
    conf: Conf,
    created: IsoTime,
    owner: Owner,
    base: Option<BaseImage>,
    base_count: usize,
    store_layers: Vec<Vec<String>>,
    customisation: Customisation,
    config: serde_json::Value,
    layers: Vec<LayerSpec>,
}

impl Prepared {
    /// Loads the conf at `path` (already parsed as `conf`), opens the base
    /// image, decides the layers and checks their store paths and the
    /// customisation layer.
    fn open(path: &Path, conf: Conf, now: SystemTime, cli: &Cli) -> Result<Prepared> {
        let shown = path.display();
        let created = IsoTime::parse(&conf.created, now)
            .with_context(|| format!("conf {shown}: `created`"))?;
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
        let (store_layers, nar_sizes, nar_hashes) =
            decide_layers(&conf, base_count, cli.explain_layers)?;
        // The tag as Docker parses it; a warning beyond Docker's 125 layers.
        conf::check_image(
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
        let layers = model::layer_specs(
            base.as_ref(),
            &store_layers,
            &nar_sizes,
            &customisation,
            &customisation_dir,
            &conf.store_dir,
            &owner,
            &|p| nar_hashes.get(p).cloned(),
        );
        Ok(Prepared {
            conf,
            created,
            owner,
            base,
            base_count,
            store_layers,
            customisation,
            config,
            layers,
        })
    }

    /// The image model over this conf.
    fn image<'a>(
        &'a self,
        repo_tag: &'a str,
        known: &'a Known,
        reporter: &'a dyn Reporter,
    ) -> Image<'a> {
        Image {
            store_dir: &self.conf.store_dir,
            base: self.base.as_ref(),
            layers: self.layers.clone(),
            customisation: &self.customisation,
            owner: &self.owner,
            created: &self.created,
            architecture: &self.conf.architecture,
            variant: self.conf.variant.as_deref(),
            os: &self.conf.os,
            config: &self.config,
            repo_tag,
            known,
            reporter,
            attach: None,
        }
    }
}

fn run(cli: &Cli) -> Result<Done> {
    // SIGINT/SIGTERM/SIGHUP remove a half-written `-o` file or temporary blob.
    stream_layered_image::output::install_signal_cleanup()?;
    if cli.conf.len() > 1 {
        return run_index(cli);
    }
    let path = &cli.conf[0];
    let sbom_outputs = sbom::pair_outputs(&cli.sbom, &cli.sbom_out)?;
    let attaching = !cli.sbom.is_empty() && carries_referrers(cli);
    if !cli.sbom.is_empty() && sbom_outputs.is_empty() && !attaching {
        bail!("--sbom needs --sbom-out FILE with this output: only --oci-dir, --format oci|dual and --push carry SBOMs inside the image (a docker-archive, --load and --digests-only have no place for them)");
    }
    let p = Prepared::open(path, Conf::load(path)?, SystemTime::now(), cli)?;
    let known = open_known(cli);
    if let Some(file) = &cli.digests {
        let keys: Vec<_> = p.layers.iter().filter_map(|l| l.key.clone()).collect();
        known.load_digests_file(file, &keys, p.base_count)?;
    }
    let reporter = Stderr::new(cli.quiet, p.layers.len());
    let conf = &p.conf;
    let graph = conf.layering.as_ref().map(|l| l.graph.as_path());
    // The SBOM names the image manifest's digest, so it is made once the
    // destination knows it: inside the destination for OCI outputs (which
    // then carry it as a referrer), after it for --sbom-out alone.
    let sbom_input = |image_id: &str, manifest_digest: Option<String>, diff_ids: &[String]| {
        let layers = sbom::image_layers(diff_ids, p.base_count, &p.store_layers)?;
        let identity = sbom::ImageIdentity {
            created_unix: Some(p.created.unix_seconds()),
            reproducible: conf.created != "now" && conf.mtime != "now",
            architecture: Some(conf.architecture.clone()),
            manifest_digest,
            ..sbom::ImageIdentity::for_repo_tag(cli.repo_tag_or(&conf.repo_tag), image_id)
        };
        sbom::load_input(path, graph, layers, identity)
    };
    let made: Mutex<Option<Made>> = Mutex::new(None);
    let attach = |s: &model::Subject| -> Result<Vec<model::Artifact>> {
        let diff_ids: Vec<String> = s.layers.iter().map(|l| l.diff_id.clone()).collect();
        let (input, mut warnings) =
            sbom_input(s.image_id, Some(s.manifest.digest.clone()), &diff_ids)?;
        let mut artifacts = Vec::new();
        for (i, format) in cli.sbom.iter().enumerate() {
            let (bytes, w) = sbom::render(*format, &input);
            // Both formats warn alike: keep the first format's warnings.
            if i == 0 {
                warnings.extend(w);
            }
            artifacts.push(model::Artifact {
                media_type: format.media_type().to_owned(),
                bytes,
                annotations: BTreeMap::from([(
                    "org.opencontainers.image.created".to_owned(),
                    p.created.isoformat(),
                )]),
            });
        }
        if let Ok(mut m) = made.lock() {
            *m = Some((input, warnings));
        }
        Ok(artifacts)
    };
    let mut image = p.image(cli.repo_tag_or(&p.conf.repo_tag), &known, &reporter);
    if attaching {
        image.attach = Some(&attach);
    }
    let destination = choose_destination(cli)?;
    let written = destination.write(&image);
    for w in known.take_warnings() {
        reporter.warn(&w);
    }
    reporter.finish();
    let written = written?;
    let made = made.into_inner().ok().flatten();
    let (input, mut warnings) = match made {
        Some(m) => (Some(m.0), m.1),
        None if !sbom_outputs.is_empty() => {
            let diff_ids: Vec<String> = written.layers.iter().map(|l| l.diff_id.clone()).collect();
            let (input, warnings) = sbom_input(
                &written.image_id,
                written.manifest_digest.clone(),
                &diff_ids,
            )?;
            (Some(input), warnings)
        }
        None => (None, Vec::new()),
    };
    if let (Some(input), false) = (&input, sbom_outputs.is_empty()) {
        let file_warnings = sbom::write_sbom_files(&sbom_outputs, input)?;
        if warnings.is_empty() {
            warnings = file_warnings;
        }
    }
    for w in warnings {
        reporter.warn(&format!("SBOM: {w}"));
    }
    Ok(Done {
        notes: written.notes.clone(),
        written: vec![(written, None)],
        notes_to_stderr: false,
    })
}

/// Several confs, one per platform: one image index. Every check that
/// needs no store byte comes first, so bad input writes nothing.
fn run_index(cli: &Cli) -> Result<Done> {
    const WHERE: &str = "several confs make one multi-platform image (an image index): write it with --oci-dir DIR, --format oci|dual or --push REF";
    if cli.load.is_some() {
        bail!("--load takes one image; {WHERE}");
    }
    if cli.digests_only.is_some() || cli.digests.is_some() {
        bail!("--digests-only and --digests take one conf (run once per conf); {WHERE}");
    }
    if !cli.sbom.is_empty() || !cli.sbom_out.is_empty() {
        bail!("--sbom takes one conf (run once per conf); {WHERE}");
    }
    let archive = cli.push.is_empty() && cli.oci_dir.is_none();
    if archive && cli.format == Format::Docker {
        bail!("a docker-archive holds one platform's image; {WHERE}");
    }
    let confs = cli
        .conf
        .iter()
        .map(|p| Conf::load(p))
        .collect::<Result<Vec<_>>>()?;
    let tags: Vec<String> = confs
        .iter()
        .map(|c| cli.repo_tag_or(&c.repo_tag).to_owned())
        .collect();
    if let Some(i) = tags.iter().position(|t| *t != tags[0]) {
        bail!(
            "confs {} and {} have different repo tags ({} and {}): an image index has one tag; make them agree or give -t NAME:TAG",
            cli.conf[0].display(),
            cli.conf[i].display(),
            tags[0],
            tags[i]
        );
    }
    let platforms = confs
        .iter()
        .zip(&cli.conf)
        .map(|(c, path)| {
            Platform::new(&c.os, &c.architecture, c.variant.as_deref())
                .with_context(|| format!("conf {}", path.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    index::check_distinct(&platforms, &cli.conf)?;
    let now = SystemTime::now();
    let prepared = confs
        .into_iter()
        .zip(&cli.conf)
        .map(|(c, path)| Prepared::open(path, c, now, cli))
        .collect::<Result<Vec<_>>>()?;
    // One set of known facts for every platform: a layer one platform
    // produced is named before reading by the next, so it is found
    // present (in the layout, or in the registry) instead of written again.
    let known = open_known(cli);
    let reporters: Vec<Stderr> = prepared
        .iter()
        .map(|p| Stderr::new(cli.quiet, p.layers.len()))
        .collect();
    let images: Vec<Image> = prepared
        .iter()
        .zip(&reporters)
        .zip(&tags)
        .map(|((p, r), tag)| p.image(tag, &known, r))
        .collect();
    let codec = cli.codec();
    let mut notes_to_stderr = false;
    let target = if !cli.push.is_empty() {
        index::Target::Push(Box::new(push_destination(cli, codec)?))
    } else if let Some(dir) = &cli.oci_dir {
        index::Target::OciDir {
            dir: dir.clone(),
            codec,
        }
    } else {
        let target = cli.output.as_deref().filter(|p| p.as_os_str() != "-");
        notes_to_stderr = target.is_none();
        index::Target::Archive {
            dual: cli.format == Format::Dual,
            codec,
            output: Box::new(Output::open(target, cli.compress)?),
        }
    };
    let written = index::write(&images, &platforms, target);
    for w in known.take_warnings() {
        reporters[0].warn(&w);
    }
    for r in &reporters {
        r.finish();
    }
    let written = written?;
    Ok(Done {
        written: written
            .images
            .into_iter()
            .zip(platforms.iter().map(|p| Some(p.to_string())))
            .collect(),
        notes: written.notes,
        notes_to_stderr,
    })
}

/// An SBOM's input and its warnings, as the destination had it made.
type Made = (sbom::SbomInput, Vec<String>);

/// Whether the destination the command line asks for carries OCI
/// referrers (the SBOMs): layouts, `oci`/`dual` archives and registries;
/// not docker-archives, daemons or the digests file. Mirrors
/// [`choose_destination`]'s order.
fn carries_referrers(cli: &Cli) -> bool {
    if cli.load.is_some() {
        return false;
    }
    if !cli.push.is_empty() {
        return true;
    }
    if cli.digests_only.is_some() {
        return false;
    }
    cli.oci_dir.is_some() || cli.format != Format::Docker
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
        untagged: false,
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

/// The summary line: what was written, how big, which image, how fast
/// (and for which platform, when there are several).
fn summary(w: &Written, platform: Option<&str>, started: Instant) -> String {
    let mut manifest = match &w.manifest_digest {
        Some(d) => format!(", manifest {d}"),
        None => String::new(),
    };
    if let Some(detail) = &w.detail {
        manifest.push_str(&format!("; {detail}"));
    }
    format!(
        "stream-layered-image: {}{} layer{} ({} new), {:.1} MiB, image {}{manifest}, in {:.2} s\n",
        platform.map(|p| format!("{p}: ")).unwrap_or_default(),
        w.layers.len(),
        if w.layers.len() == 1 { "" } else { "s" },
        w.new_layers,
        w.bytes as f64 / (1024.0 * 1024.0),
        w.image_id,
        started.elapsed().as_secs_f64()
    )
}

/// The store layers, each one's NAR size and each store path's NAR hash,
/// where the graph says.
type Decided = (Vec<Vec<String>>, Vec<u64>, HashMap<String, String>);

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
            Ok((layers.clone(), Vec::new(), HashMap::new()))
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
            let sizes = d.nar_sizes.iter().map(|s| s.iter().sum()).collect();
            Ok((d.layers, sizes, d.nar_hashes))
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
