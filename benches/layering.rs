//! `cargo bench --bench layering`: time of the layering decision on the
//! random2000 vector (auto-layer and the popularity pipeline, as nixpkgs'
//! defaults run them) and on synthetic closures of 1k to 20k paths, to show
//! how the time grows. Plain `Instant` timing, best of several runs.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stream_layered_image::graph::Graph;
use stream_layered_image::layering::{auto, decide_graph, pipeline};
use stream_layered_image::nix::{parse_references_graph, GraphEntry};

fn best_of(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:9.2} ms", d.as_secs_f64() * 1e3)
}

/// A seeded random closure like random2000: ~4.5 references per path to
/// paths further down, log-uniform sizes. `span` bounds how far down a
/// reference may point: n gives a shallow, widely shared graph; 200 a deep
/// one (hundreds of levels, popularity of thousands of bits).
fn synthetic(n: usize, span: usize, seed: u64) -> Vec<GraphEntry> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let path = |i: usize| format!("/nix/store/{i:032}-pkg-{i}");
    (0..n)
        .map(|i| {
            let mut refs: Vec<String> = Vec::new();
            if i + 1 < n {
                let count = next() % 10;
                for _ in 0..count {
                    let span = ((n - i - 1) as u64).min(span as u64);
                    refs.push(path(i + 1 + (next() % span) as usize));
                }
            }
            GraphEntry {
                path: path(i),
                nar_hash: None,
                nar_size: 8 << (next() % 24),
                references: refs,
            }
        })
        .collect()
}

fn main() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/layering/");
    let text = std::fs::read(format!("{dir}al-random2000-max100.json")).expect("vector");
    let vector: Value = serde_json::from_slice(&text).expect("json");
    let graph_json = serde_json::to_vec(&vector["graph"]).expect("graph");
    let exclude: Vec<String> = vector["exclude_paths"]
        .as_array()
        .expect("exclude_paths")
        .iter()
        .map(|p| p.as_str().unwrap_or_default().to_owned())
        .collect();
    let popularity =
        pipeline::parse(&json!([["popularity_contest"], ["limit_layers", 99]])).expect("pipeline");

    println!(
        "random2000 vector ({} paths):",
        vector["graph"].as_array().map_or(0, Vec::len)
    );
    let load = best_of(10, || {
        let entries = parse_references_graph(&graph_json).expect("parse");
        Graph::from_entries(entries, "/nix/store").expect("graph");
    });
    println!("  parse + validate graph            {}", ms(load));
    let g = Graph::from_entries(
        parse_references_graph(&graph_json).expect("parse"),
        "/nix/store",
    )
    .expect("graph");
    let t = best_of(10, || {
        decide_graph(&g, &exclude, 100, 0, None).expect("auto");
    });
    println!("  auto-layer, maxLayers 100          {}", ms(t));
    let t = best_of(3, || {
        auto::auto_layer(&g, g.len() + 1);
    });
    println!("  auto-layer, every path a layer     {}", ms(t));
    let t = best_of(10, || {
        decide_graph(&g, &exclude, 100, 0, Some(&popularity)).expect("pipeline");
    });
    println!("  popularity_contest + limit 99      {}", ms(t));

    for (kind, deep) in [("shallow", false), ("deep", true)] {
        println!("synthetic {kind} closures (paths: parse+validate / auto-layer 99 / popularity pipeline 99):");
        for n in [1_000, 2_000, 5_000, 10_000, 20_000] {
            let entries = synthetic(n, if deep { 200 } else { n }, n as u64);
            let t_load = best_of(3, || {
                Graph::from_entries(entries.clone(), "/nix/store").expect("graph");
            });
            let g = Graph::from_entries(entries, "/nix/store").expect("graph");
            let t_auto = best_of(3, || {
                decide_graph(&g, &[], 100, 0, None).expect("auto");
            });
            let t_pop = best_of(if n > 5_000 { 1 } else { 3 }, || {
                decide_graph(&g, &[], 100, 0, Some(&popularity)).expect("pipeline");
            });
            println!("  {n:>6} {} {} {}", ms(t_load), ms(t_auto), ms(t_pop));
        }
    }
}
