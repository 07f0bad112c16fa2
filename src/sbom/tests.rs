//! Unit tests of the module's entry points: both formats on a small image,
//! determinism, the conf's `sbom` object, `--sbom`/`--sbom-out` pairing.
//! The real validators run in `tests/sbom.rs`.

use super::*;
use crate::nix::GraphEntry;
use serde_json::Value;

const GLIBC: &str = "/nix/store/l71p0p58769lw2ylm2kc379mfld70j10-glibc-2.40-66";
const HELLO: &str = "/nix/store/8wv0ajg6blqskxsynzn76bdh8rq334qh-hello-2.12.1";
const BASE_JSON: &str = "/nix/store/d4bghra85jbnpfsirrxjq7m6fy90jvgc-hello-base.json";
const HASH: &str = "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s";
const HASH_HEX: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

fn digest(c: &str) -> String {
    format!("sha256:{}", c.repeat(64))
}

fn input() -> SbomInput {
    let graph = vec![
        GraphEntry {
            path: GLIBC.into(),
            nar_hash: Some(HASH.into()),
            nar_size: 30,
            references: vec![GLIBC.into()],
        },
        GraphEntry {
            path: HELLO.into(),
            nar_hash: Some(HASH.into()),
            nar_size: 77,
            references: vec![GLIBC.into(), HELLO.into()],
        },
        GraphEntry {
            path: BASE_JSON.into(),
            nar_hash: Some(HASH.into()),
            nar_size: 1,
            references: vec![],
        },
    ];
    let layers = vec![
        Layer {
            diff_id: digest("1"),
            kind: LayerKind::Base,
        },
        Layer {
            diff_id: digest("2"),
            kind: LayerKind::Store(vec![GLIBC.into()]),
        },
        Layer {
            diff_id: digest("3"),
            kind: LayerKind::Store(vec![HELLO.into()]),
        },
        Layer {
            diff_id: digest("4"),
            kind: LayerKind::Customisation,
        },
    ];
    let meta = BTreeMap::from([(
        HELLO.to_owned(),
        PackageMeta {
            name: Some("hello".into()),
            version: Some("2.12.1".into()),
            licenses: vec![License {
                spdx_id: Some("GPL-3.0-or-later".into()),
                name: Some("GNU General Public License v3.0 or later".into()),
            }],
            homepage: Some("https://www.gnu.org/software/hello/".into()),
            description: Some("A program that produces a familiar, friendly greeting".into()),
        },
    )]);
    let image = ImageIdentity {
        name: "registry.example/team/hello".into(),
        manifest_digest: Some(digest("a")),
        image_id: digest("b"),
        tags: vec!["registry.example/team/hello:latest".into()],
        created_unix: Some(1),
        reproducible: true,
        architecture: Some("amd64".into()),
    };
    SbomInput::from_graph(image, layers, &graph, &meta)
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn spdx_document() {
    let (bytes, warnings) = spdx(&input());
    assert!(warnings.is_empty(), "{warnings:?}");
    let doc = json(&bytes);
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    assert_eq!(doc["creationInfo"]["created"], "1970-01-01T00:00:01Z");
    let ns = doc["documentNamespace"].as_str().unwrap();
    assert!(ns.starts_with("https://"), "{ns}");
    let packages = doc["packages"].as_array().unwrap();
    // The image, four layers, two store paths (not the excluded base JSON).
    assert_eq!(packages.len(), 7);
    let hello = packages
        .iter()
        .find(|p| p["packageFileName"] == HELLO)
        .unwrap();
    assert_eq!(hello["name"], "hello");
    assert_eq!(hello["versionInfo"], "2.12.1");
    assert_eq!(hello["licenseDeclared"], "GPL-3.0-or-later");
    assert_eq!(hello["checksums"][0]["checksumValue"], HASH_HEX);
    assert_eq!(
        hello["externalRefs"][0]["referenceLocator"],
        "pkg:nix/hello@2.12.1"
    );
    let rels: Vec<(String, String, String)> = doc["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap().to_owned();
            (
                s("spdxElementId"),
                s("relationshipType"),
                s("relatedSpdxElement"),
            )
        })
        .collect();
    let hello_id = hello["SPDXID"].as_str().unwrap();
    let glibc_id = packages
        .iter()
        .find(|p| p["packageFileName"] == GLIBC)
        .unwrap()["SPDXID"]
        .as_str()
        .unwrap();
    assert!(rels.contains(&(
        "SPDXRef-DOCUMENT".into(),
        "DESCRIBES".into(),
        "SPDXRef-Image".into()
    )));
    assert!(rels.contains(&("SPDXRef-Layer-3".into(), "CONTAINS".into(), hello_id.into())));
    assert!(rels.contains(&(hello_id.into(), "DEPENDS_ON".into(), glibc_id.into())));
    assert_eq!(rels.iter().filter(|r| r.1 == "DEPENDS_ON").count(), 1);
}

