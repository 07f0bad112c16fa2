//! The registry client (src/registry, issue 8) against a real registry:
//! Debian's `docker-registry` (distribution 2.8) started here on 127.0.0.1
//! with its own config, checked from the outside with `skopeo inspect`,
//! the registry's access log and, when a daemon answers, `docker pull` +
//! `docker run`.
//!
//! - `plain_push_skopeo_and_second_push_uploads_nothing`: HTTP, two tags,
//!   digests and media types as skopeo sees them, a second push uploads nothing
//! - `one_changed_layer_uploads_only_it`, `docker_format_and_mount_from`
//! - the manifest the tag held: `unchanged_push_checks_no_blob` (one manifest
//!   GET, no HEAD), `one_leaf_change_heads_only_new_blobs`,
//!   `unusable_tag_manifest_means_heads` (an index, junk, a wrong digest),
//!   `vanished_blob_is_checked_again` (BLOB_UNKNOWN on the manifest PUT),
//!   `new_tag_uses_earlier_manifests` (by digest, when no tag has one)
//! - `tls_generated_ca_bad_tls_and_insecure`: certs.d, an untrusted
//!   certificate (one line), `insecure_registries`
//! - `basic_auth_htpasswd`, `bearer_tokens_expiry_and_mount`: auth flows,
//!   wrong credentials (one line, no secret)
//! - `faults_reset_500_429_still_push`, `always_failing_registry_leaves_no_manifest`
//! - `error_lines`, `upload_checks_known_digest`, `hostile_server_is_bounded`,
//!   `lying_registry_is_an_error`, `monolithic_fallback`
//! - `small_blobs_put_whole_long_ones_patch`, `reset_mid_whole_put_is_retried`
//! - `credential_files_and_helpers` (child processes), `bearer_identity_token`
//! - `push_all_reads_the_store_once`, `config_and_manifest_built_from_upload_results`,
//!   `big_blob_streams_in_bounded_memory`
//! - `docker_pull_and_run` (skipped loudly without a daemon)

mod registry_support;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use stream_layered_image::reference::Reference;
use stream_layered_image::registry::{
    push, push_with_mounts, BlobDigest, BlobSource, Client, ConfigSpec, Credential, ManifestFormat,
    ManifestSpec, Options, PushPlan, PushReport, RetryPolicy, Timeouts, MAX_HELD,
};

use registry_support::blobs::{self, Layer};
use registry_support::proxy::{Action, Proxy};
use registry_support::server::{Registry, Setup};
use registry_support::token::TokenService;

const USER: &str = "sli-user";
const PASS: &str = "s3cret-PASS-9z";

/// Fast retries, no credential files of this machine, short time limits.
fn opts() -> Options {
    registry_support::certs_d();
    Options {
        retry: RetryPolicy {
            attempts: 4,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(400),
            max_retry_after: Duration::from_secs(2),
            max_total: Duration::from_secs(30),
        },
        timeouts: Timeouts {
            connect: Duration::from_secs(5),
            io: Duration::from_secs(20),
            request: Duration::from_secs(30),
        },
        no_credential_files: true,
        ..Options::default()
    }
}

/// [`opts`], every blob streamed in a `PATCH` (none held and sent whole):
/// for the tests that count or cut `PATCH`es.
fn streaming() -> Options {
    Options {
        whole_upload_max: 0,
        ..opts()
    }
}

fn with_creds(user: &str, pass: &str) -> Options {
    Options {
        creds: Some(Credential::Basic {
            username: user.into(),
            password: pass.into(),
        }),
        ..opts()
    }
}

fn client(host: &str, repo: &str, o: &Options) -> Client {
    Client::new(&Reference::parse(&format!("{host}/{repo}")).unwrap(), o).unwrap()
}

fn layers() -> (Layer, Layer, Layer) {
    (
        blobs::layer(&[("etc/hello", b"hello\n", 0o644)]),
        blobs::layer(&[("data/noise", &blobs::noise(1, 300_000), 0o644)]),
        blobs::layer(&[("data/other", &blobs::noise(2, 200_000), 0o644)]),
    )
}

/// A plan for `layers`: digests known in advance or not, the standard
/// manifest in `format`.
fn plan(layers: &[&Layer], known: bool, format: ManifestFormat) -> PushPlan<'static> {
    PushPlan {
        layers: layers
            .iter()
            .map(|l| {
                let gz = l.gz.clone();
                let s = BlobSource::new(format.layer_media_type("gzip"), move |w| {
                    Ok(w.write_all(&gz)?)
                });
                if known {
                    s.known(BlobDigest {
                        digest: l.digest.clone(),
                        size: l.gz.len() as u64,
                    })
                } else {
                    s
                }
            })
            .collect(),
        config: ConfigSpec::Bytes(blobs::config(layers, &["/bin/sh"])),
        manifest: ManifestSpec::Standard(format),
        earlier: None,
    }
}

fn tags(t: &[&str]) -> Vec<String> {
    t.iter().map(|s| s.to_string()).collect()
}

fn quiet(_: &stream_layered_image::registry::Event) {}

/// Pushes `layers` (digests known, OCI manifest) to `tag`; panics on error.
fn push_known(cl: &Client, layers: &[&Layer], tag: &str) -> PushReport {
    push(
        cl,
        &plan(layers, true, ManifestFormat::Oci),
        &tags(&[tag]),
        &quiet,
    )
    .unwrap()
}

/// [`check_with_skopeo`] of an OCI push without credentials to
/// `REPO:TAG` of `reg`.
fn check_oci(reg: &Registry, repo_tag: &str, report: &PushReport, layers: &[&Layer]) {
    let reference = format!("{}/{repo_tag}", reg.host());
    check_with_skopeo(&reference, report, layers, ManifestFormat::Oci, None);
}

/// `skopeo inspect ARGS docker://REF` (TLS verification off: loopback).
fn skopeo(args: &[&str], reference: &str, creds: Option<&str>) -> Vec<u8> {
    let mut c = Command::new("skopeo");
    c.arg("inspect").arg("--tls-verify=false").args(args);
    if let Some(cr) = creds {
        c.arg("--creds").arg(cr);
    }
    c.arg(format!("docker://{reference}"));
    registry_support::run(&mut c)
}

/// Checks the pushed image from the outside.
fn check_with_skopeo(
    reference: &str,
    report: &PushReport,
    layers: &[&Layer],
    format: ManifestFormat,
    creds: Option<&str>,
) {
    let raw = skopeo(&["--raw"], reference, creds);
    assert_eq!(
        blobs::sha256(&raw),
        report.manifest_digest,
        "manifest digest"
    );
    let m: Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(m["mediaType"], format.manifest_media_type());
    assert_eq!(m["config"]["mediaType"], format.config_media_type());
    assert_eq!(m["config"]["digest"], report.config.digest.as_str());
    let got: Vec<&str> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
    assert_eq!(got, want, "layer digests");
    for l in m["layers"].as_array().unwrap() {
        assert_eq!(l["mediaType"], format.layer_media_type("gzip"));
    }
    let config = skopeo(&["--config", "--raw"], reference, creds);
    assert_eq!(
        blobs::sha256(&config),
        report.config.digest,
        "config digest"
    );
    let info: Value = serde_json::from_slice(&skopeo(&[], reference, creds)).unwrap();
    assert_eq!(info["Digest"], report.manifest_digest.as_str());
}

