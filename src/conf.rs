//! The conf.json that `nix/stream-layered-image.nix` writes and the
//! executable reads: nixpkgs' streamLayeredImage conf (the keys
//! `stream_layered_image.py` reads) plus our graph-based `layering` form.
//!
//! Exactly one of `store_layers` (layers decided at build time, nixpkgs'
//! form) and `layering` (layers decided here, at stream time, from the
//! exported reference graph) must be present.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer};

/// One image to stream.
#[derive(Debug, Clone, Deserialize)]
pub struct Conf {
    /// The Nix store directory, normally `/nix/store`. Every store path the
    /// conf names must lie inside it.
    #[serde(default = "default_store_dir")]
    pub store_dir: String,
    /// A base image tarball (`fromImage`), or null.
    #[serde(default)]
    pub from_image: Option<PathBuf>,
    /// Layers decided at build time: each a list of store paths, in order.
    #[serde(default)]
    pub store_layers: Option<Vec<Vec<String>>>,
    /// Layers decided at stream time from the reference graph.
    #[serde(default)]
    pub layering: Option<crate::layering::Spec>,
    /// A directory holding `layer.tar` and `checksum` (nixpkgs' form).
    pub customisation_layer: PathBuf,
    /// `name:tag` the image loads as; `-t` overrides it at stream time.
    pub repo_tag: String,
    /// Image creation time: ISO 8601, or `"now"` (resolved at stream time).
    pub created: String,
    /// Modification time of every layer entry: ISO 8601, or `"now"`.
    pub mtime: String,
    /// Owner of every layer entry; nixpkgs passes numbers or numeric strings.
    #[serde(deserialize_with = "number_or_numeric_string")]
    pub uid: u32,
    #[serde(deserialize_with = "number_or_numeric_string")]
    pub gid: u32,
    pub uname: String,
    pub gname: String,
    /// OCI `architecture`, e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// OCI `variant` (e.g. `v8`), omitted when null.
    #[serde(default)]
    pub variant: Option<String>,
    /// OCI `os`; nixpkgs always writes `linux`.
    #[serde(default = "default_os")]
    pub os: String,
    /// The image's `config` object (Cmd, Env, …), kept in the conf's key
    /// order because the image ID hashes these bytes.
    #[serde(default = "empty_object")]
    pub config: serde_json::Value,
}

/// The largest conf.json read (parsed JSON costs several times its size):
/// 100 000 store paths in `store_layers` take about 10 MiB.
pub const MAX_CONF: u64 = 64 << 20;

fn default_store_dir() -> String {
    "/nix/store".to_owned()
}

fn default_os() -> String {
    "linux".to_owned()
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// nixpkgs writes `uid = 0` as a number but lets users pass `"1000"`.
fn number_or_numeric_string<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        Number(u32),
        Text(String),
    }
    match Id::deserialize(d)? {
        Id::Number(n) => Ok(n),
        Id::Text(s) => s.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!("expected a number or numeric string, got {s:?}"))
        }),
    }
}

impl Conf {
    /// Reads and checks a conf file. Errors name the file and the problem.
    pub fn load(path: &Path) -> Result<Conf> {
        let cannot = || format!("conf {}: cannot read", path.display());
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .with_context(cannot)?
            .take(MAX_CONF + 1)
            .read_to_end(&mut bytes)
            .with_context(cannot)?;
        if bytes.len() as u64 > MAX_CONF {
            bail!(
                "conf {}: is over {} MiB; a conf names store paths, it does not hold data",
                path.display(),
                MAX_CONF >> 20
            );
        }
        Conf::parse(&bytes).with_context(|| format!("conf {}", path.display()))
    }

    /// Parses conf bytes and checks what serde cannot.
    pub fn parse(bytes: &[u8]) -> Result<Conf> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).context("is not valid JSON")?;
        check_shape(&value)?;
        let conf: Conf = serde_json::from_value(value)?;
        match (&conf.store_layers, &conf.layering) {
            (None, None) => bail!("needs `store_layers` or `layering`"),
            (Some(_), Some(_)) => bail!("has both `store_layers` and `layering`; give one"),
            _ => {}
        }
        Ok(conf)
    }
}

/// Docker's limit on the layers of an image (`max depth exceeded` beyond).
pub const DOCKER_MAX_LAYERS: usize = 125;