#[test]
fn cyclonedx_document() {
    let (bytes, warnings) = cyclonedx(&input());
    assert!(warnings.is_empty(), "{warnings:?}");
    let bom = json(&bytes);
    assert_eq!(bom["specVersion"], "1.6");
    let serial = bom["serialNumber"].as_str().unwrap();
    assert!(
        serial.starts_with("urn:uuid:") && serial.as_bytes()[23] == b'5',
        "{serial}"
    );
    assert_eq!(bom["metadata"]["timestamp"], "1970-01-01T00:00:01Z");
    assert_eq!(bom["metadata"]["properties"][0]["name"], "cdx:reproducible");
    let image = &bom["metadata"]["component"];
    assert_eq!(image["type"], "container");
    assert_eq!(
        image["purl"],
        format!("pkg:oci/hello@sha256%3A{}?arch=amd64&repository_url=registry.example%2Fteam%2Fhello&tag=latest", "a".repeat(64))
    );
    let components = bom["components"].as_array().unwrap();
    assert_eq!(components.len(), 6);
    let hello = components.iter().find(|c| c["bom-ref"] == HELLO).unwrap();
    assert_eq!(hello["licenses"][0]["expression"], "GPL-3.0-or-later");
    assert_eq!(hello["hashes"][0]["content"], HASH_HEX);
    let prop = |c: &Value, n: &str| {
        c["properties"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .map(|p| p["value"].as_str().unwrap().to_owned())
    };
    assert_eq!(prop(hello, "nix:store_path").as_deref(), Some(HELLO));
    assert_eq!(prop(hello, "nix:narinfo:nar_size").as_deref(), Some("77"));
    assert_eq!(
        prop(hello, "stream-layered-image:layer:diff_id"),
        Some(digest("3"))
    );
    let deps = bom["dependencies"].as_array().unwrap();
    let of = |r: &str| deps.iter().find(|d| d["ref"] == r).unwrap()["dependsOn"].clone();
    assert_eq!(of(HELLO), serde_json::json!([GLIBC]));
    assert_eq!(
        of("image"),
        serde_json::json!(["layer-1", "layer-2", "layer-3", "layer-4", HELLO])
    );
}

#[test]
fn deterministic_and_content_addressed_ids() {
    let a = input();
    for format in [SbomFormat::Spdx, SbomFormat::CycloneDx] {
        assert_eq!(render(format, &a).0, render(format, &a).0);
        // Input order does not matter.
        let mut b = a.clone();
        b.store_paths.reverse();
        assert_eq!(render(format, &a).0, render(format, &b).0);
        // Other content, another document id.
        let mut c = a.clone();
        c.image.tags.push("hello:other".into());
        let id = |bytes: Vec<u8>| {
            let v = json(&bytes);
            format!("{}{}", v["documentNamespace"], v["serialNumber"])
        };
        assert_ne!(id(render(format, &a).0), id(render(format, &c).0));
    }
    // No created time: no timestamp in CycloneDX, the epoch in SPDX.
    let mut d = a.clone();
    d.image.created_unix = None;
    assert!(json(&cyclonedx(&d).0)["metadata"]
        .get("timestamp")
        .is_none());
    assert_eq!(
        json(&spdx(&d).0)["creationInfo"]["created"],
        "1970-01-01T00:00:00Z"
    );
}

#[test]
fn a_path_missing_from_the_graph_is_listed_with_a_warning() {
    let mut i = input();
    let odd = "/nix/store/cccccccccccccccccccccccccccccccc--9";
    i.layers[2].kind = LayerKind::Store(vec![HELLO.into(), odd.into()]);
    i.store_paths.push(StorePath {
        path: odd.into(),
        layer: Some(2),
        ..Default::default()
    });
    for format in [SbomFormat::Spdx, SbomFormat::CycloneDx] {
        let (bytes, warnings) = render(format, &i);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains(odd) && warnings.iter().all(|w| !w.contains('\n')));
        assert!(String::from_utf8(bytes).unwrap().contains(odd));
    }
}