/// One line, naming the registry and repository, with no secret in it.
fn assert_one_line(e: &anyhow::Error, must: &[&str]) -> String {
    let s = format!("{e:#}");
    eprintln!("error line: {s}");
    assert!(!s.contains('\n'), "not one line: {s}");
    for m in must {
        assert!(s.contains(m), "{s:?} lacks {m:?}");
    }
    for secret in [
        PASS,
        "wrong-pass-7",
        "c2xpLXVzZXI6czNjcmV0LVBBU1MtOXo=",
        IDENTITY,
    ] {
        assert!(!s.contains(secret), "a credential leaked: {s}");
    }
    s
}

#[test]
fn plain_push_skopeo_and_second_push_uploads_nothing() {
    let reg = Registry::start(Setup::default());
    let host = reg.host();
    let (a, b, _) = layers();
    let c = client(&host, "sli/app", &streaming());
    let events = AtomicUsize::new(0);
    let report = push(
        &c,
        &plan(&[&a, &b], false, ManifestFormat::Oci),
        &tags(&["v1", "v2"]),
        &|_| {
            events.fetch_add(1, Ordering::SeqCst);
        },
    )
    .unwrap();
    assert_eq!(
        (
            report.blobs_uploaded,
            report.blobs_present,
            report.blobs_mounted
        ),
        (3, 0, 0)
    );
    assert_eq!(
        report.bytes_uploaded,
        (a.gz.len() + b.gz.len()) as u64 + report.config.size
    );
    assert_eq!(
        events.load(Ordering::SeqCst),
        2 + 3 + 2,
        "2 uploads start, 3 blobs, 2 tags"
    );
    assert_eq!(reg.uploads(), 3, "{}", reg.access_log());
    assert!(reg.requests("\"PATCH /v2/sli/app/blobs/uploads/") == 3);
    check_with_skopeo(
        &format!("{host}/sli/app:v1"),
        &report,
        &[&a, &b],
        ManifestFormat::Oci,
        None,
    );
    let v2: Value =
        serde_json::from_slice(&skopeo(&[], &format!("{host}/sli/app:v2"), None)).unwrap();
    assert_eq!(v2["Digest"], report.manifest_digest.as_str());

    // Again, digests known (a warm cache): HEADs only, not a byte read.
    let reads = Arc::new(AtomicUsize::new(0));
    let mut again = plan(&[&a, &b], true, ManifestFormat::Oci);
    for l in &mut again.layers {
        let r = reads.clone();
        l.produce = Box::new(move |_w| {
            r.fetch_add(1, Ordering::SeqCst);
            anyhow::bail!("the store must not be read")
        });
    }
    let c2 = client(&host, "sli/app", &streaming());
    let second = push(&c2, &again, &tags(&["v1"]), &quiet).unwrap();
    assert_eq!((second.blobs_uploaded, second.blobs_present), (0, 3));
    assert_eq!(second.manifest_digest, report.manifest_digest);
    assert_eq!(reads.load(Ordering::SeqCst), 0);
    assert_eq!(reg.uploads(), 3, "a second push uploads nothing");
    assert_eq!(reg.requests("\"PATCH /v2/"), 3);
    assert_eq!(
        c2.head_manifest("v1").unwrap().as_deref(),
        Some(report.manifest_digest.as_str())
    );
    let (media, bytes) = c2.get_manifest(&report.manifest_digest).unwrap().unwrap();
    assert_eq!(media, ManifestFormat::Oci.manifest_media_type());
    assert_eq!(blobs::sha256(&bytes), report.manifest_digest);
    assert_eq!(c2.get_manifest("nope").unwrap(), None);
}

/// Held blobs are bounded in all, not per job: many jobs hold less each.
#[test]
fn held_memory_is_bounded_whatever_the_jobs() {
    let with_jobs = |jobs| client("127.0.0.1:1", "held/app", &Options { jobs, ..opts() });
    assert_eq!(with_jobs(4).whole_upload_max(), 4 << 20);
    assert_eq!(with_jobs(64).whole_upload_max(), MAX_HELD / 64);
    assert!(with_jobs(1000).whole_upload_max() * 1000 <= MAX_HELD);
}

/// Uploads start with the largest layer (by size hint), so the longest
/// upload overlaps the small ones instead of running alone at the end;
/// the manifest still lists the layers in image order.
#[test]
fn largest_layers_upload_first() {
    let reg = Registry::start(Setup::default());
    let (a, b, c) = layers();
    let mut p = plan(&[&a, &b, &c], false, ManifestFormat::Oci);
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    for (i, (l, hint)) in p.layers.iter_mut().zip([10, 30, 20]).enumerate() {
        let inner = std::mem::replace(&mut l.produce, Box::new(|_| Ok(None)));
        let order = order.clone();
        l.produce = Box::new(move |w| {
            order.lock().unwrap().push(i);
            inner(w)
        });
        l.size_hint = hint;
    }
    let one_job = Options { jobs: 1, ..opts() };
    let cl = client(&reg.host(), "order/app", &one_job);
    let r = push(&cl, &p, &tags(&["1"]), &quiet).unwrap();
    assert_eq!(*order.lock().unwrap(), [1, 2, 0]);
    check_oci(&reg, "order/app:1", &r, &[&a, &b, &c]);
}

#[test]
fn one_changed_layer_uploads_only_it() {
    let reg = Registry::start(Setup::default());
    let (a, b, c) = layers();
    let cl = client(&reg.host(), "one/leaf", &opts());
    push_known(&cl, &[&a, &b], "1");
    let before = reg.uploads();
    let r = push_known(&cl, &[&a, &c], "2");
    assert_eq!(
        (r.blobs_present, r.blobs_uploaded),
        (1, 2),
        "the new layer and the config"
    );
    assert_eq!(reg.uploads() - before, 2);
    check_oci(&reg, "one/leaf:2", &r, &[&a, &c]);
}

/// The requests of a push after `mark`, by kind: (manifest GETs, manifest
/// PUTs, blob HEADs, blob uploads started, anything else but `GET /v2/`).
fn kinds(
    reg: &Registry,
    mark: usize,
    repo: &str,
) -> (usize, usize, Vec<String>, usize, Vec<String>) {
    let (mut get, mut put, mut heads, mut posts, mut other) = (0, 0, Vec::new(), 0, Vec::new());
    for l in reg.request_lines_from(mark) {
        let path = l.split(' ').nth(1).unwrap_or("").to_owned();
        if l.starts_with("GET /v2/ ") {
        } else if l.starts_with(&format!("GET /v2/{repo}/manifests/")) {
            get += 1;
        } else if l.starts_with(&format!("PUT /v2/{repo}/manifests/")) {
            put += 1;
        } else if l.starts_with(&format!("HEAD /v2/{repo}/blobs/")) {
            heads.push(path.rsplit('/').next().unwrap().to_owned());
        } else if l.starts_with(&format!("POST /v2/{repo}/blobs/uploads/")) {
            posts += 1;
        } else if !(l.starts_with("PATCH ") || l.starts_with("PUT ")) {
            other.push(l);
        }
    }
    (get, put, heads, posts, other)
}

