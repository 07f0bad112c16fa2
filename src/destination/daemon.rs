//! `--load [docker|podman]`: the image straight into a container engine.
//!
//! Docker (Engine API over its socket): the daemon is asked which of this
//! image's layer chains it has (chain IDs from our diff_ids, known before
//! reading from the base image, the customisation checksum and the digest
//! cache), and the docker-archive sent to `POST /images/load` leaves out
//! those layers' members: Docker's classic loader only opens a layer
//! member when it lacks that chain. If a layer vanishes between the check
//! and the load, the load is sent again in full, once. With the containerd
//! image store, or anything else that makes the rule uncertain, every layer
//! is sent (correct first, fast second) and a line says why.
//!
//! Podman: the full archive into `podman load` (it cannot skip layers).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::time::Duration;

use anyhow::Result;

use crate::daemon::{self, Daemon, LoadReport, PodmanUpload};
use crate::destination::docker_archive;
use crate::model::{Destination, Image, Written};

/// Which engine `--load` talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// The Docker daemon (`DOCKER_HOST`, default unix:///var/run/docker.sock).
    Docker,
    /// podman, through `podman load`.
    Podman,
}

/// Loads the image into an engine.
pub struct Load {
    /// Which engine.
    pub engine: Engine,
}

/// How long `podman load` may take.
const PODMAN_TIMEOUT: Duration = Duration::from_secs(600);

impl Destination for Load {
    fn write(self: Box<Self>, img: &Image) -> Result<Written> {
        let (report, mut written) = match self.engine {
            Engine::Docker => load_docker(img)?,
            Engine::Podman => {
                let upload = PodmanUpload::start(OsStr::new("podman"), PODMAN_TIMEOUT)?;
                let (upload, written) = docker_archive::write(img, upload, &[])?;
                (upload.finish()?, written)
            }
        };
        written.notes = report.lines();
        Ok(written)
    }
}

fn load_docker(img: &Image) -> Result<(LoadReport, Written)> {
    let daemon = Daemon::connect()?;
    let omit = match daemon.omit_blocker() {
        Some(why) => {
            img.reporter
                .warn(&format!("--load: sending every layer: {why}"));
            Vec::new()
        }
        None => {
            let diff_ids = img.known_diff_ids();
            let prefix: Vec<String> = diff_ids.iter().map_while(Clone::clone).collect();
            let wanted: HashSet<String> = daemon::chain_ids(&prefix).into_iter().collect();
            let known = if wanted.is_empty() {
                HashSet::new()
            } else {
                daemon.known_among(&wanted)?
            };
            daemon::layers_to_omit(&diff_ids, &known)
        }
    };
    let send = |omit: &[bool]| -> Result<(LoadReport, Written)> {
        let upload = daemon.begin_load()?;
        let (upload, written) = docker_archive::write(img, upload, omit)?;
        Ok((upload.finish()?, written))
    };
    match send(&omit) {
        Err(e) if omit.contains(&true) && daemon::is_missing_layer(&e) => {
            img.reporter.warn(
                "--load: a layer the daemon had is gone (removed meanwhile); sending every layer",
            );
            send(&[])
        }
        other => other,
    }
}