#[test]
fn non_spdx_licences() {
    let mut i = input();
    i.store_paths[1].meta.licenses.push(License {
        spdx_id: None,
        name: Some("Unfree".into()),
    });
    let doc = json(&spdx(&i).0);
    let hello = doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["packageFileName"] == HELLO)
        .unwrap()
        .clone();
    assert_eq!(
        hello["licenseDeclared"],
        "GPL-3.0-or-later AND LicenseRef-Unfree"
    );
    assert_eq!(
        doc["hasExtractedLicensingInfos"][0]["licenseId"],
        "LicenseRef-Unfree"
    );
    let bom = json(&cyclonedx(&i).0);
    let c = bom["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["bom-ref"] == HELLO)
        .unwrap()
        .clone();
    assert_eq!(
        c["licenses"],
        serde_json::json!([{"license": {"name": "GPL-3.0-or-later"}}, {"license": {"name": "Unfree"}}])
    );
}

#[test]
fn conf_sbom_object() {
    let conf = serde_json::json!({
        "sbom": {
            "formats": ["spdx", "cyclonedx", "spdx", "xml"],
            "packages": [
                {"path": HELLO, "pname": "hello", "version": "2.12.1",
                 "license": {"spdxId": "GPL-3.0-or-later", "fullName": "GPL 3+"},
                 "homepage": "https://example.org", "description": 5},
                {"path": HELLO, "pname": "other", "description": "second"},
                {"path": GLIBC, "license": ["LGPL", 3]},
                {"pname": "no path"}
            ]
        }
    });
    let (c, warnings) = ConfSbom::from_conf_value(&conf);
    assert_eq!(c.formats, vec![SbomFormat::Spdx, SbomFormat::CycloneDx]);
    let hello = &c.meta[HELLO];
    assert_eq!(hello.name.as_deref(), Some("hello"), "the first entry wins");
    assert_eq!(
        hello.description.as_deref(),
        Some("second"),
        "a bad field is skipped"
    );
    assert_eq!(
        hello.licenses[0].spdx_id.as_deref(),
        Some("GPL-3.0-or-later")
    );
    assert_eq!(c.meta[GLIBC].licenses.len(), 1);
    assert_eq!(warnings.len(), 4, "{warnings:?}");
    assert_eq!(
        ConfSbom::from_conf_value(&serde_json::json!({})).0,
        ConfSbom::default()
    );
}

#[test]
fn pairing_formats_and_files() {
    use SbomFormat::*;
    let p = |s: &str| PathBuf::from(s);
    assert_eq!(
        pair_outputs(&[Spdx, CycloneDx], &[p("a"), p("b")]).unwrap(),
        vec![(Spdx, p("a")), (CycloneDx, p("b"))]
    );
    assert!(pair_outputs(&[Spdx], &[]).unwrap().is_empty());
    for (f, o, why) in [
        (&[Spdx, CycloneDx][..], &[p("a")][..], "same order"),
        (&[Spdx, Spdx][..], &[p("a"), p("b")][..], "twice"),
        (&[Spdx, CycloneDx][..], &[p("a"), p("a")][..], "twice"),
    ] {
        let e = pair_outputs(f, o).unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
    }
    assert_eq!(SbomFormat::Spdx.media_type(), "application/spdx+json");
    assert_eq!(
        SbomFormat::CycloneDx.media_type(),
        "application/vnd.cyclonedx+json"
    );
}

