//! SBOMs (issue 10) checked by real validators: SPDX 2.3 documents by
//! `pyspdxtools -i FILE` (spdx-tools), CycloneDX 1.6 documents against the
//! official JSON schema bundled by cyclonedx-python-lib
//! (`tests/sbom/validate-cyclonedx.py`). Both are installed from PyPI into
//! `target/sbom-venv` on first use (`tests/sbom/requirements.txt` pins them).
//!
//! The image is nixpkgs' "realistic" closure (61 store paths with real NAR
//! hashes, from `tests/vectors/layering/al-realistic-max10.json`) layered as
//! nixpkgs layers it with `maxLayers = 10`, under two base-image layers and
//! with a customisation layer. Checked: every store path appears exactly
//! once, with its layer's diff_id and its NAR hash (as `nix-hash
//! --to-base16` converts it); the dependency relationships are exactly the
//! graph's references; the bytes do not depend on input order; and damaged
//! input (a path missing from the graph, an unparsable name, a bad hash, a
//! licence without SPDX id) still gives valid documents plus warnings.
//!
//! `executable_writes_sboms` runs `--sbom … --sbom-out …` on the reference
//! fixture.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{json, Value};
use stream_layered_image::nix::{parse_references_graph, GraphEntry};
use stream_layered_image::sbom::{
    self, ImageIdentity, Layer, LayerKind, License, PackageMeta, SbomFormat, SbomInput, StorePath,
};

mod common;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv with both validators, made once per test run.
fn venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let venv = root().join("target/sbom-venv");
        let requirements = root().join("tests/sbom/requirements.txt");
        let wanted = fs::read_to_string(&requirements).expect("tests/sbom/requirements.txt");
        let marker = venv.join("installed-requirements.txt");
        if fs::read_to_string(&marker).ok().as_deref() == Some(wanted.as_str()) {
            return venv;
        }
        let run = |cmd: &mut Command, what: &str| {
            let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                out.status.success(),
                "{what} failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "python3 -m venv target/sbom-venv (Debian: apt-get install python3-venv)",
        );
        run(
            Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "--disable-pip-version-check", "-r"])
                .arg(&requirements),
            "pip install -r tests/sbom/requirements.txt",
        );
        fs::write(&marker, wanted).expect("writing the venv marker");
        venv
    })
}

