//! The Nix formats the layering step reads: store path validation, closureInfo's
//! `registration` file and the `exportReferencesGraph` JSON.
//!
//! Mirrors what nixpkgs feeds its layering programs: `auto-layer.nix` and
//! `make-layers.nix` export the reference graph with `__structuredAttrs`
//! (a JSON list of `{path, narHash, narSize, references, closureSize}` under
//! the key `graph` of `.attrs.json`), and `closure-info.nix` writes the same
//! data as `registration` (repeated records `path`, `narHash`, `narSize`, an
//! empty deriver line, the reference count, then the references, one a line).
//! Only `path`, `narSize` and `references` matter to the algorithms; the
//! `narHash` is kept, as Nix wrote it, for the SBOM (`crate::sbom`).

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// One store path of the reference graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphEntry {
    pub path: String,
    /// The NAR hash as Nix wrote it (`sha256:<nix-base32>`, or SRI
    /// `sha256-<base64>` in newer JSON); `None` when the input had none.
    /// Not checked here: the layering never reads it, so a malformed hash
    /// must not stop an image from streaming (the SBOM warns instead).
    pub nar_hash: Option<String>,
    pub nar_size: u64,
    /// As Nix writes them: may include `path` itself (a self-reference).
    pub references: Vec<String>,
}

/// Characters Nix allows in the name part of a store path.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+-._?=".contains(c)
}

/// Checks that `path` is `<store_dir>/<32-char hash>-<name>`, one component
/// below the store. The hash is checked for shape (32 lowercase ASCII letters
/// or digits), not for Nix's base-32 alphabet, so that hand-made test stores
/// work; the name follows Nix's rules.
pub fn check_store_path(path: &str, store_dir: &str) -> Result<()> {
    let dir = store_dir.trim_end_matches('/');
    let Some(base) = path
        .strip_prefix(dir)
        .and_then(|rest| rest.strip_prefix('/'))
    else {
        bail!("{path:?} is not inside the store {store_dir}");
    };
    let shape =
        || format!("{path:?} is not a store path (expected {dir}/<32-character hash>-<name>)");
    if base.contains('/') {
        bail!("{path:?} is not a store path but a path inside one (expected {dir}/<hash>-<name>)");
    }
    let (hash, name) = match (base.get(..32), base.get(32..)) {
        (Some(h), Some(rest)) => match rest.strip_prefix('-') {
            Some(name) => (h, name),
            None => bail!(shape()),
        },
        _ => bail!(shape()),
    };
    if !hash
        .chars()
        .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
    {
        bail!(shape());
    }
    if name.is_empty() || name.len() > 211 || name.starts_with('.') {
        bail!("{path:?} has a store path name Nix does not allow (empty, over 211 bytes or starting with '.')");
    }
    if let Some(c) = name.chars().find(|c| !is_name_char(*c)) {
        bail!("{path:?} has {c:?} in its name, which Nix does not allow in store paths");
    }
    Ok(())
}

