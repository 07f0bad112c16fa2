//! Deciding which store paths go into which layer, at stream time, from the
//! exported reference graph (nixpkgs' `dockerAutoLayer` by default, or a
//! `layeringPipeline`).

use std::path::PathBuf;

use serde::Deserialize;

/// The `layering` object of the conf: how to layer from the graph.
#[derive(Debug, Clone, Deserialize)]
pub struct Spec {
    /// closureInfo's output directory (its `registration` file is read), a
    /// `registration` file itself, or an exportReferencesGraph JSON file.
    pub graph: PathBuf,
    /// Paths that take part in the graph but never land in a layer
    /// (nixpkgs' `excludePaths`: the image's base.json and customisation layer).
    #[serde(default)]
    pub exclude_paths: Vec<String>,
    /// The user's `maxLayers`; base-image layers and the customisation layer
    /// count against it.
    #[serde(default = "default_max_layers")]
    pub max_layers: usize,
    /// A `layeringPipeline`: the JSON list inline, or a path to a file holding it.
    #[serde(default)]
    pub pipeline: Option<serde_json::Value>,
    /// Print, per layer, its paths and why they were grouped.
    #[serde(default)]
    pub debug: bool,
}

fn default_max_layers() -> usize {
    100
}