/// Pushing the same image again to its tag: one manifest GET, no blob HEAD,
/// no upload, the manifest PUT; the report still says every blob is present.
#[test]
fn unchanged_push_checks_no_blob() {
    let reg = Registry::start(Setup::default());
    let (a, b, c) = layers();
    let cl = client(&reg.host(), "same/app", &opts());
    let first = push_known(&cl, &[&a, &b, &c], "t");
    assert_eq!(first.previous_manifest, None, "nothing at the tag yet");
    let mark = reg.mark();
    let again = client(&reg.host(), "same/app", &opts());
    let events = std::sync::Mutex::new(Vec::new());
    let r = push(
        &again,
        &plan(&[&a, &b, &c], true, ManifestFormat::Oci),
        &tags(&["t"]),
        &|e| events.lock().unwrap().push(format!("{e:?}")),
    )
    .unwrap();
    let (get, put, heads, posts, other) = kinds(&reg, mark, "same/app");
    assert_eq!(
        (get, put, heads.len(), posts),
        (1, 1, 0, 0),
        "{:?}",
        reg.request_lines_from(mark)
    );
    assert!(other.is_empty(), "{other:?}");
    assert_eq!(
        (
            r.blobs_present,
            r.blobs_listed,
            r.blobs_uploaded,
            r.blobs_mounted
        ),
        (4, 4, 0, 0)
    );
    assert_eq!(r.manifest_digest, first.manifest_digest);
    assert_eq!(
        r.previous_manifest.as_deref(),
        Some(first.manifest_digest.as_str())
    );
    assert!(
        events.lock().unwrap()[0].starts_with("Listed"),
        "{:?}",
        events.lock().unwrap()
    );
    // Docker's schema 2 too; a second tag whose manifest is the same.
    let d = client(&reg.host(), "same/docker", &opts());
    let p = || plan(&[&a, &b], true, ManifestFormat::Docker);
    push(&d, &p(), &tags(&["1"]), &quiet).unwrap();
    let mark = reg.mark();
    let r = push(&d, &p(), &tags(&["new", "1"]), &quiet).unwrap();
    let (get, put, heads, posts, _) = kinds(&reg, mark, "same/docker");
    assert_eq!(
        (get, put, heads.len(), posts),
        (2, 2, 0, 0),
        "the new tag 404s, then 1 is read"
    );
    assert_eq!(r.blobs_listed, 3);
}

/// One layer changed since the tag's image: HEADs only for what the old
/// manifest does not list (the new layer and the new config), and exactly
/// those two uploaded.
#[test]
fn one_leaf_change_heads_only_new_blobs() {
    let reg = Registry::start(Setup::default());
    let (a, b, c) = layers();
    let cl = client(&reg.host(), "leaf/app", &opts());
    push_known(&cl, &[&a, &b], "t");
    let (mark, uploads) = (reg.mark(), reg.uploads());
    let r = push_known(&cl, &[&a, &c], "t");
    let (get, put, heads, posts, other) = kinds(&reg, mark, "leaf/app");
    assert_eq!(
        (get, put, posts),
        (1, 1, 2),
        "{:?}",
        reg.request_lines_from(mark)
    );
    assert_eq!(heads, vec![c.digest.clone(), r.config.digest.clone()]);
    assert!(other.is_empty(), "{other:?}");
    assert_eq!(reg.uploads() - uploads, 2);
    assert_eq!(
        (r.blobs_present, r.blobs_listed, r.blobs_uploaded),
        (1, 1, 2)
    );
    check_oci(&reg, "leaf/app:t", &r, &[&a, &c]);
}

/// A tag holding an index, junk, or a manifest whose bytes do not match
/// the registry's digest: every blob is HEADed as before, and the push is
/// right.
#[test]
fn unusable_tag_manifest_means_heads() {
    let reg = Registry::start(Setup::default());
    let (a, b, _) = layers();
    let cl = client(&reg.host(), "odd/app", &opts());
    let first = push_known(&cl, &[&a, &b], "x");
    // An image index at tag t, naming the image.
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": ManifestFormat::Oci.manifest_media_type(),
            "digest": first.manifest_digest,
            "size": first.manifest_size,
            "platform": {"architecture": "amd64", "os": "linux"},
        }],
    });
    let index_bytes = serde_json::to_vec(&index).unwrap();
    cl.put_manifest("t", "application/vnd.oci.image.index.v1+json", &index_bytes)
        .unwrap();
    let mark = reg.mark();
    let r = push_known(&cl, &[&a, &b], "t");
    let (get, put, heads, posts, _) = kinds(&reg, mark, "odd/app");
    assert_eq!(
        (get, put, heads.len(), posts),
        (1, 1, 3, 0),
        "{:?}",
        reg.request_lines_from(mark)
    );
    assert_eq!((r.blobs_present, r.blobs_listed), (3, 0));
    assert_eq!(r.previous_manifest, None);
    check_oci(&reg, "odd/app:t", &r, &[&a, &b]);

    // Junk, or the real manifest under a wrong digest, from a proxy.
    let (_, real) = cl.get_manifest("x").unwrap().unwrap();
    let wrong = format!("sha256:{}", "0".repeat(64));
    let media = ManifestFormat::Oci.manifest_media_type();
    for (name, body, digest) in [
        ("junk", b"{\"schemaVersion\": 2, \"conf".to_vec(), None),
        ("big", vec![b' '; 5 << 20], None),
        ("lying", real.clone(), Some(wrong.clone())),
    ] {
        let (body, digest, media) = (body.clone(), digest.clone(), media.to_owned());
        let proxy = Proxy::start(reg.port, move |line| {
            if line.starts_with("GET ") && line.contains("/manifests/") {
                let mut h = vec![format!("Content-Type: {media}")];
                h.extend(digest.iter().map(|d| format!("Docker-Content-Digest: {d}")));
                Action::RespondBody(200, h, body.clone())
            } else {
                Action::Forward
            }
        });
        let via = format!("127.0.0.1:{}", proxy.port);
        let r = push(
            &client(&via, "odd/app", &opts()),
            &plan(&[&a, &b], true, ManifestFormat::Oci),
            &tags(&["x"]),
            &quiet,
        )
        .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(proxy.count("HEAD /v2/odd/app/blobs/"), 3, "{name}");
        assert_eq!((r.blobs_present, r.blobs_listed), (3, 0), "{name}");
        assert_eq!(r.manifest_digest, first.manifest_digest, "{name}");
    }
}

/// A blob the tag's manifest lists is gone from the repository by the
/// time the manifest is put: the registry says MANIFEST_BLOB_UNKNOWN, the
/// push checks every blob, uploads the missing one, and puts again.
#[test]
fn vanished_blob_is_checked_again() {
    let reg = Registry::start(Setup::default());
    let (a, b, _) = layers();
    let cl = client(&reg.host(), "gone/app", &opts());
    let p = || plan(&[&a, &b], true, ManifestFormat::Oci);
    push(&cl, &p(), &tags(&["t"]), &quiet).unwrap();
    reg.delete_blob("gone/app", &a.digest);
    assert!(!cl.blob_exists(&a.digest).unwrap());
    let (mark, uploads) = (reg.mark(), reg.uploads());
    let events = std::sync::Mutex::new(Vec::new());
    let r = push(&cl, &p(), &tags(&["t"]), &|e| {
        events.lock().unwrap().push(format!("{e:?}"))
    })
    .unwrap();
    let (get, put, heads, _, _) = kinds(&reg, mark, "gone/app");
    assert_eq!(
        (get, put, heads.len()),
        (1, 2, 3),
        "{:?}",
        reg.request_lines_from(mark)
    );
    assert_eq!(reg.uploads() - uploads, 1, "the vanished layer");
    assert_eq!(
        (r.blobs_present, r.blobs_listed, r.blobs_uploaded),
        (2, 0, 1)
    );
    assert_eq!(
        r.layers[0].outcome,
        stream_layered_image::registry::Outcome::Uploaded
    );
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.starts_with("Recheck") && e.contains("BLOB_UNKNOWN")),
        "{:?}",
        events.lock().unwrap()
    );
    assert!(cl.blob_exists(&a.digest).unwrap());
    check_oci(&reg, "gone/app:t", &r, &[&a, &b]);
}

