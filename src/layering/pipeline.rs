//! `layeringPipeline`: nixpkgs' flatten-references-graph operations
//! (`pkgs/by-name/fl/flatten-references-graph`), parsed from the JSON list
//! nixpkgs takes and run on the reference graph.
//!
//! As in nixpkgs, excluded paths and the references to them are removed
//! first, and the starting graph's vertex order is `narSize` ascending with
//! path order among equal sizes. Every subgraph keeps the current vertex
//! order (igraph's induced subgraphs do), and `split_paths` keeps the edges
//! it cuts cut in the subgraphs it returns, so a later `popularity_contest`
//! sees the split paths as roots. Values are graphs, dicts (the results of
//! `split_paths` and `subcomponent_*`, in key order `main`, `common`, `rest`)
//! and lists; the final value is flattened depth-first into layers, and
//! empty layers are dropped.
//!
//! Where nixpkgs would silently produce something odd or crash with a
//! Python traceback (a bare string where a list of paths is expected,
//! `reverse` or `map` over a dict, a result that is a single graph), we
//! stop with an error naming the step and what it expected.

use std::collections::{HashMap, HashSet};

use anyhow::{anyhow, bail, Result};
use serde_json::Value as Json;

use super::popularity::{order_by_popularity, popularity};
use crate::graph::Graph;

/// One pipeline operation with its arguments.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    PopularityContest,
    LimitLayers(usize),
    SplitEvery(usize),
    SubcomponentIn(Vec<String>),
    SubcomponentOut(Vec<String>),
    SplitPaths(Vec<SplitSpec>),
    Over(String, Box<Step>),
    Map(Box<Step>),
    Flatten,
    Reverse,
    RemovePaths(Vec<String>),
    Pipe(Vec<Step>),
}

/// A `split_paths` selector: a path, or the direct references of paths.
#[derive(Debug, Clone, PartialEq)]
pub enum SplitSpec {
    Path(String),
    ChildrenOf(Vec<String>),
}

const OPERATIONS: &str = "popularity_contest, limit_layers, split_every, subcomponent_in, \
subcomponent_out, split_paths, over, map, flatten, reverse, remove_paths, pipe";

/// Parses the pipeline list, e.g. `[["popularity_contest"], ["limit_layers", 99]]`.
pub fn parse(json: &Json) -> Result<Vec<Step>> {
    parse_steps(json, "layeringPipeline")
}

fn parse_steps(json: &Json, loc: &str) -> Result<Vec<Step>> {
    let Json::Array(items) = json else {
        bail!("{loc}: expected a list of steps like [[\"popularity_contest\"], [\"limit_layers\", 100]], got {}", short(json));
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| parse_step(item, &format!("{loc} step {}", i + 1)))
        .collect()
}