/// Parses closureInfo's `registration` text (also `nix-store --dump-db`).
pub fn parse_registration(text: &str) -> Result<Vec<GraphEntry>> {
    let mut lines: Vec<&str> = text.split('\n').collect();
    // The file ends with a newline: the last split piece is empty.
    while lines.last() == Some(&"") {
        lines.pop();
    }
    let mut entries = Vec::new();
    let mut at = 0;
    let next = |at: &mut usize, what: &str| -> Result<&str> {
        let line = lines
            .get(*at)
            .with_context(|| format!("line {}: file ends where {what} was expected", *at + 1))?;
        *at += 1;
        Ok(line)
    };
    while at < lines.len() {
        let start = at + 1;
        let path = next(&mut at, "a store path")?;
        if !path.starts_with('/') {
            bail!("line {start}: expected a store path, got {path:?}");
        }
        let nar_hash = next(&mut at, "the narHash")?.trim();
        let size = next(&mut at, "the narSize")?;
        let nar_size = size
            .trim()
            .parse::<u64>()
            .with_context(|| format!("line {}: narSize of {path} is not a number: {size:?}", at))?;
        next(&mut at, "the deriver")?;
        let count = next(&mut at, "the reference count")?;
        let count = count.trim().parse::<usize>().with_context(|| {
            format!(
                "line {}: reference count of {path} is not a number: {count:?}",
                at
            )
        })?;
        let mut references = Vec::with_capacity(count.min(lines.len()));
        for _ in 0..count {
            references.push(next(&mut at, "a reference")?.to_owned());
        }
        entries.push(GraphEntry {
            path: path.to_owned(),
            nar_hash: (!nar_hash.is_empty()).then(|| nar_hash.to_owned()),
            nar_size,
            references,
        });
    }
    Ok(entries)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonEntry {
    path: String,
    // Optional: hand-written graphs (and the tests' vectors) may leave it out.
    #[serde(default)]
    nar_hash: Option<String>,
    nar_size: u64,
    references: Vec<String>,
}

/// Parses exportReferencesGraph JSON: the list itself, or an object (Nix's
/// `.attrs.json`) holding it under `graph` (or `closure`, closureInfo's key).
pub fn parse_references_graph(bytes: &[u8]) -> Result<Vec<GraphEntry>> {
    let value: serde_json::Value = serde_json::from_slice(bytes).context("invalid JSON")?;
    let list = match value {
        serde_json::Value::Array(_) => value,
        serde_json::Value::Object(mut map) => {
            match map.remove("graph").or_else(|| map.remove("closure")) {
                Some(list) => list,
                None => bail!(
                    "JSON object has no `graph` key (keys: {})",
                    map.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            }
        }
        _ => bail!("expected the exportReferencesGraph list, or an object with key `graph`"),
    };
    let list: Vec<JsonEntry> = serde_json::from_value(list)
        .context("expected a list of {path, narSize, references} objects")?;
    Ok(list
        .into_iter()
        .map(|e| GraphEntry {
            path: e.path,
            nar_hash: e.nar_hash.filter(|h| !h.is_empty()),
            nar_size: e.nar_size,
            references: e.references,
        })
        .collect())
}

/// Reads a graph in any of the three forms, telling them apart by content:
/// a directory (closureInfo's output: its `registration` is read), a JSON
/// file (starts with `[` or `{`), or a registration file.
pub fn load_graph(path: &Path) -> Result<Vec<GraphEntry>> {
    let shown = path.display();
    let file = if path.is_dir() {
        path.join("registration")
    } else {
        path.to_path_buf()
    };
    let bytes = std::fs::read(&file)
        .with_context(|| format!("reference graph {}: cannot read", file.display()))?;
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let parsed = if matches!(first, Some(b'[') | Some(b'{')) {
        parse_references_graph(&bytes)
    } else {
        std::str::from_utf8(&bytes)
            .context("registration is not UTF-8")
            .and_then(parse_registration)
    };
    parsed.with_context(|| format!("reference graph {shown}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/nix/store/zzdm2y7j47jfipc1va7hkdbhdp4jpzdy-glibc-2.40-66";
    const Q: &str = "/nix/store/5pm8mxqc2dkbrx5skrckqprggcvp835d-app-1.0";

    #[test]
    fn store_paths() {
        check_store_path(P, "/nix/store").unwrap();
        check_store_path(P, "/nix/store/").unwrap();
        let bad = [
            (
                "/nix/store2/zzdm2y7j47jfipc1va7hkdbhdp4jpzdy-x",
                "not inside",
            ),
            (
                "/nix/store/zzdm2y7j47jfipc1va7hkdbhdp4jpzdy-x/bin",
                "inside one",
            ),
            (
                "/nix/store/zzdm2y7j47jfipc1va7hkdbhdp4jpzdy",
                "not a store path",
            ),
            ("/nix/store/short-x", "not a store path"),
            (
                "/nix/store/ZZDM2Y7J47JFIPC1VA7HKDBHDP4JPZDY-x",
                "not a store path",
            ),
            ("/nix/store/zzdm2y7j47jfipc1va7hkdbhdp4jpzdy-", "name"),
            ("/nix/store/zzdm2y7j47jfipc1va7hkdbhdp4jpzdy-a b", "' '"),
            ("/nix/store/zzdm2y7j47jfipc1va7hkdbhdp4jpzdy-.x", "name"),
        ];
        for (path, why) in bad {
            let err = check_store_path(path, "/nix/store")
                .unwrap_err()
                .to_string();
            assert!(err.contains(why) && err.contains(path), "{path}: {err}");
        }
    }

    #[test]
    fn registration_as_closure_info_writes_it() {
        // closure-info.nix: fields joined by "\n", last empty line cut by `head -n -1`.
        let text = format!("{Q}\nsha256:abc\n77000\n\n2\n{Q}\n{P}\n{P}\nsha256:def\n30\n\n0\n");
        let entries = parse_registration(&text).unwrap();
        assert_eq!(
            entries,
            vec![
                GraphEntry {
                    path: Q.into(),
                    nar_hash: Some("sha256:abc".into()),
                    nar_size: 77000,
                    references: vec![Q.into(), P.into()]
                },
                GraphEntry {
                    path: P.into(),
                    nar_hash: Some("sha256:def".into()),
                    nar_size: 30,
                    references: vec![]
                },
            ]
        );
        assert!(parse_registration("").unwrap().is_empty());
        // Without the final newline too.
        assert_eq!(parse_registration(text.trim_end()).unwrap().len(), 2);
    }

    #[test]
    fn registration_errors_name_the_line() {
        let err = parse_registration(&format!("{P}\nsha256:x\nbig\n\n0\n")).unwrap_err();
        assert!(format!("{err:#}").contains("line 3"), "{err:#}");
        let err = parse_registration(&format!("{P}\nsha256:x\n1\n\n2\n{P}\n")).unwrap_err();
        assert!(format!("{err:#}").contains("reference"), "{err:#}");
    }

    #[test]
    fn json_list_and_attrs_object() {
        let list = format!(
            r#"[{{"closureSize":1,"narHash":"sha256:x","narSize":5,"path":"{P}","references":["{P}"]}}]"#
        );
        let a = parse_references_graph(list.as_bytes()).unwrap();
        let b =
            parse_references_graph(format!(r#"{{"graph":{list},"other":1}}"#).as_bytes()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[0].nar_size, 5);
        assert_eq!(a[0].nar_hash.as_deref(), Some("sha256:x"));
        // SRI hashes (newer Nix) are kept as written; a missing one is None.
        let sri =
            format!(r#"[{{"narHash":"sha256-AAAA","narSize":5,"path":"{P}","references":[]}}]"#);
        assert_eq!(
            parse_references_graph(sri.as_bytes()).unwrap()[0]
                .nar_hash
                .as_deref(),
            Some("sha256-AAAA")
        );
        let bare = format!(r#"[{{"narSize":5,"path":"{P}","references":[]}}]"#);
        assert_eq!(
            parse_references_graph(bare.as_bytes()).unwrap()[0].nar_hash,
            None
        );
        let err = parse_references_graph(br#"{"nope":[]}"#).unwrap_err();
        assert!(format!("{err:#}").contains("graph"), "{err:#}");
        let err = parse_references_graph(br#"[{"path":"/x"}]"#).unwrap_err();
        assert!(format!("{err:#}").contains("narSize"), "{err:#}");
    }
}
