//! The facts both formats write, worked out once from an [`SbomInput`]:
//! per store path its package name and version (Nix's metadata first, else
//! `parseDrvName`), package URL, SHA-256 of the NAR, layer and dependencies;
//! the image's layers; licence expressions; and every warning about what is
//! missing or malformed. The formats only arrange these facts, so SPDX and
//! CycloneDX always agree and warn alike.

use std::collections::{BTreeMap, HashMap};

use super::hash::nar_hash_hex;
use super::model::{ImageIdentity, LayerKind, License, SbomInput, StorePath};
use super::name::parse_store_path;

/// One store path, ready to write.
pub(crate) struct Package<'a> {
    pub store: &'a StorePath,
    pub name: String,
    pub version: Option<String>,
    /// `pkg:nix/<name>@<version>`.
    pub purl: String,
    /// Lower-case hex SHA-256 of the NAR.
    pub sha256: Option<String>,
    /// Indices in [`Resolved::packages`]: ascending, without itself.
    pub depends_on: Vec<usize>,
    /// Index in [`Resolved::layers`].
    pub layer: Option<usize>,
    pub license: Option<LicenseExpr>,
    pub homepage: Option<&'a str>,
    pub description: Option<&'a str>,
}

/// One layer, ready to write.
pub(crate) struct ResolvedLayer<'a> {
    pub diff_id: &'a str,
    /// Hex of the diff_id, when it is a well-formed `sha256:<hex>`.
    pub sha256: Option<String>,
    /// `base`, `store` or `customisation`.
    pub kind: &'static str,
}

/// A package's licences as one SPDX licence expression.
pub(crate) struct LicenseExpr {
    /// The terms joined with ` AND ` (nixpkgs lists every licence that applies).
    pub expression: String,
    /// Every licence had an SPDX identifier (no `LicenseRef-`).
    pub all_spdx: bool,
    /// A display name per licence: the SPDX id or the licence's name.
    pub names: Vec<String>,
}

/// Everything both formats write.
pub(crate) struct Resolved<'a> {
    pub image: &'a ImageIdentity,
    /// The image as people name it: its first tag, else its name.
    pub image_ref: String,
    pub layers: Vec<ResolvedLayer<'a>>,
    /// Sorted by store path, each path once.
    pub packages: Vec<Package<'a>>,
    /// Packages that no other package refers to: what the image was asked
    /// to hold (its closure roots).
    pub roots: Vec<usize>,
    /// `LicenseRef-…` id → the licence's name, for licences without an
    /// SPDX identifier.
    pub license_refs: BTreeMap<String, String>,
    /// `YYYY-MM-DDThh:mm:ssZ` from the image's `created`.
    pub created: Option<String>,
    pub warnings: Vec<String>,
}