#[test]
fn files_are_written_with_their_formats() {
    let dir = std::env::temp_dir().join(format!("sli-sbom-unit-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let outs = vec![
        (SbomFormat::CycloneDx, dir.join("x.cdx.json")),
        (SbomFormat::Spdx, dir.join("x.spdx.json")),
    ];
    let warnings = write_sbom_files(&outs, &input()).unwrap();
    assert!(warnings.is_empty());
    assert_eq!(
        json(&fs::read(&outs[0].1).unwrap())["bomFormat"],
        "CycloneDX"
    );
    assert_eq!(
        json(&fs::read(&outs[1].1).unwrap())["spdxVersion"],
        "SPDX-2.3"
    );
    let err =
        write_sbom_files(&[(SbomFormat::Spdx, dir.join("no/such/dir/x"))], &input()).unwrap_err();
    assert!(format!("{err:#}").contains("--sbom-out"), "{err:#}");
    fs::remove_dir_all(&dir).unwrap();
}

/// The CLI fields (`src/cli.rs`) that main pairs with [`pair_outputs`].
#[test]
fn sbom_options_repeat_in_order() {
    use crate::cli::Cli;
    use clap::Parser;
    let c = Cli::try_parse_from([
        "x",
        "c.json",
        "--sbom",
        "cyclonedx",
        "--sbom-out",
        "a.cdx.json",
        "--sbom",
        "spdx",
        "--sbom-out",
        "a.spdx.json",
    ])
    .unwrap();
    assert_eq!(c.sbom, vec![SbomFormat::CycloneDx, SbomFormat::Spdx]);
    assert_eq!(
        c.sbom_out,
        vec![PathBuf::from("a.cdx.json"), PathBuf::from("a.spdx.json")]
    );
    assert!(Cli::try_parse_from(["x", "c.json", "--sbom", "xml"]).is_err());
}

#[test]
fn layers_and_identity_for_main() {
    let ids: Vec<String> = ["1", "2", "3", "4"].iter().map(|c| digest(c)).collect();
    let store = vec![vec![GLIBC.to_owned()], vec![HELLO.to_owned()]];
    let layers = image_layers(&ids, 1, &store).unwrap();
    assert_eq!(layers[0].kind, LayerKind::Base);
    assert_eq!(layers[2].kind, LayerKind::Store(vec![HELLO.to_owned()]));
    assert_eq!(layers[3].kind, LayerKind::Customisation);
    assert!(image_layers(&ids, 0, &store)
        .unwrap_err()
        .to_string()
        .contains("diff_ids"));
    let id = ImageIdentity::for_repo_tag("host:5000/team/app:1.0", "sha256:x");
    assert_eq!((id.name.as_str(), id.tags.len()), ("host:5000/team/app", 1));
    assert_eq!(
        ImageIdentity::for_repo_tag("host:5000/app", "x").name,
        "host:5000/app"
    );
}

/// Damaged and odd input never panics and always gives parseable JSON with
/// one-line warnings: random store paths (any characters, wrong shapes),
/// hashes, references to nowhere, layer indices, licences and times.
#[test]
fn odd_input_never_panics() {
    let seed = std::cell::Cell::new(0x9e37_79b9_7f4a_7c15u64);
    let next = || {
        let mut x = seed.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        seed.set(x);
        x
    };
    let pieces = [
        "",
        "-",
        "--1",
        "é",
        "\n",
        "/",
        "/nix/store/",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "-x-1.0",
        "sha256:",
        "sha256-",
        "=",
        "+",
        "?",
        " ",
        "\u{0}",
        "1zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
        "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
        "https://",
        "LicenseRef-",
        "MIT",
        ":",
    ];
    let text = || -> String {
        (0..next() % 5)
            .map(|_| pieces[(next() % pieces.len() as u64) as usize])
            .collect()
    };
    for _ in 0..300 {
        let paths: Vec<String> = (0..text().len() % 6 + 1).map(|_| text()).collect();
        let mut input = SbomInput {
            image: ImageIdentity {
                name: text(),
                manifest_digest: Some(text()).filter(|s| !s.is_empty()),
                image_id: text(),
                tags: vec![text()],
                created_unix: Some(next() as i64),
                reproducible: next() % 2 == 0,
                architecture: Some(text()),
            },
            layers: vec![Layer {
                diff_id: text(),
                kind: LayerKind::Store(paths.clone()),
            }],
            store_paths: Vec::new(),
        };
        for p in &paths {
            input.store_paths.push(StorePath {
                path: p.clone(),
                nar_hash: Some(text()),
                nar_size: Some(next()),
                references: Some(vec![
                    paths[(next() % paths.len() as u64) as usize].clone(),
                    text(),
                ]),
                layer: Some((next() % 3) as usize),
                meta: PackageMeta {
                    name: Some(text()),
                    version: Some(text()),
                    licenses: vec![License {
                        spdx_id: Some(text()),
                        name: Some(text()),
                    }],
                    homepage: Some(text()),
                    description: Some(text()),
                },
            });
        }
        for format in [SbomFormat::Spdx, SbomFormat::CycloneDx] {
            let (bytes, warnings) = render(format, &input);
            serde_json::from_slice::<Value>(&bytes).unwrap();
            assert!(
                warnings.iter().all(|w| !w.contains(char::is_control)),
                "{warnings:?}"
            );
        }
    }
}
