//! Package name and version from a store path name, split the way Nix's
//! `builtins.parseDrvName` splits a derivation name (`DrvName::DrvName` in
//! Nix's `libexpr/names.cc`): the name is everything before the first `-`
//! that is followed by a character other than an ASCII letter, the version
//! everything after that `-`. So `glibc-2.40-66` is `glibc` / `2.40-66`,
//! `python3.12-packaging-24.2` is `python3.12-packaging` / `24.2`, and
//! `iana-etc` has no version.

/// A store path name split into name and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrvName {
    /// The package name (never empty: see [`parse_store_path`]).
    pub name: String,
    /// The version; `None` when `parseDrvName` gives `""`.
    pub version: Option<String>,
}

/// `builtins.parseDrvName`: `(name, version)`, either possibly empty.
///
/// Nix tests `isalpha` in the C locale, so only ASCII letters keep a `-`
/// inside the name; a store path name is ASCII anyway.
pub fn parse_drv_name(s: &str) -> (&str, &str) {
    let bytes = s.as_bytes();
    for (i, pair) in bytes.windows(2).enumerate() {
        if pair[0] == b'-' && !pair[1].is_ascii_alphabetic() {
            // Both sides of an ASCII byte are char boundaries.
            return (&s[..i], &s[i + 1..]);
        }
    }
    (s, "")
}

/// Splits the name part of a store path (`<store>/<hash>-<name>`) into a
/// package name and version.
///
/// Returns a warning when the path is not of that shape, or when
/// `parseDrvName` leaves no name (`-1.0`): the SBOM then names the package
/// by its whole base name, with no version, rather than leave it out.
pub fn parse_store_path(path: &str) -> (DrvName, Option<String>) {
    let base = path.rsplit('/').next().unwrap_or(path);
    let Some(name_part) = store_name(base) else {
        let warning = format!(
            "{path}: not a store path of the form <store>/<32-character hash>-<name>; \
             its package name is the whole base name, with no version"
        );
        return (whole(base, path), Some(warning));
    };
    match parse_drv_name(name_part) {
        ("", _) => {
            let warning = format!(
                "{path}: the store path name {name_part:?} has no package name before its \
                 version (builtins.parseDrvName gives \"\"); using the whole name, with no version"
            );
            (whole(name_part, path), Some(warning))
        }
        (name, version) => (
            DrvName {
                name: name.to_owned(),
                version: (!version.is_empty()).then(|| version.to_owned()),
            },
            None,
        ),
    }
}

/// The name after the 32-character hash and its `-`, if `base` has them.
fn store_name(base: &str) -> Option<&str> {
    let (hash, rest) = (base.get(..32)?, base.get(32..)?);
    let name = rest.strip_prefix('-')?;
    let hash_ok = hash
        .bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
    (hash_ok && !name.is_empty()).then_some(name)
}

/// A fallback name that is never empty.
fn whole(name: &str, path: &str) -> DrvName {
    let name = [name, path, "unnamed"]
        .into_iter()
        .find(|n| !n.is_empty())
        .unwrap_or("unnamed");
    DrvName {
        name: name.to_owned(),
        version: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every expected value is what Nix 2.8 prints for
    /// `map builtins.parseDrvName [ … ]`.
    #[test]
    fn as_builtins_parse_drv_name() {
        let cases = [
            ("glibc-2.40-66", "glibc", "2.40-66"),
            (
                "xgcc-14.2.1.20250322-libgcc",
                "xgcc",
                "14.2.1.20250322-libgcc",
            ),
            ("python3.12-packaging-24.2", "python3.12-packaging", "24.2"),
            ("bash--1-2", "bash", "-1-2"),
            ("hello", "hello", ""),
            ("myapp-base.json", "myapp-base.json", ""),
            ("a-", "a-", ""),
            ("-1", "", "1"),
            ("iana-etc-20250108", "iana-etc", "20250108"),
            ("nss-cacert-3.108", "nss-cacert", "3.108"),
            ("foo-bar-baz", "foo-bar-baz", ""),
            ("x-_1", "x", "_1"),
            ("x-.1", "x", ".1"),
            ("", "", ""),
        ];
        for (input, name, version) in cases {
            assert_eq!(parse_drv_name(input), (name, version), "{input}");
        }
    }

    #[test]
    fn store_paths() {
        let (n, w) = parse_store_path("/nix/store/l71p0p58769lw2ylm2kc379mfld70j10-glibc-2.40-66");
        assert_eq!(
            (n.name.as_str(), n.version.as_deref(), w),
            ("glibc", Some("2.40-66"), None)
        );
        let (n, w) = parse_store_path("/nix/store/8wv0ajg6blqskxsynzn76bdh8rq334qh-hello");
        assert_eq!((n.name.as_str(), n.version, w), ("hello", None, None));
    }

    #[test]
    fn unparsable_names_warn_and_keep_a_name() {
        let (n, w) = parse_store_path("/nix/store/8wv0ajg6blqskxsynzn76bdh8rq334qh--1.0");
        assert_eq!((n.name.as_str(), n.version), ("-1.0", None));
        assert!(w.unwrap().contains("parseDrvName"));
        for odd in [
            "/nix/store/short-x",
            "",
            "/",
            "/nix/store/8wv0ajg6blqskxsynzn76bdh8rq334qh",
        ] {
            let (n, w) = parse_store_path(odd);
            assert!(!n.name.is_empty(), "{odd}");
            assert!(w.unwrap().contains("not a store path"), "{odd}");
        }
    }
}
