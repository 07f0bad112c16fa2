//! Pushing images to a registry (OCI distribution spec), with no daemon
//! and no skopeo: issue 8.
//!
//! The shape follows go-containerregistry's `remote/`: the protocol in small
//! files ([`blob`], [`manifest`]), the HTTP plumbing in [`transport`]
//! (ping, Basic and Bearer auth, retries, TLS), credentials in
//! [`credentials`], and [`push()`](push::push) on top: every blob first
//! (present if the manifest the tag already holds lists it, else `HEAD`
//! before reading a byte, cross-repository mount, else a streamed upload),
//! the manifest `PUT` last.
//!
//! This module knows nothing of the image model: a layer is a
//! [`BlobSource`], an optional digest plus a function that writes its bytes
//! (and can be called again when an upload is retried), and the manifest is
//! either bytes or built from the final digests ([`ManifestSpec`]).
//!
//! ```no_run
//! use stream_layered_image::reference::Reference;
//! use stream_layered_image::registry::{push, BlobSource, Client, ConfigSpec, ManifestFormat,
//!                                      ManifestSpec, Options, PushPlan};
//! # fn main() -> anyhow::Result<()> {
//! let reference = Reference::parse("127.0.0.1:5000/app:1")?;
//! let client = Client::new(&reference, &Options::default())?;
//! let layer = BlobSource::new(ManifestFormat::Oci.layer_media_type("gzip"), |w| {
//!     w.write_all(b"...gzip'd tar...")?;
//!     Ok(())
//! });
//! let plan = PushPlan {
//!     layers: vec![layer],
//!     config: ConfigSpec::Bytes(br#"{"architecture":"amd64","os":"linux"}"#.to_vec()),
//!     manifest: ManifestSpec::Standard(ManifestFormat::Oci),
//!     earlier: None,
//! };
//! let report = push(&client, &plan, &["1".into()], &|_event| {})?;
//! println!("{}@{}", reference.name(), report.manifest_digest);
//! # Ok(()) }
//! ```
//!
//! # Environment
//!
//! - `SLI_REGISTRY_CREDS=USER:PASS`: credentials when [`Options::creds`]
//!   is `None` (before any config file; see [`credentials`]).
//! - `SLI_CERTS_D=DIR`: read per-registry CAs from `DIR/HOST[:PORT]/*.crt`
//!   instead of `/etc/docker/certs.d` and `/etc/containers/certs.d`.
//! - `REGISTRY_AUTH_FILE`, `XDG_RUNTIME_DIR`, `DOCKER_CONFIG`, `HOME`:
//!   where podman's and docker's auth files are ([`credentials`]).
//! - `HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`: honoured, as docker does.
//!
//! For the CLI's repeatable `--push REF`, [`push_all`]
//! groups the references by repository, pushes each once with all its tags,
//! and lets later repositories `HEAD` and mount what the first one uploaded,
//! so the store is read once whatever the number of references.
//!
//! Every error is one line that names the registry and the repository
//! (`registry 127.0.0.1:5000, repository app: …`); credentials never appear
//! in an error, however the registry answers (they are redacted from every
//! message as a last line of defence, and tested).
#![warn(missing_docs)]

pub mod blob;
pub mod credentials;
pub mod manifest;
mod pipe;
pub mod push;
pub mod referrers;
pub mod transport;

use std::fmt;
use std::time::Duration;

pub use blob::BlobDigest;
pub use credentials::Credential;
pub use manifest::ManifestFormat;
pub use push::{
    push, push_all, push_all_untagged, push_with_mounts, BlobSource, ConfigBuilder, ConfigSpec,
    EarlierManifests, Event, LayerResult, ManifestBuilder, ManifestSpec, Outcome, PushPlan,
    PushReport,
};
pub use referrers::referrers_tag;
pub use transport::retry::RetryPolicy;

use crate::reference::Reference;
use transport::Transport;

/// The environment variable holding `USER:PASS` when no `--creds` is given.
pub const CREDS_ENV: &str = "SLI_REGISTRY_CREDS";
/// Overrides the roots of the `certs.d` directories (tests): a directory
/// holding `HOST/ca.crt` and `HOST/*.crt`, used instead of both
/// `/etc/docker/certs.d` and `/etc/containers/certs.d`.
pub const CERTS_D_ENV: &str = "SLI_CERTS_D";

