//! stream-layered-image: turns Nix store closures into container images.
//!
//! A drop-in for nixpkgs' `dockerTools.streamLayeredImage` streamer
//! (`stream_layered_image.py`): it reads a conf.json, decides which store
//! paths go into which layer (from an explicit `store_layers` list or from
//! the exported reference graph), and streams a docker-archive tarball whose
//! layers and image configuration are byte-identical to nixpkgs' output.
//!
//! The data flow, module by module:
//!
//! 1. [`conf`] parses the conf.json that the Nix function writes.
//! 2. [`nix`] reads the Nix formats (store paths, closureInfo's
//!    `registration`, exportReferencesGraph JSON) into a [`graph::Graph`].
//! 3. [`layering`] turns the graph into store layers (auto-layer, the
//!    popularity contest, `layeringPipeline`).
//! 4. [`base_image`] opens a `fromImage` tarball; [`customisation`] checks
//!    the customisation layer.
//! 5. [`layer`] walks store paths into tar entries, sizes them from metadata
//!    and streams them through [`tar`] while [`digest`] hashes the bytes.
//! 6. [`image`] builds the image configuration and manifest (in Python's
//!    JSON text, [`pyjson`]); [`archive`] writes the outer docker-archive;
//!    [`output`] handles stdout, `-o` files and compression.
//!
//! 7. [`daemon`] loads the archive into a Docker daemon (sending only the
//!    layers it lacks) or podman.
//!
//! The executable (`main.rs`) parses the command line ([`cli`]), runs
//! steps 1 to 4 into the typed image model ([`model::Image`]) and hands it
//! to each [`destination`] asked for (the docker-archive stream, OCI
//! layouts, a registry push through [`registry`], a daemon load), which
//! runs steps 5 and 6 its own way; [`blob`] makes one layer's compressed
//! blob for those that need one. [`escape`] keeps messages on stderr one
//! line each and never fatal.

pub mod archive;
pub mod base_image;
pub mod blob;
pub mod cache;
pub mod cli;
pub mod compression;
pub mod conf;
pub mod customisation;
pub mod daemon;
pub mod destination;
pub mod digest;
pub mod escape;
pub mod graph;
pub mod image;
pub mod layer;
pub mod layering;
pub mod model;
pub mod nix;
pub mod output;
pub mod progress;
pub mod pyjson;
pub mod reference;
pub mod registry;
pub mod sbom;
pub mod signals;
pub mod tar;
