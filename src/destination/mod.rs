//! Where an image goes. Each destination is one module that takes the
//! [`Image`] model and writes what its consumer needs:
//!
//! - [`docker_archive`]: the docker-archive stream (`--format docker`,
//!   the default; byte for byte what nixpkgs' streamer writes, layers
//!   aside from member names);
//! - [`oci_archive`]: an OCI image layout tar (`--format oci`) or one that
//!   is also a docker-archive (`--format dual`);
//! - [`oci_dir`]: an OCI image layout directory (`--oci-dir DIR`);
//! - [`digests`]: only the layers' digests (`--digests-only FILE`);
//! - [`registry`]: a registry (`--push REF`);
//! - [`daemon`]: Docker or podman (`--load`), incrementally for Docker;
//! - [`index`]: several images, one per platform, under one tag (an OCI
//!   image index) into an OCI layout, an `oci`/`dual` archive or a registry.
//!
//! [`oci`] holds the OCI documents they share, [`artifact`] the image's
//! OCI referrers (its SBOMs) for those that carry them. Adding a destination is
//! adding a module and a [`Destination`] for it; the others stay as they are.
#![warn(missing_docs)]

pub mod artifact;
pub mod daemon;
pub mod digests;
pub mod docker_archive;
pub mod index;
pub mod oci;
pub mod oci_archive;
pub mod oci_dir;
pub mod registry;

use std::path::PathBuf;

use anyhow::Result;

use crate::compression::Codec;
use crate::model::{Destination, Image, Written};
use crate::output::Output;

/// The archive forms written to stdout or `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A docker-archive (`docker load`), as nixpkgs' streamer writes.
    Docker,
    /// One tar that is both a docker-archive and an OCI image layout (as
    /// `docker save` writes since Engine 25).
    Dual,
    /// An OCI image layout tar (an `oci-archive`).
    Oci,
}

/// An archive on stdout or in an `-o` file.
pub struct Archive {
    /// Which archive.
    pub format: Format,
    /// Per-layer compression (`oci` and `dual` only).
    pub codec: Codec,
    /// Where it goes; committed when the image is complete.
    pub output: Output,
}

impl Destination for Archive {
    fn write(self: Box<Self>, img: &Image) -> Result<Written> {
        let (out, written) = match self.format {
            Format::Docker => docker_archive::write(img, self.output, &[])?,
            Format::Oci => oci_archive::write(img, self.output, self.codec, false)?,
            Format::Dual => oci_archive::write(img, self.output, self.codec, true)?,
        };
        out.commit()?;
        Ok(written)
    }
}

/// An OCI image layout directory.
pub struct OciDir {
    /// The directory.
    pub dir: PathBuf,
    /// Per-layer compression.
    pub codec: Codec,
}

impl Destination for OciDir {
    fn write(self: Box<Self>, img: &Image) -> Result<Written> {
        oci_dir::write(img, &self.dir, self.codec)
    }
}

/// Only the digests file.
pub struct DigestsOnly {
    /// The file to write.
    pub path: PathBuf,
    /// The codec whose blob digests are recorded (besides the diff_ids).
    pub codec: Codec,
}

impl Destination for DigestsOnly {
    fn write(self: Box<Self>, img: &Image) -> Result<Written> {
        digests::write(img, &self.path, self.codec)
    }
}