/// How to talk to registries. `Options::default()` is what the CLI uses
/// without flags.
#[derive(Clone)]
pub struct Options {
    /// Hosts (`host[:port]`) that may be spoken to in plain HTTP and whose
    /// TLS certificate is not verified (Docker's `insecure-registries`).
    /// `localhost`, `127.0.0.0/8` and `[::1]` may always fall back to plain
    /// HTTP, but their certificates are verified when they speak TLS.
    pub insecure_registries: Vec<String>,
    /// Explicit credentials (`--creds`); when `None`, `SLI_REGISTRY_CREDS`,
    /// then podman's and docker's config files are read
    /// ([`credentials::lookup`]).
    pub creds: Option<Credential>,
    /// Blobs uploaded at once.
    pub jobs: usize,
    /// Blobs of at most this many bytes are held in memory while they are
    /// produced, then sent whole: `POST`, and one `PUT ?digest=` carrying
    /// the bytes. A longer blob streams in one `PATCH` as soon as it is
    /// past this size (the bytes held so far first, so it is produced once),
    /// then an empty `PUT ?digest=`. The whole form costs the registry
    /// less: distribution 2.8 spent 1.48 CPU-s instead of 1.92 on 100 blobs
    /// of 2 MB, no upload session state stored, resumed and synced. Memory:
    /// at most `jobs` × this, plus ~600 KiB of channel per upload, and never
    /// more than [`MAX_HELD`] in all (with many jobs, each holds less); a
    /// layer above it is never held whole. Default 4 MiB: 16 MiB held at
    /// most with the default 4 jobs, and most layers of a Nix closure are
    /// smaller. 0 streams every blob but an empty one.
    pub whole_upload_max: u64,
    /// Retries on resets, 408, 429 and 5xx.
    pub retry: RetryPolicy,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// Time limits of each request.
    pub timeouts: Timeouts,
    /// Don't read credential files or helpers (tests, and `--creds` users
    /// who want nothing else consulted).
    pub no_credential_files: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            insecure_registries: Vec::new(),
            creds: None,
            jobs: 4,
            whole_upload_max: 4 << 20,
            retry: RetryPolicy::default(),
            user_agent: concat!("stream-layered-image/", env!("CARGO_PKG_VERSION")).to_owned(),
            timeouts: Timeouts::default(),
            no_credential_files: false,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("insecure_registries", &self.insecure_registries)
            .field("creds", &self.creds.as_ref().map(|_| "<redacted>"))
            .field("jobs", &self.jobs)
            .field("whole_upload_max", &self.whole_upload_max)
            .field("retry", &self.retry)
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

/// Time limits. A blob upload's body has no overall limit (a layer may be
/// large), but every read and write on the socket has `io`.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Connecting (DNS, TCP and TLS handshake).
    pub connect: Duration,
    /// Any single read or write on the socket, and waiting for a response.
    pub io: Duration,
    /// A whole request that carries no blob (ping, HEAD, token, manifest).
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(15),
            io: Duration::from_secs(60),
            request: Duration::from_secs(120),
        }
    }
}

/// The most blob bytes a push holds in memory at once, whatever the number
/// of jobs: `--jobs 64` must not mean 64 × [`Options::whole_upload_max`].
pub const MAX_HELD: u64 = 32 << 20;

/// A client for one repository of one registry. Cheap to share between
/// threads (`&Client` is all [`push()`](push::push) needs).
pub struct Client {
    pub(crate) t: Transport,
    pub(crate) jobs: usize,
    /// [`Options::whole_upload_max`], at most [`MAX_HELD`] / jobs.
    pub(crate) whole_upload_max: u64,
}

impl Client {
    /// A client for `reference`'s registry and repository. Reads
    /// credentials (see [`Options::creds`]) but sends nothing yet: the
    /// first request pings `/v2/` and learns how to authenticate.
    pub fn new(reference: &Reference, options: &Options) -> anyhow::Result<Client> {
        let jobs = options.jobs.max(1);
        Ok(Client {
            t: Transport::new(reference, options)?,
            jobs,
            whole_upload_max: options.whole_upload_max.min(MAX_HELD / jobs as u64),
        })
    }

    /// The largest blob this client holds and sends whole (see
    /// [`Options::whole_upload_max`] and [`MAX_HELD`]).
    pub fn whole_upload_max(&self) -> u64 {
        self.whole_upload_max
    }

    /// The registry as named in the reference (`docker.io`, `host:5000`).
    pub fn registry(&self) -> &str {
        &self.t.registry
    }

    /// The repository inside the registry.
    pub fn repository(&self) -> &str {
        &self.t.repository
    }

    /// `GET /v2/`: checks the registry answers the v2 API, decides between
    /// HTTPS and HTTP, and learns the auth scheme. Other calls ping first
    /// if needed, so calling this is optional.
    pub fn ping(&self) -> anyhow::Result<()> {
        self.t.ensure_pinged()
    }
}
