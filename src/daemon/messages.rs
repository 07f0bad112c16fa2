//! The answer to `POST /images/load`: a stream of JSON messages, one per
//! line (moby's `jsonmessage`): `{"stream": "Loaded image: app:tag\n"}`,
//! progress `{"status": "Loading layer", "id": …}` for each layer the daemon
//! unpacks, and `{"errorDetail": {"message": …}, "error": …}` when it
//! fails after answering 200. Before anything was flushed, failures come
//! as an HTTP error status with `{"message": …}` instead.

use std::collections::HashSet;
use std::fmt;

use anyhow::{bail, Result};
use serde_json::Value;

use super::http::Response;
use super::MAX_MESSAGE;
use crate::escape::one_line;

/// At most this many notes are kept (a daemon could send endless lines).
const MAX_NOTES: usize = 100;

/// What a load did, as the daemon (or podman) said it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// The names the image was tagged with (`Loaded image: NAME` lines).
    pub images: Vec<String>,
    /// Image IDs (`Loaded image ID: sha256:…` lines; docker prints these
    /// only for images without a tag).
    pub image_ids: Vec<String>,
    /// Layers the daemon unpacked (distinct layers it reported progress
    /// for); the layers it already had are not counted.
    pub layers_unpacked: usize,
    /// Anything else worth showing, one line each: the daemon's other
    /// lines (`The image app:tag already exists, renaming the old one …`)
    /// and this module's warnings (a full resend).
    pub notes: Vec<String>,
}

impl LoadReport {
    /// The lines `docker load` prints for this load.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self.notes.clone();
        lines.extend(self.images.iter().map(|i| format!("Loaded image: {i}")));
        lines.extend(
            self.image_ids
                .iter()
                .map(|i| format!("Loaded image ID: {i}")),
        );
        lines
    }

    pub(crate) fn note(&mut self, line: &str) {
        let line = one_line(line.trim());
        if !line.is_empty() && self.notes.len() < MAX_NOTES {
            self.notes.push(line);
        }
    }

    /// Takes one line of text the loader printed.
    pub(crate) fn take_line(&mut self, line: &str) {
        let line = line.trim();
        if let Some(id) = line.strip_prefix("Loaded image ID: ") {
            self.image_ids.push(one_line(id.trim()));
        } else if let Some(name) = line.strip_prefix("Loaded image: ") {
            self.images.push(one_line(name.trim()));
        } else if let Some(names) = line.strip_prefix("Loaded image(s): ") {
            // podman before 4.0.
            self.images.extend(
                names
                    .split(',')
                    .map(|n| one_line(n.trim()))
                    .filter(|n| !n.is_empty()),
            );
        } else {
            self.note(line);
        }
    }
}

/// The daemon no longer has a layer the archive left out: moby failed to
/// open that layer's file. Loading again with every layer works; see
/// [`super::Daemon::load_incremental`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingLayer {
    /// The daemon's message (`open /var/lib/docker/tmp/docker-import-…/3/layer.tar: no such file or directory`).
    pub message: String,
}

impl fmt::Display for MissingLayer {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "the daemon lacks a layer that was left out of the archive (removed since the check?): {}",
            self.message
        )
    }
}

impl std::error::Error for MissingLayer {}

/// True when `e` (anywhere in its chain) is a [`MissingLayer`].
pub fn is_missing_layer(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.downcast_ref::<MissingLayer>().is_some())
}

/// The daemon's error message as an error: a [`MissingLayer`] when it is
/// moby failing to open a layer file of the extracted archive.
pub(crate) fn daemon_error(message: &str) -> anyhow::Error {
    let message = one_line(message.trim());
    // moby: `open <tmp>/docker-import-NNN/<member>: no such file or directory`.
    if message.contains("no such file or directory")
        && (message.contains("docker-import-") || message.contains("layer.tar"))
    {
        return MissingLayer { message }.into();
    }
    anyhow::anyhow!("the daemon rejected the archive: {message}")
}

/// Reads the whole answer to a load into a report, or the daemon's error.
pub(crate) fn read_load_answer(mut response: Response) -> Result<LoadReport> {
    if response.status != 200 {
        let status = response.status;
        let body = response.body(64 * 1024).unwrap_or_default();
        let message = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(300).collect());
        if message.trim().is_empty() {
            bail!("the daemon rejected the archive: HTTP {status}");
        }
        return Err(daemon_error(&message));
    }
    let mut report = LoadReport::default();
    let mut layers = HashSet::new();
    while let Some(line) = response.next_line(MAX_MESSAGE)? {
        let text = String::from_utf8_lossy(&line);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let Ok(message) = serde_json::from_str::<Value>(text) else {
            report.note(text);
            continue;
        };
        if let Some(error) = message_error(&message) {
            return Err(daemon_error(&error));
        }
        if let Some(stream) = message["stream"].as_str() {
            stream.lines().for_each(|l| report.take_line(l));
        } else if message["status"].as_str() == Some("Loading layer") {
            if let Some(id) = message["id"].as_str() {
                // Bounded: one entry per layer id the daemon names.
                if layers.len() < 1_000_000 {
                    layers.insert(id.to_owned());
                }
            }
        } else if let Some(status) = message["status"].as_str() {
            report.note(status);
        }
    }
    report.layers_unpacked = layers.len();
    if report.images.is_empty() && report.image_ids.is_empty() {
        bail!("the daemon's answer ended without naming a loaded image");
    }
    Ok(report)
}

/// `errorDetail.message`, else `error`.
fn message_error(message: &Value) -> Option<String> {
    let detail = message["errorDetail"]["message"].as_str();
    let error = message["error"].as_str();
    detail
        .or(error)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_sorted_into_the_report() {
        let mut r = LoadReport::default();
        r.take_line("Loaded image: app:1\n");
        r.take_line("Loaded image ID: sha256:abc");
        r.take_line("Loaded image(s): localhost/a:1,localhost/b:2");
        r.take_line(
            "The image app:1 already exists, renaming the old one with ID sha256:x to empty string",
        );
        r.take_line("  ");
        assert_eq!(r.images, ["app:1", "localhost/a:1", "localhost/b:2"]);
        assert_eq!(r.image_ids, ["sha256:abc"]);
        assert_eq!(r.notes.len(), 1);
        assert_eq!(r.lines().last().unwrap(), "Loaded image ID: sha256:abc");
    }

    #[test]
    fn missing_layer_is_recognised() {
        let e = daemon_error(
            "open /var/lib/docker/tmp/docker-import-1234/3/layer.tar: no such file or directory",
        );
        assert!(is_missing_layer(&e));
        let e = e.context("docker daemon at unix:///x");
        assert!(is_missing_layer(&e), "through context too");
        let other = daemon_error("unexpected EOF");
        assert!(!is_missing_layer(&other));
        assert_eq!(
            format!("{other:#}"),
            "the daemon rejected the archive: unexpected EOF"
        );
    }
}
