//! Every layering vector in tests/vectors/layering (nixpkgs' own outputs):
//! auto-layer (al-*, auto-layer/*), the popularity pipeline (pc-*), custom
//! pipelines (pl-*), closure-graph.py's order (cg-*) and the legacy layers
//! (legacy-*); plus the graph file formats and decide()'s errors.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use stream_layered_image::graph::Graph;
use stream_layered_image::layering::{self, auto, decide_graph, legacy, pipeline, Spec};
use stream_layered_image::nix::GraphEntry;

fn vector_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/layering")
}

/// (file name, parsed JSON) for every vector whose name starts with `prefix`.
fn vectors(sub: &str, prefix: &str) -> Vec<(String, Value)> {
    let dir = vector_dir().join(sub);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(prefix) && n.ends_with(".json") && n != "index.json")
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(&n)).unwrap();
            (n, serde_json::from_str(&text).unwrap())
        })
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn layers_of(v: &Value) -> Vec<Vec<String>> {
    v.as_array().unwrap().iter().map(strings).collect()
}

fn entries(v: &Value) -> Vec<GraphEntry> {
    v["graph"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| GraphEntry {
            path: e["path"].as_str().unwrap().to_owned(),
            nar_hash: None,
            nar_size: e["narSize"].as_u64().unwrap(),
            references: strings(&e["references"]),
        })
        .collect()
}

fn graph(v: &Value) -> Graph {
    Graph::from_entries(entries(v), "/nix/store").unwrap()
}

fn usize_of(v: &Value) -> usize {
    v.as_u64().map_or(0, |n| n as usize)
}

/// Layers equal, except that inside each tie group (indices into
/// `expected`) the order is free; returns a description of the difference.
fn compare_with_ties(
    actual: &[Vec<String>],
    expected: &[Vec<String>],
    ties: &[Vec<usize>],
) -> Option<String> {
    if actual.len() != expected.len() {
        return Some(format!(
            "{} layers, expected {}",
            actual.len(),
            expected.len()
        ));
    }
    let mut in_group = vec![false; expected.len()];
    for group in ties {
        let mut a: Vec<&Vec<String>> = group.iter().map(|&i| &actual[i]).collect();
        let mut e: Vec<&Vec<String>> = group.iter().map(|&i| &expected[i]).collect();
        a.sort();
        e.sort();
        if a != e {
            return Some(format!("tie group {group:?} differs"));
        }
        group.iter().for_each(|&i| in_group[i] = true);
    }
    (0..expected.len())
        .find(|&i| !in_group[i] && actual[i] != expected[i])
        .map(|i| format!("layer {i}: got {:?}, expected {:?}", actual[i], expected[i]))
}

fn ties_of(v: &Value) -> Vec<Vec<usize>> {
    v.as_array()
        .map(|groups| {
            groups
                .iter()
                .map(|g| g.as_array().unwrap().iter().map(usize_of).collect())
                .collect()
        })
        .unwrap_or_default()
}

/// The error vectors, compared by meaning: which nixpkgs failure it is.
fn check_error_meaning(name: &str, expected: &str, actual: &str) {
    let must: &[&str] = if expected.contains("must be greather than 1") {
        &["maxLayers is 1", "greater than 1"]
    } else if expected.contains("usedLayers") {
        &["maxLayers is 4", "no layer is left"]
    } else if expected.contains("'Graph' object is not iterable") {
        &["layeringPipeline", "single graph"]
    } else {
        panic!("{name}: unexpected error kind {expected:?}");
    };
    for m in must {
        assert!(
            actual.contains(m),
            "{name}: error {actual:?} lacks {m:?} (nixpkgs: {expected:?})"
        );
    }
    assert!(
        !actual.contains('\n'),
        "{name}: error is not one line: {actual:?}"
    );
}