/// A new tag (one per build): no tag holds a manifest, but the caller
/// remembers what it pushed to the repository before; fetched by digest,
/// it spares the HEADs of what it lists. Digests the repository lacks,
/// or that are not digests, cost a 404 or nothing.
#[test]
fn new_tag_uses_earlier_manifests() {
    let reg = Registry::start(Setup::default());
    let (a, b, c) = layers();
    let cl = client(&reg.host(), "builds/app", &opts());
    let first = push_known(&cl, &[&a, &b], "build-1");
    let missing = format!("sha256:{}", "5".repeat(64));
    let remembered = vec![
        missing.clone(),
        "latest".to_owned(),
        first.manifest_digest.clone(),
    ];
    let asked = std::sync::Mutex::new(Vec::new());
    let mut p = plan(&[&a, &c], true, ManifestFormat::Oci);
    p.earlier = Some(Box::new(|registry: &str, repository: &str| {
        asked
            .lock()
            .unwrap()
            .push(format!("{registry}/{repository}"));
        remembered.clone()
    }));
    let mark = reg.mark();
    let r = push(&cl, &p, &tags(&["build-2"]), &quiet).unwrap();
    assert_eq!(
        *asked.lock().unwrap(),
        vec![format!("{}/builds/app", reg.host())]
    );
    let lines = reg.request_lines_from(mark);
    let (get, put, heads, posts, other) = kinds(&reg, mark, "builds/app");
    assert_eq!((get, put, posts), (3, 1, 2), "{lines:?}");
    assert!(lines
        .iter()
        .any(|l| l.contains(&format!("/manifests/{missing}"))));
    assert!(
        !lines.iter().any(|l| l.contains("/manifests/latest")),
        "{lines:?}"
    );
    assert_eq!(heads, vec![c.digest.clone(), r.config.digest.clone()]);
    assert!(other.is_empty(), "{other:?}");
    assert_eq!(
        (r.blobs_present, r.blobs_listed, r.blobs_uploaded),
        (1, 1, 2)
    );
    assert_eq!(
        r.previous_manifest.as_deref(),
        Some(first.manifest_digest.as_str())
    );
    // A tag with a manifest wins: the earlier ones are not asked for.
    let mark = reg.mark();
    let r = push(&cl, &p, &tags(&["build-2"]), &quiet).unwrap();
    let (get, _, heads, _, _) = kinds(&reg, mark, "builds/app");
    assert_eq!((get, heads.len(), r.blobs_listed), (1, 0, 3));
    check_oci(&reg, "builds/app:build-2", &r, &[&a, &c]);
}

#[test]
fn docker_format_and_mount_from() {
    let reg = Registry::start(Setup::default());
    let host = reg.host();
    let (a, b, _) = layers();
    let src = client(&host, "src/app", &opts());
    push(
        &src,
        &plan(&[&a, &b], true, ManifestFormat::Docker),
        &tags(&["t"]),
        &quiet,
    )
    .unwrap();
    let dst = client(&host, "dst/app", &opts());
    let before = reg.uploads();
    let r = push_with_mounts(
        &dst,
        &plan(&[&a, &b], true, ManifestFormat::Docker),
        &tags(&["t"]),
        &tags(&["src/app"]),
        &quiet,
    )
    .unwrap();
    assert_eq!(r.blobs_mounted, 3, "layers and config: {r:?}");
    assert_eq!(r.blobs_uploaded, 0);
    assert_eq!(reg.uploads() - before, 0);
    check_with_skopeo(
        &format!("{host}/dst/app:t"),
        &r,
        &[&a, &b],
        ManifestFormat::Docker,
        None,
    );
    // A mount the registry cannot do falls back to an upload.
    let (_, _, c) = layers();
    let other = client(&host, "dst/other", &opts());
    let r = push_with_mounts(
        &other,
        &plan(&[&c], true, ManifestFormat::Oci),
        &tags(&["t"]),
        &tags(&["src/app"]),
        &quiet,
    )
    .unwrap();
    assert_eq!((r.blobs_mounted, r.blobs_uploaded), (0, 2));
    assert!(other.mount(&a.digest, "src/app").unwrap());
    assert!(!other.mount(&c.digest, "src/app").unwrap());
}

#[test]
fn tls_generated_ca_bad_tls_and_insecure() {
    let reg = Registry::start(Setup {
        tls: true,
        ..Setup::default()
    });
    let host = reg.host();
    let (a, _, _) = layers();
    // Not trusted yet: one line, no fallback to plain HTTP.
    let untrusted = client(&host, "tls/app", &opts());
    let e = push(
        &untrusted,
        &plan(&[&a], true, ManifestFormat::Oci),
        &tags(&["t"]),
        &quiet,
    )
    .unwrap_err();
    assert_one_line(
        &e,
        &[
            &format!("registry {host}, repository tls/app"),
            "TLS",
            "certificate",
        ],
    );
    // Its CA in certs.d/HOST/ca.crt.
    let dir = registry_support::certs_d().join(&host);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(reg.ca.as_ref().unwrap(), dir.join("ca.crt")).unwrap();
    let trusted = client(&host, "tls/app", &opts());
    let r = push_known(&trusted, &[&a], "t");
    check_with_skopeo(
        &format!("{host}/tls/app:t"),
        &r,
        &[&a],
        ManifestFormat::Oci,
        None,
    );
    std::fs::remove_dir_all(&dir).unwrap();
    // An explicitly insecure registry: no verification.
    let o = Options {
        insecure_registries: vec![host.clone()],
        ..opts()
    };
    let insecure = client(&host, "tls/app", &o);
    let r2 = push_known(&insecure, &[&a], "u");
    assert_eq!(r2.blobs_present, 2);
}

#[test]
fn basic_auth_htpasswd() {
    let reg = Registry::start(Setup {
        htpasswd: Some((USER.into(), PASS.into())),
        ..Setup::default()
    });
    let host = reg.host();
    let (a, b, _) = layers();
    let c = client(&host, "basic/app", &with_creds(USER, PASS));
    let r = push(
        &c,
        &plan(&[&a, &b], false, ManifestFormat::Oci),
        &tags(&["t"]),
        &quiet,
    )
    .unwrap();
    check_with_skopeo(
        &format!("{host}/basic/app:t"),
        &r,
        &[&a, &b],
        ManifestFormat::Oci,
        Some(&format!("{USER}:{PASS}")),
    );

    let wrong = client(&host, "basic/app", &with_creds(USER, "wrong-pass-7"));
    let e = push(
        &wrong,
        &plan(&[&a], true, ManifestFormat::Oci),
        &tags(&["x"]),
        &quiet,
    )
    .unwrap_err();
    assert_one_line(
        &e,
        &[
            &format!("registry {host}, repository basic/app"),
            "401",
            "rejected",
        ],
    );
    let anonymous = client(&host, "basic/app", &opts());
    let e = push(
        &anonymous,
        &plan(&[&a], true, ManifestFormat::Oci),
        &tags(&["x"]),
        &quiet,
    )
    .unwrap_err();
    assert_one_line(
        &e,
        &[
            &format!("registry {host}, repository basic/app"),
            "401",
            "no credentials",
        ],
    );
}