/// Checks made the way the consumer of the image will make them, once the
/// repo_tag (the conf's or `-t`'s) and the layer counts are known:
///
/// - the repo_tag must be `NAME:TAG` in Docker's reference grammar (lower
///   case repository, valid tag), or `docker load` refuses the image after
///   it has been streamed; the error shows the rule;
/// - more layers than Docker's 125 (base + store + customisation) is a
///   warning line: Docker refuses to run the image, other tools may not.
pub fn check_image(repo_tag: &str, base_layers: usize, store_layers: usize) -> Result<()> {
    crate::reference::check_repo_tag(repo_tag)?;
    if let Some(w) = layer_count_warning(base_layers, store_layers) {
        crate::escape::to_stderr(&format!("stream-layered-image: warning: {w}\n"));
    }
    Ok(())
}

/// The warning for more layers than Docker takes, if any.
pub fn layer_count_warning(base_layers: usize, store_layers: usize) -> Option<String> {
    let total = base_layers + store_layers + 1;
    (total > DOCKER_MAX_LAYERS).then(|| {
        format!(
            "the image has {total} layers ({base_layers} base, {store_layers} store, \
             1 customisation); Docker refuses more than {DOCKER_MAX_LAYERS} \
             (lower maxLayers or store_layers)"
        )
    })
}

/// What a field's JSON must look like.
#[derive(Clone, Copy)]
enum Shape {
    Text,
    OptText,
    Id,
    OptObject,
    OptLayers,
    Count,
    Flag,
    Texts,
    Any,
}

/// The conf's fields and shapes, checked before serde so that a wrong type
/// is reported by field name (serde's own message would not name it).
const FIELDS: &[(&str, Shape)] = &[
    ("store_dir", Shape::Text),
    ("from_image", Shape::OptText),
    ("store_layers", Shape::OptLayers),
    ("layering", Shape::OptObject),
    ("customisation_layer", Shape::Text),
    ("repo_tag", Shape::Text),
    ("created", Shape::Text),
    ("mtime", Shape::Text),
    ("uid", Shape::Id),
    ("gid", Shape::Id),
    ("uname", Shape::Text),
    ("gname", Shape::Text),
    ("architecture", Shape::Text),
    ("variant", Shape::OptText),
    ("os", Shape::Text),
    ("config", Shape::OptObject),
];

fn check_shape(value: &serde_json::Value) -> Result<()> {
    let Some(obj) = value.as_object() else {
        bail!("must be a JSON object, not {}", brief(value));
    };
    check_fields(obj, FIELDS, "")?;
    if let Some(layering) = obj.get("layering").and_then(|l| l.as_object()) {
        check_fields(layering, LAYERING_FIELDS, "layering.")?;
    }
    Ok(())
}

/// The `layering` object's fields (see `layering::Spec`), checked the same
/// way so that `layering.max_layers: -3` is reported by its name.
const LAYERING_FIELDS: &[(&str, Shape)] = &[
    ("graph", Shape::Text),
    ("exclude_paths", Shape::Texts),
    ("max_layers", Shape::Count),
    ("pipeline", Shape::Any),
    ("debug", Shape::Flag),
];

fn check_fields(
    obj: &serde_json::Map<String, serde_json::Value>,
    fields: &[(&str, Shape)],
    prefix: &str,
) -> Result<()> {
    use serde_json::Value;
    for (key, shape) in fields {
        let Some(v) = obj.get(*key) else { continue };
        let (ok, wanted) = match shape {
            Shape::Text => (v.is_string(), "a string"),
            Shape::OptText => (v.is_string() || v.is_null(), "a string or null"),
            Shape::OptObject => (v.is_object() || v.is_null(), "a JSON object or null"),
            Shape::Id => (
                v.as_u64().is_some_and(|n| n <= u64::from(u32::MAX))
                    || v.as_str().is_some_and(|s| s.trim().parse::<u32>().is_ok()),
                "a number or numeric string (0..4294967295)",
            ),
            Shape::OptLayers => (
                v.is_null()
                    || v.as_array().is_some_and(|layers| {
                        layers.iter().all(|l| {
                            l.as_array()
                                .is_some_and(|ps| ps.iter().all(Value::is_string))
                        })
                    }),
                "a list of lists of store paths",
            ),
            Shape::Count => (
                v.as_u64().is_some_and(|n| usize::try_from(n).is_ok()),
                "a non-negative integer",
            ),
            Shape::Flag => (v.is_boolean(), "true or false"),
            Shape::Texts => (
                v.as_array()
                    .is_some_and(|ps| ps.iter().all(Value::is_string)),
                "a list of strings",
            ),
            Shape::Any => (true, "anything"),
        };
        if !ok {
            bail!("`{prefix}{key}` must be {wanted}, not {}", brief(v));
        }
    }
    Ok(())
}

