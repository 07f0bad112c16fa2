//! nixpkgs' default layering since PR #355189: `dockerAutoLayer`
//! (`pkgs/build-support/docker/auto-layer.py`), reimplemented on indices.
//!
//! Every path carries a label, the set of "primary" paths that own it; all
//! labels start empty (one layer). Candidates are taken largest `narSize`
//! first (a stable sort of the path-sorted list, popped from the end, so
//! among equal sizes the greater path goes first). For a candidate P with
//! dependencies D and users U (transitive, P excluded), a trial relabelling
//! gives P the label {P} and every d in D loses U from its label and then
//! gains P unless its label still holds a member of D. If the trial has more
//! distinct labels than the limit, the loop stops for good; otherwise it is
//! kept. Paths with equal labels form a layer; layers are ordered by closure
//! size (sum of `narSize` over everything the layer's paths reach), ties in
//! CPython set order (see [`super::pyset`]); paths in a layer by
//! (name, `/nix/store/<hash>`). Excluded paths take part and count against
//! the limit; the caller removes them from the result.
//!
//! Speed: a trial's new label depends only on the old label, so it is
//! computed once per distinct old label; labels are interned and counted by
//! reference counts, so a trial costs O(|D| + |U|), not O(paths).

use std::collections::HashMap;

use super::pyset;
use crate::graph::{reach, Graph, Marks};

/// One layer as auto-layer decides it, before excluded paths are removed.
#[derive(Debug, Clone)]
pub struct AutoLayer {
    /// The primary paths whose label this is (empty for the rest layer).
    pub id: Vec<u32>,
    /// Paths in output order: (name, `/nix/store/<hash>`).
    pub paths: Vec<u32>,
    pub layer_size: u64,
    pub closure_size: u64,
}

/// The whole decision, kept for the explanation.
#[derive(Debug, Clone)]
pub struct AutoResult {
    pub layers: Vec<AutoLayer>,
    /// Accepted primaries, in the order they were taken.
    pub primaries: Vec<u32>,
    /// The first candidate rejected, and the layer count it would have needed.
    pub stopped_at: Option<(u32, usize)>,
    pub limit: usize,
}

/// auto-layer.py's `path_key`: the path split at its first `-`, name first.
pub fn path_key(path: &str) -> (&str, &str) {
    match path.split_once('-') {
        Some((hash, name)) => (name, hash),
        None => ("", path),
    }
}

/// Interned labels with reference counts, and per-trial scratch space
/// indexed by label id (so a trial needs no hashing per path).
struct Labels {
    sets: Vec<Vec<u32>>,
    ids: HashMap<Vec<u32>, u32>,
    count: Vec<usize>,
    distinct: usize,
    /// The trial that last saw this label on a dependency.
    seen: Vec<u32>,
    /// What a dependency's label becomes in that trial.
    new_of: Vec<u32>,
    /// How many dependencies carry this label in that trial.
    moved: Vec<usize>,
    /// Change of `count` in the trial that last set `delta_seen`.
    delta: Vec<i64>,
    delta_seen: Vec<u32>,
}

impl Labels {
    fn new(paths: usize) -> Labels {
        let mut labels = Labels {
            sets: Vec::new(),
            ids: HashMap::new(),
            count: Vec::new(),
            distinct: usize::from(paths > 0),
            seen: Vec::new(),
            new_of: Vec::new(),
            moved: Vec::new(),
            delta: Vec::new(),
            delta_seen: Vec::new(),
        };
        let empty = labels.intern(Vec::new());
        labels.count[empty as usize] = paths;
        labels
    }

    fn intern(&mut self, set: Vec<u32>) -> u32 {
        if let Some(&id) = self.ids.get(&set) {
            return id;
        }
        let id = self.sets.len() as u32;
        self.sets.push(set.clone());
        self.ids.insert(set, id);
        self.count.push(0);
        self.seen.push(0);
        self.new_of.push(0);
        self.moved.push(0);
        self.delta.push(0);
        self.delta_seen.push(0);
        id
    }

