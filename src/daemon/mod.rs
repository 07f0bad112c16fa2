//! Loading images into a local Docker daemon (issue 9), sending only the
//! layers it lacks; and into podman (`podman load`, every layer).
//!
//! Docker's classic image store (moby `image/tarexport/load.go`) untars the
//! archive to a temporary directory, then for each layer of the manifest
//! computes the chain ID of the root filesystem so far and opens that
//! layer's file only when its layer store lacks the chain ID. So a
//! docker-archive whose manifest and config are complete but which leaves
//! out the layer members the daemon already has loads the same image (same
//! image ID, same `docker image inspect`), without sending or unpacking
//! those bytes. This module answers the questions that rule needs and
//! carries the archive; writing an archive without chosen members is the
//! image writer's job.
//!
//! - [`Daemon::connect`]: ping, `GET /version` (API version check) and
//!   `GET /info` (the containerd image store, where the rule is not
//!   moby's: [`Daemon::omit_blocker`] says why every layer must be sent).
//! - [`Daemon::known_chain_ids`]: the chain IDs of every image's
//!   `RootFS.Layers`; [`layers_to_omit`] applies the rule to our layers.
//! - [`Daemon::load`] / [`Daemon::begin_load`]: `POST /images/load` with the
//!   archive streamed as the body; the daemon's JSON message stream becomes
//!   a [`LoadReport`] or a one-line error. A layer removed from the daemon
//!   between the check and the load makes moby fail on the missing file;
//!   that error is a [`MissingLayer`], and [`Daemon::load_incremental`]
//!   resends everything once when it sees it.
//! - [`load_podman`]: `podman load` with the archive on its stdin.
//!
//! The HTTP client (`http.rs`) is ours: Unix sockets or loopback TCP, no
//! async runtime, every read and write bounded in size and time. Nothing
//! here prints; warnings travel in the report.
#![warn(missing_docs)]

mod http;
mod messages;
mod podman;

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::digest;
use http::{ChunkedRequest, Host, Response};

pub use messages::{is_missing_layer, LoadReport, MissingLayer};
pub use podman::{load_podman, load_podman_with, PodmanUpload};

/// The oldest Engine API this module speaks: Docker 1.12 (2016). Loading
/// by chain ID with `manifest.json` archives dates from API 1.22; 1.24 is
/// the oldest version every still-supported daemon accepts in the path.
pub const MIN_API: (u32, u32) = (1, 24);
/// The newest API we ask for: the one the code was checked against. A
/// newer daemon answers it as its older self (the API is versioned by path).
pub const MAX_API: (u32, u32) = (1, 48);

/// JSON answers (`/version`, `/info`, image lists and inspections) larger
/// than this are refused: a daemon with a million images is not a case this
/// tool needs, and an impostor must not make it allocate without bound.
pub const MAX_JSON: usize = 64 << 20;
/// One line of the load's message stream.
pub(crate) const MAX_MESSAGE: usize = 1 << 20;

/// How long a request may go without progress.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Connecting, pinging, `/version`, `/info`, listing and inspecting.
    pub api: Duration,
    /// Each read and write of a load. The daemon reads the body as we send
    /// it, then unpacks layers while reporting progress, so silence this
    /// long means it is stuck; it is long because one large layer can take
    /// minutes to register on slow storage.
    pub load: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            api: Duration::from_secs(30),
            load: Duration::from_secs(600),
        }
    }
}

/// A Docker daemon (or anything speaking its Engine API) that answered.
#[derive(Debug, Clone)]
pub struct Daemon {
    host: Host,
    /// The host as the user gave it, for messages.
    shown: String,
    /// The API version used in request paths, e.g. `1.41`.
    api: String,
    engine: String,
    omit_blocker: Option<String>,
    timeouts: Timeouts,
}

