//! SBOMs delivered with the image (issue 10, "Delivery"), on the interop
//! fixture (busybox + a script, its layers decided from closureInfo's
//! graph):
//!
//! - `--oci-dir` with `--sbom spdx --sbom cyclonedx`: two untagged
//!   `index.json` entries, each an artifact manifest (empty config, one
//!   SBOM layer, `subject` = the image manifest) whose SBOM names the
//!   manifest digest and passes the validators; skopeo and umoci still
//!   read `DIR:TAG`; a re-run changes nothing, a new image under the tag
//!   replaces the old image's SBOM entries; two layouts get the same bytes;
//! - `--format oci|dual` with SBOMs: the artifact blobs are in the tar, the
//!   image's entry names them, and docker (dual), containerd, podman and
//!   skopeo load it with the image ID of the archive without SBOMs; same
//!   bytes twice;
//! - `--push` with SBOMs to Debian's docker-registry (no referrers API):
//!   the `sha256-<hex>` tag is an image index listing the artifact
//!   manifests, whose `subject` is the pushed manifest; a second push adds
//!   no duplicate; a tag holding something else is not overwritten; behind
//!   a proxy that answers with `OCI-Subject` (the referrers API), no tag;
//! - `--sbom` without `--sbom-out` on a docker-archive or `--load` is one
//!   line, with nothing written.
//!
//! Missing tools print a loud `SKIPPED` line.

mod registry_support;
#[path = "support/interop.rs"]
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use registry_support::server::{Registry, Setup};
use serde_json::Value;
use support::*;

const SPDX: &str = "application/spdx+json";
const CDX: &str = "application/vnd.cyclonedx+json";
const EMPTY_DIGEST: &str =
    "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The validators' venv, as tests/sbom.rs makes it (same place, same
/// marker, so whichever test runs first installs it).
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
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check", "-r"])
            .arg(&requirements));
        fs::write(&marker, wanted).unwrap();
        venv
    })
}

/// Validates the SBOM `bytes` of `media_type` with the real validators.
fn validate(media_type: &str, bytes: &[u8], scratch: &Path) {
    let venv = venv();
    let file = scratch.join(format!("check-{}.json", sha256_hex(bytes)));
    fs::write(&file, bytes).unwrap();
    let out = match media_type {
        SPDX => Command::new(venv.join("bin/pyspdxtools"))
            .arg("-i")
            .arg(&file)
            .output(),
        CDX => Command::new(venv.join("bin/python"))
            .arg(root().join("tests/sbom/validate-cyclonedx.py"))
            .arg(&file)
            .output(),
        other => panic!("not an SBOM media type: {other}"),
    }
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let quiet = match media_type {
        SPDX => !text.to_lowercase().contains("invalid") && !text.contains("Error"),
        _ => text.starts_with("ok "),
    };
    assert!(
        out.status.success() && quiet,
        "{media_type} SBOM is not valid:\n{text}"
    );
}

fn stream(fx: &Fixture, args: &[&str]) -> Output {
    Command::new(exe())
        .arg(&fx.conf)
        .arg("--cache")
        .arg(fx.root.join("cache"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "streamer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_owned()
}

/// The image ID of the plain docker-archive: what every consumer must see.
fn docker_image_id(fx: &Fixture) -> String {
    let out = ok(stream(fx, &["-q"]));
    format!("sha256:{}", Image::parse(&out.stdout).id())
}

/// Checks one artifact manifest (by its bytes) against the image manifest
/// it must refer to; `blob` fetches a blob by digest. Returns the SBOM.
fn check_artifact(
    manifest: &[u8],
    artifact_type: &str,
    subject: &str,
    subject_size: u64,
    blob: &dyn Fn(&str) -> Vec<u8>,
    scratch: &Path,
) -> Vec<u8> {
    let m: Value = serde_json::from_slice(manifest).unwrap();
    assert_eq!(m["schemaVersion"], 2);
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m["artifactType"], artifact_type);
    assert_eq!(
        m["config"]["mediaType"],
        "application/vnd.oci.empty.v1+json"
    );
    assert_eq!(m["config"]["digest"], EMPTY_DIGEST);
    assert_eq!(m["config"]["size"], 2);
    assert_eq!(blob(EMPTY_DIGEST), b"{}");
    assert_eq!(m["subject"]["digest"], subject, "subject is our manifest");
    assert_eq!(m["subject"]["size"], subject_size);
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], artifact_type);
    let sbom = blob(&s(&layers[0]["digest"]));
    assert_eq!(
        format!("sha256:{}", sha256_hex(&sbom)),
        s(&layers[0]["digest"])
    );
    assert_eq!(sbom.len() as u64, layers[0]["size"].as_u64().unwrap());
    let text = String::from_utf8(sbom.clone()).unwrap();
    assert!(
        text.contains(subject.trim_start_matches("sha256:")),
        "the SBOM names the manifest digest {subject}"
    );
    validate(artifact_type, &sbom, scratch);
    sbom
}

