//! The reference graph as the layering algorithms use it: store paths indexed
//! by position, sorted by path, with their NAR sizes, references (without
//! self-references) and referrers.
//!
//! nixpkgs' programs read the graph in the order Nix writes it, which is
//! ascending store-path order, and that order breaks ties between paths of
//! equal `narSize`. Sorting by path here gives the same result whatever
//! order the input file uses. Nix graphs are acyclic apart from
//! self-references; a longer cycle is rejected, so every later step can walk
//! the graph in topological order without recursion.

use std::collections::HashMap;

use anyhow::{bail, Result};

use crate::nix::{check_store_path, GraphEntry};

/// A validated, acyclic reference graph.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    paths: Vec<String>,
    nar_size: Vec<u64>,
    refs: Vec<Vec<u32>>,
    users: Vec<Vec<u32>>,
    index: HashMap<String, u32>,
    /// Referrers before the paths they refer to.
    topo: Vec<u32>,
}

impl Graph {
    /// Builds the graph, checking that every path is a store path under
    /// `store_dir`, listed once, and that every reference is in the graph.
    pub fn from_entries(mut entries: Vec<GraphEntry>, store_dir: &str) -> Result<Graph> {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        // Every size the algorithms add up (a layer, a closure, the image)
        // is a sum over distinct paths, so bounding the total keeps them
        // all from overflowing on a corrupted narSize.
        if entries
            .iter()
            .try_fold(0u64, |total, e| total.checked_add(e.nar_size))
            .is_none()
        {
            bail!("the narSize values add up to more than 2^64 bytes (a corrupted graph?)");
        }
        let mut index = HashMap::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            check_store_path(&e.path, store_dir)?;
            if index.insert(e.path.clone(), i as u32).is_some() {
                bail!("{} is listed twice", e.path);
            }
        }
        let mut refs = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let mut r = Vec::with_capacity(e.references.len());
            for reference in &e.references {
                match index.get(reference) {
                    Some(&j) if j as usize == i => {}
                    Some(&j) => r.push(j),
                    None => bail!(
                        "{} refers to {reference}, which is not in the graph (not a closed closure?)",
                        e.path
                    ),
                }
            }
            r.sort_unstable();
            r.dedup();
            refs.push(r);
        }
        let mut users = vec![Vec::new(); entries.len()];
        for (i, r) in refs.iter().enumerate() {
            for &j in r {
                users[j as usize].push(i as u32);
            }
        }
        let mut graph = Graph {
            paths: entries.iter().map(|e| e.path.clone()).collect(),
            nar_size: entries.iter().map(|e| e.nar_size).collect(),
            refs,
            users,
            index,
            topo: Vec::new(),
        };
        graph.topo = match topological_order(&graph.refs) {
            Ok(order) => order,
            Err(on_cycle) => bail!(
                "reference cycle through {} (Nix graphs have none besides self-references)",
                graph.paths[on_cycle as usize]
            ),
        };
        Ok(graph)
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    pub fn path(&self, i: u32) -> &str {
        &self.paths[i as usize]
    }

    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    pub fn nar_size(&self, i: u32) -> u64 {
        self.nar_size[i as usize]
    }

    /// Direct references of `i`, ascending, without `i` itself.
    pub fn refs(&self, i: u32) -> &[u32] {
        &self.refs[i as usize]
    }

    pub fn all_refs(&self) -> &[Vec<u32>] {
        &self.refs
    }

    /// Direct referrers of `i`, ascending, without `i` itself.
    pub fn users(&self, i: u32) -> &[u32] {
        &self.users[i as usize]
    }

    pub fn index_of(&self, path: &str) -> Option<u32> {
        self.index.get(path).copied()
    }

    /// Every path after all paths that refer to it.
    pub fn topo_order(&self) -> &[u32] {
        &self.topo
    }
}