fn short(json: &Json) -> String {
    let s = json.to_string();
    if s.len() > 80 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(77).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

fn parse_step(json: &Json, loc: &str) -> Result<Step> {
    let Some((Json::String(op), args)) = json.as_array().and_then(|a| a.split_first()) else {
        bail!("{loc}: expected a list starting with an operation name, like [\"limit_layers\", 100], got {}", short(json));
    };
    let loc = format!("{loc} ({op})");
    let want = |n: usize, usage: &str| -> Result<()> {
        if args.len() == n {
            Ok(())
        } else {
            bail!(
                "{loc}: expected {usage}, got {} argument(s): {}",
                args.len(),
                short(json)
            )
        }
    };
    let step = match op.as_str() {
        "popularity_contest" | "flatten" | "reverse" => {
            want(0, &format!("no arguments: [\"{op}\"]"))?;
            match op.as_str() {
                "popularity_contest" => Step::PopularityContest,
                "flatten" => Step::Flatten,
                _ => Step::Reverse,
            }
        }
        "limit_layers" | "split_every" => {
            want(1, &format!("one positive integer: [\"{op}\", 10]"))?;
            let n = args[0].as_u64().filter(|&n| n > 0).ok_or_else(|| {
                anyhow!(
                    "{loc}: expected a positive integer, got {}",
                    short(&args[0])
                )
            })?;
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if op == "limit_layers" {
                Step::LimitLayers(n)
            } else {
                Step::SplitEvery(n)
            }
        }
        "subcomponent_in" | "subcomponent_out" => {
            want(
                1,
                &format!("one list of store paths: [\"{op}\", [\"/nix/store/…\"]]"),
            )?;
            let paths = string_list(&args[0]).ok_or_else(|| {
                anyhow!(
                    "{loc}: expected a list of store paths, got {}",
                    short(&args[0])
                )
            })?;
            if op == "subcomponent_in" {
                Step::SubcomponentIn(paths)
            } else {
                Step::SubcomponentOut(paths)
            }
        }
        "remove_paths" => {
            want(1, "one store path or list of store paths")?;
            let paths = match &args[0] {
                Json::String(s) => vec![s.clone()],
                other => string_list(other).ok_or_else(|| {
                    anyhow!(
                        "{loc}: expected a store path or a list of them, got {}",
                        short(other)
                    )
                })?,
            };
            Step::RemovePaths(paths)
        }
        "split_paths" => {
            want(
                1,
                "one list of store paths or {\"children_of\": …} selectors",
            )?;
            let Json::Array(specs) = &args[0] else {
                bail!("{loc}: expected a list of store paths or {{\"children_of\": …}} selectors, got {}", short(&args[0]));
            };
            let specs = specs
                .iter()
                .map(|s| parse_split_spec(s, &loc))
                .collect::<Result<_>>()?;
            Step::SplitPaths(specs)
        }
        "over" => {
            want(
                2,
                "a key and a step: [\"over\", \"main\", [\"popularity_contest\"]]",
            )?;
            let Json::String(key) = &args[0] else {
                bail!(
                    "{loc}: expected a key such as \"main\", \"common\" or \"rest\", got {}",
                    short(&args[0])
                );
            };
            Step::Over(
                key.clone(),
                Box::new(parse_step(&args[1], &format!("{loc} ›"))?),
            )
        }
        "map" => {
            want(1, "one step: [\"map\", [\"popularity_contest\"]]")?;
            Step::Map(Box::new(parse_step(&args[0], &format!("{loc} ›"))?))
        }
        "pipe" => {
            want(
                1,
                "one list of steps: [\"pipe\", [[\"popularity_contest\"]]]",
            )?;
            Step::Pipe(parse_steps(&args[0], &format!("{loc} ›"))?)
        }
        _ => bail!("{loc}: unknown operation {op:?}; known operations: {OPERATIONS}"),
    };
    Ok(step)
}

fn string_list(json: &Json) -> Option<Vec<String>> {
    json.as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_owned))
        .collect()
}

fn parse_split_spec(json: &Json, loc: &str) -> Result<SplitSpec> {
    match json {
        Json::String(s) => Ok(SplitSpec::Path(s.clone())),
        Json::Object(map) if map.len() == 1 && map.contains_key("children_of") => {
            let paths = match &map["children_of"] {
                Json::String(s) => Some(vec![s.clone()]),
                other => string_list(other),
            };
            paths.map(SplitSpec::ChildrenOf).ok_or_else(|| {
                anyhow!(
                    "{loc}: children_of expects a store path or a list of them, got {}",
                    short(json)
                )
            })
        }
        _ => bail!(
            "{loc}: expected a store path or {{\"children_of\": path or [paths]}}, got {}",
            short(json)
        ),
    }
}

/// A graph value: vertices (graph indices) in vertex order, out-edges by
/// local index, and how it came to be (for the explanation).
#[derive(Debug, Clone)]
struct Sub {
    verts: Vec<u32>,
    adj: Vec<Vec<u32>>,
    why: String,
}

#[derive(Debug, Clone)]
enum Value {
    Graph(Sub),
    Dict(Vec<(String, Value)>),
    List(Vec<Value>),
}