impl Daemon {
    /// Connects to the daemon the docker CLI would use: `DOCKER_HOST`, else
    /// the endpoint of the docker context (`DOCKER_CONTEXT`, else
    /// `currentContext` in `$DOCKER_CONFIG/config.json`, default
    /// `~/.docker`), else `unix:///var/run/docker.sock`.
    ///
    /// # Errors
    /// One line naming the host when `DOCKER_HOST` is unsupported (remote,
    /// TLS, ssh), the context is unreadable, the socket is missing, refuses
    /// or denies the connection, the daemon does not answer in time, or its
    /// API is older than [`MIN_API`].
    pub fn connect() -> Result<Daemon> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let config_dir = var("DOCKER_CONFIG")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| Path::new(&h).join(".docker")));
        let text = resolve_host(
            var("DOCKER_HOST"),
            var("DOCKER_CONTEXT"),
            config_dir.as_deref(),
        )?;
        if text.starts_with("tcp://") && var("DOCKER_TLS_VERIFY").is_some() {
            bail!("docker daemon at {text}: DOCKER_TLS_VERIFY is set, and TLS is not supported");
        }
        Daemon::connect_to(&text, Timeouts::default())
    }

    /// Connects to `host` (a `DOCKER_HOST` value) with the given timeouts.
    ///
    /// # Errors
    /// As [`Daemon::connect`].
    pub fn connect_to(host: &str, timeouts: Timeouts) -> Result<Daemon> {
        let parsed = Host::parse(host).context("docker daemon")?;
        let mut daemon = Daemon {
            host: parsed,
            shown: host.to_owned(),
            api: String::new(),
            engine: String::new(),
            omit_blocker: None,
            timeouts,
        };
        daemon
            .handshake()
            .with_context(|| format!("docker daemon at {host}"))?;
        Ok(daemon)
    }

    fn handshake(&mut self) -> Result<()> {
        let ping = self.get_raw("/_ping")?;
        if ping.status != 200 {
            bail!("GET /_ping: {}", describe_failure(ping));
        }
        // `/version` unversioned: it is how the version is learned.
        let version = self.get_json("/version")?;
        let api = version["ApiVersion"].as_str().unwrap_or_default();
        let server = parse_api(api)
            .ok_or_else(|| anyhow!("GET /version: no ApiVersion (not a Docker Engine API?)"))?;
        if server < MIN_API {
            bail!(
                "API version {api} is too old; stream-layered-image needs {}.{} or later (Docker 1.12+)",
                MIN_API.0,
                MIN_API.1
            );
        }
        // As the docker CLI negotiates: the newest both sides speak, but
        // never below what the daemon still accepts.
        let min = version["MinAPIVersion"]
            .as_str()
            .and_then(parse_api)
            .unwrap_or(MIN_API);
        let chosen = server.min(MAX_API).max(min);
        self.api = format!("{}.{}", chosen.0, chosen.1);
        self.engine = version["Version"].as_str().unwrap_or("?").to_owned();
        let podman = version["Components"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| is_podman(&c["Name"])));
        let info = self.get_json(&self.path("/info"))?;
        self.omit_blocker = omit_blocker(&info, podman);
        Ok(())
    }

    /// The host as given (`unix:///var/run/docker.sock`).
    pub fn host(&self) -> &str {
        &self.shown
    }

    /// The Engine API version in use, e.g. `1.41`.
    pub fn api_version(&self) -> &str {
        &self.api
    }

    /// The daemon's own version, e.g. `20.10.24+dfsg1`.
    pub fn engine_version(&self) -> &str {
        &self.engine
    }

    /// Why layers must not be left out with this daemon (the containerd
    /// image store, podman's Docker API), as one line; `None` when moby's
    /// classic loader runs and omitting known layers is safe.
    pub fn omit_blocker(&self) -> Option<&str> {
        self.omit_blocker.as_deref()
    }

    /// The chain IDs of every layer prefix of every image the daemon has:
    /// a layer whose chain ID is in here need not be sent. Empty when
    /// [`Daemon::omit_blocker`] is set, so a caller that forgets to check
    /// still sends every layer.
    ///
    /// # Errors
    /// One line naming the daemon when a listing or inspection fails.
    /// An image removed between listing and inspection is skipped.
    pub fn known_chain_ids(&self) -> Result<HashSet<String>> {
        self.scan(None)
    }

    /// As [`Daemon::known_chain_ids`], but only the members of `wanted`,
    /// and it stops inspecting images once all of them are found (images
    /// are listed newest first, so an unchanged reload inspects one).
    ///
    /// # Errors
    /// As [`Daemon::known_chain_ids`].
    pub fn known_among(&self, wanted: &HashSet<String>) -> Result<HashSet<String>> {
        self.scan(Some(wanted))
    }

    fn scan(&self, wanted: Option<&HashSet<String>>) -> Result<HashSet<String>> {
        let mut known = HashSet::new();
        if self.omit_blocker.is_some() || wanted.is_some_and(HashSet::is_empty) {
            return Ok(known);
        }
        let scanned = (|| -> Result<()> {
            // Top-level images only (no `all=1`): an intermediate image's
            // layers are a prefix of a child's, and every prefix's chain ID
            // is computed below. Missing one only sends a layer more.
            let list = self.get_json(&self.path("/images/json"))?;
            let list = list
                .as_array()
                .ok_or_else(|| anyhow!("GET /images/json: not a list"))?;
            let mut seen = HashSet::new();
            for image in list {
                let Some(id) = image["Id"].as_str() else {
                    continue;
                };
                if !is_digest(id) || !seen.insert(id) {
                    continue;
                }
                let Some(layers) = self.image_layers(id)? else {
                    continue;
                };
                for chain in chain_ids(&layers) {
                    if wanted.is_none_or(|w| w.contains(&chain)) {
                        known.insert(chain);
                    }
                }
                if wanted.is_some_and(|w| w.len() == known.len()) {
                    break;
                }
            }
            Ok(())
        })();
        scanned.with_context(|| format!("docker daemon at {}", self.shown))?;
        Ok(known)
    }

    /// An image's `RootFS.Layers` (diff_ids), or `None` if it is gone.
    fn image_layers(&self, id: &str) -> Result<Option<Vec<String>>> {
        let path = self.path(&format!("/images/{id}/json"));
        let response = self.get_raw(&path)?;
        if response.status == 404 {
            return Ok(None);
        }
        let inspect = expect_json(response, &path)?;
        let Some(layers) = inspect["RootFS"]["Layers"].as_array() else {
            return Ok(Some(Vec::new()));
        };
        let layers: Option<Vec<String>> = layers
            .iter()
            .map(|l| l.as_str().filter(|s| is_digest(s)).map(str::to_owned))
            .collect();
        // A malformed entry makes every chain ID after it unknowable.
        Ok(Some(layers.unwrap_or_default()))
    }

    /// Loads the archive `produce` writes, streamed to `POST /images/load`.
    ///
    /// `produce` failing aborts the upload (the daemon sees a truncated
    /// body and loads nothing); its error is returned with the upload's
    /// own error, if any, as context.
    ///
    /// # Errors
    /// One line naming the daemon: the connection failing, the daemon
    /// rejecting the archive (its message), a [`MissingLayer`] when a layer
    /// left out is no longer in the daemon, or `produce`'s error.
    pub fn load(&self, produce: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<LoadReport> {
        let mut upload = self.begin_load()?;
        match produce(&mut upload) {
            Ok(()) => upload.finish(),
            Err(e) => Err(upload.fail(e)),
        }
    }

    /// Starts a load: the returned [`Upload`] is the request body (an owned
    /// `Write + Send`, for writers that move their output to a thread);
    /// [`Upload::finish`] ends it and reads the daemon's answer. Dropping it
    /// unfinished aborts the load.
    ///
    /// # Errors
    /// One line naming the daemon when it cannot be reached.
    pub fn begin_load(&self) -> Result<Upload> {
        let path = self.path("/images/load?quiet=0");
        let request = ChunkedRequest::start(
            &self.host,
            "POST",
            &path,
            "application/x-tar",
            self.timeouts.load,
        )
        .with_context(|| format!("docker daemon at {}: POST /images/load", self.shown))?;
        Ok(Upload {
            request: Some(request),
            shown: self.shown.clone(),
            timeout: self.timeouts.load,
            sent: 0,
            failed: None,
        })
    }

    /// A load that leaves out the layers marked in `omit`, resending every
    /// layer once if the daemon lost one of them in the meantime.
    /// `produce(omit, out)` writes the archive leaving out the layers whose
    /// `omit` entry is true; it runs twice at most, the second time with
    /// nothing omitted (and the report then carries a note saying so).
    ///
    /// # Errors
    /// As [`Daemon::load`]; a [`MissingLayer`] only if it recurs with every
    /// layer sent (which cannot happen with moby's loader).
    pub fn load_incremental(
        &self,
        omit: &[bool],
        mut produce: impl FnMut(&[bool], &mut dyn Write) -> Result<()>,
    ) -> Result<LoadReport> {
        match self.load(|out| produce(omit, out)) {
            Err(e) if is_missing_layer(&e) && omit.iter().any(|o| *o) => {
                let none = vec![false; omit.len()];
                let mut report = self.load(|out| produce(&none, out))?;
                report.notes.push(format!(
                    "a layer left out was removed from the daemon during the load; \
                     resent every layer ({})",
                    crate::escape::one_line(&format!("{e:#}"))
                ));
                Ok(report)
            }
            other => other,
        }
    }

    /// `/v1.NN/…`: every call is pinned to the negotiated version.
    fn path(&self, path: &str) -> String {
        format!("/v{}{path}", self.api)
    }

    fn get_raw(&self, path: &str) -> Result<Response> {
        http::get(&self.host, path, self.timeouts.api)
            .with_context(|| format!("GET {}", unversioned(path)))
    }

    fn get_json(&self, path: &str) -> Result<Value> {
        let response = self.get_raw(path)?;
        expect_json(response, path)
    }
}

