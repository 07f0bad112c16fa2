//! Properties of the layering on random graphs: every non-excluded path in
//! exactly one layer, the layer count within budget, the same output
//! whatever the input order or thread count; deep graphs (where nixpkgs'
//! recursive Python fails) work; random pipelines never panic.

use std::collections::HashMap;

use serde_json::{json, Value};
use stream_layered_image::graph::Graph;
use stream_layered_image::layering::{auto, decide_graph, legacy, pipeline, Decision};
use stream_layered_image::nix::GraphEntry;

/// splitmix64: a small deterministic generator, so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const NAMES: [&str; 8] = [
    "glibc",
    "lib",
    "lib+1",
    "python3.12-x",
    "Zeta",
    "app",
    "share-data",
    "z_y",
];

fn store_path(rng: &mut Rng, i: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let hash: String = (0..32)
        .map(|_| ALPHABET[rng.below(32) as usize] as char)
        .collect();
    format!("/nix/store/{hash}-{}-{}", NAMES[i % NAMES.len()], i % 5)
}

/// A random closure shaped like an image's: paths 0..n refer only to paths
/// with larger indices, plus the two helper roots nixpkgs excludes.
fn random_closure(rng: &mut Rng, n: usize, density: u64) -> (Vec<GraphEntry>, Vec<String>) {
    let paths: Vec<String> = (0..n + 2).map(|i| store_path(rng, i)).collect();
    let sizes = [4096, 4096, 1000, 77_000, 1_203_000, 30_873_752];
    let mut entries: Vec<GraphEntry> = (0..n)
        .map(|i| {
            let mut refs: Vec<String> = (i + 1..n)
                .filter(|_| rng.below(100) < density)
                .map(|j| paths[j].clone())
                .collect();
            if rng.below(2) == 0 {
                refs.push(paths[i].clone()); // self-reference
            }
            let nar_size = if rng.below(3) == 0 {
                sizes[rng.below(sizes.len() as u64) as usize]
            } else {
                8 * (1 + rng.below(1 << 20))
            };
            GraphEntry {
                path: paths[i].clone(),
                nar_hash: None,
                nar_size,
                references: refs,
            }
        })
        .collect();
    // base.json refers to a few paths; the customisation layer to all roots.
    let base: Vec<String> = (0..n)
        .filter(|_| rng.below(10) == 0)
        .map(|j| paths[j].clone())
        .collect();
    let all_roots: Vec<String> = (0..n)
        .filter(|&j| {
            !entries
                .iter()
                .any(|e| e.path != paths[j] && e.references.contains(&paths[j]))
        })
        .map(|j| paths[j].clone())
        .collect();
    entries.push(GraphEntry {
        path: paths[n].clone(),
        nar_hash: None,
        nar_size: 1200,
        references: base,
    });
    entries.push(GraphEntry {
        path: paths[n + 1].clone(),
        nar_hash: None,
        nar_size: 20480,
        references: all_roots,
    });
    (entries, vec![paths[n].clone(), paths[n + 1].clone()])
}

fn graph(entries: &[GraphEntry]) -> Graph {
    Graph::from_entries(entries.to_vec(), "/nix/store").unwrap()
}

/// Every non-excluded path exactly once, no excluded path, no empty layer.
fn assert_partition(d: &Decision, g: &Graph, exclude: &[String], what: &str) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for layer in &d.layers {
        assert!(!layer.is_empty(), "{what}: empty layer");
        for p in layer {
            *seen.entry(p.as_str()).or_default() += 1;
        }
    }
    for p in g.paths() {
        let want = usize::from(!exclude.contains(p));
        assert_eq!(
            seen.get(p.as_str()).copied().unwrap_or(0),
            want,
            "{what}: {p}"
        );
    }
    assert_eq!(seen.len(), g.len() - exclude.len(), "{what}: unknown paths");
}