impl Value {
    fn kind(&self) -> String {
        match self {
            Value::Graph(_) => "a single graph".into(),
            Value::Dict(d) => format!(
                "a dict with keys {}",
                d.iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Value::List(_) => "a list".into(),
        }
    }
}

/// One layer decided by a pipeline.
#[derive(Debug, Clone)]
pub struct PipelineLayer {
    pub paths: Vec<u32>,
    pub why: String,
}

fn because(parent: &str, this: String) -> String {
    if parent.is_empty() {
        this
    } else {
        format!("{parent} › {this}")
    }
}

impl Sub {
    /// The starting graph: without excluded paths, by `narSize` ascending.
    fn whole(g: &Graph, exclude: &HashSet<u32>) -> Sub {
        let mut verts: Vec<u32> = (0..g.len() as u32)
            .filter(|v| !exclude.contains(v))
            .collect();
        verts.sort_by_key(|&v| g.nar_size(v));
        let local = local_index(&verts);
        let adj = verts
            .iter()
            .map(|&v| {
                let mut out: Vec<u32> = g
                    .refs(v)
                    .iter()
                    .filter_map(|r| local.get(r).copied())
                    .collect();
                out.sort_unstable();
                out
            })
            .collect();
        Sub {
            verts,
            adj,
            why: String::new(),
        }
    }

    fn len(&self) -> usize {
        self.verts.len()
    }

    /// Local index of each named path present here (unknown ones ignored).
    fn find(&self, g: &Graph, paths: &[String]) -> Vec<u32> {
        let local = local_index(&self.verts);
        paths
            .iter()
            .filter_map(|p| g.index_of(p).and_then(|v| local.get(&v).copied()))
            .collect()
    }

    /// The subgraph on `keep`, in the current vertex order.
    fn induced(&self, keep: &[bool], why: String) -> Sub {
        let mut new_index = vec![u32::MAX; self.len()];
        let mut verts = Vec::new();
        for (i, &v) in self.verts.iter().enumerate() {
            if keep[i] {
                new_index[i] = verts.len() as u32;
                verts.push(v);
            }
        }
        let adj = (0..self.len())
            .filter(|&i| keep[i])
            .map(|i| {
                self.adj[i]
                    .iter()
                    .filter(|&&c| keep[c as usize])
                    .map(|&c| new_index[c as usize])
                    .collect()
            })
            .collect();
        Sub { verts, adj, why }
    }

    /// The subgraph on the vertices at positions `lo..hi`, in order.
    fn range(&self, lo: usize, hi: usize, why: String) -> Sub {
        let adj = self.adj[lo..hi]
            .iter()
            .map(|cs| {
                cs.iter()
                    .filter(|&&c| (lo..hi).contains(&(c as usize)))
                    .map(|&c| c - lo as u32)
                    .collect()
            })
            .collect();
        Sub {
            verts: self.verts[lo..hi].to_vec(),
            adj,
            why,
        }
    }

    fn reverse_adj(&self) -> Vec<Vec<u32>> {
        let mut rev = vec![Vec::new(); self.len()];
        for (v, cs) in self.adj.iter().enumerate() {
            for &c in cs {
                rev[c as usize].push(v as u32);
            }
        }
        rev
    }