/// The body of a load in progress: write the docker-archive into it, then
/// [`Upload::finish`]. It is chunked on the wire, so a body that is dropped
/// or fails half-way is never taken for a whole archive.
///
/// When the daemon stops the upload (it rejected the archive and closed
/// the connection), the failing write returns an error carrying the
/// daemon's own message rather than a bare "broken pipe".
#[derive(Debug)]
pub struct Upload {
    request: Option<ChunkedRequest>,
    shown: String,
    timeout: Duration,
    sent: u64,
    /// The first write error, as returned to the writer.
    failed: Option<String>,
}

impl Upload {
    /// Bytes of the archive written so far.
    pub fn bytes_sent(&self) -> u64 {
        self.sent
    }

    /// Ends the body and reads the daemon's answer to the end.
    ///
    /// # Errors
    /// One line naming the daemon: it rejected the archive (its message),
    /// it lacks a layer left out ([`MissingLayer`]), it went silent past the
    /// load timeout, or an earlier write already failed.
    pub fn finish(mut self) -> Result<LoadReport> {
        let context = || format!("docker daemon at {}: POST /images/load", self.shown);
        if let Some(failed) = &self.failed {
            return Err(anyhow!("{failed}")).with_context(context);
        }
        let Some(request) = self.request.take() else {
            return Err(anyhow!("the upload was already closed")).with_context(context);
        };
        let response = request.finish().with_context(context)?;
        messages::read_load_answer(response).with_context(context)
    }

    /// Aborts the load because producing the archive failed with `e`; the
    /// daemon sees a truncated body and loads nothing. Returns `e`.
    pub fn fail(mut self, e: anyhow::Error) -> anyhow::Error {
        // Dropping the request closes the socket without the last chunk.
        drop(self.request.take());
        e
    }

    /// After a write failed: the daemon's answer, if it sent one, as the
    /// error the writer sees.
    fn explain(&mut self, e: io::Error) -> io::Error {
        let what = format!("docker daemon at {}: POST /images/load", self.shown);
        let message = if http::is_timeout(&e) {
            format!(
                "{what}: the daemon stopped reading the archive (no progress for {} s)",
                self.timeout.as_secs()
            )
        } else {
            let answer = self
                .request
                .take()
                .and_then(|r| r.response_after_failure(Duration::from_secs(5)));
            match answer.map(messages::read_load_answer) {
                Some(Err(daemon)) => format!("{what}: {daemon:#}"),
                _ => format!("{what}: connection lost while sending the archive ({e})"),
            }
        };
        self.failed = Some(message.clone());
        // Not `BrokenPipe`: the executable treats that as its reader
        // closing early, and this is the daemon saying no.
        io::Error::other(message)
    }
}

impl Write for Upload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(failed) = &self.failed {
            return Err(io::Error::other(failed.clone()));
        }
        let Some(request) = self.request.as_mut() else {
            return Err(io::Error::other("upload already closed"));
        };
        match request.write(data) {
            Ok(n) => {
                self.sent += n as u64;
                Ok(n)
            }
            Err(e) => Err(self.explain(e)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if let Some(failed) = &self.failed {
            return Err(io::Error::other(failed.clone()));
        }
        match self.request.as_mut().map(Write::flush) {
            Some(Err(e)) => Err(self.explain(e)),
            _ => Ok(()),
        }
    }
}