#[test]
fn bearer_tokens_expiry_and_mount() {
    let tokens = TokenService::start(Some((USER.into(), PASS.into())), true);
    let reg = Registry::start(Setup {
        token: Some(tokens.auth.clone()),
        ..Setup::default()
    });
    let host = reg.host();
    let (a, b, c) = layers();
    let cl = client(&host, "bearer/app", &with_creds(USER, PASS));
    // The first token is already expired: the registry's 401 makes the
    // client fetch another, and the push goes on.
    let r = push(
        &cl,
        &plan(&[&a, &b], false, ManifestFormat::Oci),
        &tags(&["t"]),
        &quiet,
    )
    .unwrap();
    assert!(
        tokens.issued.load(Ordering::SeqCst) >= 2,
        "a second token after the expired one"
    );
    assert!(reg.requests("\" 401 ") >= 2, "{}", reg.access_log());
    check_with_skopeo(
        &format!("{host}/bearer/app:t"),
        &r,
        &[&a, &b],
        ManifestFormat::Oci,
        Some(&format!("{USER}:{PASS}")),
    );

    // A mount needs pull on the source: the token is fetched again with it.
    let other = client(&host, "bearer/copy", &with_creds(USER, PASS));
    let r = push_with_mounts(
        &other,
        &plan(&[&a, &c], true, ManifestFormat::Oci),
        &tags(&["t"]),
        &tags(&["bearer/app"]),
        &quiet,
    )
    .unwrap();
    assert_eq!((r.blobs_mounted, r.blobs_uploaded), (1, 2), "{r:?}");

    let wrong = client(&host, "bearer/app", &with_creds(USER, "wrong-pass-7"));
    let e = push(
        &wrong,
        &plan(&[&a], true, ManifestFormat::Oci),
        &tags(&["x"]),
        &quiet,
    )
    .unwrap_err();
    assert_one_line(
        &e,
        &[
            &format!("registry {host}, repository bearer/app"),
            "token",
            "401",
            "rejected",
        ],
    );
    assert!(tokens.refused.load(Ordering::SeqCst) >= 1);
}

/// Registry behind the fault proxy: every push below must still succeed.
#[test]
fn faults_reset_500_429_still_push() {
    let reg = Registry::start(Setup::default());
    let (a, b, _) = layers();
    let first_patch = AtomicUsize::new(0);
    let first_put = AtomicUsize::new(0);
    let first_head = AtomicUsize::new(0);
    let proxy = Proxy::start(reg.port, move |line| {
        if line.starts_with("PATCH ") && first_patch.fetch_add(1, Ordering::SeqCst) == 0 {
            Action::CutAfter(64 * 1024)
        } else if line.starts_with("PUT ")
            && line.contains("/blobs/uploads/")
            && first_put.fetch_add(1, Ordering::SeqCst) == 0
        {
            Action::Respond(500, vec![])
        } else if line.starts_with("HEAD ")
            && line.contains("/blobs/")
            && first_head.fetch_add(1, Ordering::SeqCst) == 0
        {
            Action::Respond(429, vec!["Retry-After: 1".into()])
        } else {
            Action::Forward
        }
    });
    let via = format!("127.0.0.1:{}", proxy.port);
    let c = client(
        &via,
        "faults/app",
        &Options {
            jobs: 1,
            ..streaming()
        },
    );
    let start = Instant::now();
    let r = push_known(&c, &[&b, &a], "t");
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    assert_eq!(r.blobs_uploaded, 3);
    assert!(
        proxy.count("PATCH ") >= 4,
        "the cut PATCH was redone: {:?}",
        proxy.seen.lock().unwrap()
    );
    check_oci(&reg, "faults/app:t", &r, &[&b, &a]);
}

#[test]
fn always_failing_registry_leaves_no_manifest() {
    let reg = Registry::start(Setup::default());
    let (a, _, _) = layers();
    let proxy = Proxy::start(reg.port, |line| {
        if line.starts_with("PATCH ") {
            Action::Respond(503, vec![])
        } else {
            Action::Forward
        }
    });
    let via = format!("127.0.0.1:{}", proxy.port);
    let c = client(&via, "fail/app", &streaming());
    let start = Instant::now();
    let e = push(
        &c,
        &plan(&[&a], true, ManifestFormat::Oci),
        &tags(&["t"]),
        &quiet,
    )
    .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(20));
    assert_one_line(
        &e,
        &[
            &format!("registry {via}, repository fail/app"),
            "uploading blob",
            "503",
            "4 tries",
        ],
    );
    assert_eq!(proxy.count("PATCH "), 4);
    assert_eq!(
        proxy.count("PUT /v2/fail/app/manifests/"),
        0,
        "no manifest before its blobs"
    );
    assert_eq!(reg.requests("\"PUT /v2/fail/app/manifests/"), 0);
    let direct = client(&reg.host(), "fail/app", &opts());
    assert_eq!(direct.head_manifest("t").unwrap(), None);
}

#[test]
fn error_lines() {
    // Malformed REF.
    let e = Reference::parse("127.0.0.1:5000/Bad/Name:t").unwrap_err();
    assert_one_line(&e, &["upper-case"]);
    // Unknown host.
    let (a, _, _) = layers();
    let c = client(
        "sli-no-such-host.invalid:5000",
        "x/y",
        &with_creds(USER, PASS),
    );
    let e = push(
        &c,
        &plan(&[&a], true, ManifestFormat::Oci),
        &tags(&["t"]),
        &quiet,
    )
    .unwrap_err();
    assert_one_line(
        &e,
        &["registry sli-no-such-host.invalid:5000, repository x/y"],
    );
    // Nothing listening: bounded retries, one line.
    let port = registry_support::server::free_port();
    let c = client(&format!("127.0.0.1:{port}"), "x/y", &opts());
    let start = Instant::now();
    let e = push(
        &c,
        &plan(&[&a], true, ManifestFormat::Oci),
        &tags(&["t"]),
        &quiet,
    )
    .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(15));
    assert_one_line(
        &e,
        &[
            &format!("registry 127.0.0.1:{port}, repository x/y"),
            "tries",
        ],
    );
    // A Debug of the options shows no secret.
    let d = format!("{:?}", with_creds(USER, PASS));
    assert!(!d.contains(PASS), "{d}");
}