    fn has_parent(&self) -> Vec<bool> {
        let mut has = vec![false; self.len()];
        self.adj
            .iter()
            .flatten()
            .for_each(|&c| has[c as usize] = true);
        has
    }
}

fn local_index(verts: &[u32]) -> HashMap<u32, u32> {
    let mut map = HashMap::with_capacity(verts.len());
    for (i, &v) in verts.iter().enumerate() {
        map.entry(v).or_insert(i as u32);
    }
    map
}

/// Everything reachable from `starts` along `adj`, as a membership mask.
fn reach_mask(adj: &[Vec<u32>], starts: impl IntoIterator<Item = u32>) -> Vec<bool> {
    let mut seen = vec![false; adj.len()];
    let mut todo: Vec<u32> = Vec::new();
    for s in starts {
        if !std::mem::replace(&mut seen[s as usize], true) {
            todo.push(s);
        }
    }
    while let Some(v) = todo.pop() {
        for &c in &adj[v as usize] {
            if !std::mem::replace(&mut seen[c as usize], true) {
                todo.push(c);
            }
        }
    }
    seen
}

/// Runs `steps` on the graph without `exclude` and flattens the result.
pub fn run(g: &Graph, exclude: &HashSet<u32>, steps: &[Step]) -> Result<Vec<PipelineLayer>> {
    let start = Value::Graph(Sub::whole(g, exclude));
    let result = run_steps(g, steps, start, "layeringPipeline")?;
    if let Value::Graph(_) = result {
        bail!(
            "layeringPipeline: the result is a single graph, not a list of layers \
             (nixpkgs fails here with \"'Graph' object is not iterable\"); \
             end the pipeline with a step that splits it, e.g. [\"popularity_contest\"] or [\"split_every\", 1]"
        );
    }
    let mut leaves = Vec::new();
    flatten_into(result, &mut leaves);
    Ok(leaves
        .into_iter()
        .filter(|s| !s.verts.is_empty())
        .map(|s| PipelineLayer {
            paths: s.verts,
            why: s.why,
        })
        .collect())
}

fn flatten_into(value: Value, out: &mut Vec<Sub>) {
    match value {
        Value::Graph(s) => out.push(s),
        Value::Dict(d) => d.into_iter().for_each(|(_, v)| flatten_into(v, out)),
        Value::List(l) => l.into_iter().for_each(|v| flatten_into(v, out)),
    }
}

fn run_steps(g: &Graph, steps: &[Step], mut value: Value, loc: &str) -> Result<Value> {
    for (i, step) in steps.iter().enumerate() {
        value = run_step(g, step, value, &format!("{loc} step {}", i + 1))?;
    }
    Ok(value)
}

fn expect_graph(value: Value, loc: &str, usage: &str) -> Result<Sub> {
    match value {
        Value::Graph(s) => Ok(s),
        other => bail!("{loc}: expected a graph, got {}; {usage}", other.kind()),
    }
}

fn expect_list(value: Value, loc: &str) -> Result<Vec<Value>> {
    match value {
        Value::List(l) => Ok(l),
        other => bail!(
            "{loc}: expected a list of layers, got {}; use over, flatten or a splitting step first",
            other.kind()
        ),
    }
}

fn run_step(g: &Graph, step: &Step, value: Value, loc: &str) -> Result<Value> {
    let graph_hint = "use over/map to reach a graph, or apply it before splitting";
    Ok(match step {
        Step::PopularityContest => {
            let loc = format!("{loc} (popularity_contest)");
            popularity_contest(g, expect_graph(value, &loc, graph_hint)?)?
        }
        // `parse` only makes positive counts, but `Step` is public: a zero
        // from a library caller is an error, not a division by zero.
        Step::LimitLayers(0) | Step::SplitEvery(0) => {
            bail!("{loc}: limit_layers and split_every need a positive count, got 0")
        }
        Step::LimitLayers(n) => {
            let loc = format!("{loc} (limit_layers)");
            limit_layers(*n, expect_list(value, &loc)?, &loc)?
        }
        Step::SplitEvery(n) => {
            let s = expect_graph(value, &format!("{loc} (split_every)"), graph_hint)?;
            split_every(s, *n)
        }
        Step::SubcomponentIn(paths) | Step::SubcomponentOut(paths) => {
            let out = matches!(step, Step::SubcomponentOut(_));
            let op = if out {
                "subcomponent_out"
            } else {
                "subcomponent_in"
            };
            let s = expect_graph(value, &format!("{loc} ({op})"), graph_hint)?;
            subcomponent(g, s, paths, out)
        }
        Step::SplitPaths(specs) => {
            let s = expect_graph(value, &format!("{loc} (split_paths)"), graph_hint)?;
            split_paths(g, s, specs)
        }
        Step::Over(key, inner) => {
            let loc = format!("{loc} (over {key:?})");
            let Value::Dict(mut dict) = value else {
                bail!(
                    "{loc}: expected a dict (the result of split_paths or subcomponent_*), got {}",
                    value.kind()
                );
            };
            let Some(at) = dict.iter().position(|(k, _)| k == key) else {
                let keys: Vec<&str> = dict.iter().map(|(k, _)| k.as_str()).collect();
                bail!("{loc}: the result has no {key:?} (it has: {}); nixpkgs fails here with KeyError", keys.join(", "));
            };
            let old = std::mem::replace(&mut dict[at].1, Value::List(Vec::new()));
            dict[at].1 = run_step(g, inner, old, &format!("{loc} ›"))?;
            Value::Dict(dict)
        }
        Step::Map(inner) => {
            let loc = format!("{loc} (map)");
            let items = expect_list(value, &loc)?;
            Value::List(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| run_step(g, inner, v, &format!("{loc} › item {}", i + 1)))
                    .collect::<Result<_>>()?,
            )
        }
        Step::Flatten => {
            if let Value::Graph(_) = value {
                bail!("{loc} (flatten): expected a list or dict, got a single graph");
            }
            let mut leaves = Vec::new();
            flatten_into(value, &mut leaves);
            Value::List(leaves.into_iter().map(Value::Graph).collect())
        }
        Step::Reverse => {
            let mut items = expect_list(value, &format!("{loc} (reverse)"))?;
            items.reverse();
            Value::List(items)
        }
        Step::RemovePaths(paths) => {
            let s = expect_graph(
                value,
                &format!("{loc} (remove_paths)"),
                "use map to apply it to each graph of a list",
            )?;
            let mut keep = vec![true; s.len()];
            s.find(g, paths)
                .into_iter()
                .for_each(|i| keep[i as usize] = false);
            let why = s.why.clone();
            Value::Graph(s.induced(&keep, why))
        }
        Step::Pipe(steps) => run_steps(g, steps, value, &format!("{loc} (pipe) ›"))?,
    })
}

