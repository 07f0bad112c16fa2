//! The image configuration and manifest JSON, byte for byte as nixpkgs'
//! `stream_layered_image.py` writes them (`json.dumps(..., indent=4)`):
//! keys `created`, `architecture`, `os`, `config`, `rootfs` (`diff_ids`,
//! `type`), `history` (one `{created, comment: "store paths: [...]"}` per
//! layer, base layers included). The image ID is the sha256 of the config
//! bytes. We add `variant` after `architecture` only when the conf sets it
//! (nixpkgs' reference never writes one), so nixpkgs confs give nixpkgs bytes.

mod isotime;

pub use isotime::IsoTime;

use serde_json::{json, Map, Value};

use crate::pyjson;

/// What the config records about one layer.
#[derive(Debug, Clone)]
pub struct LayerInfo {
    /// `sha256:<hex>` of the uncompressed layer tarball.
    pub diff_id: String,
    /// The paths in its history comment: store paths, the customisation
    /// layer directory, or a base layer's member name.
    pub paths: Vec<String>,
    /// The member name in the outer archive (manifest `Layers`).
    pub member: String,
}

/// The image-level fields of the config.
#[derive(Debug, Clone)]
pub struct ImageMeta<'a> {
    pub created: &'a IsoTime,
    pub architecture: &'a str,
    pub variant: Option<&'a str>,
    pub os: &'a str,
    /// The `config` object, already merged with a base image's.
    pub config: &'a Value,
}

/// The image configuration bytes.
pub fn config_json(meta: &ImageMeta, layers: &[LayerInfo]) -> Vec<u8> {
    let created = meta.created.isoformat();
    let mut top = Map::new();
    top.insert("created".into(), json!(created));
    top.insert("architecture".into(), json!(meta.architecture));
    if let Some(v) = meta.variant {
        top.insert("variant".into(), json!(v));
    }
    top.insert("os".into(), json!(meta.os));
    top.insert("config".into(), meta.config.clone());
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    top.insert(
        "rootfs".into(),
        json!({"diff_ids": diff_ids, "type": "layers"}),
    );
    let history: Vec<Value> = layers
        .iter()
        .map(|l| {
            let comment = format!("store paths: {}", pyjson::repr_str_list(&l.paths));
            json!({"created": created, "comment": comment})
        })
        .collect();
    top.insert("history".into(), Value::Array(history));
    pyjson::dumps_indent4(&Value::Object(top)).into_bytes()
}

/// The docker-archive `manifest.json` bytes.
pub fn manifest_json(config_member: &str, repo_tag: &str, layers: &[LayerInfo]) -> Vec<u8> {
    let members: Vec<&str> = layers.iter().map(|l| l.member.as_str()).collect();
    let manifest = json!([{ "Config": config_member, "RepoTags": [repo_tag], "Layers": members }]);
    pyjson::dumps_indent4(&manifest).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_config_is_written_as_null_like_python() {
        let created = IsoTime::parse("1970-01-01T00:00:01Z", std::time::UNIX_EPOCH).unwrap();
        let meta = ImageMeta {
            created: &created,
            architecture: "amd64",
            variant: None,
            os: "linux",
            config: &Value::Null,
        };
        let text = String::from_utf8(config_json(&meta, &[])).unwrap();
        assert!(text.contains("\n    \"config\": null,\n"), "{text}");
    }

    #[test]
    fn key_order_and_history_comment() {
        let created = IsoTime::parse("1970-01-01T00:00:01Z", std::time::UNIX_EPOCH).unwrap();
        let config = json!({"Cmd": ["/bin/x"]});
        let meta = ImageMeta {
            created: &created,
            architecture: "arm64",
            variant: Some("v8"),
            os: "linux",
            config: &config,
        };
        let layers = [LayerInfo {
            diff_id: "sha256:ab".into(),
            paths: vec!["/nix/store/a".into(), "/nix/store/b".into()],
            member: "1/layer.tar".into(),
        }];
        let text = String::from_utf8(config_json(&meta, &layers)).unwrap();
        let keys: Vec<usize> = [
            "\"created\"",
            "\"architecture\"",
            "\"variant\"",
            "\"os\"",
            "\"config\"",
            "\"rootfs\"",
            "\"history\"",
        ]
        .iter()
        .map(|k| text.find(k).unwrap())
        .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(
            text.contains(r#""comment": "store paths: ['/nix/store/a', '/nix/store/b']""#),
            "{text}"
        );
        let manifest = String::from_utf8(manifest_json("c.json", "a:b", &layers)).unwrap();
        assert!(manifest
            .starts_with("[\n    {\n        \"Config\": \"c.json\",\n        \"RepoTags\": [\n"));
    }
}
