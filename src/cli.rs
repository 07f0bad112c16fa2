//! Command-line interface, compatible with nixpkgs' `stream_layered_image.py`
//! (`CONF [--repo_tag|-t NAME:TAG]`): the Nix wrapper runs
//! `stream-layered-image conf.json "$@"`, so options given to the wrapper
//! script reach us unchanged. We add `-o FILE` and `--compress`.

use std::path::PathBuf;

use clap::Parser;

use crate::compression::Codec;
use crate::destination::Format;
use crate::output::Compression;

const CONF_HELP: &str = "\
CONF.json fields (as nixpkgs' streamLayeredImage writes them):
  store_dir            the Nix store directory (default /nix/store); every store path must lie in it
  from_image           a base image tarball (docker save / dockerTools output, plain, gzip or zstd), or null
  store_layers         list of layers, each a list of store paths, in image order
  layering             instead of store_layers: decide layers at stream time from the reference graph
                       ({\"graph\": closureInfo dir or graph JSON, \"max_layers\": N, \"exclude_paths\": [...],
                         \"pipeline\": layeringPipeline or null, \"debug\": bool})
  customisation_layer  directory holding layer.tar and checksum (the image's own files)
  repo_tag             NAME:TAG the image loads as (-t overrides it)
  created              image creation time: ISO 8601 (e.g. 1970-01-01T00:00:01Z) or \"now\"
  mtime                modification time of every file in the layers: ISO 8601 or \"now\"
  uid, gid             owner of every file in the layers (numbers or numeric strings)
  uname, gname         owner names of every file in the layers
  architecture         image architecture (amd64, arm64, ...)
  variant              architecture variant (e.g. v8), or null
  os                   image OS (default linux)
  config               the image's config object (Cmd, Entrypoint, Env, ...), kept verbatim;
                       with from_image, Env is merged over the base image's

Limits on base images (untrusted input; beyond them: one error line, no image):
  manifest.json 1 MiB, image config 2 MiB, 100 000 archive members, 16 MiB of member names,
  GNU long names/links 64 KiB, PAX headers 1 MiB, zstd window 128 MiB; every layer is checked
  against its diff_id while copied.

Progress goes to stderr. Exit status: 0 on success, 1 on any error (one line on stderr),
2 on bad command-line usage.";

/// Streams a Nix store closure as a container image: a docker-archive on
/// stdout by default (a drop-in for nixpkgs' stream_layered_image.py), or an
/// OCI archive or layout, a registry push, or a load into Docker or podman.
#[derive(Debug, Parser)]
// Like argparse (nixpkgs' streamer): unambiguous prefixes of long options
// are accepted, and a repeated option's last value wins.
#[command(
    name = "stream-layered-image",
    version,
    after_long_help = CONF_HELP,
    infer_long_args = true,
    args_override_self = true
)]
pub struct Cli {
    /// The conf.json written by streamLayeredImage (see below for its
    /// fields). Several confs, one per platform, make one multi-platform
    /// image (an OCI image index) for --oci-dir, --format oci|dual or --push.
    #[arg(value_name = "CONF.json", required = true, num_args = 1..)]
    pub conf: Vec<PathBuf>,

    /// Override the repo_tag from the conf (NAME:TAG), as nixpkgs' -t.
    #[arg(
        short = 't',
        long = "repo_tag",
        visible_alias = "repo-tag",
        value_name = "NAME:TAG"
    )]
    pub repo_tag: Option<String>,

    /// Write the image to FILE (atomically: nothing is left there on failure)
    /// instead of stdout; `-` means stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Compress the whole archive stream (deterministically), as
    /// buildLayeredImage's compressor. Not --layer-compression, which
    /// compresses each layer blob inside an OCI layout.
    #[arg(long, value_enum, default_value = "none")]
    pub compress: Compression,

    /// The archive written to stdout / -o: `docker` (docker load), `oci`
    /// (an OCI image layout tar: skopeo oci-archive:, podman load, umoci), or
    /// `dual` (both at once, as docker save writes since Engine 25). `oci` and
    /// `dual` name blobs by digest: with the digest cache warm each store byte
    /// is read once; cold, uncompressed layers are read twice (hash, then stream).
    /// Compressed layers are produced in parallel into $TMPDIR first, except
    /// those of 16 MiB or more whose blob the cache names: compressed in place.
    #[arg(long, value_enum, default_value = "docker", value_name = "FORMAT")]
    pub format: Format,

    /// Write (or add to) an OCI image layout directory instead of an
    /// archive: blobs already there are not written again, and index.json
    /// gains or replaces the entry for this tag.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["output", "format", "compress"])]
    pub oci_dir: Option<PathBuf>,

    /// Compress each layer as its own blob (OCI forms and --digests-only):
    /// `none`, `gzip` (level 6, mtime 0) or `zstd` (level 3); deterministic,
    /// in parallel across cores. Default: none (gzip for --push and --digests-only).
    #[arg(long, value_enum, value_name = "CODEC")]
    pub layer_compression: Option<Codec>,

    /// The digest cache directory (default $XDG_CACHE_HOME/stream-layered-image):
    /// each streamed layer's digests, so later runs can name blobs before
    /// reading them and skip what a destination already has.
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,

    /// Neither read nor write the digest cache (wins over --cache).
    #[arg(long)]
    pub no_cache: bool,

    /// Read layer digests from FILE (written by --digests-only for this
    /// same image); a file for another image is an error.
    #[arg(long, value_name = "FILE")]
    pub digests: Option<PathBuf>,

    /// Write every layer's digests (diff_id, size, and the blob's digest
    /// and size for --layer-compression) to FILE instead of an image.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["output", "format", "compress", "oci_dir"])]
    pub digests_only: Option<PathBuf>,

    /// Push the image to a registry as REF ([HOST[:PORT]/]NAME[:TAG]; names
    /// normalised as docker does), repeatable; prints REF@sha256:… on
    /// stdout. Layers the registry has (digest known from the cache or
    /// --digests) are skipped without reading them.
    #[arg(long, value_name = "REF", action = clap::ArgAction::Append,
          conflicts_with_all = ["output", "format", "compress", "oci_dir", "digests_only"])]
    pub push: Vec<String>,

    /// With --push: also write the manifest digest to FILE.
    #[arg(long, value_name = "FILE", requires = "push")]
    pub digest_file: Option<PathBuf>,

    /// With --push: mount layers the same registry holds in REPO instead of
    /// uploading them (repeatable).
    #[arg(long, value_name = "REPO", action = clap::ArgAction::Append, requires = "push")]
    pub mount_from: Vec<String>,

    /// Registry credentials USER:PASS (visible in `ps`: prefer
    /// $SLI_REGISTRY_CREDS, `docker login` or `podman login`).
    #[arg(long, value_name = "USER:PASS", requires = "push")]
    pub creds: Option<String>,

    /// Allow plain HTTP and skip TLS verification for HOST[:PORT], like
    /// Docker's insecure-registries (repeatable). Loopback hosts may always
    /// use plain HTTP.
    #[arg(long, value_name = "HOST", action = clap::ArgAction::Append, requires = "push")]
    pub insecure_registry: Vec<String>,

    /// With --push: layers uploaded at once, largest first. Each holds a
    /// layer of up to 4 MiB in memory to send it in one request (32 MiB in
    /// all at most); longer layers stream.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub jobs: usize,

    /// With --push: `oci` manifests (default) or Docker schema 2 (`docker`).
    #[arg(long, value_enum, default_value = "oci", value_name = "FORMAT")]
    pub manifest_format: crate::registry::ManifestFormat,

    /// Load the image into Docker (the default; only the layers the daemon
    /// lacks are sent) or podman, instead of writing it to stdout.
    #[arg(long, value_enum, value_name = "ENGINE", num_args = 0..=1,
          default_missing_value = "docker",
          conflicts_with_all = ["output", "format", "compress", "oci_dir", "digests_only", "push"])]
    pub load: Option<crate::destination::daemon::Engine>,

    /// Also say how many bytes were read from the store (store paths' files
    /// and base-image layers), and apart how many to index the base image.
    #[arg(short = 'v', long)]
    pub verbose: bool,

    /// Print no progress lines on stderr (errors are still printed).
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Print on stderr, per store layer, its paths with their NAR sizes and
    /// why they were grouped, then a total (as `debug = true` in Nix); for
    /// tuning maxLayers. Applies when the conf has `layering`.
    #[arg(long)]
    pub explain_layers: bool,

    /// Make an SBOM of the image in FORMAT (SPDX 2.3 or CycloneDX 1.6 JSON);
    /// repeatable, once per format. Each goes to the --sbom-out FILE in the
    /// same position, and with --oci-dir, --format oci|dual or --push into
    /// the image's destination as an OCI referrer of the image (pushed with
    /// the referrers API, or the sha256-<hex> tag where a registry has none).
    #[arg(long = "sbom", value_name = "FORMAT", value_enum, action = clap::ArgAction::Append)]
    pub sbom: Vec<crate::sbom::SbomFormat>,

    /// Write the SBOM of the --sbom FORMAT in the same position to FILE
    /// (atomically); repeatable: give one per --sbom, in the same order.
    #[arg(long = "sbom-out", value_name = "FILE", action = clap::ArgAction::Append)]
    pub sbom_out: Vec<PathBuf>,
}