fn read_layout_blob(dir: &Path, digest: &str) -> Vec<u8> {
    fs::read(
        dir.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap_or_else(|e| panic!("layout blob {digest}: {e}"))
}

/// The tagged image entry and the untagged SBOM entries of a layout.
fn layout_entries(dir: &Path) -> (Value, Vec<Value>) {
    let index: Value = serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
    let entries = index["manifests"].as_array().unwrap().clone();
    let (tagged, untagged): (Vec<Value>, Vec<Value>) = entries
        .into_iter()
        .partition(|e| e["annotations"]["org.opencontainers.image.ref.name"].is_string());
    assert_eq!(tagged.len(), 1, "one image: {index}");
    (tagged[0].clone(), untagged)
}

#[test]
fn oci_dir_carries_sbom_referrers() {
    let Some(fx) = Fixture::build_with("sbomdel-dir", Layering::Graph) else {
        return;
    };
    let id = docker_image_id(&fx);
    let dir = fx.root.join("layout");
    let d = dir.to_str().unwrap();
    let sboms = ["--sbom", "spdx", "--sbom", "cyclonedx"];
    let out = ok(stream(&fx, &[&["-q", "--oci-dir", d][..], &sboms].concat()));
    assert!(out.stdout.is_empty());

    let (image, referrers) = layout_entries(&dir);
    let manifest_digest = s(&image["digest"]);
    let manifest_size = image["size"].as_u64().unwrap();
    let manifest: Value =
        serde_json::from_slice(&read_layout_blob(&dir, &manifest_digest)).unwrap();
    assert_eq!(manifest["config"]["digest"], id.as_str());
    assert_eq!(referrers.len(), 2, "{referrers:?}");
    let types: Vec<String> = referrers.iter().map(|r| s(&r["artifactType"])).collect();
    assert_eq!(types, [SPDX, CDX]);
    let listed: Vec<String> = referrers.iter().map(|r| s(&r["digest"])).collect();
    assert_eq!(
        image["annotations"]["io.stream-layered-image.referrers"],
        listed.join(",").as_str()
    );
    for r in &referrers {
        assert_eq!(r["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        assert!(r["annotations"]["org.opencontainers.image.created"].is_string());
        let bytes = read_layout_blob(&dir, &s(&r["digest"]));
        assert_eq!(bytes.len() as u64, r["size"].as_u64().unwrap());
        check_artifact(
            &bytes,
            &s(&r["artifactType"]),
            &manifest_digest,
            manifest_size,
            &|dg| read_layout_blob(&dir, dg),
            &fx.root,
        );
    }

    // skopeo and umoci still read DIR:TAG as the image.
    let tag = fx.tag.rsplit_once(':').unwrap().1;
    let name = format!("{d}:{tag}");
    if tool_works("skopeo", &["--version"]) {
        let config = run_bytes(Command::new("skopeo").args([
            "inspect",
            "--raw",
            "--config",
            &format!("oci:{name}"),
        ]));
        assert_eq!(format!("sha256:{}", sha256_hex(&config)), id);
        let copy = fx.root.join("copied");
        run(Command::new("skopeo").args([
            "copy",
            "--quiet",
            &format!("oci:{name}"),
            &format!("oci:{}:x", copy.display()),
        ]));
    } else {
        skipped("oci_dir_carries_sbom_referrers", "no skopeo");
    }
    if tool_works("umoci", &["--version"]) {
        let bundle = fx.root.join("bundle");
        let mut umoci = Command::new("umoci");
        umoci.args(["unpack", "--image", &name]);
        if !is_root() {
            umoci.arg("--rootless");
        }
        run(umoci.arg(&bundle));
        assert!(bundle
            .join("rootfs")
            .join(fx.store_dir.join(HELLO_PATH).strip_prefix("/").unwrap())
            .join("bin/hello")
            .exists());
    } else {
        skipped("oci_dir_carries_sbom_referrers", "no umoci");
    }

    // Same image again: nothing changes (entries replaced, not added).
    let index = fs::read(dir.join("index.json")).unwrap();
    ok(stream(&fx, &[&["-q", "--oci-dir", d][..], &sboms].concat()));
    assert_eq!(fs::read(dir.join("index.json")).unwrap(), index);
    // Another layout gets the same bytes.
    let other = fx.root.join("layout2");
    ok(stream(
        &fx,
        &[&["-q", "--oci-dir", other.to_str().unwrap()][..], &sboms].concat(),
    ));
    assert_eq!(fs::read(other.join("index.json")).unwrap(), index);
    for r in &referrers {
        assert_eq!(
            read_layout_blob(&other, &s(&r["digest"])),
            read_layout_blob(&dir, &s(&r["digest"]))
        );
    }

    // A new image under the same tag: its SBOMs replace the old image's.
    let mut conf: Value = serde_json::from_slice(&fs::read(&fx.conf).unwrap()).unwrap();
    conf["config"]["Env"] = serde_json::json!(["GREETING=changed"]);
    let changed = fx.root.join("changed.json");
    fs::write(&changed, serde_json::to_vec(&conf).unwrap()).unwrap();
    ok(Command::new(exe())
        .arg(&changed)
        .args(["-q", "--oci-dir", d, "--sbom", "spdx"])
        .output()
        .unwrap());
    let (image2, referrers2) = layout_entries(&dir);
    assert_ne!(image2["digest"], image["digest"]);
    assert_eq!(referrers2.len(), 1, "{referrers2:?}");
    let m: Value =
        serde_json::from_slice(&read_layout_blob(&dir, &s(&referrers2[0]["digest"]))).unwrap();
    assert_eq!(m["subject"]["digest"], image2["digest"]);
    fx.cleanup();
}

/// The members of a tar, by name.
fn members(path: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    use std::io::Read;
    let bytes = fs::read(path).unwrap();
    let mut out = std::collections::BTreeMap::new();
    let mut tar = tar::Archive::new(&bytes[..]);
    for e in tar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut b = Vec::new();
        e.read_to_end(&mut b).unwrap();
        out.insert(name, b);
    }
    out
}

#[test]
fn archives_with_sboms_load_everywhere() {
    let Some(fx) = Fixture::build_with("sbomdel-archive", Layering::Graph) else {
        return;
    };
    let id = docker_image_id(&fx);
    for format in ["dual", "oci"] {
        let path = fx.root.join(format!("{format}.tar"));
        let p = path.to_str().unwrap();
        let tag = fx.tag.replace(":t", &format!("-{format}:t"));
        let args = [
            "-q",
            "--format",
            format,
            "-t",
            &tag,
            "--sbom",
            "spdx",
            "--sbom",
            "cyclonedx",
        ];
        ok(stream(&fx, &[&args[..], &["-o", p]].concat()));
        let again = fx.root.join(format!("{format}-again.tar"));
        ok(stream(
            &fx,
            &[&args[..], &["-o", again.to_str().unwrap()]].concat(),
        ));
        assert!(
            fs::read(&path).unwrap() == fs::read(&again).unwrap(),
            "{format}: same bytes twice"
        );

        let m = members(&path);
        let names: Vec<&String> = m.keys().collect();
        let index: Value = serde_json::from_slice(&m["index.json"]).unwrap();
        let entries = index["manifests"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "index.json lists only the image");
        let manifest_digest = s(&entries[0]["digest"]);
        let manifest_size = entries[0]["size"].as_u64().unwrap();
        let listed = s(&entries[0]["annotations"]["io.stream-layered-image.referrers"]);
        let blob = |dg: &str| -> Vec<u8> {
            let name = format!("blobs/sha256/{}", dg.trim_start_matches("sha256:"));
            m.get(&name)
                .unwrap_or_else(|| panic!("{format}: no {name} in {names:?}"))
                .clone()
        };
        let mut types = Vec::new();
        for digest in listed.split(',') {
            let bytes = blob(digest);
            let t = s(&serde_json::from_slice::<Value>(&bytes).unwrap()["artifactType"]);
            check_artifact(&bytes, &t, &manifest_digest, manifest_size, &blob, &fx.root);
            types.push(t);
        }
        assert_eq!(types, [SPDX, CDX]);
        // The referrers come before index.json, which stays last but for
        // Docker's manifest.json.
        let order = tar_order(&path);
        let at = |n: &str| order.iter().position(|o| o == n).unwrap();
        for digest in listed.split(',') {
            assert!(at(&format!("blobs/sha256/{}", &digest[7..])) < at("index.json"));
        }

        if format == "dual" && tool_works("docker", &["info"]) {
            let _rmi = Cleanup(vec![
                "docker".into(),
                "rmi".into(),
                "-f".into(),
                tag.clone(),
            ]);
            let said = run(Command::new("docker").arg("load").arg("-i").arg(&path));
            assert!(said.contains(&format!("Loaded image: {tag}")), "{said}");
            let got = run(Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", &tag]));
            assert_eq!(got.trim(), id, "docker");
        } else if format == "dual" {
            skipped("archives_with_sboms_load_everywhere", "no docker daemon");
        }
        if let Some(address) = containerd_address() {
            let ns = format!("sli-sbomdel-{}-{format}", std::process::id());
            let _rm = containerd_cleanup(&address, &ns);
            run(Command::new("ctr")
                .args(["-a", &address, "-n", &ns, "images", "import"])
                .arg(&path));
            let listed = run(Command::new("ctr").args(["-a", &address, "-n", &ns, "images", "ls"]));
            let name = format!("docker.io/library/{tag}");
            let line = listed
                .lines()
                .find(|l| l.split_whitespace().next() == Some(name.as_str()))
                .unwrap_or_else(|| panic!("ctr lists no {name}:\n{listed}"));
            assert!(line.contains(&manifest_digest), "{line}");
        } else {
            skipped("archives_with_sboms_load_everywhere", "no containerd");
        }
        if tool_works("podman", &["--version"]) {
            let (loaded, _guard) = podman_load(&path);
            let got =
                run(Command::new("podman").args(["image", "inspect", "-f", "{{.Id}}", &loaded]));
            assert_eq!(format!("sha256:{}", got.trim()), id, "podman, {format}");
        } else {
            skipped("archives_with_sboms_load_everywhere", "no podman");
        }
        if tool_works("skopeo", &["--version"]) {
            let config = run_bytes(Command::new("skopeo").args([
                "inspect",
                "--raw",
                "--config",
                &format!("oci-archive:{p}"),
            ]));
            assert_eq!(format!("sha256:{}", sha256_hex(&config)), id, "skopeo");
            let copy = fx.root.join(format!("copied-{format}"));
            run(Command::new("skopeo").args([
                "copy",
                "--quiet",
                &format!("oci-archive:{p}"),
                &format!("oci:{}:x", copy.display()),
            ]));
        } else {
            skipped("archives_with_sboms_load_everywhere", "no skopeo");
        }
    }
    fx.cleanup();
}

fn tar_order(path: &Path) -> Vec<String> {
    let bytes = fs::read(path).unwrap();
    let mut tar = tar::Archive::new(&bytes[..]);
    tar.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn containerd_cleanup(address: &str, ns: &str) -> Cleanup {
    Cleanup(vec![
        "sh".into(),
        "-c".into(),
        format!(
            "ctr -a {address} -n {ns} images ls -q | xargs -r ctr -a {address} -n {ns} images rm --sync; \
             ctr -a {address} -n {ns} content ls -q | xargs -r ctr -a {address} -n {ns} content rm; \
             ctr -a {address} namespaces rm {ns}"
        ),
    ])
}

fn skopeo_raw(reference: &str) -> Vec<u8> {
    run_bytes(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]))
}

#[test]
fn push_lists_sboms_in_the_referrers_tag() {
    for tool in ["docker-registry", "skopeo"] {
        if !registry_support::have(tool) {
            skipped(
                "push_lists_sboms_in_the_referrers_tag",
                &format!("no {tool}"),
            );
            return;
        }
    }
    let Some(fx) = Fixture::build_with("sbomdel-push", Layering::Graph) else {
        return;
    };
    let id = docker_image_id(&fx);
    let reg = Registry::start(Setup::default());
    let repo = format!("{}/sli/app", reg.host());
    let r = format!("{repo}:v1");
    let args = ["--push", &r, "--sbom", "spdx", "--sbom", "cyclonedx"];
    let out = ok(stream(&fx, &args));
    let printed = String::from_utf8(out.stdout).unwrap();
    let digest = printed.trim().rsplit_once('@').unwrap().1.to_owned();
    let image = skopeo_raw(&r);
    assert_eq!(format!("sha256:{}", sha256_hex(&image)), digest);
    let manifest: Value = serde_json::from_slice(&image).unwrap();
    assert_eq!(manifest["config"]["digest"], id.as_str());

    // Debian's registry has no referrers API: the fallback tag lists them.
    let tag = format!("sha256-{}", digest.trim_start_matches("sha256:"));
    let index_bytes = skopeo_raw(&format!("{repo}:{tag}"));
    let index: Value = serde_json::from_slice(&index_bytes).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let entries = index["manifests"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{index}");
    let scratch = fx.root.join("pulled");
    fs::create_dir_all(&scratch).unwrap();
    let blob = |dg: &str| -> Vec<u8> {
        // skopeo has no "get blob"; the registry's HTTP API is plain here.
        let url = format!("http://{}/v2/sli/app/blobs/{dg}", reg.host());
        let file = scratch.join(dg.trim_start_matches("sha256:"));
        run(Command::new("curl")
            .args(["-sfL", "-o"])
            .arg(&file)
            .arg(&url));
        fs::read(&file).unwrap()
    };
    let mut types = Vec::new();
    for e in entries {
        let d = s(&e["digest"]);
        let bytes = skopeo_raw(&format!("{repo}@{d}"));
        assert_eq!(format!("sha256:{}", sha256_hex(&bytes)), d);
        let t = s(&e["artifactType"]);
        assert!(e["annotations"]["org.opencontainers.image.created"].is_string());
        if registry_support::have("curl") {
            check_artifact(&bytes, &t, &digest, image.len() as u64, &blob, &fx.root);
        } else {
            let m: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(m["subject"]["digest"], digest.as_str());
        }
        types.push(t);
    }
    assert_eq!(types, [SPDX, CDX]);

    // Pushed again: the same SBOMs, no duplicate entry.
    ok(stream(&fx, &args));
    assert_eq!(skopeo_raw(&format!("{repo}:{tag}")), index_bytes);

    // A referrers tag holding something else is not overwritten: one line.
    let other = format!("{}/sli/other", reg.host());
    ok(stream(&fx, &["-q", "--push", &format!("{other}:v1")]));
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{other}:v1"),
        &format!("docker://{other}:{tag}"),
    ]));
    let out = stream(
        &fx,
        &["-q", "--push", &format!("{other}:v1"), "--sbom", "spdx"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&format!("referrers tag {tag}")) && err.contains("not an image index"),
        "{err}"
    );
    fx.cleanup();
}