pub(crate) fn resolve(input: &SbomInput) -> Resolved<'_> {
    let mut warnings = Vec::new();
    let layers: Vec<ResolvedLayer> = input
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let sha256 = sha256_of_digest(&l.diff_id);
            if sha256.is_none() {
                warnings.push(format!(
                    "layer {}: diff_id {:?} is not sha256:<64 hex digits>; listed without a checksum",
                    i + 1,
                    l.diff_id
                ));
            }
            ResolvedLayer {
                diff_id: &l.diff_id,
                sha256,
                kind: match l.kind {
                    LayerKind::Base => "base",
                    LayerKind::Store(_) => "store",
                    LayerKind::Customisation => "customisation",
                },
            }
        })
        .collect();

    let mut stores: Vec<&StorePath> = input.store_paths.iter().collect();
    // Stable: of two entries for one path, the first given stays first.
    stores.sort_by(|a, b| a.path.cmp(&b.path));
    let mut unique: Vec<&StorePath> = Vec::with_capacity(stores.len());
    for s in stores {
        match unique.last() {
            Some(prev) if prev.path == s.path => warnings.push(format!(
                "{}: listed twice (layers {} and {}); written once, with the first",
                s.path,
                shown_layer(prev.layer),
                shown_layer(s.layer)
            )),
            _ => unique.push(s),
        }
    }
    let index: HashMap<&str, usize> = unique
        .iter()
        .enumerate()
        .map(|(i, s)| (s.path.as_str(), i))
        .collect();

    let mut license_refs = BTreeMap::new();
    let mut packages = Vec::with_capacity(unique.len());
    for (i, &s) in unique.iter().enumerate() {
        let (parsed, name_warning) = parse_store_path(&s.path);
        let name = match non_empty(&s.meta.name) {
            Some(n) => n.to_owned(),
            None => {
                warnings.extend(name_warning);
                parsed.name
            }
        };
        let version = non_empty(&s.meta.version)
            .map(str::to_owned)
            .or(parsed.version);
        let sha256 = match &s.nar_hash {
            Some(h) => match nar_hash_hex(h) {
                Ok(hex) => Some(hex),
                Err(e) => {
                    warnings.push(format!(
                        "{}: NAR hash {e}; listed without a checksum",
                        s.path
                    ));
                    None
                }
            },
            None if s.references.is_some() => {
                warnings.push(format!(
                    "{}: the reference graph gives no NAR hash; listed without a checksum",
                    s.path
                ));
                None
            }
            None => None,
        };
        let mut depends_on = Vec::new();
        match &s.references {
            None => warnings.push(format!(
                "{}: in the image but not in the reference graph; listed without NAR hash, \
                 size or dependencies",
                s.path
            )),
            Some(refs) => {
                for r in refs {
                    match index.get(r.as_str()) {
                        Some(&j) if j == i => {}
                        Some(&j) => depends_on.push(j),
                        None => warnings.push(format!(
                            "{}: refers to {r}, which is not in the image; that dependency is left out",
                            s.path
                        )),
                    }
                }
            }
        }
        depends_on.sort_unstable();
        depends_on.dedup();
        let layer = match s.layer {
            Some(l) if l < layers.len() => Some(l),
            Some(l) => {
                warnings.push(format!(
                    "{}: layer index {l} is beyond the image's {} layers; listed without a layer",
                    s.path,
                    layers.len()
                ));
                None
            }
            None => None,
        };
        let license = license_expr(&s.meta.licenses, &mut license_refs, &s.path, &mut warnings);
        let homepage = non_empty(&s.meta.homepage).and_then(|h| {
            if is_web_url(h) {
                Some(h)
            } else {
                warnings.push(format!(
                    "{}: homepage {h:?} is not an http(s) URL; left out",
                    s.path
                ));
                None
            }
        });
        packages.push(Package {
            store: s,
            purl: nix_purl(&name, version.as_deref()),
            name,
            version,
            sha256,
            depends_on,
            layer,
            license,
            homepage,
            description: non_empty(&s.meta.description),
        });
    }

    let mut referenced = vec![false; packages.len()];
    for p in &packages {
        for &j in &p.depends_on {
            referenced[j] = true;
        }
    }
    let roots = (0..packages.len()).filter(|&i| !referenced[i]).collect();

    let image = &input.image;
    if sha256_of_digest(&image.image_id).is_none() {
        warnings.push(format!(
            "image ID {:?} is not sha256:<64 hex digits>; written as given",
            image.image_id
        ));
    }
    if let Some(m) = &image.manifest_digest {
        if sha256_of_digest(m).is_none() {
            warnings.push(format!(
                "manifest digest {m:?} is not sha256:<64 hex digits>; listed without a checksum"
            ));
        }
    }
    let created = image.created_unix.and_then(|t| {
        let text = rfc3339_utc(t);
        if text.is_none() {
            warnings.push(format!(
                "created time {t} (seconds since 1970) is outside the years 0001-9999; not written"
            ));
        }
        text
    });
    let image_ref = image
        .tags
        .first()
        .filter(|t| !t.is_empty())
        .cloned()
        .or_else(|| (!image.name.is_empty()).then(|| image.name.clone()))
        .or_else(|| (!image.image_id.is_empty()).then(|| image.image_id.clone()))
        // SPDX requires a document name.
        .unwrap_or_else(|| "image".to_owned());

    // Paths and names come from the input: keep every warning one line.
    let warnings = warnings
        .iter()
        .map(|w| crate::escape::one_line(w))
        .collect();
    Resolved {
        image,
        image_ref,
        layers,
        packages,
        roots,
        license_refs,
        created,
        warnings,
    }
}