#[test]
fn auto_layer_partitions_within_budget() {
    let mut rng = Rng(20240611);
    for case in 0..60 {
        let n = 1 + rng.below(120) as usize;
        let density = 1 + rng.below(15);
        let (entries, exclude) = random_closure(&mut rng, n, density);
        let g = graph(&entries);
        let max_layers = 2 + rng.below(40) as usize;
        let base = rng.below(max_layers as u64 - 1) as usize;
        let budget = max_layers - base - 1;
        let d = decide_graph(&g, &exclude, max_layers, base, None).unwrap();
        let what = format!("case {case}: {n} paths, maxLayers {max_layers}, {base} base layers");
        assert_partition(&d, &g, &exclude, &what);
        assert!(
            d.layers.len() <= budget,
            "{what}: {} layers",
            d.layers.len()
        );
        let sizes: Vec<u64> = auto::auto_layer(&g, budget)
            .layers
            .iter()
            .map(|l| l.closure_size)
            .collect();
        assert!(
            sizes.windows(2).all(|w| w[0] <= w[1]),
            "{what}: closure sizes decrease"
        );
        // A generous budget gives every path its own layer.
        let all = decide_graph(&g, &exclude, g.len() + 10, 0, None).unwrap();
        assert_eq!(all.layers.len(), n, "{what}: unlimited");
    }
}

#[test]
fn popularity_pipeline_partitions_within_limit() {
    let mut rng = Rng(7);
    for case in 0..40 {
        let n = 1 + rng.below(150) as usize;
        let density = 1 + rng.below(10);
        let (entries, exclude) = random_closure(&mut rng, n, density);
        let g = graph(&entries);
        let limit = 1 + rng.below(30);
        let steps =
            pipeline::parse(&json!([["popularity_contest"], ["limit_layers", limit]])).unwrap();
        let d = decide_graph(&g, &exclude, 100, 0, Some(&steps)).unwrap();
        assert_partition(&d, &g, &exclude, &format!("case {case}"));
        assert_eq!(d.layers.len(), n.min(limit as usize), "case {case}");
    }
}

#[test]
fn same_output_whatever_input_order_or_thread_count() {
    let mut rng = Rng(42);
    let (mut entries, exclude) = random_closure(&mut rng, 400, 3);
    let steps = pipeline::parse(&json!([["popularity_contest"], ["limit_layers", 50]])).unwrap();
    let run = |entries: &[GraphEntry], threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let g = graph(entries);
            let auto = decide_graph(&g, &exclude, 60, 0, None).unwrap();
            let pipe = decide_graph(&g, &exclude, 60, 0, Some(&steps)).unwrap();
            (auto.layers, auto.reasons, pipe.layers, pipe.reasons)
        })
    };
    let first = run(&entries, 1);
    for i in (1..entries.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        entries.swap(i, j);
    }
    assert_eq!(run(&entries, 4), first);
    assert_eq!(run(&entries, 2), first);
}

/// A chain deeper than Python's recursion limit, and a ladder whose
/// popularity needs thousands of bits: both work and are exact.
#[test]
fn deep_graphs_need_no_recursion() {
    let depth = 5000;
    let path = |i: usize| format!("/nix/store/{:032}-p{i}", i);
    let chain: Vec<GraphEntry> = (0..depth)
        .map(|i| GraphEntry {
            path: path(i),
            nar_hash: None,
            nar_size: 1000 + i as u64,
            references: if i + 1 < depth {
                vec![path(i + 1)]
            } else {
                vec![]
            },
        })
        .collect();
    let g = graph(&chain);
    let d = decide_graph(&g, &[], 100, 0, None).unwrap();
    assert_partition(&d, &g, &[], "chain");
    assert_eq!(d.layers.len(), 99);
    let order = legacy::popularity_order(&g).unwrap();
    assert_eq!(order[0], path(depth - 1)); // the bottom is the most popular
    assert_eq!(order[depth - 1], path(0));

    // Ladder: rung r has two paths, each referring to both paths of rung r+1.
    let rungs = 1500;
    let ladder: Vec<GraphEntry> = (0..2 * rungs)
        .map(|i| GraphEntry {
            path: path(i),
            nar_hash: None,
            nar_size: 8,
            references: if i / 2 + 1 < rungs {
                vec![path(2 * (i / 2 + 1)), path(2 * (i / 2 + 1) + 1)]
            } else {
                vec![]
            },
        })
        .collect();
    let g = graph(&ladder);
    let pops = legacy::popularity_counts(&g).unwrap();
    let bottom = &pops[g.index_of(&path(2 * rungs - 1)).unwrap() as usize];
    // Two roots, 2^r paths to each vertex of rung r: 2·(2^(R-1) − 1) + 2^(R-1).
    let two = num_bigint::BigUint::from(2u8);
    let expected = (two.pow(rungs as u32 - 1) - 1u8) * 2u8 + two.pow(rungs as u32 - 1);
    assert_eq!(bottom, &expected);
    let steps = pipeline::parse(&json!([["popularity_contest"], ["limit_layers", 10]])).unwrap();
    let d = decide_graph(&g, &[], 100, 0, Some(&steps)).unwrap();
    assert_eq!(d.layers.len(), 10);
}