/// A 200 answer's JSON, or the failure as one line.
fn expect_json(response: Response, path: &str) -> Result<Value> {
    let shown = unversioned(path);
    if response.status != 200 {
        bail!("GET {shown}: {}", describe_failure(response));
    }
    response
        .json(MAX_JSON)
        .with_context(|| format!("GET {shown}"))
}

/// `/images/json` rather than `/v1.41/images/json` in messages.
fn unversioned(path: &str) -> &str {
    match path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            rest.find('/').map_or(path, |i| &rest[i..])
        }
        _ => path,
    }
}

/// `HTTP 500: <the daemon's message>`, from an error answer's JSON
/// `{"message": …}` (or its text, shortened).
fn describe_failure(response: Response) -> String {
    let status = response.status;
    let body = response.body(64 * 1024).unwrap_or_default();
    let message = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
    let message = crate::escape::one_line(message.trim());
    if message.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {message}")
    }
}

fn is_podman(name: &Value) -> bool {
    name.as_str()
        .is_some_and(|n| n.to_ascii_lowercase().contains("podman"))
}

/// Why this daemon's loader may not follow moby's classic rule, from
/// `/info` (and whether `/version` named podman).
fn omit_blocker(info: &Value, podman: bool) -> Option<String> {
    if podman {
        return Some(
            "the daemon is podman's Docker API, whose loader needs every layer; sending every layer"
                .to_owned(),
        );
    }
    // The containerd image store shows as `DriverStatus: [["driver-type",
    // "io.containerd.snapshotter.v1"]]` (what `docker info` checks); its
    // loader imports the archive into containerd's content store, which
    // needs every blob.
    let containerd = info["DriverStatus"].as_array().is_some_and(|rows| {
        rows.iter().any(|row| {
            row[0].as_str() == Some("driver-type")
                && row[1]
                    .as_str()
                    .is_some_and(|t| t.contains("io.containerd.snapshotter"))
        })
    });
    if containerd {
        return Some(
            "the daemon uses the containerd image store, where leaving out known layers is not \
             known to be safe; sending every layer"
                .to_owned(),
        );
    }
    if info["OSType"].as_str().is_some_and(|os| os != "linux") {
        return Some(format!(
            "the daemon runs {} containers; sending every layer",
            crate::escape::one_line(info["OSType"].as_str().unwrap_or("?"))
        ));
    }
    None
}

/// The host the docker CLI would use, from its environment and config
/// directory (see [`Daemon::connect`]).
fn resolve_host(
    docker_host: Option<String>,
    docker_context: Option<String>,
    config_dir: Option<&Path>,
) -> Result<String> {
    if let Some(host) = docker_host {
        return Ok(host);
    }
    let read_json = |path: &Path| -> Result<Option<Value>> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(anyhow!("{}: {e}", path.display())),
        };
        // Bounded: these are small files, and may be anything.
        let mut text = Vec::new();
        file.take(1 << 20)
            .read_to_end(&mut text)
            .with_context(|| format!("{}", path.display()))?;
        let value = serde_json::from_slice(&text)
            .with_context(|| format!("{}: not JSON", path.display()))?;
        Ok(Some(value))
    };
    let context = match (docker_context, config_dir) {
        (Some(name), _) => Some(name),
        (None, Some(dir)) => read_json(&dir.join("config.json"))?
            .and_then(|c| c["currentContext"].as_str().map(str::to_owned))
            .filter(|name| !name.is_empty()),
        (None, None) => None,
    };
    let name = match context {
        Some(name) if name != "default" => name,
        _ => return Ok(http::DEFAULT_HOST.to_owned()),
    };
    let Some(dir) = config_dir else {
        bail!("docker context {name:?}: no docker config directory (HOME unset)");
    };
    // The CLI stores a context under the sha256 of its name.
    let meta = dir
        .join("contexts/meta")
        .join(digest::sha256_hex(name.as_bytes()))
        .join("meta.json");
    let meta_json = read_json(&meta)?.ok_or_else(|| {
        anyhow!(
            "docker context {name:?}: no such context ({})",
            meta.display()
        )
    })?;
    meta_json["Endpoints"]["docker"]["Host"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            anyhow!(
                "docker context {name:?}: no docker endpoint in {}",
                meta.display()
            )
        })
}

/// `1.41` → (1, 41).
fn parse_api(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// `sha256:` and 64 lower-case hex digits.
fn is_digest(text: &str) -> bool {
    text.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The chain ID of every prefix of `diff_ids`: ChainID(L0) = DiffID(L0),
/// ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)) (the OCI image
/// spec's definition, which moby's layer store is keyed by).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chains: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let chain = match chains.last() {
            None => diff_id.clone(),
            Some(parent) => {
                let mut h = Sha256::new();
                h.update(parent.as_bytes());
                h.update(b" ");
                h.update(diff_id.as_bytes());
                digest::diff_id(&h.finalize().into())
            }
        };
        chains.push(chain);
    }
    chains
}

/// Which layers may be left out of the archive: layer `i` only when every
/// diff_id up to `i` is known before streaming (`None`: learned only while
/// streaming) and the chain ID of layers `0..=i` is in `known`.
pub fn layers_to_omit(diff_ids: &[Option<String>], known: &HashSet<String>) -> Vec<bool> {
    let mut omit = vec![false; diff_ids.len()];
    // Past an unknown diff_id no chain ID can be computed.
    let prefix: Vec<String> = diff_ids
        .iter()
        .map_while(|d| d.as_ref().filter(|d| is_digest(d)).cloned())
        .collect();
    for (i, chain) in chain_ids(&prefix).iter().enumerate() {
        omit[i] = known.contains(chain);
    }
    omit
}