/// Held whole (under the limit) and streamed: the digest is computed, a
/// known digest the bytes do not hash to is an error before anything is
/// committed (no closing `PUT` at all), a failing producer is not retried.
#[test]
fn upload_checks_known_digest() {
    let reg = Registry::start(Setup::default());
    for (repo, o, patches) in [("up/whole", opts(), 0), ("up/stream", streaming(), 1)] {
        let c = client(&reg.host(), repo, &o);
        let mark = reg.mark();
        let data = blobs::noise(7, 1_000_000);
        let d = c
            .upload(None, &|w| {
                w.write_all(&data).map(|()| None).map_err(Into::into)
            })
            .unwrap();
        assert_eq!(d.digest, blobs::sha256(&data));
        assert_eq!(d.size, 1_000_000);
        assert!(c.blob_exists(&d.digest).unwrap());
        let lines = reg.request_lines_from(mark);
        let patch = lines.iter().filter(|l| l.starts_with("PATCH ")).count();
        assert_eq!(patch, patches, "{repo}: {lines:?}");

        let uploads = reg.uploads();
        let mark = reg.mark();
        let wrong = format!("sha256:{}", "0".repeat(64));
        let other = blobs::noise(8, 100_000);
        let e = c
            .upload(Some(&wrong), &|w| {
                w.write_all(&other).map(|()| None).map_err(Into::into)
            })
            .unwrap_err();
        assert_one_line(&e, &["hash to", "not to the expected", &wrong]);
        let lines = reg.request_lines_from(mark);
        assert!(!lines.iter().any(|l| l.starts_with("PUT ")), "{lines:?}");
        assert_eq!(reg.uploads(), uploads, "{repo}: nothing committed");
        assert!(!c.blob_exists(&blobs::sha256(&other)).unwrap());
        assert!(!c.blob_exists(&wrong).unwrap());

        // A producer that fails (before anything is sent when held, in the
        // middle of the PATCH when streamed): no retry, its error in the line.
        let calls = AtomicUsize::new(0);
        let e = c
            .upload(None, &|w| {
                calls.fetch_add(1, Ordering::SeqCst);
                w.write_all(&[0; 100_000])?;
                anyhow::bail!("reading /nix/store/x: gone")
            })
            .unwrap_err();
        assert_one_line(&e, &["producing the blob: reading /nix/store/x: gone"]);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(reg.uploads(), uploads);
    }
}

#[test]
fn docker_pull_and_run() {
    let ok = Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("docker_pull_and_run: SKIPPED (no docker daemon)");
        return;
    }
    let busybox = std::fs::read("/bin/busybox").expect("/bin/busybox (busybox-static)");
    let reg = Registry::start(Setup::default());
    let layer = blobs::layer(&[("bin/busybox", &busybox, 0o755)]);
    let repo = format!("sli-push-test-{}", std::process::id());
    let c = client(&reg.host(), &repo, &opts());
    let mut p = plan(&[&layer], false, ManifestFormat::Oci);
    p.config = ConfigSpec::Bytes(blobs::config(
        &[&layer],
        &["/bin/busybox", "echo", "hello-from-push"],
    ));
    push(&c, &p, &tags(&["t"]), &quiet).unwrap();
    let image = format!("{}/{repo}:t", reg.host());
    registry_support::run(Command::new("docker").args(["pull", "-q", &image]));
    let out = Command::new("docker")
        .args(["run", "--rm", &image])
        .output()
        .unwrap();
    let _ = Command::new("docker").args(["rmi", "-f", &image]).output();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello-from-push"
    );
}

/// A registry that refuses a streamed PATCH gets one PUT per blob: the
/// small ones are held whole anyway, the long one (over the 1 KiB limit
/// here) is read once for its digest and length after the refusal, then
/// again into its PUT.
#[test]
fn monolithic_fallback() {
    let reg = Registry::start(Setup::default());
    let (a, b, _) = layers();
    let proxy = Proxy::start(reg.port, |line| {
        if line.starts_with("PATCH ") {
            Action::Respond(415, vec![])
        } else {
            Action::Forward
        }
    });
    let via = format!("127.0.0.1:{}", proxy.port);
    let o = Options {
        jobs: 1,
        whole_upload_max: 1024,
        ..opts()
    };
    let c = client(&via, "mono/app", &o);
    let r = push(
        &c,
        &plan(&[&a, &b], false, ManifestFormat::Oci),
        &tags(&["t"]),
        &quiet,
    )
    .unwrap();
    assert_eq!(r.blobs_uploaded, 3);
    assert_eq!(proxy.count("PATCH "), 1, "{:?}", proxy.seen.lock().unwrap());
    assert_eq!(reg.uploads(), 3);
    check_oci(&reg, "mono/app:t", &r, &[&a, &b]);
}

/// Blobs of at most `whole_upload_max` bytes go as `POST` + one `PUT`
/// carrying them, no `PATCH`; longer ones stream in a `PATCH`. Both kinds
/// read back by skopeo.
#[test]
fn small_blobs_put_whole_long_ones_patch() {
    let reg = Registry::start(Setup::default());
    let (a, b, c) = layers();
    assert!(a.gz.len() <= 1024 && b.gz.len() > 1024 && c.gz.len() > 1024);
    // (POST, PATCH, PUT) of blob uploads since `mark`.
    let uploads = |mark: usize, repo: &str| {
        let lines = reg.request_lines_from(mark);
        let n = |m: &str| {
            let start = format!("{m} /v2/{repo}/blobs/uploads/");
            lines.iter().filter(|l| l.starts_with(&start)).count()
        };
        (n("POST"), n("PATCH"), n("PUT"))
    };

    // The default limit (4 MiB): every blob whole. A 1 KiB limit: the
    // small layer and the config whole, the two long layers streamed.
    let some = Options {
        whole_upload_max: 1024,
        ..opts()
    };
    for (repo, o, layers, want) in [
        ("whole/all", opts(), vec![&a, &b], (3, 0, 3)),
        ("whole/some", some, vec![&a, &b, &c], (4, 2, 4)),
    ] {
        let mark = reg.mark();
        let cl = client(&reg.host(), repo, &o);
        let p = plan(&layers, false, ManifestFormat::Oci);
        let r = push(&cl, &p, &tags(&["t"]), &quiet).unwrap();
        assert!(r.config.size <= 1024);
        assert_eq!(r.blobs_uploaded, layers.len() + 1);
        assert_eq!(uploads(mark, repo), want, "{repo}");
        let at = format!("{}/{repo}:t", reg.host());
        check_with_skopeo(&at, &r, &layers, ManifestFormat::Oci, None);
    }
}

/// The connection cut in the middle of a whole blob's `PUT`: that upload
/// starts again from its `POST`, and the push succeeds.
#[test]
fn reset_mid_whole_put_is_retried() {
    let reg = Registry::start(Setup::default());
    let (a, b, _) = layers();
    let first_put = AtomicUsize::new(0);
    let proxy = Proxy::start(reg.port, move |line| {
        if line.starts_with("PUT ")
            && line.contains("/blobs/uploads/")
            && first_put.fetch_add(1, Ordering::SeqCst) == 0
        {
            Action::CutAfter(64 * 1024)
        } else {
            Action::Forward
        }
    });
    let via = format!("127.0.0.1:{}", proxy.port);
    let c = client(&via, "cut/whole", &Options { jobs: 1, ..opts() });
    let r = push_known(&c, &[&b, &a], "t");
    assert_eq!(r.blobs_uploaded, 3);
    // No PATCH; the cut upload's POST and PUT once more.
    let seen = proxy.seen.lock().unwrap().clone();
    for (request, n) in [
        ("PATCH ", 0),
        ("POST /v2/cut/whole/blobs/uploads/", 4),
        ("PUT /v2/cut/whole/blobs/uploads/", 4),
    ] {
        assert_eq!(proxy.count(request), n, "{request}: {seen:?}");
    }
    assert_eq!(reg.uploads(), 3);
    check_oci(&reg, "cut/whole:t", &r, &[&b, &a]);
}