fn shown_layer(layer: Option<usize>) -> String {
    layer.map_or_else(|| "none".to_owned(), |l| (l + 1).to_string())
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().filter(|s| !s.trim().is_empty())
}

/// The hex of a `sha256:<64 hex>` digest.
pub(crate) fn sha256_of_digest(digest: &str) -> Option<String> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// Validators check URLs; a nixpkgs homepage is nearly always one.
fn is_web_url(s: &str) -> bool {
    (s.starts_with("https://") || s.starts_with("http://"))
        && s.len() > "https://".len()
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// An SPDX `idstring` (SPDX 2.3 annex D): letters, digits, `.`, `-`, `+`.
///
/// Only the shape is checked, not membership of the SPDX License List:
/// nixpkgs' `spdxId` is by definition a list identifier, and a list bundled
/// here would go stale and turn newer identifiers into `LicenseRef-`s.
/// (A validator with an older list than nixpkgs' may flag such an id.)
fn is_license_id(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with("LicenseRef-")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'+')
}

/// Letters, digits, `.` and `-` kept, anything else becomes `-`: the
/// characters SPDX allows in `SPDXRef-` and `LicenseRef-` ids.
pub(crate) fn id_chars(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn license_expr(
    licenses: &[License],
    refs: &mut BTreeMap<String, String>,
    path: &str,
    warnings: &mut Vec<String>,
) -> Option<LicenseExpr> {
    let mut terms = Vec::new();
    let mut names = Vec::new();
    let mut all_spdx = true;
    for l in licenses {
        let id = l
            .spdx_id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let name = l.name.as_deref().map(str::trim).filter(|s| !s.is_empty());
        match (id, name) {
            (Some(id), _) if is_license_id(id) => {
                terms.push(id.to_owned());
                names.push(id.to_owned());
            }
            (id, name) => match name.or(id) {
                Some(name) => {
                    all_spdx = false;
                    let reference = format!("LicenseRef-{}", id_chars(name));
                    refs.entry(reference.clone())
                        .or_insert_with(|| name.to_owned());
                    terms.push(reference);
                    names.push(name.to_owned());
                }
                None => warnings.push(format!(
                    "{path}: a licence in meta.license has neither spdxId nor a name; left out"
                )),
            },
        }
    }
    terms.sort();
    terms.dedup();
    (!terms.is_empty()).then(|| LicenseExpr {
        expression: terms.join(" AND "),
        all_spdx,
        names,
    })
}

/// `pkg:nix/<name>@<version>`, each part percent-encoded as the purl
/// specification asks (all but letters, digits and `.-_~`).
pub(crate) fn nix_purl(name: &str, version: Option<&str>) -> String {
    let mut purl = format!("pkg:nix/{}", percent(name));
    if let Some(v) = version {
        purl.push('@');
        purl.push_str(&percent(v));
    }
    purl
}

pub(crate) fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `YYYY-MM-DDThh:mm:ssZ`, or `None` outside the years 1 to 9999.
pub(crate) fn rfc3339_utc(unix: i64) -> Option<String> {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days.checked_add(719_468)?;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(1..=9999).contains(&year) {
        return None;
    }
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sbom::model::{Layer, PackageMeta};

    const A: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a-1.0";
    const B: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b+c-2.0";
    const H: &str = "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s";

    fn store(path: &str, refs: Option<&[&str]>) -> StorePath {
        StorePath {
            path: path.into(),
            nar_hash: refs.map(|_| H.to_owned()),
            nar_size: refs.map(|_| 1),
            references: refs.map(|r| r.iter().map(|s| s.to_string()).collect()),
            layer: Some(0),
            meta: PackageMeta::default(),
        }
    }

    #[test]
    fn times() {
        assert_eq!(rfc3339_utc(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1).unwrap(), "1970-01-01T00:00:01Z");
        assert_eq!(rfc3339_utc(951_782_400).unwrap(), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(-1).unwrap(), "1969-12-31T23:59:59Z");
        assert_eq!(
            rfc3339_utc(253_402_300_799).unwrap(),
            "9999-12-31T23:59:59Z"
        );
        assert_eq!(rfc3339_utc(253_402_300_800), None);
        assert_eq!(rfc3339_utc(i64::MAX), None);
        assert_eq!(rfc3339_utc(i64::MIN), None);
    }

    #[test]
    fn purls_are_percent_encoded() {
        assert_eq!(nix_purl("glibc", Some("2.40-66")), "pkg:nix/glibc@2.40-66");
        assert_eq!(nix_purl("b+c", None), "pkg:nix/b%2Bc");
        assert_eq!(nix_purl("a?b=c", Some("1@2")), "pkg:nix/a%3Fb%3Dc@1%402");
    }

    #[test]
    fn licences_become_one_expression() {
        let mut refs = BTreeMap::new();
        let mut w = Vec::new();
        let l = |id: Option<&str>, name: Option<&str>| License {
            spdx_id: id.map(Into::into),
            name: name.map(Into::into),
        };
        let e = license_expr(
            &[
                l(Some("MIT"), Some("MIT License")),
                l(None, Some("Unfree redistributable")),
                l(Some("Apache-2.0"), None),
            ],
            &mut refs,
            A,
            &mut w,
        )
        .unwrap();
        assert_eq!(
            e.expression,
            "Apache-2.0 AND LicenseRef-Unfree-redistributable AND MIT"
        );
        assert!(!e.all_spdx);
        assert_eq!(
            refs["LicenseRef-Unfree-redistributable"],
            "Unfree redistributable"
        );
        assert!(license_expr(&[l(None, None)], &mut refs, A, &mut w).is_none());
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn warnings_for_what_is_missing() {
        let input = SbomInput {
            image: ImageIdentity {
                image_id: "sha256:nothex".into(),
                created_unix: Some(i64::MAX),
                ..Default::default()
            },
            layers: vec![Layer {
                diff_id: "sha256:x".into(),
                kind: LayerKind::Store(vec![]),
            }],
            store_paths: vec![
                store(
                    A,
                    Some(&[A, B, "/nix/store/cccccccccccccccccccccccccccccccc-gone"]),
                ),
                store(B, None),
                store(A, Some(&[])),
                StorePath {
                    nar_hash: Some("md5:x".into()),
                    layer: Some(7),
                    ..store("/nix/store/dddddddddddddddddddddddddddddddd--1", Some(&[]))
                },
            ],
        };
        let r = resolve(&input);
        let all = r.warnings.join("\n");
        for want in [
            "layer 1: diff_id",
            "listed twice",
            "not in the reference graph",
            "which is not in the image",
            "not a SHA-256",
            "layer index 7",
            "parseDrvName",
            "image ID",
            "created time",
        ] {
            assert!(all.contains(want), "missing {want:?} in:\n{all}");
        }
        assert_eq!(r.packages.len(), 3);
        assert_eq!(r.packages[0].depends_on, vec![1], "A → B, without itself");
        assert_eq!(r.roots, vec![0, 2]);
        assert_eq!(r.packages[1].name, "b+c");
        assert_eq!(r.packages[1].sha256, None);
    }
}