#[cfg(test)]
mod tests {
    //! A fake daemon: a Unix socket in a temp directory whose answers are
    //! canned per test.

    use super::*;
    use std::io::{BufRead, BufReader, Read};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    /// A request as the fake daemon saw it.
    struct Request {
        method: String,
        path: String,
        chunked: bool,
    }

    type Handler = dyn Fn(&Request, &mut BufReader<UnixStream>, &mut UnixStream) + Send + Sync;

    struct Fake {
        dir: PathBuf,
        host: String,
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn fake(
        tag: &str,
        handler: impl Fn(&Request, &mut BufReader<UnixStream>, &mut UnixStream) + Send + Sync + 'static,
    ) -> Fake {
        let dir =
            std::env::temp_dir().join(format!("sli-fake-daemon-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("docker.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let handler: Arc<Handler> = Arc::new(handler);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let handler = Arc::clone(&handler);
                std::thread::spawn(move || {
                    let mut writer = conn.try_clone().unwrap();
                    let mut reader = BufReader::new(conn);
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        head.push_str(&line);
                    }
                    let mut words = head.split_whitespace();
                    let request = Request {
                        method: words.next().unwrap_or_default().to_owned(),
                        path: words.next().unwrap_or_default().to_owned(),
                        chunked: head
                            .to_ascii_lowercase()
                            .contains("transfer-encoding: chunked"),
                    };
                    handler(&request, &mut reader, &mut writer);
                });
            }
        });
        Fake {
            host: format!("unix://{}", socket.display()),
            dir,
        }
    }

    /// Decodes a chunked request body; false if it ended without the
    /// terminating chunk.
    fn read_chunked(reader: &mut BufReader<UnixStream>) -> (Vec<u8>, bool) {
        let mut body = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return (body, false);
            }
            let Ok(size) = usize::from_str_radix(line.trim(), 16) else {
                return (body, false);
            };
            if size == 0 {
                let mut end = String::new();
                let _ = reader.read_line(&mut end);
                return (body, end == "\r\n");
            }
            let mut chunk = vec![0; size + 2];
            if reader.read_exact(&mut chunk).is_err() || !chunk.ends_with(b"\r\n") {
                return (body, false);
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }

    fn respond(w: &mut UnixStream, status: u16, body: &str) {
        let _ = write!(
            w,
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    }

    /// A 200 chunked message stream, one chunk per message.
    fn respond_stream(w: &mut UnixStream, messages: &[&str]) {
        let _ = write!(w, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        for m in messages {
            let line = format!("{m}\r\n");
            let _ = write!(w, "{:x}\r\n{line}\r\n", line.len());
        }
        let _ = write!(w, "0\r\n\r\n");
    }

    /// Answers ping, version and info as a classic-store 20.10 daemon.
    fn handshake(req: &Request, w: &mut UnixStream, api: &str, driver_type: Option<&str>) -> bool {
        if req.path == "/_ping" {
            respond(w, 200, "OK");
        } else if req.path == "/version" {
            respond(
                w,
                200,
                &format!(r#"{{"Version":"20.10.24","ApiVersion":"{api}","MinAPIVersion":"1.12"}}"#),
            );
        } else if req.path.ends_with("/info") {
            let status = driver_type
                .map(|t| format!(r#"[["driver-type","{t}"]]"#))
                .unwrap_or_else(|| r#"[["Backing Filesystem","extfs"]]"#.to_owned());
            respond(
                w,
                200,
                &format!(r#"{{"OSType":"linux","DriverStatus":{status}}}"#),
            );
        } else {
            return false;
        }
        true
    }

    fn quick() -> Timeouts {
        Timeouts {
            api: Duration::from_secs(5),
            load: Duration::from_secs(5),
        }
    }

    fn sha(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    #[test]
    fn old_api_is_refused_in_one_line() {
        let f = fake("old", |req, _, w| {
            handshake(req, w, "1.23", None);
        });
        let err = Daemon::connect_to(&f.host, quick()).unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.starts_with(&format!("docker daemon at {}: ", f.host)),
            "{text}"
        );
        assert!(
            text.contains("API version 1.23 is too old") && text.contains("1.24"),
            "{text}"
        );
        assert!(!text.contains('\n'));
    }

    #[test]
    fn version_is_negotiated_and_paths_pinned() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let f = fake("nego", move |req, _, w| {
            log.lock().unwrap().push(req.path.clone());
            handshake(req, w, "1.99", None);
        });
        let d = Daemon::connect_to(&f.host, quick()).unwrap();
        assert_eq!(d.api_version(), "1.48", "capped at MAX_API");
        assert_eq!(d.engine_version(), "20.10.24");
        assert_eq!(d.omit_blocker(), None);
        assert_eq!(*seen.lock().unwrap(), ["/_ping", "/version", "/v1.48/info"]);
    }

    #[test]
    fn no_daemon_and_bad_hosts_are_one_line() {
        let missing = std::env::temp_dir().join(format!("sli-no-such-{}.sock", std::process::id()));
        let host = format!("unix://{}", missing.display());
        let text = format!("{:#}", Daemon::connect_to(&host, quick()).unwrap_err());
        assert!(
            text.starts_with(&format!(
                "docker daemon at {host}: GET /_ping: no such socket"
            )),
            "{text}"
        );
        let text = format!(
            "{:#}",
            Daemon::connect_to("tcp://198.51.100.7:2375", quick()).unwrap_err()
        );
        assert!(text.contains("loopback"), "{text}");
        // Permission denied cannot be provoked as root; the mapping is direct.
        let e = http::connect_error(io::Error::from(io::ErrorKind::PermissionDenied));
        assert!(format!("{e}").contains("permission denied on the socket"));
    }

    #[test]
    fn uploads_are_owned_writers() {
        // What the image writer needs to move its output to a thread.
        fn owned_writer<W: Write + Send + 'static>() {}
        owned_writer::<Upload>();
        owned_writer::<PodmanUpload>();
    }

    #[test]
    fn host_is_resolved_as_the_docker_cli_does() {
        let dir = std::env::temp_dir().join(format!("sli-docker-config-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let meta = dir
            .join("contexts/meta")
            .join(digest::sha256_hex(b"rootless"));
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("meta.json"),
            r#"{"Name":"rootless","Endpoints":{"docker":{"Host":"unix:///run/user/1000/docker.sock"}}}"#,
        )
        .unwrap();
        let resolve = |host: Option<&str>, context: Option<&str>, dir: Option<&Path>| {
            resolve_host(host.map(str::to_owned), context.map(str::to_owned), dir)
        };
        assert_eq!(resolve(None, None, None).unwrap(), http::DEFAULT_HOST);
        assert_eq!(
            resolve(None, None, Some(&dir)).unwrap(),
            http::DEFAULT_HOST,
            "no config.json"
        );
        std::fs::write(dir.join("config.json"), r#"{"currentContext":"rootless"}"#).unwrap();
        let rootless = "unix:///run/user/1000/docker.sock";
        assert_eq!(resolve(None, None, Some(&dir)).unwrap(), rootless);
        assert_eq!(
            resolve(Some("tcp://127.0.0.1:1"), None, Some(&dir)).unwrap(),
            "tcp://127.0.0.1:1"
        );
        assert_eq!(
            resolve(None, Some("default"), Some(&dir)).unwrap(),
            http::DEFAULT_HOST
        );
        let err = resolve(None, Some("gone"), Some(&dir)).unwrap_err();
        assert!(
            format!("{err:#}").contains("docker context \"gone\": no such context"),
            "{err:#}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn containerd_store_blocks_omitting() {
        let f = fake("ctrd", |req, _, w| {
            if !handshake(req, w, "1.45", Some("io.containerd.snapshotter.v1")) {
                respond(w, 500, r#"{"message":"not expected"}"#);
            }
        });
        let d = Daemon::connect_to(&f.host, quick()).unwrap();
        assert!(d.omit_blocker().unwrap().contains("containerd image store"));
        assert!(
            d.known_chain_ids().unwrap().is_empty(),
            "no listing asked for"
        );
    }

    #[test]
    fn known_chain_ids_from_every_image() {
        let f = fake("chains", move |req, _, w| {
            if handshake(req, w, "1.41", None) {
                return;
            }
            let (a, b, c) = (sha(0xa1), sha(0xb2), sha(0xc3));
            match req.path.as_str() {
                "/v1.41/images/json" => respond(
                    w,
                    200,
                    &format!(r#"[{{"Id":"{a}"}},{{"Id":"{b}"}},{{"Id":"{a}"}},{{"Id":"bogus"}}]"#),
                ),
                p if p == format!("/v1.41/images/{a}/json") => respond(
                    w,
                    200,
                    &format!(
                        r#"{{"RootFS":{{"Type":"layers","Layers":["{}","{}"]}}}}"#,
                        sha(1),
                        sha(2)
                    ),
                ),
                // Removed between listing and inspection.
                p if p == format!("/v1.41/images/{b}/json") => {
                    respond(w, 404, r#"{"message":"No such image"}"#)
                }
                _ => respond(w, 500, &format!(r#"{{"message":"unexpected {c}"}}"#)),
            }
        });
        let d = Daemon::connect_to(&f.host, quick()).unwrap();
        let known = d.known_chain_ids().unwrap();
        let chains = chain_ids(&[sha(1), sha(2)]);
        assert_eq!(known, chains.iter().cloned().collect());
        let wanted: HashSet<String> = [chains[1].clone(), sha(9)].into_iter().collect();
        assert_eq!(
            d.known_among(&wanted).unwrap(),
            [chains[1].clone()].into_iter().collect()
        );
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let (a, b, c) = (sha(1), sha(2), sha(3));
        let chains = chain_ids(&[a.clone(), b.clone(), c.clone()]);
        assert_eq!(chains[0], a);
        let ab = format!(
            "sha256:{}",
            digest::sha256_hex(format!("{a} {b}").as_bytes())
        );
        assert_eq!(chains[1], ab);
        let abc = format!(
            "sha256:{}",
            digest::sha256_hex(format!("{ab} {c}").as_bytes())
        );
        assert_eq!(chains[2], abc);
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn omit_rule() {
        let ids = [sha(1), sha(2), sha(3), sha(4)];
        let chains = chain_ids(&ids);
        let known: HashSet<String> =
            [chains[0].clone(), chains[1].clone(), chains[3].clone()].into();
        let all: Vec<Option<String>> = ids.iter().cloned().map(Some).collect();
        assert_eq!(layers_to_omit(&all, &known), [true, true, false, true]);
        // An unknown diff_id stops the rule for every later layer.
        let gap = vec![
            Some(ids[0].clone()),
            None,
            Some(ids[2].clone()),
            Some(ids[3].clone()),
        ];
        assert_eq!(layers_to_omit(&gap, &known), [true, false, false, false]);
        // A malformed diff_id counts as unknown.
        let bad = vec![Some("sha256:XYZ".to_owned()), Some(ids[1].clone())];
        assert_eq!(layers_to_omit(&bad, &known), [false, false]);
        assert_eq!(layers_to_omit(&all, &HashSet::new()), [false; 4]);
        assert!(layers_to_omit(&[], &known).is_empty());
    }

    /// What the fake daemon received as the load's body.
    type Received = Arc<Mutex<Option<(Vec<u8>, bool)>>>;

    #[test]
    fn chunked_body_arrives_intact_and_report_is_read() {
        let received: Received = Arc::new(Mutex::new(None));
        let got = Arc::clone(&received);
        let f = fake("load", move |req, r, w| {
            if handshake(req, w, "1.41", None) {
                return;
            }
            assert_eq!(req.method, "POST");
            assert_eq!(req.path, "/v1.41/images/load?quiet=0");
            assert!(req.chunked);
            *got.lock().unwrap() = Some(read_chunked(r));
            respond_stream(
                w,
                &[
                    r#"{"status":"Loading layer","progressDetail":{"current":512,"total":1024},"id":"0123456789ab"}"#,
                    r#"{"status":"Loading layer","progressDetail":{"current":1024,"total":1024},"id":"0123456789ab"}"#,
                    r#"{"status":"Loading layer","progressDetail":{},"id":"ba9876543210"}"#,
                    r#"{"stream":"The image app:1 already exists, renaming the old one with ID sha256:00 to empty string\n"}"#,
                    r#"{"stream":"Loaded image: app:1\n"}"#,
                ],
            );
        });
        let d = Daemon::connect_to(&f.host, quick()).unwrap();
        // Odd sizes around the chunk buffer, several MiB in all.
        let mut sent = Vec::new();
        let mut n = 0u32;
        for size in [0usize, 1, 100, 65535, 65536, 65537, 1 << 20, 3, 700_001] {
            let piece: Vec<u8> = (0..size)
                .map(|_| {
                    n = n.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (n >> 16) as u8
                })
                .collect();
            sent.extend_from_slice(&piece);
        }
        let report = d
            .load(|out| {
                let mut rest = &sent[..];
                for size in [0usize, 1, 100, 65535, 65536, 65537, 1 << 20, 3, 700_001] {
                    out.write_all(&rest[..size])?;
                    rest = &rest[size..];
                }
                Ok(())
            })
            .unwrap();
        let (body, complete) = received.lock().unwrap().take().unwrap();
        assert!(complete, "terminating chunk sent");
        assert_eq!(body.len(), sent.len());
        assert!(body == sent, "body intact");
        assert_eq!(report.images, ["app:1"]);
        assert_eq!(report.layers_unpacked, 2);
        assert_eq!(report.notes.len(), 1);
    }

    #[test]
    fn producer_failure_aborts_the_upload() {
        let received: Received = Arc::new(Mutex::new(None));
        let got = Arc::clone(&received);
        let f = fake("abort", move |req, r, w| {
            if !handshake(req, w, "1.41", None) {
                *got.lock().unwrap() = Some(read_chunked(r));
                respond(w, 500, r#"{"message":"unexpected EOF"}"#);
            }
        });
        let d = Daemon::connect_to(&f.host, quick()).unwrap();
        let err = d
            .load(|out| {
                out.write_all(&[1; 100_000])?;
                bail!("reading /nix/store/x: gone")
            })
            .unwrap_err();
        assert_eq!(format!("{err:#}"), "reading /nix/store/x: gone");
        // The handler runs on its own thread: wait for it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while received.lock().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let (_, complete) = received.lock().unwrap().take().unwrap();
        assert!(
            !complete,
            "no terminating chunk: the daemon sees a truncated body"
        );
    }

    #[test]
    fn rejection_by_status_is_one_line() {
        let f = fake("reject", |req, r, w| {
            if !handshake(req, w, "1.41", None) {
                let _ = read_chunked(r);
                respond(w, 500, r#"{"message":"archive/tar: invalid tar header"}"#);
            }
        });
        let d = Daemon::connect_to(&f.host, quick()).unwrap();
        let err = d.load(|out| Ok(out.write_all(b"not a tar")?)).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            format!(
                "docker daemon at {}: POST /images/load: the daemon rejected the archive: archive/tar: invalid tar header",
                f.host
            )
        );
        assert!(!is_missing_layer(&err));
    }

    #[test]
    fn rejection_mid_upload_carries_the_daemons_message() {
        let f = fake("midway", |req, r, w| {
            if !handshake(req, w, "1.41", None) {
                // Read a little, answer, close: what Go's server does when
                // the handler fails before the body is read.
                let mut some = vec![0; 1000];
                let _ = r.read_exact(&mut some);
                respond(
                    w,
                    500,
                    r#"{"message":"cannot load windows image on linux"}"#,
                );
                let _ = w.shutdown(std::net::Shutdown::Both);
            }
        });
        let d = Daemon::connect_to(&f.host, quick()).unwrap();
        let err = d
            .load(|out| {
                for _ in 0..2000 {
                    out.write_all(&[0; 65536])?;
                }
                Ok(())
            })
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("cannot load windows image on linux"),
            "{text}"
        );
        assert!(!text.contains('\n'));
        let broken = err.chain().any(|c| {
            c.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
        });
        assert!(!broken, "not mistaken for our reader closing: {text}");
    }

    #[test]
    fn error_in_message_stream_is_one_line_and_missing_layer_is_typed() {
        let f = fake("stream-err", |req, r, w| {
            if !handshake(req, w, "1.41", None) {
                let (body, _) = read_chunked(r);
                let message = if body == b"missing" {
                    "open /var/lib/docker/tmp/docker-import-31337/2/layer.tar: no such file or directory"
                } else {
                    "invalid diffID for layer 1: expected \"sha256:aa\", got \"sha256:bb\""
                };
                respond_stream(
                    w,
                    &[
                        r#"{"status":"Loading layer","progressDetail":{},"id":"0123456789ab"}"#,
                        &format!(
                            r#"{{"errorDetail":{{"message":{message:?}}},"error":{message:?}}}"#
                        ),
                    ],
                );
            }
        });
        let d = Daemon::connect_to(&f.host, quick()).unwrap();
        let err = d.load(|out| Ok(out.write_all(b"other")?)).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.ends_with(r#"the daemon rejected the archive: invalid diffID for layer 1: expected "sha256:aa", got "sha256:bb""#), "{text}");
        assert!(!is_missing_layer(&err));
        let err = d.load(|out| Ok(out.write_all(b"missing")?)).unwrap_err();
        assert!(is_missing_layer(&err), "{err:#}");
        assert!(format!("{err:#}").contains("lacks a layer"), "{err:#}");
    }

    #[test]
    fn missing_layer_resends_everything_once() {
        let f = fake("resend", |req, r, w| {
            if !handshake(req, w, "1.41", None) {
                let (body, _) = read_chunked(r);
                if body == b"omitting" {
                    respond(
                        w,
                        500,
                        r#"{"message":"open /tmp/docker-import-1/1/layer.tar: no such file or directory"}"#,
                    );
                } else {
                    respond_stream(w, &[r#"{"stream":"Loaded image: app:2\n"}"#]);
                }
            }
        });
        let d = Daemon::connect_to(&f.host, quick()).unwrap();
        let mut calls = Vec::new();
        let report = d
            .load_incremental(&[true, false], |omit, out| {
                calls.push(omit.to_vec());
                let body: &[u8] = if omit.iter().any(|o| *o) {
                    b"omitting"
                } else {
                    b"everything"
                };
                Ok(out.write_all(body)?)
            })
            .unwrap();
        assert_eq!(calls, [vec![true, false], vec![false, false]]);
        assert_eq!(report.images, ["app:2"]);
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.contains("resent every layer")),
            "{report:?}"
        );
    }

    #[test]
    fn stream_without_a_loaded_image_is_an_error() {
        let f = fake("empty", |req, r, w| {
            if !handshake(req, w, "1.41", None) {
                let _ = read_chunked(r);
                respond_stream(w, &[r#"{"status":"Loading layer","id":"x"}"#]);
            }
        });
        let d = Daemon::connect_to(&f.host, quick()).unwrap();
        let err = d.load(|out| Ok(out.write_all(b"x")?)).unwrap_err();
        assert!(
            format!("{err:#}").contains("without naming a loaded image"),
            "{err:#}"
        );
    }

    #[test]
    fn oversize_headers_are_refused() {
        let f = fake("huge", |req, _, w| {
            let _ = write!(w, "HTTP/1.1 200 OK\r\n");
            let filler = format!("X-Filler: {}\r\n", "a".repeat(1000));
            // Far past the limit: the client must stop reading, not buffer it.
            for _ in 0..1000 {
                if w.write_all(filler.as_bytes()).is_err() {
                    return;
                }
            }
            let _ = req;
        });
        let err = Daemon::connect_to(&f.host, quick()).unwrap_err();
        assert!(
            format!("{err:#}").contains("headers larger than 64 KiB"),
            "{err:#}"
        );
    }

    #[test]
    fn silent_daemon_times_out() {
        let f = fake("silent", |_, _, _| {
            std::thread::sleep(Duration::from_secs(30));
        });
        let started = Instant::now();
        let timeouts = Timeouts {
            api: Duration::from_secs(1),
            load: Duration::from_secs(1),
        };
        let err = Daemon::connect_to(&f.host, timeouts).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "bounded: {:?}",
            started.elapsed()
        );
        let text = format!("{err:#}");
        assert!(
            text.contains("GET /_ping: waiting for the answer: no progress for 1 s"),
            "{text}"
        );
    }

    #[test]
    fn daemon_that_stops_reading_times_out() {
        let f = fake("stuck", |req, _, w| {
            if !handshake(req, w, "1.41", None) {
                // Neither reads the body nor answers nor closes.
                std::thread::sleep(Duration::from_secs(30));
            }
        });
        let timeouts = Timeouts {
            api: Duration::from_secs(5),
            load: Duration::from_secs(1),
        };
        let d = Daemon::connect_to(&f.host, timeouts).unwrap();
        let started = Instant::now();
        let err = d
            .load(|out| {
                for _ in 0..1000 {
                    out.write_all(&[0; 65536])?;
                }
                Ok(())
            })
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        let text = format!("{err:#}");
        assert!(
            text.contains("stopped reading the archive (no progress for 1 s)"),
            "{text}"
        );
    }

    #[test]
    fn silent_load_times_out() {
        let f = fake("silent-load", |req, r, w| {
            if !handshake(req, w, "1.41", None) {
                let _ = read_chunked(r);
                std::thread::sleep(Duration::from_secs(30));
            }
        });
        let timeouts = Timeouts {
            api: Duration::from_secs(5),
            load: Duration::from_secs(1),
        };
        let d = Daemon::connect_to(&f.host, timeouts).unwrap();
        let started = Instant::now();
        let err = d.load(|out| Ok(out.write_all(b"x")?)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            format!("{err:#}").contains("no progress for 1 s"),
            "{err:#}"
        );
    }
}
