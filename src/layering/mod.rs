//! Deciding which store paths go into which layer, at stream time, from the
//! exported reference graph (nixpkgs' `dockerAutoLayer` by default, or a
//! `layeringPipeline`).
//!
//! nixpkgs does this at build time in Python (`auto-layer.py`,
//! flatten-references-graph); here the Nix build only exports the graph and
//! [`decide`] gives the same layers, in the same order, with the same paths
//! in each. The budget follows nixpkgs' `auto-layer.nix`: `maxLayers` minus
//! the base image's layers minus one for the customisation layer, and at
//! least one layer must be left. A `layeringPipeline` ignores the budget, as
//! in nixpkgs. Modules: [`auto`] (the default), [`pipeline`] (the
//! operations), [`popularity`] (shared counting), [`legacy`] (the old
//! referencesByPopularity order), [`pyset`] (Python's tie order).

pub mod auto;
pub mod legacy;
pub mod pipeline;
pub mod popularity;
pub mod pyset;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::graph::Graph;

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

/// The store layers, in image order, and why each was formed.
#[derive(Debug, Clone, Default)]
pub struct Decision {
    /// Each layer's store paths, in the order they are to be written.
    pub layers: Vec<Vec<String>>,
    /// Parallel to `layers`: each path's NAR size.
    pub nar_sizes: Vec<Vec<u64>>,
    /// Parallel to `layers`: why these paths share a layer.
    pub reasons: Vec<String>,
    /// How the layers were decided: the method and the budget.
    pub summary: String,
    /// Graph paths that are in no layer (excluded or removed by the pipeline).
    pub left_out: Vec<String>,
    /// Things the user should know (e.g. a pipeline exceeding maxLayers).
    pub warnings: Vec<String>,
    /// Each graph path's NAR hash, where the graph gives one: it pins the
    /// path's bytes in the layer's digest-cache key.
    pub nar_hashes: std::collections::HashMap<String, String>,
}