#[test]
fn al_vectors_auto_layer_default() {
    let all = vectors("", "al-");
    assert_eq!(all.len(), 33);
    for (name, v) in all {
        let g = graph(&v);
        let exclude = strings(&v["exclude_paths"]);
        let result = decide_graph(
            &g,
            &exclude,
            usize_of(&v["max_layers"]),
            usize_of(&v["from_image_layers"]),
            None,
        );
        let expected = &v["expected"];
        if let Some(err) = expected["error"].as_str() {
            check_error_meaning(&name, err, &format!("{:#}", result.unwrap_err()));
            continue;
        }
        let d = result.unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let want = layers_of(&expected["layers"]);
        if let Some(diff) = compare_with_ties(&d.layers, &want, &ties_of(&expected["order_ties"])) {
            panic!("{name}: {diff}");
        }
        // Closure sizes as recorded, hence never decreasing.
        let limit = usize_of(&v["layer_limit"]);
        let sizes: Vec<u64> = auto::auto_layer(&g, limit)
            .layers
            .iter()
            .filter(|l| {
                l.paths
                    .iter()
                    .any(|&p| !exclude.iter().any(|e| e == g.path(p)))
            })
            .map(|l| l.closure_size)
            .collect();
        let want_sizes: Vec<u64> = expected["layer_closure_sizes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64().unwrap())
            .collect();
        assert_eq!(sizes, want_sizes, "{name}: closure sizes");
    }
}

#[test]
fn auto_layer_folder_vectors() {
    let all = vectors("auto-layer", "");
    assert_eq!(all.len(), 50);
    for (name, v) in all {
        let g = graph(&v);
        let exclude = strings(&v["excluded_paths"]);
        let d = decide_graph(
            &g,
            &exclude,
            usize_of(&v["max_layers"]),
            usize_of(&v["from_image_layer_count"]),
            None,
        )
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let ties = ties_of(&v["closure_size_tie_groups"]);
        if let Some(diff) = compare_with_ties(&d.layers, &layers_of(&v["expected"]), &ties) {
            panic!("{name}: {diff}");
        }
        // The unfiltered layers, their closure sizes and the primaries too.
        let r = auto::auto_layer(&g, usize_of(&v["layer_limit"]));
        let debug = v["debug_layers"].as_array().unwrap();
        let paths: Vec<Vec<String>> = r
            .layers
            .iter()
            .map(|l| l.paths.iter().map(|&p| g.path(p).to_owned()).collect())
            .collect();
        let want: Vec<Vec<String>> = debug.iter().map(|l| strings(&l["paths"])).collect();
        let sizes: Vec<u64> = r.layers.iter().map(|l| l.closure_size).collect();
        let want_sizes: Vec<u64> = debug
            .iter()
            .map(|l| l["closureSize"].as_u64().unwrap())
            .collect();
        assert_eq!(sizes, want_sizes, "{name}: closure sizes");
        let raw_ties = tie_groups(&want_sizes);
        if let Some(diff) = compare_with_ties(&paths, &want, &raw_ties) {
            panic!("{name} (before exclusion): {diff}");
        }
        let primaries: Vec<String> = r.primaries.iter().map(|&p| g.path(p).to_owned()).collect();
        assert_eq!(primaries, strings(&v["primaries"]), "{name}: primaries");
    }
}

/// Runs of equal values, as index groups.
fn tie_groups(sizes: &[u64]) -> Vec<Vec<usize>> {
    let mut groups = Vec::new();
    let mut start = 0;
    for i in 1..=sizes.len() {
        if i == sizes.len() || sizes[i] != sizes[start] {
            if i - start > 1 {
                groups.push((start..i).collect());
            }
            start = i;
        }
    }
    groups
}

/// We emulate CPython's set order, so even tied layers come out exactly as
/// nixpkgs (Python 3.11–3.13, PYTHONHASHSEED=0) orders them.
#[test]
fn auto_layer_ties_in_nixpkgs_exact_order() {
    let mut tie_vectors = 0;
    for (name, v) in vectors("auto-layer", "") {
        if ties_of(&v["closure_size_tie_groups"]).is_empty() {
            continue;
        }
        tie_vectors += 1;
        let g = graph(&v);
        let d = decide_graph(
            &g,
            &strings(&v["excluded_paths"]),
            usize_of(&v["max_layers"]),
            usize_of(&v["from_image_layer_count"]),
            None,
        )
        .unwrap();
        assert_eq!(d.layers, layers_of(&v["expected"]), "{name}");
    }
    for (name, v) in vectors("", "al-ties") {
        let g = graph(&v);
        let d = decide_graph(
            &g,
            &strings(&v["exclude_paths"]),
            usize_of(&v["max_layers"]),
            0,
            None,
        )
        .unwrap();
        assert_eq!(d.layers, layers_of(&v["expected"]["layers"]), "{name}");
    }
    assert_eq!(tie_vectors, 10);
}

fn without_excluded(v: &Value) -> Graph {
    let exclude: HashSet<String> = strings(&v["exclude_paths"]).into_iter().collect();
    let kept = entries(v)
        .into_iter()
        .filter(|e| !exclude.contains(&e.path))
        .map(|mut e| {
            e.references.retain(|r| !exclude.contains(r));
            e
        })
        .collect();
    Graph::from_entries(kept, "/nix/store").unwrap()
}

fn check_popularity(name: &str, g: &Graph, v: &Value) {
    let counts = legacy::popularity_counts(g).unwrap();
    let want = v["popularity"].as_object().unwrap();
    assert_eq!(want.len(), g.len(), "{name}");
    for (i, c) in counts.iter().enumerate() {
        assert_eq!(
            c.to_string(),
            want[g.path(i as u32)].as_str().unwrap(),
            "{name}: popularity of {}",
            g.path(i as u32)
        );
    }
}

#[test]
fn pc_vectors_popularity_pipeline() {
    let all = vectors("", "pc-");
    assert_eq!(all.len(), 33);
    for (name, v) in all {
        let g = graph(&v);
        let (max, from) = (
            usize_of(&v["max_layers"]),
            usize_of(&v["from_image_layers"]),
        );
        if let Some(err) = v["expected"]["error"].as_str() {
            let e = layering::layer_budget(max, from).unwrap_err();
            check_error_meaning(&name, err, &format!("{e:#}"));
            continue;
        }
        // nixpkgs' default pipeline of that era is built from our budget.
        let budget = layering::layer_budget(max, from).unwrap();
        assert_eq!(
            v["pipeline"],
            serde_json::json!([["popularity_contest"], ["limit_layers", budget]]),
            "{name}"
        );
        let steps = pipeline::parse(&v["pipeline"]).unwrap();
        let d = decide_graph(&g, &strings(&v["exclude_paths"]), max, from, Some(&steps))
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(d.layers, layers_of(&v["expected"]["layers"]), "{name}");
        check_popularity(&name, &without_excluded(&v), &v);
    }
}

#[test]
fn pl_vectors_custom_pipelines() {
    let all = vectors("", "pl-");
    assert_eq!(all.len(), 18);
    for (name, v) in all {
        let g = graph(&v);
        let steps = pipeline::parse(&v["pipeline"]).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let result = decide_graph(&g, &strings(&v["exclude_paths"]), 100, 0, Some(&steps));
        if let Some(err) = v["expected"]["error"].as_str() {
            check_error_meaning(&name, err, &format!("{:#}", result.unwrap_err()));
            continue;
        }
        let d = result.unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(d.layers, layers_of(&v["expected"]["layers"]), "{name}");
    }
}

#[test]
fn cg_vectors_closure_graph_order() {
    let all = vectors("", "cg-");
    assert_eq!(all.len(), 6);
    for (name, v) in all {
        let g = graph(&v);
        assert_eq!(
            legacy::popularity_order(&g).unwrap(),
            strings(&v["expected"]["order"]),
            "{name}"
        );
        check_popularity(&name, &g, &v);
    }
}

#[test]
fn legacy_vectors_stream_layers() {
    let all = vectors("", "legacy-");
    assert_eq!(all.len(), 6);
    for (name, v) in all {
        let g = graph(&v);
        let limit = layering::layer_budget(
            usize_of(&v["max_layers"]),
            usize_of(&v["from_image_layers"]),
        )
        .unwrap();
        assert_eq!(limit, usize_of(&v["layer_limit"]), "{name}");
        let layers = legacy::legacy_layers(&g, &strings(&v["exclude_paths"]), limit).unwrap();
        assert_eq!(layers, layers_of(&v["expected"]["layers"]), "{name}");
    }
}

/// A graph in each of the forms Nix writes gives the same decision.
#[test]
fn decide_reads_every_graph_format() {
    let (_, v) = vectors("", "al-realistic-max20").remove(0);
    let tmp = tempdir("formats");
    let dir = tmp.path();
    let list = serde_json::to_string(&v["graph"]).unwrap();
    std::fs::write(dir.join("list.json"), &list).unwrap();
    std::fs::write(
        dir.join("attrs.json"),
        format!("{{\"graph\": {list}, \"exclude_paths\": []}}"),
    )
    .unwrap();
    let mut registration = String::new();
    // Deliberately not sorted by path: we sort ourselves.
    for e in entries(&v).iter().rev() {
        registration.push_str(&format!(
            "{}\nsha256:x\n{}\n\n{}\n",
            e.path,
            e.nar_size,
            e.references.len()
        ));
        e.references
            .iter()
            .for_each(|r| registration.push_str(&format!("{r}\n")));
    }
    std::fs::create_dir_all(dir.join("closure-info")).unwrap();
    std::fs::write(dir.join("closure-info/registration"), &registration).unwrap();
    std::fs::write(dir.join("registration"), &registration).unwrap();
    let want = layers_of(&v["expected"]["layers"]);
    for file in ["list.json", "attrs.json", "closure-info", "registration"] {
        let spec = Spec {
            graph: dir.join(file),
            exclude_paths: strings(&v["exclude_paths"]),
            max_layers: 20,
            pipeline: None,
            debug: false,
        };
        let d =
            layering::decide(&spec, "/nix/store", 0).unwrap_or_else(|e| panic!("{file}: {e:#}"));
        assert_eq!(d.layers, want, "{file}");
    }
}

/// A scratch directory, removed when the returned guard drops.
fn tempdir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("sli-layering-{tag}-"))
        .tempdir()
        .unwrap()
}