#[test]
fn sbom_without_a_place_is_one_line() {
    let Some(fx) = Fixture::build("sbomdel-misuse") else {
        return;
    };
    let file = fx.root.join("image.tar");
    for extra in [
        &["-o", file.to_str().unwrap()][..],
        &["--load", "docker"][..],
        &["--digests-only", fx.root.join("d.json").to_str().unwrap()][..],
    ] {
        let out = stream(&fx, &[&["--sbom", "spdx"][..], extra].concat());
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {err}");
        assert!(
            lines[0].starts_with("stream-layered-image: --sbom needs --sbom-out FILE"),
            "{err}"
        );
        assert!(out.stdout.is_empty());
    }
    assert!(!file.exists(), "nothing written");
    assert!(!fx.root.join("d.json").exists(), "nothing written");
    fx.cleanup();
}

/// A registry that answers the referrer's `PUT` with `OCI-Subject` has the
/// referrers API: no referrers tag is read or written. (A proxy adds the
/// header, since Debian's registry has no such API.)
#[test]
fn registry_with_referrers_api_gets_no_tag() {
    if !registry_support::have("docker-registry") {
        skipped(
            "registry_with_referrers_api_gets_no_tag",
            "no docker-registry",
        );
        return;
    }
    let Some(fx) = Fixture::build_with("sbomdel-api", Layering::Graph) else {
        return;
    };
    let reg = Registry::start(Setup::default());
    let proxy = registry_support::proxy::Proxy::start(reg.port, |line| {
        if line.starts_with("PUT /v2/sli/app/manifests/sha256:") {
            registry_support::proxy::Action::Respond(201, vec!["OCI-Subject: sha256:x".into()])
        } else {
            registry_support::proxy::Action::Forward
        }
    });
    let r = format!("127.0.0.1:{}/sli/app:v1", proxy.port);
    let out = ok(stream(
        &fx,
        &["--push", &r, "--sbom", "spdx", "--sbom", "cyclonedx"],
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(proxy.count("PUT /v2/sli/app/manifests/sha256:"), 2, "{err}");
    assert_eq!(proxy.count("/manifests/sha256-"), 0, "no referrers tag");
    assert!(
        err.contains("listed by the registry's referrers API"),
        "{err}"
    );
    fx.cleanup();
}