fn popularity_contest(g: &Graph, s: Sub) -> Result<Value> {
    let pops = popularity(&s.adj, |v| g.path(s.verts[v as usize]).to_owned())?;
    let names: Vec<&str> = s.verts.iter().map(|&v| g.path(v)).collect();
    let order = order_by_popularity(&names, &pops);
    let total = order.len();
    Ok(Value::List(
        order
            .into_iter()
            .enumerate()
            .map(|(rank, i)| {
                let why = because(
                    &s.why,
                    format!(
                        "popularity_contest: rank {} of {total}, popularity {}",
                        rank + 1,
                        pops[i as usize]
                    ),
                );
                Value::Graph(Sub {
                    verts: vec![s.verts[i as usize]],
                    adj: vec![Vec::new()],
                    why,
                })
            })
            .collect(),
    ))
}

/// nixpkgs' `subcomponent_out` (`out`) or `subcomponent_in`: `main` holds
/// the given paths and everything they reach (out) or that reaches them
/// (in), `rest` the other paths; both in the current vertex order.
fn subcomponent(g: &Graph, s: Sub, paths: &[String], out: bool) -> Value {
    let starts = s.find(g, paths);
    let (main, op, what) = if out {
        (
            reach_mask(&s.adj, starts),
            "subcomponent_out",
            "their dependencies",
        )
    } else {
        let main = reach_mask(&s.reverse_adj(), starts);
        (main, "subcomponent_in", "their dependents")
    };
    let rest: Vec<bool> = main.iter().map(|m| !m).collect();
    let main_why = because(&s.why, format!("{op} main: the given paths and {what}"));
    let rest_why = because(&s.why, format!("{op} rest"));
    Value::Dict(vec![
        ("main".into(), Value::Graph(s.induced(&main, main_why))),
        ("rest".into(), Value::Graph(s.induced(&rest, rest_why))),
    ])
}

/// nixpkgs' `split_every`: consecutive runs of `n` vertices (in vertex
/// order), each as its own subgraph. Each run is cut out on its own, so the
/// whole split costs O(paths + references) whatever `n` is.
fn split_every(s: Sub, n: usize) -> Value {
    let chunks = s.len().div_ceil(n);
    Value::List(
        (0..chunks)
            .map(|c| {
                let lo = c * n;
                let hi = lo.saturating_add(n).min(s.len());
                let why = because(
                    &s.why,
                    format!("split_every({n}): chunk {} of {chunks}", c + 1),
                );
                Value::Graph(s.range(lo, hi, why))
            })
            .collect(),
    )
}