    /// Adds `by` to label `id`'s pending count change in `trial`.
    fn bump(&mut self, id: u32, by: i64, trial: u32, changed: &mut Vec<u32>) {
        let i = id as usize;
        if self.delta_seen[i] != trial {
            self.delta_seen[i] = trial;
            self.delta[i] = 0;
            changed.push(id);
        }
        self.delta[i] += by;
    }
}

/// A dependency's label in the trial for primary `p`: it loses p's users,
/// then gains p unless a member is still one of p's dependencies.
fn relabelled(old: &[u32], p: u32, users: &Marks, deps: &Marks) -> Vec<u32> {
    let mut set: Vec<u32> = old.iter().copied().filter(|&m| !users.is_set(m)).collect();
    if !set.iter().any(|&m| m != p && deps.is_set(m)) {
        if let Err(at) = set.binary_search(&p) {
            set.insert(at, p);
        }
    }
    set
}

/// Runs auto-layer on the whole graph with `limit` layers (limit ≥ 1).
pub fn auto_layer(g: &Graph, limit: usize) -> AutoResult {
    let n = g.len();
    let mut labels = Labels::new(n);
    let mut label_of = vec![0u32; n];
    let mut candidates: Vec<u32> = (0..n as u32).collect();
    candidates.sort_by_key(|&v| g.nar_size(v)); // stable: path order among equals
    let (mut deps_marks, mut users_marks) = (Marks::new(n), Marks::new(n));
    let mut primaries = Vec::new();
    let mut stopped_at = None;
    for (trial, &p) in (1u32..).zip(candidates.iter().rev()) {
        // reach() includes p itself first; p is neither its own user nor dependency.
        let deps = reach([p], |v| g.refs(v), &mut deps_marks);
        reach([p], |v| g.users(v), &mut users_marks);
        let mut touched: Vec<u32> = Vec::new();
        for &d in &deps[1..] {
            let old = label_of[d as usize];
            if labels.seen[old as usize] != trial {
                labels.seen[old as usize] = trial;
                labels.moved[old as usize] = 0;
                let set = relabelled(&labels.sets[old as usize], p, &users_marks, &deps_marks);
                let new = labels.intern(set);
                labels.new_of[old as usize] = new;
                touched.push(old);
            }
            labels.moved[old as usize] += 1;
        }
        let own = labels.intern(vec![p]);
        let mut changed = Vec::new();
        labels.bump(label_of[p as usize], -1, trial, &mut changed);
        labels.bump(own, 1, trial, &mut changed);
        for &old in &touched {
            let moved = labels.moved[old as usize] as i64;
            let new = labels.new_of[old as usize];
            labels.bump(old, -moved, trial, &mut changed);
            labels.bump(new, moved, trial, &mut changed);
        }
        let mut distinct = labels.distinct as i64;
        for &id in &changed {
            let before = labels.count[id as usize] as i64;
            distinct += i64::from(before + labels.delta[id as usize] > 0) - i64::from(before > 0);
        }
        if distinct as usize > limit {
            stopped_at = Some((p, distinct as usize));
            break;
        }
        for &id in &changed {
            let c = &mut labels.count[id as usize];
            *c = (*c as i64 + labels.delta[id as usize]) as usize;
        }
        labels.distinct = distinct as usize;
        for &d in &deps[1..] {
            label_of[d as usize] = labels.new_of[label_of[d as usize] as usize];
        }
        label_of[p as usize] = own;
        primaries.push(p);
    }
    AutoResult {
        layers: build_layers(g, &labels.sets, &label_of),
        primaries,
        stopped_at,
        limit,
    }
}