/// Runs both validators over `files`; panics with their output on failure.
fn validate(files: &[(SbomFormat, PathBuf)]) {
    let venv = venv();
    for (format, file) in files {
        let out = match format {
            SbomFormat::Spdx => Command::new(venv.join("bin/pyspdxtools"))
                .arg("-i")
                .arg(file)
                .output(),
            SbomFormat::CycloneDx => Command::new(venv.join("bin/python"))
                .arg(root().join("tests/sbom/validate-cyclonedx.py"))
                .arg(file)
                .output(),
        }
        .expect("running a validator");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // pyspdxtools prints its findings and exits 1; be strict about
        // output too, in case a version exits 0 after printing them.
        let quiet_enough = match format {
            SbomFormat::Spdx => !text.to_lowercase().contains("invalid") && !text.contains("Error"),
            SbomFormat::CycloneDx => text.starts_with("ok "),
        };
        assert!(
            out.status.success() && quiet_enough,
            "{} is not a valid {} document:\n{text}",
            file.display(),
            format.name()
        );
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = root()
        .join("target/sbom-test")
        .join(format!("{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn digest_of(text: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "sha256:{}",
        stream_layered_image::digest::hex(&Sha256::digest(text))
    )
}

/// The realistic graph and nixpkgs' layers for it.
fn realistic() -> (Vec<GraphEntry>, Vec<Vec<String>>) {
    let path = root().join("tests/vectors/layering/al-realistic-max10.json");
    let bytes = fs::read(&path).unwrap();
    let vector: Value = serde_json::from_slice(&bytes).unwrap();
    let graph = parse_references_graph(&bytes).unwrap();
    let layers = serde_json::from_value(vector["expected"]["layers"].clone()).unwrap();
    (graph, layers)
}

fn image_layers(store: &[Vec<String>]) -> Vec<Layer> {
    let mut layers = vec![
        Layer {
            diff_id: digest_of("base layer 1"),
            kind: LayerKind::Base,
        },
        Layer {
            diff_id: digest_of("base layer 2"),
            kind: LayerKind::Base,
        },
    ];
    for (i, paths) in store.iter().enumerate() {
        layers.push(Layer {
            diff_id: digest_of(&format!("store layer {i}")),
            kind: LayerKind::Store(paths.clone()),
        });
    }
    layers.push(Layer {
        diff_id: digest_of("customisation"),
        kind: LayerKind::Customisation,
    });
    layers
}

fn identity() -> ImageIdentity {
    ImageIdentity {
        name: "registry.example/team/myapp".into(),
        manifest_digest: Some(digest_of("manifest")),
        image_id: digest_of("config"),
        tags: vec![
            "registry.example/team/myapp:1.0".into(),
            "registry.example/team/myapp:latest".into(),
        ],
        created_unix: Some(1),
        reproducible: true,
        architecture: Some("amd64".into()),
    }
}

/// Metadata as the Nix function passes it for `contents`.
fn meta(graph: &[GraphEntry]) -> BTreeMap<String, PackageMeta> {
    let find = |part: &str| {
        graph
            .iter()
            .find(|e| e.path.contains(part))
            .unwrap_or_else(|| panic!("no {part} in the graph"))
            .path
            .clone()
    };
    BTreeMap::from([
        (
            find("-openssl-"),
            PackageMeta {
                name: Some("openssl".into()),
                version: Some("3.4.1".into()),
                licenses: vec![License {
                    spdx_id: Some("Apache-2.0".into()),
                    name: Some("Apache License 2.0".into()),
                }],
                homepage: Some("https://www.openssl.org/".into()),
                description: Some(
                    "A cryptographic library that implements the SSL and TLS protocols".into(),
                ),
            },
        ),
        (
            find("-glibc-"),
            PackageMeta {
                licenses: vec![
                    License {
                        spdx_id: Some("LGPL-2.1-or-later".into()),
                        name: None,
                    },
                    License {
                        spdx_id: Some("GPL-2.0-or-later".into()),
                        name: None,
                    },
                ],
                ..Default::default()
            },
        ),
    ])
}

/// `nix-hash --type sha256 --to-base16`, Nix's own conversion.
fn nix_hex(hash: &str) -> String {
    let base32 = hash.strip_prefix("sha256:").unwrap();
    let out = Command::new("nix-hash")
        .args(["--type", "sha256", "--to-base16", base32])
        .output()
        .expect("nix-hash (Debian's nix-bin; tests/run installs it)");
    assert!(out.status.success(), "nix-hash failed on {hash}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn write(dir: &Path, input: &SbomInput) -> (Vec<(SbomFormat, PathBuf)>, Vec<String>) {
    let outs = vec![
        (SbomFormat::Spdx, dir.join("image.spdx.json")),
        (SbomFormat::CycloneDx, dir.join("image.cdx.json")),
    ];
    let warnings = sbom::write_sbom_files(&outs, input).unwrap();
    (outs, warnings)
}

fn read(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_owned()
}

#[test]
fn realistic_image_sboms_are_valid_and_exact() {
    let (graph, store_layers) = realistic();
    let layers = image_layers(&store_layers);
    let input = SbomInput::from_graph(identity(), layers.clone(), &graph, &meta(&graph));
    let dir = scratch("realistic");
    let (outs, warnings) = write(&dir, &input);
    assert!(warnings.is_empty(), "{warnings:#?}");
    validate(&outs);

    // What the SBOM must say, from the graph and the layers.
    let mut want_layer = BTreeMap::new();
    for (i, paths) in store_layers.iter().enumerate() {
        for p in paths {
            want_layer.insert(p.clone(), layers[2 + i].diff_id.clone());
        }
    }
    let by_path: BTreeMap<&str, &GraphEntry> = graph.iter().map(|e| (e.path.as_str(), e)).collect();
    let want_hex: BTreeMap<String, String> = want_layer
        .keys()
        .map(|p| {
            (
                p.clone(),
                nix_hex(by_path[p.as_str()].nar_hash.as_deref().unwrap()),
            )
        })
        .collect();
    let want_edges: BTreeSet<(String, String)> = want_layer
        .keys()
        .flat_map(|p| {
            by_path[p.as_str()]
                .references
                .iter()
                .filter(move |r| *r != p)
                .map(move |r| (p.clone(), r.clone()))
        })
        .collect();
    assert!(
        want_layer.len() > 50 && want_edges.len() > 50,
        "a realistic closure"
    );
    assert!(
        want_edges.iter().all(|(_, r)| want_layer.contains_key(r)),
        "closed"
    );

    // SPDX: one package per store path (packageFileName), its NAR hash,
    // contained by the package of its layer, DEPENDS_ON its references.
    let doc = read(&outs[0].1);
    let packages = doc["packages"].as_array().unwrap();
    let mut id_of_path = BTreeMap::new();
    let mut path_of_id = BTreeMap::new();
    let mut layer_diff_id = BTreeMap::new();
    for p in packages {
        let id = s(&p["SPDXID"]);
        if let Some(path) = p["packageFileName"].as_str() {
            assert!(
                id_of_path.insert(path.to_owned(), id.clone()).is_none(),
                "{path} twice"
            );
            path_of_id.insert(id, path.to_owned());
            assert_eq!(p["checksums"][0]["algorithm"], "SHA256");
            assert_eq!(
                s(&p["checksums"][0]["checksumValue"]),
                want_hex[path],
                "{path}"
            );
            assert!(s(&p["externalRefs"][0]["referenceLocator"]).starts_with("pkg:nix/"));
        } else if id.starts_with("SPDXRef-Layer-") {
            layer_diff_id.insert(
                id,
                format!("sha256:{}", s(&p["checksums"][0]["checksumValue"])),
            );
        }
    }
    assert_eq!(
        id_of_path.keys().cloned().collect::<Vec<_>>(),
        want_layer.keys().cloned().collect::<Vec<_>>()
    );
    assert_eq!(layer_diff_id.len(), layers.len());
    let mut spdx_edges = BTreeSet::new();
    let mut spdx_layer = BTreeMap::new();
    for r in doc["relationships"].as_array().unwrap() {
        let (a, kind, b) = (
            s(&r["spdxElementId"]),
            s(&r["relationshipType"]),
            s(&r["relatedSpdxElement"]),
        );
        match kind.as_str() {
            "DEPENDS_ON" => {
                assert!(spdx_edges.insert((path_of_id[&a].clone(), path_of_id[&b].clone())))
            }
            "CONTAINS" if path_of_id.contains_key(&b) => {
                assert!(spdx_layer
                    .insert(path_of_id[&b].clone(), layer_diff_id[&a].clone())
                    .is_none());
            }
            "CONTAINS" => assert_eq!(
                (a.as_str(), layer_diff_id.contains_key(&b)),
                ("SPDXRef-Image", true)
            ),
            "DESCRIBES" => assert_eq!(
                (a.as_str(), b.as_str()),
                ("SPDXRef-DOCUMENT", "SPDXRef-Image")
            ),
            other => panic!("unexpected relationship {other}"),
        }
    }
    assert_eq!(
        spdx_edges, want_edges,
        "SPDX DEPENDS_ON = the graph's references"
    );
    assert_eq!(spdx_layer, want_layer, "SPDX: each path in its layer");

    // CycloneDX: one component per store path (nix:store_path), its NAR
    // hash and layer diff_id, dependencies = references.
    let bom = read(&outs[1].1);
    let mut cdx_layer = BTreeMap::new();
    for c in bom["components"].as_array().unwrap() {
        let props: BTreeMap<String, String> = c["properties"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (s(&p["name"]), s(&p["value"])))
            .collect();
        let Some(path) = props.get("nix:store_path") else {
            assert_eq!(c["type"], "file", "only layers besides store paths");
            continue;
        };
        assert_eq!(s(&c["bom-ref"]), *path);
        assert_eq!(s(&c["hashes"][0]["content"]), want_hex[path]);
        assert_eq!(
            props["nix:narinfo:nar_hash"],
            by_path[path.as_str()].nar_hash.clone().unwrap()
        );
        assert_eq!(
            props["nix:narinfo:nar_size"],
            by_path[path.as_str()].nar_size.to_string()
        );
        let diff_id = props["stream-layered-image:layer:diff_id"].clone();
        assert!(
            cdx_layer.insert(path.clone(), diff_id).is_none(),
            "{path} twice"
        );
    }
    assert_eq!(
        cdx_layer, want_layer,
        "CycloneDX: every path once, in its layer"
    );
    let mut cdx_edges = BTreeSet::new();
    for d in bom["dependencies"].as_array().unwrap() {
        let from = s(&d["ref"]);
        if !from.starts_with('/') {
            continue;
        }
        for to in d["dependsOn"].as_array().unwrap() {
            assert!(cdx_edges.insert((from.clone(), s(to))));
        }
    }
    assert_eq!(
        cdx_edges, want_edges,
        "CycloneDX dependencies = the graph's references"
    );

    // Overrides from Nix's meta.
    let openssl = bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "openssl")
        .unwrap();
    assert_eq!(openssl["licenses"][0]["expression"], "Apache-2.0");
    assert_eq!(
        openssl["externalReferences"][0]["url"],
        "https://www.openssl.org/"
    );

    // Deterministic: an independently built input, graph and paths in
    // reverse order, gives the same bytes.
    let mut reversed = graph.clone();
    reversed.reverse();
    let again = SbomInput::from_graph(
        identity(),
        image_layers(&store_layers),
        &reversed,
        &meta(&graph),
    );
    let mut again = again;
    again.store_paths.reverse();
    let dir2 = scratch("realistic-again");
    let (outs2, _) = write(&dir2, &again);
    for ((_, a), (_, b)) in outs.iter().zip(&outs2) {
        assert_eq!(
            fs::read(a).unwrap(),
            fs::read(b).unwrap(),
            "{} differs",
            a.display()
        );
    }
    let _ = fs::remove_dir_all(dir);
    let _ = fs::remove_dir_all(dir2);
}

#[test]
fn damaged_input_still_gives_valid_sboms_and_warnings() {
    let (mut graph, mut store_layers) = realistic();
    // A path the graph does not know, one whose name parseDrvName cannot
    // split, a malformed hash, an SRI hash, a licence with no SPDX id.
    let missing = "/nix/store/00000000000000000000000000000000-missing-1.0".to_owned();
    let nameless = "/nix/store/11111111111111111111111111111111--2.0".to_owned();
    store_layers[0].push(missing.clone());
    store_layers[0].push(nameless.clone());
    graph.push(GraphEntry {
        path: nameless.clone(),
        nar_hash: Some("sha256-ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=".into()),
        nar_size: 3,
        references: vec![],
    });
    graph[0].nar_hash = Some("sha256:not-a-hash".into());
    let bad_hash_path = graph[0].path.clone();
    let mut meta = meta(&graph);
    meta.insert(
        nameless.clone(),
        PackageMeta {
            licenses: vec![License {
                spdx_id: None,
                name: Some("Unfree (redistributable)".into()),
            }],
            homepage: Some("not a url".into()),
            ..Default::default()
        },
    );
    let mut input = SbomInput::from_graph(identity(), image_layers(&store_layers), &graph, &meta);
    // No manifest digest (a docker-archive), no created time.
    input.image.manifest_digest = None;
    input.image.created_unix = None;
    input.store_paths.push(StorePath {
        layer: Some(99),
        ..input.store_paths[0].clone()
    });
    let dir = scratch("damaged");
    let (outs, warnings) = write(&dir, &input);
    validate(&outs);
    let all = warnings.join("\n");
    for (what, want) in [
        (&missing, "not in the reference graph"),
        (&nameless, "parseDrvName"),
        (&nameless, "homepage"),
        (&bad_hash_path, "NAR hash"),
        (&input.store_paths[0].path, "listed twice"),
    ] {
        assert!(
            warnings
                .iter()
                .any(|w| w.contains(what.as_str()) && w.contains(want)),
            "no warning about {what} ({want}) in:\n{all}"
        );
    }
    assert!(warnings.iter().all(|w| !w.contains('\n')), "one line each");
    for (_, file) in &outs {
        let text = fs::read_to_string(file).unwrap();
        assert!(
            text.contains(&missing) && text.contains(&nameless),
            "listed anyway"
        );
        assert!(
            text.contains("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
            "SRI hash converted"
        );
    }
    let _ = fs::remove_dir_all(dir);
}

/// The executable end to end: a graph-form conf on the reference fixture
/// with Nix metadata in the conf, SBOMs written beside the image, valid,
/// byte-identical across two runs, and naming the image ID and diff_ids the
/// archive holds; a `store_layers` conf (no graph) still gets SBOMs, with a
/// warning per path; misused options fail before streaming.
#[test]
fn executable_writes_sboms() {
    common::fixture();
    let dir = common::Scratch::new("sbom-exe");
    let conf = common::vector("basic")["conf"].clone();
    let layers: Vec<Vec<String>> = serde_json::from_value(conf["store_layers"].clone()).unwrap();
    let all: Vec<String> = layers.iter().flatten().cloned().collect();
    let hello = all.iter().find(|p| p.contains("-hello-")).unwrap().clone();
    let graph: Vec<Value> = all
        .iter()
        .map(|p| {
            let refs: Vec<&String> = if *p == hello {
                all.iter().collect()
            } else {
                vec![p]
            };
            json!({"path": p, "narSize": 1000, "references": refs,
                   "narHash": "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s"})
        })
        .collect();
    let graph_path = dir.path("graph.json");
    fs::write(&graph_path, serde_json::to_vec(&graph).unwrap()).unwrap();
    let mut graph_conf = conf.clone();
    graph_conf.as_object_mut().unwrap().remove("store_layers");
    graph_conf["layering"] = json!({"graph": graph_path, "max_layers": 100});
    graph_conf["sbom"] = json!({"formats": ["spdx", "cyclonedx"], "packages": [
        {"path": hello, "pname": "hello", "version": "2.12.1",
         "license": [{"spdxId": "GPL-3.0-or-later", "fullName": "GNU GPL v3.0 or later"}],
         "homepage": "https://www.gnu.org/software/hello/", "description": "Hello"}]});
    let conf_path = dir.conf("graph-conf.json", &graph_conf);

    let run = |conf: &Path, tag: &str| {
        let spdx = dir.path(&format!("{tag}.spdx.json"));
        let cdx = dir.path(&format!("{tag}.cdx.json"));
        let tar = dir.path(&format!("{tag}.tar"));
        let out = common::run(
            &[
                conf.as_os_str(),
                "-q".as_ref(),
                "-o".as_ref(),
                tar.as_os_str(),
                "--sbom".as_ref(),
                "spdx".as_ref(),
                "--sbom-out".as_ref(),
                spdx.as_os_str(),
                "--sbom".as_ref(),
                "cyclonedx".as_ref(),
                "--sbom-out".as_ref(),
                cdx.as_os_str(),
            ],
            &[],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8(out.stderr).unwrap();
        (
            vec![(SbomFormat::Spdx, spdx), (SbomFormat::CycloneDx, cdx)],
            tar,
            stderr,
        )
    };
    let (outs, tar, stderr) = run(&conf_path, "a");
    assert!(
        stderr.is_empty(),
        "no warnings for a complete graph: {stderr}"
    );
    validate(&outs);
    let (again, _, _) = run(&conf_path, "b");
    for ((_, a), (_, b)) in outs.iter().zip(&again) {
        assert_eq!(
            fs::read(a).unwrap(),
            fs::read(b).unwrap(),
            "{} differs between runs",
            a.display()
        );
    }

    // The SBOM names what the archive holds.
    let archive = common::Archive::parse(&fs::read(&tar).unwrap());
    let config: Value = serde_json::from_slice(archive.config()).unwrap();
    let image_id = format!("sha256:{}", common::sha256_hex(archive.config()));
    let bom = read(&outs[1].1);
    let props: BTreeMap<String, String> = bom["metadata"]["component"]["properties"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (s(&p["name"]), s(&p["value"])))
        .collect();
    assert_eq!(props["stream-layered-image:image:id"], image_id);
    assert_eq!(
        props["stream-layered-image:image:tag"],
        s(&conf["repo_tag"])
    );
    let layer_ids: Vec<String> = bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["type"] == "file")
        .map(|c| format!("sha256:{}", s(&c["hashes"][0]["content"])))
        .collect();
    let diff_ids: Vec<String> =
        serde_json::from_value(config["rootfs"]["diff_ids"].clone()).unwrap();
    assert_eq!(layer_ids, diff_ids);
    let hello_c = bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["bom-ref"] == hello.as_str())
        .unwrap();
    assert_eq!(hello_c["licenses"][0]["expression"], "GPL-3.0-or-later");

    // nixpkgs' form: no graph, still SBOMs, one warning per path.
    let plain_path = dir.conf("plain-conf.json", &conf);
    let (outs, _, stderr) = run(&plain_path, "plain");
    validate(&outs);
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.contains("not in the reference graph"))
            .count(),
        all.len(),
        "{stderr}"
    );

    // Misuse fails before anything is written.
    let out = Command::new(common::bin())
        .arg(&plain_path)
        .args(["--sbom", "spdx", "--sbom-out", "a", "--sbom-out", "b"])
        .output()
        .unwrap();
    assert!(!out.status.success() && out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sbom-out"));
}
