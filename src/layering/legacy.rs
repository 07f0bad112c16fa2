//! The legacy layering of nixpkgs' streamLayeredImage (before PR #122608):
//! `referencesByPopularity` (`references-by-popularity/closure-graph.py`)
//! orders the whole graph, the helper paths are removed by a substring
//! match (`grep -v`), and `jq` gives the first `limit - 1` paths a layer
//! each and puts the rest in one last layer.
//!
//! Not used by [`super::decide`]; kept as a library function for users who
//! want to reproduce images built by old nixpkgs.

use anyhow::Result;
use num_bigint::BigUint;

use super::popularity::{order_by_popularity, popularity};
use crate::graph::Graph;

/// The popularity of every path of the graph, by index (see [`popularity`]).
pub fn popularity_counts(g: &Graph) -> Result<Vec<BigUint>> {
    popularity(g.all_refs(), |v| g.path(v).to_owned())
}

/// Every path of the graph, most popular first, as closure-graph.py prints it.
pub fn popularity_order(g: &Graph) -> Result<Vec<String>> {
    let pops = popularity_counts(g)?;
    let names: Vec<&str> = g.paths().iter().map(String::as_str).collect();
    Ok(order_by_popularity(&names, &pops)
        .into_iter()
        .map(|i| g.path(i).to_owned())
        .collect())
}

/// The legacy store layers for `limit` layers (maxLayers minus the layers
/// already used), without the paths that contain any of `exclude`.
pub fn legacy_layers(g: &Graph, exclude: &[String], limit: usize) -> Result<Vec<Vec<String>>> {
    let order: Vec<String> = popularity_order(g)?
        .into_iter()
        .filter(|p| !exclude.iter().any(|e| p.contains(e.as_str())))
        .collect();
    let singles = limit.saturating_sub(1).min(order.len());
    let mut layers: Vec<Vec<String>> = order[..singles].iter().map(|p| vec![p.clone()]).collect();
    if order.len() > singles {
        layers.push(order[singles..].to_vec());
    }
    Ok(layers)
}