/// Groups paths by label and orders the layers as auto-layer.py does.
fn build_layers(g: &Graph, sets: &[Vec<u32>], label_of: &[u32]) -> Vec<AutoLayer> {
    // Distinct labels in first-seen order over the path-sorted list: the
    // order in which Python's `set(layer_split.values())` receives them.
    let mut slot_of_label: HashMap<u32, usize> = HashMap::new();
    let mut members: Vec<Vec<u32>> = Vec::new();
    let mut label_ids: Vec<u32> = Vec::new();
    for (v, &label) in label_of.iter().enumerate() {
        let slot = *slot_of_label.entry(label).or_insert_with(|| {
            members.push(Vec::new());
            label_ids.push(label);
            members.len() - 1
        });
        members[slot].push(v as u32);
    }
    let mut str_hashes: HashMap<u32, i64> = HashMap::new();
    let hashes: Vec<i64> = label_ids
        .iter()
        .map(|&l| {
            pyset::frozenset_hash(sets[l as usize].iter().map(|&m| {
                *str_hashes
                    .entry(m)
                    .or_insert_with(|| pyset::str_hash(g.path(m)))
            }))
        })
        .collect();
    let mut marks = Marks::new(g.len());
    let by_key = |a: &u32, b: &u32| path_key(g.path(*a)).cmp(&path_key(g.path(*b)));
    let mut layers: Vec<AutoLayer> = pyset::set_order(&hashes)
        .into_iter()
        .map(|slot| {
            let mut paths = std::mem::take(&mut members[slot]);
            paths.sort_by(by_key);
            let mut id = sets[label_ids[slot] as usize].clone();
            id.sort_by(by_key);
            let closure = reach(paths.iter().copied(), |v| g.refs(v), &mut marks);
            AutoLayer {
                id,
                layer_size: total_size(g, &paths),
                closure_size: total_size(g, &closure),
                paths,
            }
        })
        .collect();
    layers.sort_by_key(|l| l.closure_size); // stable: ties keep set order
    layers
}

/// Sum of NAR sizes; saturating, so absurd sizes in a graph cannot overflow.
fn total_size(g: &Graph, paths: &[u32]) -> u64 {
    paths
        .iter()
        .fold(0u64, |acc, &v| acc.saturating_add(g.nar_size(v)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::GraphEntry;

    fn graph(spec: &[(&str, u64, &[&str])]) -> Graph {
        let p = |n: &str| format!("/nix/store/{}-{n}", "a".repeat(31) + &n[..1]);
        let entries = spec
            .iter()
            .map(|(name, size, refs)| GraphEntry {
                path: p(name),
                nar_hash: None,
                nar_size: *size,
                references: refs.iter().map(|r| p(r)).collect(),
            })
            .collect();
        Graph::from_entries(entries, "/nix/store").unwrap()
    }

    fn names(g: &Graph, r: &AutoResult) -> Vec<Vec<String>> {
        r.layers
            .iter()
            .map(|l| {
                l.paths
                    .iter()
                    .map(|&v| path_key(g.path(v)).0.to_owned())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn shared_bottom_gets_its_own_layer() {
        // app → left, right → base; left and right are big.
        let g = graph(&[
            ("app", 10, &["left", "right"]),
            ("left", 1000, &["base"]),
            ("right", 900, &["base"]),
            ("base", 100, &[]),
        ]);
        let r = auto_layer(&g, 4);
        assert_eq!(
            names(&g, &r),
            [vec!["base"], vec!["right"], vec!["left"], vec!["app"]]
        );
        // With 3 layers, taking right would label base {left, right}: four
        // labels, so it stops after left, and right stays in the rest layer.
        let r = auto_layer(&g, 3);
        assert_eq!(names(&g, &r), [vec!["base", "left"], vec!["app", "right"]]);
        assert_eq!(r.stopped_at.map(|(_, n)| n), Some(4));
    }

    #[test]
    fn one_layer_limit_keeps_everything_together() {
        let g = graph(&[("app", 10, &["lib"]), ("lib", 100, &[])]);
        let r = auto_layer(&g, 1);
        assert_eq!(r.layers.len(), 1);
        assert_eq!(r.layers[0].paths.len(), 2);
        assert!(r.primaries.is_empty());
        assert_eq!(r.stopped_at.map(|(_, n)| n), Some(2));
    }

    #[test]
    fn absurd_sizes_do_not_overflow() {
        // The graph rejects totals over 2^64; right at the limit is fine.
        let g = graph(&[("app", u64::MAX - 1, &["lib"]), ("lib", 1, &[])]);
        let r = auto_layer(&g, 1);
        assert_eq!(r.layers[0].closure_size, u64::MAX);
    }

    #[test]
    fn empty_graph() {
        let g = graph(&[]);
        assert!(auto_layer(&g, 5).layers.is_empty());
    }
}