fn spec_for(dir: &Path, graph: &str, pipeline: Option<Value>) -> Spec {
    std::fs::write(dir.join("g.json"), graph).unwrap();
    Spec {
        graph: dir.join("g.json"),
        exclude_paths: vec![],
        max_layers: 100,
        pipeline,
        debug: false,
    }
}

const A: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a";
const B: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b";

#[test]
fn decide_errors_name_the_input() {
    let tmp = tempdir("errors");
    let dir = tmp.path();
    let err = |spec: &Spec| format!("{:#}", layering::decide(spec, "/nix/store", 0).unwrap_err());

    let dangling = format!(r#"[{{"path":"{A}","narSize":1,"references":["{B}"]}}]"#);
    let e = err(&spec_for(dir, &dangling, None));
    assert!(
        e.contains(B) && e.contains("not in the graph") && e.contains("g.json"),
        "{e}"
    );

    let outside = r#"[{"path":"/tmp/x-y","narSize":1,"references":[]}]"#;
    let e = err(&spec_for(dir, outside, None));
    assert!(
        e.contains("/tmp/x-y") && e.contains("not inside the store"),
        "{e}"
    );

    let ok = format!(r#"[{{"path":"{A}","narSize":1,"references":[]}}]"#);
    let e = err(&spec_for(
        dir,
        &ok,
        Some(serde_json::json!([
            ["popularity_contest"],
            ["limit_layer", 2]
        ])),
    ));
    assert!(
        e.contains("limit_layer") && e.contains("unknown operation") && e.contains("step 2"),
        "{e}"
    );

    let e = err(&spec_for(
        dir,
        &ok,
        Some(serde_json::json!([
            ["split_paths", ["/nix/store/x"]],
            ["over", "common", ["flatten"]]
        ])),
    ));
    assert!(e.contains("\"common\"") && e.contains("rest"), "{e}");

    let e = err(&spec_for(dir, "{\"graph\": 5}", None));
    assert!(e.contains("g.json"), "{e}");

    let mut spec = spec_for(dir, &ok, None);
    spec.graph = dir.join("missing.json");
    let e = err(&spec);
    assert!(
        e.contains("missing.json") && e.contains("cannot read"),
        "{e}"
    );

    let mut spec = spec_for(dir, &ok, None);
    spec.max_layers = 3;
    let e = format!(
        "{:#}",
        layering::decide(&spec, "/nix/store", 2).unwrap_err()
    );
    assert!(
        e.contains("maxLayers is 3") && e.contains("2 layer(s)"),
        "{e}"
    );
}

#[test]
fn pipeline_from_a_file() {
    let tmp = tempdir("pipefile");
    let dir = tmp.path();
    let graph = format!(
        r#"[{{"path":"{A}","narSize":1,"references":["{B}"]}},{{"path":"{B}","narSize":2,"references":[]}}]"#
    );
    std::fs::write(dir.join("pipeline.json"), r#"[["popularity_contest"]]"#).unwrap();
    let file = dir.join("pipeline.json").to_string_lossy().into_owned();
    let spec = spec_for(dir, &graph, Some(Value::String(file)));
    let d = layering::decide(&spec, "/nix/store", 0).unwrap();
    assert_eq!(d.layers, vec![vec![B.to_owned()], vec![A.to_owned()]]);
}

#[test]
fn explain_lists_every_layer_path_size_and_total() {
    let (_, v) = vectors("", "al-realistic-max10").remove(0);
    let g = graph(&v);
    let d = decide_graph(&g, &strings(&v["exclude_paths"]), 10, 0, None).unwrap();
    let text = d.explain();
    for (i, layer) in d.layers.iter().enumerate() {
        assert!(
            text.contains(&format!("layer {}/{}:", i + 1, d.layers.len())),
            "{text}"
        );
        for p in layer {
            let size = g.nar_size(g.index_of(p).unwrap());
            assert!(
                text.contains(&format!("{size:>12}  {p}")),
                "{p} missing from\n{text}"
            );
        }
    }
    let total: u64 = d
        .layers
        .iter()
        .flatten()
        .map(|p| g.nar_size(g.index_of(p).unwrap()))
        .sum();
    assert!(
        text.contains(&format!("total: {} store layers", d.layers.len()))
            && text.contains(&format!("{total} bytes")),
        "{text}"
    );
    assert!(
        text.contains("primary path") && text.contains("at most 9 layers"),
        "{text}"
    );
    for p in strings(&v["exclude_paths"]) {
        assert!(
            text.contains("in no layer: ") && text.contains(&p),
            "{text}"
        );
    }
}

/// The executable layers a graph-based conf with decide(): each store layer
/// of the streamed image holds exactly the paths decide() put there.
#[test]
fn executable_streams_the_decided_layers() {
    use std::io::Read;
    let tmp = tempdir("e2e");
    let dir = tmp.path();
    let store = dir.join("store");
    let path = |hash: char, name: &str| {
        format!("{}/{}-{name}", store.display(), hash.to_string().repeat(32))
    };
    let (app, lib, libc, base, custom) = (
        path('a', "app-1.0"),
        path('b', "libfoo-2.1"),
        path('c', "glibc-2.40"),
        path('d', "app-base.json"),
        path('e', "app-customisation-layer"),
    );
    for p in [&app, &lib, &libc] {
        std::fs::create_dir_all(format!("{p}/lib")).unwrap();
        std::fs::write(format!("{p}/lib/file"), p.as_bytes()).unwrap();
    }
    std::fs::write(&base, "{}").unwrap();
    std::fs::create_dir_all(&custom).unwrap();
    let graph = serde_json::json!([
        {"path": app, "narSize": 77000, "references": [app, lib]},
        {"path": lib, "narSize": 1203000, "references": [lib, libc]},
        {"path": libc, "narSize": 30873752, "references": [libc]},
        {"path": base, "narSize": 1200, "references": [app]},
        {"path": custom, "narSize": 20480, "references": [app]},
    ]);
    std::fs::write(dir.join("graph.json"), graph.to_string()).unwrap();
    let layering = serde_json::json!({
        "graph": dir.join("graph.json"), "exclude_paths": [base, custom], "max_layers": 3, "pipeline": null
    });
    let conf = serde_json::json!({
        "store_dir": store, "from_image": null, "layering": layering,
        "customisation_layer": vector_dir().join("../customisation"),
        "repo_tag": "layered:test", "created": "1970-01-01T00:00:01Z", "mtime": "1970-01-01T00:00:01Z",
        "uid": 0, "gid": 0, "uname": "root", "gname": "root", "architecture": "amd64", "config": {}
    });
    std::fs::write(dir.join("conf.json"), conf.to_string()).unwrap();
    let out = dir.join("image.tar");
    // Output captured: the suite is quiet on success (issue 12).
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_stream-layered-image"))
        .arg(dir.join("conf.json"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );

    // --explain-layers prints the decision and leaves the image unchanged.
    let explained = dir.join("image2.tar");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_stream-layered-image"))
        .arg(dir.join("conf.json"))
        .args(["--explain-layers", "-o"])
        .arg(&explained)
        .output()
        .unwrap();
    assert!(run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    for want in [
        "layer 1/2:",
        "layer 2/2:",
        "total: 2 store layers",
        "30873752",
        libc.as_str(),
    ] {
        assert!(stderr.contains(want), "{want:?} missing from\n{stderr}");
    }
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&explained).unwrap()
    );

    let spec: Spec = serde_json::from_value(layering).unwrap();
    let want = layering::decide(&spec, &store.to_string_lossy(), 0)
        .unwrap()
        .layers;
    assert_eq!(
        want.len(),
        2,
        "maxLayers 3 leaves two store layers: {want:?}"
    );

    // Outer archive: manifest.json names the layer members in order.
    let mut members = std::collections::HashMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(&out).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        members.insert(name, bytes);
    }
    let manifest: Value = serde_json::from_slice(&members["manifest.json"]).unwrap();
    let layer_names = strings(&manifest[0]["Layers"]);
    assert_eq!(
        layer_names.len(),
        want.len() + 1,
        "store layers + customisation layer"
    );
    for (i, wanted) in want.iter().enumerate() {
        let mut inner = tar::Archive::new(&members[&layer_names[i]][..]);
        let mut found: Vec<String> = Vec::new();
        for entry in inner.entries().unwrap() {
            let name = format!(
                "/{}",
                entry
                    .unwrap()
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .trim_start_matches('/')
            );
            for p in [&app, &lib, &libc, &base, &custom] {
                if name.starts_with(p.as_str()) && !found.contains(p) {
                    found.push(p.clone());
                }
            }
        }
        found.sort();
        let mut wanted = wanted.clone();
        wanted.sort();
        assert_eq!(found, wanted, "layer {i}");
    }
}