/// 2xx with another digest than ours, or a digest error: never retried,
/// never followed by a manifest.
#[test]
fn lying_registry_is_an_error() {
    let reg = Registry::start(Setup::default());
    let (a, _, _) = layers();
    let zeros = format!("sha256:{}", "0".repeat(64));
    let z = zeros.clone();
    let manifest_liar = Proxy::start(reg.port, move |line| {
        if line.starts_with("PUT ") && line.contains("/manifests/") {
            Action::Respond(201, vec![format!("Docker-Content-Digest: {z}")])
        } else {
            Action::Forward
        }
    });
    let via = format!("127.0.0.1:{}", manifest_liar.port);
    let e = push(
        &client(&via, "lie/m", &opts()),
        &plan(&[&a], true, ManifestFormat::Oci),
        &tags(&["t"]),
        &quiet,
    )
    .unwrap_err();
    assert_one_line(
        &e,
        &["putting manifest", &zeros, "not the manifest we sent"],
    );

    let z = zeros.clone();
    let blob_liar = Proxy::start(reg.port, move |line| {
        if line.starts_with("PUT ") && line.contains("/blobs/uploads/") {
            Action::Respond(201, vec![format!("Docker-Content-Digest: {z}")])
        } else {
            Action::Forward
        }
    });
    let via = format!("127.0.0.1:{}", blob_liar.port);
    let e = push(
        &client(&via, "lie/b", &opts()),
        &plan(&[&a], true, ManifestFormat::Oci),
        &tags(&["t"]),
        &quiet,
    )
    .unwrap_err();
    assert_one_line(&e, &["uploading blob", "says it stored", &zeros]);
    assert_eq!(blob_liar.count("PUT /v2/lie/b/manifests/"), 0);

    let mismatch = Proxy::start(reg.port, |line| {
        if line.starts_with("PUT ") && line.contains("/blobs/uploads/") {
            Action::Respond(400, vec![])
        } else {
            Action::Forward
        }
    });
    let via = format!("127.0.0.1:{}", mismatch.port);
    let e = push(
        &client(&via, "lie/d", &opts()),
        &plan(&[&a], true, ManifestFormat::Oci),
        &tags(&["t"]),
        &quiet,
    )
    .unwrap_err();
    assert_one_line(&e, &["uploading blob", "400"]);
    assert_eq!(mismatch.count("PUT "), 1, "not retried");
}

/// Credentials from docker's config.json, a credential helper, podman's
/// auth file and `SLI_REGISTRY_CREDS`, each in a child process of this test
/// binary (the environment is per process).
#[test]
fn credential_files_and_helpers() {
    if let Some(reference) = std::env::var_os("SLI_TEST_CREDS_REF") {
        // The child: push with no explicit credentials.
        let reference = Reference::parse(reference.to_str().unwrap()).unwrap();
        let o = Options {
            no_credential_files: false,
            ..opts()
        };
        let (a, _, _) = layers();
        let r = Client::new(&reference, &o).and_then(|c| {
            push(
                &c,
                &plan(&[&a], true, ManifestFormat::Oci),
                &tags(&["t"]),
                &quiet,
            )
        });
        match std::env::var("SLI_TEST_CREDS_EXPECT").as_deref() {
            Ok("ok") => {
                r.unwrap();
            }
            _ => {
                assert_one_line(&r.unwrap_err(), &["registry 127.0.0.1"]);
            }
        }
        return;
    }
    let reg = Registry::start(Setup {
        htpasswd: Some((USER.into(), PASS.into())),
        ..Setup::default()
    });
    let host = reg.host();
    let dir = registry_support::TempDir::new("creds");
    let d = dir.path();
    let b64 = stream_layered_image::registry::transport::basic::encode;
    let docker = d.join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-slitest");
    std::fs::write(
        &helper,
        format!("#!/bin/sh\nread server\n[ \"$server\" = \"{host}\" ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\necho '{{\"ServerURL\":\"'$server'\",\"Username\":\"{USER}\",\"Secret\":\"{PASS}\"}}'\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let child = |name: &str, env: &[(&str, String)], expect: &str| {
        let mut c = Command::new(std::env::current_exe().unwrap());
        c.args(["--exact", "credential_files_and_helpers", "--nocapture"])
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("SLI_REGISTRY_CREDS")
            .env("HOME", d)
            .env("DOCKER_CONFIG", &docker)
            .env("PATH", &path)
            .env("SLI_TEST_CREDS_REF", format!("{host}/creds/{name}"))
            .env("SLI_TEST_CREDS_EXPECT", expect);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for l in text.lines().filter(|l| l.contains("error line")) {
            eprintln!("{name}: {l}");
        }
        assert!(out.status.success(), "{name}: {text}");
        assert!(
            text.contains("1 passed"),
            "{name}: the child ran no test: {text}"
        );
        assert!(!text.contains(PASS), "{name}: a credential leaked: {text}");
    };
    let write_docker = |json: String| std::fs::write(docker.join("config.json"), json).unwrap();

    // Nothing anywhere: refused.
    child("none", &[], "fail");
    // docker's auths, keyed with a scheme as `docker login` may write it.
    write_docker(format!(
        r#"{{"auths":{{"http://{host}":{{"auth":"{}"}}}}}}"#,
        b64(format!("{USER}:{PASS}").as_bytes())
    ));
    child("auths", &[], "ok");
    // A credential helper for this registry.
    write_docker(format!(r#"{{"credHelpers":{{"{host}":"slitest"}}}}"#));
    child("helper", &[], "ok");
    // credsStore, with the helper.
    write_docker(r#"{"credsStore":"slitest"}"#.to_owned());
    child("store", &[], "ok");
    // podman's auth file comes first: wrong credentials there win.
    let podman = d.join("auth.json");
    std::fs::write(
        &podman,
        format!(
            r#"{{"auths":{{"{host}":{{"auth":"{}"}}}}}}"#,
            b64(format!("{USER}:wrong-pass-7").as_bytes())
        ),
    )
    .unwrap();
    child(
        "podman-first",
        &[("REGISTRY_AUTH_FILE", podman.display().to_string())],
        "fail",
    );
    // $SLI_REGISTRY_CREDS before any file.
    child(
        "env",
        &[
            ("REGISTRY_AUTH_FILE", podman.display().to_string()),
            ("SLI_REGISTRY_CREDS", format!("{USER}:{PASS}")),
        ],
        "ok",
    );
    // A config file that is not JSON: one line naming it.
    write_docker("{not json".to_owned());
    child("bad-file", &[], "fail");
}

/// An identity token (OAuth2 refresh token, as `docker login` stores for
/// some registries) is exchanged at the realm with a POST.
#[test]
fn bearer_identity_token() {
    let tokens = TokenService::start_with(None, Some(IDENTITY.into()), false);
    let reg = Registry::start(Setup {
        token: Some(tokens.auth.clone()),
        ..Setup::default()
    });
    let (a, _, _) = layers();
    let o = |t: &str| Options {
        creds: Some(Credential::IdentityToken(t.into())),
        ..opts()
    };
    let c = client(&reg.host(), "idt/app", &o(IDENTITY));
    push(
        &c,
        &plan(&[&a], false, ManifestFormat::Oci),
        &tags(&["t"]),
        &quiet,
    )
    .unwrap();
    let wrong = client(&reg.host(), "idt/app", &o("idt-wrong-999999"));
    let e = push(
        &wrong,
        &plan(&[&a], true, ManifestFormat::Oci),
        &tags(&["u"]),
        &quiet,
    )
    .unwrap_err();
    let s = assert_one_line(&e, &["getting a token", "401", "rejected"]);
    assert!(!s.contains("idt-wrong-999999"), "{s}");
}

const IDENTITY: &str = "idt-secret-1234567";

/// A blob far larger than the memory the upload may use: streamed, never
/// held (peak RSS of a child process running only this test).
#[test]
fn big_blob_streams_in_bounded_memory() {
    const MIB: usize = 1 << 20;
    const BLOB_MIB: usize = 192;
    if let Some(host) = std::env::var_os("SLI_TEST_BIG_HOST") {
        let c = client(host.to_str().unwrap(), "big/blob", &opts());
        let block = blobs::noise(3, MIB);
        let d = c
            .upload(None, &|w| {
                for i in 0..BLOB_MIB {
                    w.write_all(&(i as u64).to_le_bytes())?;
                    w.write_all(&block[8..])?;
                }
                Ok(None)
            })
            .unwrap();
        assert_eq!(d.size, (BLOB_MIB * MIB) as u64);
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let hwm_kib: usize = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        eprintln!(
            "big blob: {BLOB_MIB} MiB uploaded, peak RSS {} MiB",
            hwm_kib / 1024
        );
        assert!(hwm_kib < 64 * 1024, "peak RSS {hwm_kib} KiB");
        return;
    }
    let reg = Registry::start(Setup::default());
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "big_blob_streams_in_bounded_memory",
            "--nocapture",
        ])
        .env("SLI_TEST_BIG_HOST", reg.host())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "{}",
        text.lines()
            .filter(|l| l.contains("big blob"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(out.status.success() && text.contains("1 passed"), "{text}");
    assert_eq!(reg.uploads(), 1);
}

/// A registry that answers a manifest with an endless body, and never
/// answers a HEAD: capped reads and time-outs, one line each, no hang.
#[test]
fn hostile_server_is_bounded() {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().take(64) {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut b).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                if line.starts_with("GET /v2/ ") {
                    let _ = s.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                    );
                } else if line.starts_with("GET ") {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nTransfer-Encoding: chunked\r\n\r\n");
                    let chunk = [b'x'; 65536];
                    // Endless, until the client goes away (bounded anyway).
                    for _ in 0..16 * 1024 {
                        if s.write_all(b"10000\r\n")
                            .and_then(|_| s.write_all(&chunk))
                            .and_then(|_| s.write_all(b"\r\n"))
                            .is_err()
                        {
                            return;
                        }
                    }
                } else {
                    // Never answer.
                    std::thread::sleep(Duration::from_secs(30));
                }
            });
        }
    });
    let o = Options {
        timeouts: Timeouts {
            connect: Duration::from_secs(2),
            io: Duration::from_secs(1),
            request: Duration::from_secs(3),
        },
        retry: RetryPolicy {
            attempts: 2,
            ..opts().retry
        },
        ..opts()
    };
    let host = format!("127.0.0.1:{port}");
    let c = client(&host, "hostile/x", &o);
    let start = Instant::now();
    let e = c.get_manifest("big").unwrap_err();
    assert_one_line(
        &e,
        &[
            &format!("registry {host}, repository hostile/x"),
            "larger than 4 MiB",
        ],
    );
    let e = c
        .blob_exists(&format!("sha256:{}", "a".repeat(64)))
        .unwrap_err();
    assert_one_line(&e, &["checking blob", "2 tries"]);
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "{:?}",
        start.elapsed()
    );
}