impl Decision {
    /// Per layer: its paths with their NAR sizes and why they were grouped,
    /// then a total. Meant for a user tuning maxLayers or a pipeline.
    pub fn explain(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.summary);
        let count = self.layers.len();
        let mut total = 0u64;
        for (i, paths) in self.layers.iter().enumerate() {
            let sizes = &self.nar_sizes[i];
            let size = sizes.iter().fold(0u64, |a, &b| a.saturating_add(b));
            total = total.saturating_add(size);
            let _ = writeln!(
                out,
                "layer {}/{count}: {} in {} path{}: {}",
                i + 1,
                human(size),
                paths.len(),
                if paths.len() == 1 { "" } else { "s" },
                self.reasons[i]
            );
            for (p, s) in paths.iter().zip(sizes) {
                let _ = writeln!(out, "  {s:>12}  {p}");
            }
        }
        if !self.left_out.is_empty() {
            let _ = writeln!(out, "in no layer: {}", self.left_out.join(", "));
        }
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        let paths: usize = self.layers.iter().map(Vec::len).sum();
        let _ = writeln!(
            out,
            "total: {count} store layer{}, {paths} path{}, {total} bytes ({})",
            if count == 1 { "" } else { "s" },
            if paths == 1 { "" } else { "s" },
            human(total)
        );
        out
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Layers available to store paths: `maxLayers` minus the base image's
/// layers minus the customisation layer; nixpkgs' assert and check in our words.
pub fn layer_budget(max_layers: usize, base_layers: usize) -> Result<usize> {
    if max_layers <= 1 {
        bail!(
            "maxLayers is {max_layers}, but it must be greater than 1: the customisation layer \
             takes one layer and the store paths need at least one more"
        );
    }
    let used = base_layers + 1;
    if used >= max_layers {
        bail!(
            "maxLayers is {max_layers}, but the base image's {base_layers} layer(s) and the customisation \
             layer already use {used}: no layer is left for the store paths; raise maxLayers to at least {}",
            used + 1
        );
    }
    Ok(max_layers - used)
}

/// Loads `spec.graph`, checks every path is inside `store_dir`, and decides
/// the layers: auto-layer within the budget (`spec.pipeline == None`) or
/// the pipeline; `spec.exclude_paths` land in no layer. Nothing is printed:
/// the caller shows [`Decision::explain`] or the warnings as it sees fit.
pub fn decide(spec: &Spec, store_dir: &str, base_layers: usize) -> Result<Decision> {
    let pipeline = load_pipeline(spec.pipeline.as_ref())?;
    if pipeline.is_none() {
        // nixpkgs fails on the budget before it looks at the graph.
        layer_budget(spec.max_layers, base_layers)?;
    }
    let shown = spec.graph.display();
    let entries = crate::nix::load_graph(&spec.graph)?;
    let nar_hashes = entries
        .iter()
        .filter_map(|e| Some((e.path.clone(), e.nar_hash.clone()?)))
        .collect();
    let graph = Graph::from_entries(entries, store_dir)
        .with_context(|| format!("reference graph {shown}"))?;
    let decision = decide_graph(
        &graph,
        &spec.exclude_paths,
        spec.max_layers,
        base_layers,
        pipeline.as_deref(),
    )?;
    Ok(Decision {
        nar_hashes,
        ..decision
    })
}

/// The pipeline inline, or read from the file a string names (nixpkgs
/// accepts both: `make-layers.nix` slurps a file into the list).
pub fn load_pipeline(value: Option<&serde_json::Value>) -> Result<Option<Vec<pipeline::Step>>> {
    let Some(value) = value else {
        return Ok(None);
    };
    match value {
        serde_json::Value::String(file) => {
            let bytes = std::fs::read(file)
                .with_context(|| format!("layeringPipeline file {file}: cannot read"))?;
            let json = serde_json::from_slice::<serde_json::Value>(&bytes)
                .with_context(|| format!("layeringPipeline file {file}: invalid JSON"))?;
            pipeline::parse(&json)
                .map(Some)
                .with_context(|| format!("file {file}"))
        }
        serde_json::Value::Null => Ok(None),
        inline => pipeline::parse(inline).map(Some),
    }
}

/// [`decide`] on a loaded graph.
pub fn decide_graph(
    g: &Graph,
    exclude_paths: &[String],
    max_layers: usize,
    base_layers: usize,
    steps: Option<&[pipeline::Step]>,
) -> Result<Decision> {
    let exclude: HashSet<u32> = exclude_paths.iter().filter_map(|p| g.index_of(p)).collect();
    let mut d = match steps {
        None => decide_auto(g, &exclude, layer_budget(max_layers, base_layers)?),
        // make-layers.nix returns [] without running the pipeline when there
        // are no closure roots (includeStorePaths = false).
        Some(_) if g.is_empty() => Decision {
            summary: "layeringPipeline: the graph is empty, so there are no store layers.".into(),
            ..Decision::default()
        },
        Some(steps) => decide_pipeline(g, &exclude, steps)?,
    };
    let placed: HashSet<&str> = d.layers.iter().flatten().map(String::as_str).collect();
    d.left_out = g
        .paths()
        .iter()
        .filter(|p| !placed.contains(p.as_str()))
        .cloned()
        .collect();
    if steps.is_some() {
        let budget = max_layers.saturating_sub(base_layers + 1);
        if d.layers.len() > budget {
            d.warnings.push(format!(
                "the layeringPipeline gives {} store layers, more than maxLayers {max_layers} allows \
                 with {base_layers} base-image layer(s) and the customisation layer ({budget}); \
                 Docker refuses images of more than about 125 layers",
                d.layers.len()
            ));
        }
    }
    Ok(d)
}

fn short_name(path: &str) -> &str {
    auto::path_key(path).0
}

fn decide_auto(g: &Graph, exclude: &HashSet<u32>, limit: usize) -> Decision {
    let result = auto::auto_layer(g, limit);
    let mut d = Decision::default();
    let stop = match result.stopped_at {
        Some((p, count)) => format!(
            "it stopped after {} primary path(s): the next largest, {} ({}), would have made {count} layers",
            result.primaries.len(),
            short_name(g.path(p)),
            human(g.nar_size(p))
        ),
        None => format!("every one of the {} paths became a primary path", result.primaries.len()),
    };
    d.summary = format!(
        "auto-layer (nixpkgs' default) of {} store paths into at most {limit} layers; {stop}. \
         Excluded paths count against the limit but land in no layer.",
        g.len()
    );
    for layer in result.layers {
        let kept: Vec<u32> = layer
            .paths
            .iter()
            .copied()
            .filter(|v| !exclude.contains(v))
            .collect();
        if kept.is_empty() {
            continue;
        }
        let names: Vec<&str> = layer.id.iter().map(|&p| short_name(g.path(p))).collect();
        let reason = match names[..] {
            [] => "the rest: paths that no primary path depends on (a larger maxLayers splits it further)".to_owned(),
            [one] => format!(
                "primary path {one} (one of the largest), with the dependencies only it uses; closure {}",
                human(layer.closure_size)
            ),
            _ => format!(
                "dependencies shared by the primary paths {}; closure {}",
                names.join(", "),
                human(layer.closure_size)
            ),
        };
        d.nar_sizes
            .push(kept.iter().map(|&v| g.nar_size(v)).collect());
        d.layers
            .push(kept.iter().map(|&v| g.path(v).to_owned()).collect());
        d.reasons.push(reason);
    }
    d
}

fn decide_pipeline(
    g: &Graph,
    exclude: &HashSet<u32>,
    steps: &[pipeline::Step],
) -> Result<Decision> {
    let layers = pipeline::run(g, exclude, steps)?;
    let mut d = Decision {
        summary: format!(
            "layeringPipeline on {} store paths ({} excluded); maxLayers does not apply, as in nixpkgs.",
            g.len() - exclude.len(),
            exclude.len()
        ),
        ..Decision::default()
    };
    for layer in layers {
        d.nar_sizes
            .push(layer.paths.iter().map(|&v| g.nar_size(v)).collect());
        d.layers
            .push(layer.paths.iter().map(|&v| g.path(v).to_owned()).collect());
        d.reasons.push(layer.why);
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_follows_nixpkgs() {
        assert_eq!(layer_budget(100, 0).unwrap(), 99);
        assert_eq!(layer_budget(10, 3).unwrap(), 6);
        assert_eq!(layer_budget(2, 0).unwrap(), 1);
        let e = format!("{:#}", layer_budget(1, 0).unwrap_err());
        assert!(
            e.contains("maxLayers is 1") && e.contains("greater than 1"),
            "{e}"
        );
        let e = format!("{:#}", layer_budget(4, 3).unwrap_err());
        assert!(
            e.contains("maxLayers is 4")
                && e.contains("no layer is left")
                && e.contains("at least 5"),
            "{e}"
        );
    }

    #[test]
    fn pipeline_from_file_and_inline() {
        let inline = serde_json::json!([["popularity_contest"]]);
        assert_eq!(load_pipeline(Some(&inline)).unwrap().unwrap().len(), 1);
        assert!(load_pipeline(None).unwrap().is_none());
        assert!(load_pipeline(Some(&serde_json::Value::Null))
            .unwrap()
            .is_none());
        let missing = serde_json::json!("/nonexistent/pipeline.json");
        let e = format!("{:#}", load_pipeline(Some(&missing)).unwrap_err());
        assert!(e.contains("/nonexistent/pipeline.json"), "{e}");
    }

    #[test]
    fn empty_graph_gives_no_layers() {
        let g = Graph::default();
        let steps = pipeline::parse(&serde_json::json!([])).unwrap();
        // Even the empty pipeline, which fails on a non-empty graph.
        assert!(decide_graph(&g, &[], 100, 0, Some(&steps))
            .unwrap()
            .layers
            .is_empty());
        assert!(decide_graph(&g, &[], 100, 0, None)
            .unwrap()
            .layers
            .is_empty());
        // The budget is still checked, as auto-layer.nix does.
        assert!(decide_graph(&g, &[], 2, 1, None).is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(30873752), "29.4 MiB");
    }
}