/// A JSON value shortened for an error message.
fn brief(v: &serde_json::Value) -> String {
    let text = v.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(60).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal(extra: &str) -> String {
        format!(
            r#"{{"customisation_layer": "/c", "repo_tag": "a:b", "created": "now",
                "mtime": "now", "uid": 0, "gid": "1000", "uname": "root",
                "gname": "root", "architecture": "amd64", "config": {{}}{extra}}}"#
        )
    }

    #[test]
    fn numeric_string_ids() {
        let c = Conf::parse(minimal(r#", "store_layers": []"#).as_bytes()).unwrap();
        assert_eq!((c.uid, c.gid), (0, 1000));
        assert_eq!(c.store_dir, "/nix/store");
    }

    #[test]
    fn null_config_is_accepted_as_nixpkgs_allows_it() {
        let s = minimal(r#", "store_layers": []"#).replace(r#""config": {}"#, r#""config": null"#);
        assert!(Conf::parse(s.as_bytes()).unwrap().config.is_null());
    }

    #[test]
    fn needs_exactly_one_layer_source() {
        let err = Conf::parse(minimal("").as_bytes()).unwrap_err();
        assert!(format!("{err:#}").contains("store_layers"), "{err:#}");
    }

    #[test]
    fn bad_uid_is_named() {
        let s = minimal(r#", "store_layers": []"#).replace(r#""1000""#, r#""x""#);
        let err = Conf::parse(s.as_bytes()).unwrap_err();
        assert!(
            format!("{err:#}").contains("`gid` must be a number or numeric string"),
            "{err:#}"
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        for (field, bad) in [
            ("uid", "[1]"),
            ("uname", "5"),
            ("store_layers", "[[1]]"),
            ("config", "[]"),
            ("uid", "-1"),
        ] {
            let mut v: serde_json::Value =
                serde_json::from_str(&minimal(r#", "store_layers": []"#)).unwrap();
            v[field] = serde_json::from_str(bad).unwrap();
            let err = Conf::parse(v.to_string().as_bytes()).unwrap_err();
            assert!(
                format!("{err:#}").contains(&format!("`{field}` must be")),
                "{field}: {err:#}"
            );
        }
    }

    #[test]
    fn wrong_layering_types_name_the_field() {
        for (field, bad) in [
            ("max_layers", "-3"),
            ("max_layers", "\"100\""),
            ("graph", "7"),
            ("exclude_paths", "[1]"),
            ("debug", "\"yes\""),
        ] {
            let mut v: serde_json::Value =
                serde_json::from_str(&minimal(r#", "layering": {"graph": "/g"}"#)).unwrap();
            v["layering"][field] = serde_json::from_str(bad).unwrap();
            let err = Conf::parse(v.to_string().as_bytes()).unwrap_err();
            assert!(
                format!("{err:#}").contains(&format!("`layering.{field}` must be")),
                "{field}: {err:#}"
            );
        }
    }

    #[test]
    fn image_checks_repo_tag_and_warn_on_layer_count() {
        check_image("hello:latest", 0, 3).unwrap();
        check_image("localhost:5000/a/b:v1", 100, 24).unwrap();
        // (checks with more layers would print the warning in the test run)
        for bad in ["Hello:1", "a b:c", "a:b\nc", "hello", "a:b:c", ""] {
            let e = format!("{:#}", check_image(bad, 0, 1).unwrap_err());
            assert!(
                e.contains("expected") || e.contains("NAME:TAG"),
                "{bad:?}: {e}"
            );
            assert!(!e.contains('\n'), "one line: {e}");
        }
        // 125 is fine, 126 only warns.
        assert_eq!(layer_count_warning(100, 24), None);
        let w = layer_count_warning(100, 25).unwrap();
        assert!(
            w.contains("126 layers") && w.contains("more than 125"),
            "{w}"
        );
    }
}
