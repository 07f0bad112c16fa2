//! Merging the base image's `config` into the new image's, as nixpkgs'
//! `overlay_base_config` does: only `Env` is inherited. The base's entries
//! come first, then the child's; entries are keyed by the text before the
//! first `=`, and a key keeps the position of its first occurrence and the
//! value of its last (what building a Python dict from the list gives).
//! Every other field (Cmd, Entrypoint, WorkingDir …) is the child's alone.

use serde_json::{Map, Value};

/// The new image's `config` object.
///
/// Both arguments are `config` objects: `base_config` is
/// `BaseImage::config()["config"]` (the base image configuration's
/// `config` field, not the whole configuration), `child_config` is the
/// conf's `config`. A missing or null `Env` counts as empty; when both are
/// empty the child's config is returned unchanged (no `Env` is added). A
/// child without `Env` gets the merged `Env` as its last key; a child with
/// one keeps it in place.
pub fn merge_config(base_config: &Value, child_config: &Value) -> Value {
    // A null config (Nix's `config = null`) still inherits the base's Env;
    // nixpkgs' Python would crash on it.
    let mut merged = match child_config {
        Value::Null => Value::Object(Default::default()),
        other => other.clone(),
    };
    let Some(child) = merged.as_object_mut() else {
        return merged;
    };
    let entries: Vec<&Value> = env_entries(base_config)
        .chain(env_entries(child_config))
        .collect();
    if entries.is_empty() {
        return merged;
    }
    child.insert("Env".to_owned(), Value::Array(dedupe_by_key(&entries)));
    merged
}

/// The `Env` entries of a `config` object (none if absent or malformed).
fn env_entries(config: &Value) -> impl Iterator<Item = &Value> {
    config
        .get("Env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// First position, last value, keyed by the name before `=`.
fn dedupe_by_key(entries: &[&Value]) -> Vec<Value> {
    let mut by_key: Map<String, Value> = Map::new();
    for entry in entries {
        // serde_json's preserve_order map keeps an existing key's position
        // on insert, exactly like a Python dict.
        by_key.insert(env_key(entry), (*entry).clone());
    }
    by_key.into_iter().map(|(_, v)| v).collect()
}

/// `NAME` of `NAME=value`; a non-string entry (the conf's business, checked
/// elsewhere) is keyed by its JSON text so it is kept, not dropped.
fn env_key(entry: &Value) -> String {
    match entry {
        Value::String(s) => s.split_once('=').map_or(s.as_str(), |(k, _)| k).to_owned(),
        other => format!("\0{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn null_child_config_inherits_the_base_env() {
        let base = json!({"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]});
        assert_eq!(
            merge_config(&base, &Value::Null),
            json!({"Env": ["PATH=/bin"]})
        );
    }

    #[test]
    fn key_keeps_first_position_and_last_value() {
        let base = json!({"Env": ["PATH=/bin", "LANG=C.UTF-8", "A=1"]});
        let child = json!({"Cmd": ["/bin/hello"], "Env": ["LANG=en_US.UTF-8", "EXTRA=1", "A=2"]});
        let merged = merge_config(&base, &child);
        assert_eq!(
            merged,
            json!({"Cmd": ["/bin/hello"], "Env": ["PATH=/bin", "LANG=en_US.UTF-8", "A=2", "EXTRA=1"]})
        );
    }

    #[test]
    fn duplicate_keys_within_one_side_collapse_too() {
        let merged = merge_config(&json!({"Env": ["X=1", "X=2"]}), &json!({}));
        assert_eq!(merged, json!({"Env": ["X=2"]}));
    }

    #[test]
    fn key_is_text_before_the_first_equals() {
        let merged = merge_config(
            &json!({"Env": ["A=b=c", "NOVALUE"]}),
            &json!({"Env": ["A=d", "NOVALUE"]}),
        );
        assert_eq!(merged["Env"], json!(["A=d", "NOVALUE"]));
    }

    #[test]
    fn child_without_env_gets_it_as_last_key() {
        let merged = merge_config(
            &json!({"Env": ["PATH=/bin"], "Cmd": ["base"]}),
            &json!({"Cmd": ["x"], "User": "1"}),
        );
        let keys: Vec<&String> = merged.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["Cmd", "User", "Env"]);
        assert_eq!(merged["Cmd"], json!(["x"]), "only Env is inherited");
    }

    #[test]
    fn env_keeps_its_place_in_the_child() {
        let merged = merge_config(
            &json!({"Env": ["P=1"]}),
            &json!({"Env": ["Q=2"], "Cmd": ["x"]}),
        );
        let keys: Vec<&String> = merged.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["Env", "Cmd"]);
    }

    #[test]
    fn no_env_anywhere_leaves_the_child_unchanged() {
        let child = json!({"Cmd": ["x"]});
        assert_eq!(merge_config(&json!({"Cmd": ["y"]}), &child), child);
        assert_eq!(merge_config(&Value::Null, &child), child);
        let child_empty_env = json!({"Env": []});
        assert_eq!(merge_config(&json!({}), &child_empty_env), child_empty_env);
    }

    #[test]
    fn null_env_counts_as_empty() {
        let merged = merge_config(&json!({"Env": null}), &json!({"Env": ["A=1"]}));
        assert_eq!(merged, json!({"Env": ["A=1"]}));
    }
}