/// The first `n - 1` items as they are, the rest merged into one graph.
fn limit_layers(n: usize, items: Vec<Value>, loc: &str) -> Result<Value> {
    let mut items = items.into_iter();
    let mut out: Vec<Value> = items.by_ref().take(n - 1).collect();
    let mut merged = Sub {
        verts: Vec::new(),
        adj: Vec::new(),
        why: String::new(),
    };
    let mut count = 0;
    for (i, item) in items.enumerate() {
        let Value::Graph(s) = item else {
            bail!(
                "{loc}: item {} is {}, but only graphs can be merged; flatten first",
                n + i,
                item.kind()
            );
        };
        let offset = merged.verts.len() as u32;
        merged.verts.extend(&s.verts);
        merged.adj.extend(
            s.adj
                .into_iter()
                .map(|cs| cs.into_iter().map(|c| c + offset).collect()),
        );
        count += 1;
    }
    merged.why =
        format!("limit_layers({n}): the remaining {count} item(s) merged into the last layer");
    out.push(Value::Graph(merged));
    Ok(Value::List(out))
}

/// nixpkgs' `split_paths`: main (selected paths and what only they reach),
/// common (reached from both sides) and rest, with edges into the selected
/// paths cut.
fn split_paths(g: &Graph, s: Sub, specs: &[SplitSpec]) -> Value {
    // One index for all selectors: building it per selector made a long
    // list of paths cost O(paths x selectors).
    let local = local_index(&s.verts);
    let at = |p: &String| g.index_of(p).and_then(|v| local.get(&v).copied());
    let mut selected: Vec<u32> = Vec::new();
    for spec in specs {
        match spec {
            SplitSpec::Path(p) => selected.extend(at(p)),
            SplitSpec::ChildrenOf(ps) => {
                for v in ps.iter().filter_map(at) {
                    selected.extend(&s.adj[v as usize]);
                }
            }
        }
    }
    if selected.is_empty() {
        return Value::Dict(vec![("rest".into(), Value::Graph(s))]);
    }
    let has_parent = s.has_parent();
    let roots: Vec<u32> = (0..s.len() as u32)
        .filter(|&v| !has_parent[v as usize])
        .collect();
    let is_selected = {
        let mut m = vec![false; s.len()];
        selected.iter().for_each(|&v| m[v as usize] = true);
        m
    };
    if let [root] = roots[..] {
        if is_selected[root as usize] {
            let why = because(
                &s.why,
                "split_paths main: the graph's only root is selected".into(),
            );
            return Value::Dict(vec![("main".into(), Value::Graph(Sub { why, ..s }))]);
        }
    }
    let split_off = reach_mask(&s.adj, selected.iter().copied());
    let mut cut = s.clone();
    for cs in &mut cut.adj {
        cs.retain(|&c| !is_selected[c as usize]);
    }
    // A single root, or a virtual one pointing at every root: its edges to
    // selected roots are cut too.
    let rest_with_common = reach_mask(
        &cut.adj,
        roots.iter().copied().filter(|&r| !is_selected[r as usize]),
    );
    let part = |f: &dyn Fn(usize) -> bool| -> Vec<bool> { (0..s.len()).map(f).collect() };
    let common = part(&|i| split_off[i] && rest_with_common[i]);
    let main = part(&|i| split_off[i] && !rest_with_common[i]);
    let rest = part(&|i| rest_with_common[i] && !split_off[i]);
    let named = [
        ("main", main, "the selected paths and what only they reach"),
        (
            "common",
            common,
            "reached both from the selected paths and from the rest",
        ),
        ("rest", rest, "not reached from the selected paths"),
    ];
    Value::Dict(
        named
            .into_iter()
            .map(|(key, keep, what)| {
                (
                    key,
                    cut.induced(&keep, because(&s.why, format!("split_paths {key}: {what}"))),
                )
            })
            .filter(|(_, sub)| sub.len() > 0)
            .map(|(key, sub)| (key.to_owned(), Value::Graph(sub)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_every_operation() {
        let p = json!([
            ["popularity_contest"], ["limit_layers", 3], ["split_every", 2],
            ["subcomponent_in", ["/a"]], ["subcomponent_out", ["/a"]],
            ["split_paths", ["/a", {"children_of": "/b"}, {"children_of": ["/c"]}]],
            ["over", "main", ["flatten"]], ["map", ["reverse"]], ["remove_paths", "/a"],
            ["remove_paths", ["/a", "/b"]], ["pipe", [["flatten"]]]
        ]);
        let steps = parse(&p).unwrap();
        assert_eq!(steps.len(), 11);
        assert_eq!(steps[1], Step::LimitLayers(3));
        assert_eq!(
            steps[5],
            Step::SplitPaths(vec![
                SplitSpec::Path("/a".into()),
                SplitSpec::ChildrenOf(vec!["/b".into()]),
                SplitSpec::ChildrenOf(vec!["/c".into()]),
            ])
        );
        assert_eq!(steps[8], Step::RemovePaths(vec!["/a".into()]));
    }

    /// split_every's runs are the induced subgraphs of consecutive vertices:
    /// edges inside a run kept (renumbered), edges leaving it dropped.
    #[test]
    fn split_every_runs_are_induced_subgraphs() {
        let s = Sub {
            verts: vec![10, 11, 12, 13, 14],
            adj: vec![vec![1, 3], vec![2], vec![3, 4], vec![4], vec![]],
            why: String::new(),
        };
        let Value::List(parts) = split_every(s.clone(), 2) else {
            panic!("split_every gives a list");
        };
        assert_eq!(parts.len(), 3);
        for (c, part) in parts.iter().enumerate() {
            let Value::Graph(got) = part else {
                panic!("each part is a graph");
            };
            let keep: Vec<bool> = (0..5).map(|i| i / 2 == c).collect();
            let want = s.induced(&keep, String::new());
            assert_eq!(
                (&got.verts, &got.adj),
                (&want.verts, &want.adj),
                "chunk {c}"
            );
        }
    }

    #[test]
    fn zero_counts_built_by_hand_are_errors() {
        let g = Graph::default();
        for step in [Step::SplitEvery(0), Step::LimitLayers(0)] {
            let e = format!("{:#}", run(&g, &HashSet::new(), &[step]).unwrap_err());
            assert!(e.contains("positive count"), "{e}");
        }
    }

    fn err(p: Json) -> String {
        format!("{:#}", parse(&p).unwrap_err())
    }

    #[test]
    fn errors_name_the_operation_and_what_it_expected() {
        let e = err(json!([["popularity_contest"], ["limit_layerz", 3]]));
        assert!(
            e.contains("step 2") && e.contains("limit_layerz") && e.contains("known operations"),
            "{e}"
        );
        let e = err(json!([["limit_layers", 0]]));
        assert!(
            e.contains("limit_layers") && e.contains("positive integer"),
            "{e}"
        );
        let e = err(json!([["limit_layers"]]));
        assert!(
            e.contains("limit_layers") && e.contains("positive integer"),
            "{e}"
        );
        let e = err(json!([["split_every", "7"]]));
        assert!(
            e.contains("split_every") && e.contains("positive integer"),
            "{e}"
        );
        let e = err(json!([["subcomponent_out", "/a"]]));
        assert!(
            e.contains("subcomponent_out") && e.contains("list of store paths"),
            "{e}"
        );
        let e = err(json!([["split_paths", [{"parents_of": "/a"}]]]));
        assert!(
            e.contains("split_paths") && e.contains("children_of"),
            "{e}"
        );
        let e = err(json!([["over", "main"]]));
        assert!(e.contains("over") && e.contains("a key and a step"), "{e}");
        let e = err(json!([["over", "main", ["pipe", [["nope"]]]]]));
        assert!(
            e.contains("step 1 (over) › (pipe) › step 1") && e.contains("\"nope\""),
            "{e}"
        );
        let e = err(json!({"popularity_contest": 1}));
        assert!(e.contains("list of steps"), "{e}");
        let e = err(json!([["flatten", 1]]));
        assert!(e.contains("flatten") && e.contains("no arguments"), "{e}");
    }
}