/// Kahn's algorithm over `children` (edges parent → child). Returns parents
/// before children, or a vertex that lies on a cycle.
pub fn topological_order(children: &[Vec<u32>]) -> Result<Vec<u32>, u32> {
    let n = children.len();
    let mut indegree = vec![0u32; n];
    for c in children.iter().flatten() {
        indegree[*c as usize] += 1;
    }
    let mut order: Vec<u32> = (0..n as u32)
        .filter(|&v| indegree[v as usize] == 0)
        .collect();
    let mut at = 0;
    while at < order.len() {
        let v = order[at];
        at += 1;
        for &c in &children[v as usize] {
            indegree[c as usize] -= 1;
            if indegree[c as usize] == 0 {
                order.push(c);
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Every vertex left has a parent left; walking parents must revisit one,
    // and the first vertex seen twice lies on a cycle.
    let mut parent = vec![u32::MAX; n];
    for (v, cs) in children.iter().enumerate() {
        for &c in cs {
            if indegree[c as usize] > 0 && indegree[v] > 0 {
                parent[c as usize] = v as u32;
            }
        }
    }
    let mut seen = vec![false; n];
    let mut v = (0..n).find(|&v| indegree[v] > 0).unwrap_or(0);
    while !seen[v] && parent[v] != u32::MAX {
        seen[v] = true;
        v = parent[v] as usize;
    }
    Err(v as u32)
}

/// Reusable visited-marks for repeated walks over the same vertex set.
#[derive(Debug, Clone)]
pub struct Marks {
    stamp: Vec<u32>,
    epoch: u32,
}

impl Marks {
    pub fn new(n: usize) -> Marks {
        Marks {
            stamp: vec![0; n],
            epoch: 0,
        }
    }

    /// Forgets every mark in O(1) (amortised).
    pub fn clear(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.stamp.iter_mut().for_each(|s| *s = 0);
            self.epoch = 1;
        }
    }

    pub fn is_set(&self, v: u32) -> bool {
        self.stamp[v as usize] == self.epoch
    }

    /// Marks `v`; true if it was not marked yet.
    pub fn set(&mut self, v: u32) -> bool {
        let s = &mut self.stamp[v as usize];
        if *s == self.epoch {
            false
        } else {
            *s = self.epoch;
            true
        }
    }
}

/// Every vertex reachable from `starts` along `next` (starts included), in
/// breadth-first order; the marks are left set for membership tests.
pub fn reach<'a>(
    starts: impl IntoIterator<Item = u32>,
    next: impl Fn(u32) -> &'a [u32],
    marks: &mut Marks,
) -> Vec<u32> {
    marks.clear();
    let mut out: Vec<u32> = starts.into_iter().filter(|&s| marks.set(s)).collect();
    let mut at = 0;
    while at < out.len() {
        let v = out[at];
        at += 1;
        for &c in next(v) {
            if marks.set(c) {
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> String {
        format!(
            "/nix/store/{}-{name}",
            name.repeat(32).get(..32).unwrap().to_lowercase()
        )
    }

    fn entry(name: &str, size: u64, refs: &[&str]) -> GraphEntry {
        GraphEntry {
            path: p(name),
            nar_hash: None,
            nar_size: size,
            references: refs.iter().map(|r| p(r)).collect(),
        }
    }

    #[test]
    fn sorted_by_path_without_self_references() {
        let g = Graph::from_entries(
            vec![entry("b", 2, &["b", "a"]), entry("a", 1, &["a"])],
            "/nix/store",
        )
        .unwrap();
        assert_eq!(g.paths(), &[p("a"), p("b")]);
        assert_eq!(g.refs(1), &[0]);
        assert!(g.refs(0).is_empty());
        assert_eq!(g.users(0), &[1]);
        assert_eq!(g.topo_order(), &[1, 0]);
    }

    #[test]
    fn dangling_reference_is_named() {
        let err = Graph::from_entries(vec![entry("b", 2, &["a"])], "/nix/store").unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(&p("a")) && msg.contains("not in the graph"),
            "{msg}"
        );
    }

    #[test]
    fn path_outside_the_store_is_named() {
        let err = Graph::from_entries(vec![entry("b", 2, &[])], "/other/store").unwrap_err();
        assert!(format!("{err:#}").contains(&p("b")), "{err:#}");
    }

    #[test]
    fn cycle_is_named() {
        let err = Graph::from_entries(
            vec![
                entry("a", 1, &["b"]),
                entry("b", 1, &["c"]),
                entry("c", 1, &["a"]),
                entry("d", 1, &["a"]),
            ],
            "/nix/store",
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("cycle") && !msg.contains(&p("d")), "{msg}");
    }

    #[test]
    fn deep_chain_needs_no_recursion() {
        let n = 100_000u32;
        let children: Vec<Vec<u32>> = (0..n)
            .map(|i| if i + 1 < n { vec![i + 1] } else { vec![] })
            .collect();
        let order = topological_order(&children).unwrap();
        assert_eq!(order.len(), n as usize);
        assert_eq!(order[0], 0);
        let mut marks = Marks::new(n as usize);
        assert_eq!(
            reach([0], |v| &children[v as usize], &mut marks).len(),
            n as usize
        );
    }
}