/// `--push` given several times: one push per repository with all its
/// tags; the store is read once, later repositories mount.
#[test]
fn push_all_reads_the_store_once() {
    let reg = Registry::start(Setup::default());
    let host = reg.host();
    let (a, b, _) = layers();
    let reads = Arc::new(AtomicUsize::new(0));
    let mut p = plan(&[&a, &b], false, ManifestFormat::Oci);
    for (l, src) in p.layers.iter_mut().zip([&a, &b]) {
        let (r, gz) = (reads.clone(), src.gz.clone());
        l.produce = Box::new(move |w| {
            r.fetch_add(1, Ordering::SeqCst);
            w.write_all(&gz)?;
            Ok(None)
        });
    }
    let refs: Vec<Reference> = [
        format!("{host}/all/one:1"),
        format!("{host}/all/two"),
        format!("{host}/all/one:2"),
    ]
    .iter()
    .map(|r| Reference::parse(r).unwrap())
    .collect();
    let events = AtomicUsize::new(0);
    let out = stream_layered_image::registry::push_all(&refs, &p, &opts(), &[], &|_, _| {
        events.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    assert_eq!(reads.load(Ordering::SeqCst), 2, "each layer read once");
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].0.repository, "all/one");
    assert_eq!(out[0].1.blobs_uploaded, 3);
    assert_eq!((out[1].1.blobs_mounted, out[1].1.blobs_uploaded), (3, 0));
    assert_eq!(out[0].1.manifest_digest, out[1].1.manifest_digest);
    assert_eq!(reg.uploads(), 3);
    for r in ["all/one:1", "all/one:2", "all/two:latest"] {
        let info: Value =
            serde_json::from_slice(&skopeo(&[], &format!("{host}/{r}"), None)).unwrap();
        assert_eq!(info["Digest"], out[0].1.manifest_digest.as_str(), "{r}");
    }
    // A digest reference must be the image's.
    let bad = Reference::parse(&format!("{host}/all/three@sha256:{}", "1".repeat(64))).unwrap();
    let e =
        stream_layered_image::registry::push_all(&[bad], &p, &opts(), &[], &|_, _| {}).unwrap_err();
    assert_one_line(&e, &["repository all/three", "not sha256:1111"]);
    assert_eq!(
        reg.requests("/v2/all/three/manifests/"),
        0,
        "checked before any manifest"
    );
}

/// Config and manifest built after the upload, from what the producers
/// saw (diff_ids) and the final digests; producers borrow local data.
#[test]
fn config_and_manifest_built_from_upload_results() {
    use std::sync::Mutex;
    use stream_layered_image::registry::manifest;
    let reg = Registry::start(Setup::default());
    let (a, b, _) = layers();
    let store = [a.clone(), b.clone()];
    let diff_ids: Mutex<Vec<Option<String>>> = Mutex::new(vec![None, None]);
    let format = ManifestFormat::Docker;
    let p = PushPlan {
        layers: store
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let diff_ids = &diff_ids;
                BlobSource::new(format.layer_media_type("gzip"), move |w| {
                    w.write_all(&l.gz)?;
                    diff_ids.lock().unwrap()[i] = Some(l.diff_id.clone());
                    Ok(())
                })
            })
            .collect(),
        config: ConfigSpec::Build(Box::new(|results| {
            assert_eq!(results.len(), 2);
            let ids = diff_ids.lock().unwrap();
            let ids: Vec<&str> = ids.iter().map(|d| d.as_deref().unwrap()).collect();
            Ok(serde_json::to_vec(&serde_json::json!({
                "architecture": "amd64", "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": ids},
            }))?)
        })),
        manifest: ManifestSpec::Build(Box::new(move |config, results| {
            let l: Vec<(&str, &BlobDigest)> = results
                .iter()
                .map(|r| (r.media_type.as_str(), &r.digest))
                .collect();
            Ok((
                format.manifest_media_type().to_owned(),
                manifest::build(format, config, &l),
            ))
        })),
        earlier: None,
    };
    let r = push(
        &client(&reg.host(), "built/app", &opts()),
        &p,
        &tags(&["t"]),
        &quiet,
    )
    .unwrap();
    let reference = format!("{}/built/app:t", reg.host());
    check_with_skopeo(&reference, &r, &[&a, &b], format, None);
    let config: Value =
        serde_json::from_slice(&skopeo(&["--config", "--raw"], &reference, None)).unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!([a.diff_id, b.diff_id])
    );
}