/// A random pipeline step over the graph's paths, sometimes malformed.
fn random_step(rng: &mut Rng, paths: &[String], depth: u32) -> Value {
    let path = |rng: &mut Rng| json!(paths[rng.below(paths.len() as u64) as usize]);
    match rng.below(if depth > 2 { 9 } else { 13 }) {
        0 => json!(["popularity_contest"]),
        1 => json!(["limit_layers", rng.below(6)]),
        2 => json!(["split_every", rng.below(20)]),
        3 => json!(["subcomponent_in", [path(rng)]]),
        4 => json!(["subcomponent_out", [path(rng), path(rng)]]),
        5 => json!(["split_paths", [path(rng), {"children_of": path(rng)}]]),
        6 => json!(["flatten"]),
        7 => json!(["reverse"]),
        8 => json!(["remove_paths", path(rng)]),
        9 => {
            let key = ["main", "common", "rest"][rng.below(3) as usize];
            json!(["over", key, random_step(rng, paths, depth + 1)])
        }
        10 => json!(["map", random_step(rng, paths, depth + 1)]),
        11 => json!([
            "pipe",
            [
                random_step(rng, paths, depth + 1),
                random_step(rng, paths, depth + 1)
            ]
        ]),
        _ => json!(["limit_layers", "x", 1]),
    }
}

#[test]
fn random_pipelines_never_panic_and_never_duplicate() {
    let mut rng = Rng(99);
    let mut succeeded = 0;
    for case in 0..600 {
        let n = 1 + rng.below(40) as usize;
        let density = 1 + rng.below(20);
        let (entries, exclude) = random_closure(&mut rng, n, density);
        let g = graph(&entries);
        // Start with a step that takes the whole graph, as real pipelines do.
        let first = [
            "popularity_contest",
            "split_every",
            "subcomponent_in",
            "subcomponent_out",
            "split_paths",
        ];
        let mut steps = vec![loop {
            let step = random_step(&mut rng, g.paths(), 0);
            if first.contains(&step[0].as_str().unwrap_or("")) {
                break step;
            }
        }];
        steps.extend((0..rng.below(5)).map(|_| random_step(&mut rng, g.paths(), 0)));
        let json = Value::Array(steps);
        let Ok(steps) = pipeline::parse(&json) else {
            continue;
        };
        let Ok(d) = decide_graph(&g, &exclude, 100, 0, Some(&steps)) else {
            continue;
        };
        succeeded += 1;
        let removes = json.to_string().contains("remove_paths");
        let mut seen = std::collections::HashSet::new();
        for p in d.layers.iter().flatten() {
            assert!(seen.insert(p.clone()), "case {case}: {p} twice with {json}");
            assert!(!exclude.contains(p), "case {case}: excluded {p}");
        }
        if !removes {
            assert_eq!(seen.len(), n, "case {case}: lost paths with {json}");
        }
    }
    assert!(succeeded > 100, "only {succeeded} random pipelines ran");
}