impl Cli {
    /// The per-layer codec: as given, else gzip for --push and
    /// --digests-only (what a push uses by default) and none elsewhere.
    pub fn codec(&self) -> Codec {
        self.layer_compression
            .unwrap_or(if self.digests_only.is_some() || !self.push.is_empty() {
                Codec::Gzip
            } else {
                Codec::None
            })
    }

    /// The repo tag to use: `-t`, else the conf's. An empty `-t ""` falls
    /// back too, as nixpkgs' `args.repo_tag or conf["repo_tag"]` does.
    pub fn repo_tag_or<'a>(&'a self, conf_repo_tag: &'a str) -> &'a str {
        self.repo_tag
            .as_deref()
            .filter(|t| !t.is_empty())
            .unwrap_or(conf_repo_tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_repo_tag_falls_back_to_the_conf() {
        let tag = |args: &[&str]| {
            let c = Cli::try_parse_from(args).unwrap();
            c.repo_tag_or("conf:tag").to_owned()
        };
        assert_eq!(tag(&["x", "c.json"]), "conf:tag");
        assert_eq!(tag(&["x", "c.json", "-t", ""]), "conf:tag");
        assert_eq!(tag(&["x", "c.json", "-t", "a:b"]), "a:b");
    }

    #[test]
    fn several_confs_one_per_platform() {
        let c = Cli::try_parse_from(["x", "a.json", "b.json", "--oci-dir", "d"]).unwrap();
        assert_eq!(c.conf, [PathBuf::from("a.json"), PathBuf::from("b.json")]);
        let c = Cli::try_parse_from(["x", "-t", "n:t", "a.json"]).unwrap();
        assert_eq!(c.conf, [PathBuf::from("a.json")]);
    }

    #[test]
    fn nixpkgs_style_arguments() {
        let c = Cli::try_parse_from(["x", "conf.json", "-t", "a:b"]).unwrap();
        assert_eq!(c.repo_tag.as_deref(), Some("a:b"));
        let c = Cli::try_parse_from([
            "x",
            "conf.json",
            "--repo_tag",
            "c:d",
            "-o",
            "out.tar",
            "--compress",
            "zstd",
        ])
        .unwrap();
        assert_eq!(c.repo_tag.as_deref(), Some("c:d"));
        assert_eq!(c.compress, Compression::Zstd);
        assert!(Cli::try_parse_from(["x"]).is_err(), "CONF is required");
        let c = Cli::try_parse_from(["x", "conf.json", "--repo=e:f", "-tg:h"]).unwrap();
        assert_eq!(
            c.repo_tag.as_deref(),
            Some("g:h"),
            "argparse-style prefixes, last wins"
        );
    }
}
