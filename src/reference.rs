//! Image references (`host[:port]/repo/name[:tag][@digest]`) as Docker
//! parses and normalises them (distribution's `reference` grammar):
//!
//! - path components are lower-case `[a-z0-9]+` joined by `.`, `_`, `__` or
//!   runs of `-`, separated by `/`; the whole name is at most 255 bytes;
//! - the first component is a registry host when it contains `.` or `:`, or
//!   is `localhost` (or is upper case: a host name, never a repository);
//!   otherwise the registry is `docker.io`, and a one-component name there
//!   gets `library/`;
//! - a tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; a digest is
//!   `algorithm:hex` (sha256 with 64 hex digits).
//!
//! `repo_tag` in the conf and `--push REF` are checked with this grammar,
//! so an image Docker would refuse is refused before anything is written,
//! with the rule in the message.
#![warn(missing_docs)]

use std::fmt;

use anyhow::{bail, Result};

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";
/// The host Docker actually talks to for `docker.io`.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// The rule shown in errors.
const RULE: &str = "expected [HOST[:PORT]/]NAME[:TAG][@sha256:HEX], NAME lower-case \
                    components of [a-z0-9] joined by '.', '_', '__' or '-' and separated by '/', \
                    TAG [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `docker.io`, `localhost:5000`, `ghcr.io`, `[::1]:5000` …
    pub registry: String,
    /// The repository inside the registry: `library/nginx`, `org/app`.
    pub repository: String,
    /// The tag, if one was given.
    pub tag: Option<String>,
    /// The digest (`sha256:<hex>`), if one was given.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalises `text`. Errors quote the input and the rule.
    pub fn parse(text: &str) -> Result<Reference> {
        parse(text).map_err(|why| anyhow::anyhow!("image reference {text:?}: {why}; {RULE}"))
    }

    /// The tag, `latest` when none was given (as `docker push` does).
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// The host to send API requests to (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// `registry/repository`, the fully qualified name
    /// (`docker.io/library/hello`): what containerd records as
    /// `io.containerd.image.name` (with the tag appended).
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The name as Docker shows it: without `docker.io/` and `library/`.
    pub fn familiar_name(&self) -> String {
        if self.registry != DOCKER_HUB {
            return self.name();
        }
        self.repository
            .strip_prefix("library/")
            .filter(|r| !r.contains('/'))
            .unwrap_or(&self.repository)
            .to_owned()
    }
}

impl fmt::Display for Reference {
    /// The fully qualified form: `docker.io/library/hello:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Checks a conf `repo_tag` (or `-t`): `NAME:TAG` as `docker load` accepts
/// it. A name without a tag is refused too: `docker load` requires a
/// tagged reference in `RepoTags` ("invalid tag"), and nixpkgs always
/// writes one.
pub fn check_repo_tag(repo_tag: &str) -> Result<()> {
    let r = Reference::parse(repo_tag)
        .map_err(|e| anyhow::anyhow!("repo_tag: {}", crate::escape::one_line(&e.to_string())))?;
    if r.digest.is_some() {
        bail!(
            "repo_tag {:?}: a digest cannot be loaded as a tag; give NAME:TAG",
            repo_tag
        );
    }
    if r.tag.is_none() {
        bail!(
            "repo_tag {:?}: has no tag; docker load needs NAME:TAG (e.g. {}:latest)",
            repo_tag,
            repo_tag
        );
    }
    Ok(())
}

fn parse(text: &str) -> std::result::Result<Reference, String> {
    if text.is_empty() {
        return Err("is empty".into());
    }
    if let Some(c) = text.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("contains {c:?}"));
    }
    let (rest, digest) = match text.split_once('@') {
        Some((r, d)) => (r, Some(check_digest(d)?)),
        None => (text, None),
    };
    // A tag follows the last ':' that comes after the last '/' (a ':'
    // before it belongs to HOST:PORT).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => {
            let at = last_slash + i;
            (&rest[..at], Some(check_tag(&rest[at + 1..])?))
        }
        None => (rest, None),
    };
    if name.len() > 255 {
        return Err(format!("name is {} bytes long, over 255", name.len()));
    }
    let (registry, path) = match name.split_once('/') {
        Some((first, path)) if is_host(first) => (check_host(first)?, path),
        _ => (DOCKER_HUB.to_owned(), name),
    };
    for component in path.split('/') {
        check_component(component)?;
    }
    let repository = if registry == DOCKER_HUB && !path.contains('/') {
        format!("library/{path}")
    } else {
        path.to_owned()
    };
    let registry = if registry == "index.docker.io" {
        DOCKER_HUB.to_owned()
    } else {
        registry
    };
    Ok(Reference {
        registry,
        repository,
        tag,
        digest,
    })
}

/// Docker's rule for "is the first component a host".
fn is_host(first: &str) -> bool {
    first.contains('.')
        || first.contains(':')
        || first == "localhost"
        || first.bytes().any(|b| b.is_ascii_uppercase())
}

fn check_host(host: &str) -> std::result::Result<String, String> {
    let (name, port) = if let Some(v6) = host.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err(format!("registry host {host:?} has '[' without ']'"));
        };
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(format!("registry host {host:?} is not an IPv6 address"));
        }
        match after {
            "" => (host, None),
            p => match p.strip_prefix(':') {
                Some(port) => (&host[..host.len() - p.len()], Some(port)),
                None => return Err(format!("registry host {host:?}: junk after ']'")),
            },
        }
    } else {
        match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("registry port {p:?} is not a number"));
        }
    }
    if !name.starts_with('[') {
        let ok = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !ok {
            return Err(format!("registry host {name:?} is not a host name"));
        }
    }
    Ok(host.to_owned())
}

fn check_component(c: &str) -> std::result::Result<(), String> {
    let bad = || {
        if c.bytes().any(|b| b.is_ascii_uppercase()) {
            format!("repository component {c:?} has upper-case letters")
        } else {
            format!("repository component {c:?} is not allowed")
        }
    };
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return Err(bad());
    }
    let mut i = 0;
    while i < b.len() {
        let x = b[i];
        if x.is_ascii_lowercase() || x.is_ascii_digit() {
            i += 1;
            continue;
        }
        // A separator: '.', '_', '__' or a run of '-', then alphanumerics.
        let start = i;
        match x {
            b'.' => i += 1,
            b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return Err(bad()),
        }
        let next = b.get(i).copied().unwrap_or(0);
        if i == start || !(next.is_ascii_lowercase() || next.is_ascii_digit()) {
            return Err(bad());
        }
    }
    Ok(())
}

fn check_tag(tag: &str) -> std::result::Result<String, String> {
    let b = tag.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    if b.is_empty()
        || b.len() > 128
        || !word(b[0])
        || !b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
    {
        return Err(format!("tag {tag:?} is not allowed"));
    }
    Ok(tag.to_owned())
}

fn check_digest(d: &str) -> std::result::Result<String, String> {
    match d.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(d.to_owned())
        }
        _ => Err(format!(
            "digest {d:?} is not sha256:<64 lower-case hex digits>"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> (String, String, Option<String>) {
        let r = Reference::parse(s).unwrap();
        (r.registry, r.repository, r.tag)
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(
            parts("hello:1"),
            ("docker.io".into(), "library/hello".into(), Some("1".into()))
        );
        assert_eq!(parts("org/app").1, "org/app");
        assert_eq!(parts("org/app").0, "docker.io");
        assert_eq!(parts("index.docker.io/x").0, "docker.io");
        assert_eq!(parts("localhost/app:t").0, "localhost");
        assert_eq!(
            parts("127.0.0.1:5000/a/b:v1.2-x"),
            ("127.0.0.1:5000".into(), "a/b".into(), Some("v1.2-x".into()))
        );
        assert_eq!(parts("[::1]:5000/a").0, "[::1]:5000");
        assert_eq!(parts("localhost:5000/a").2, None);
        let r = Reference::parse("hello").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/hello");
        assert_eq!(r.familiar_name(), "hello");
        assert_eq!(r.tag_or_latest(), "latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = Reference::parse(&format!("h.io/x:t@{d}")).unwrap();
        assert_eq!(r.digest.as_deref(), Some(d.as_str()));
        assert_eq!(r.tag.as_deref(), Some("t"));
    }

    #[test]
    fn component_separators() {
        for ok in ["a.b", "a_b", "a__b", "a---b", "a-b.c_d", "0"] {
            Reference::parse(ok).unwrap();
        }
        for bad in ["a..b", "a___b", "-a", "a-", "a.", "_a", "a/", "/a", "a//b"] {
            assert!(Reference::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refuses_what_docker_refuses_with_the_rule() {
        for bad in [
            "",
            "Hello:1",
            "org/App",
            "a b:c",
            "a:b\nc",
            "a:",
            "a:-t",
            "a:t@sha256:00",
            "a:t@md5:abc",
            "h.io:x/a",
        ] {
            let e = Reference::parse(bad).unwrap_err().to_string();
            assert!(e.contains("expected [HOST[:PORT]/]NAME"), "{bad:?}: {e}");
        }
        let long = format!("a:{}", "t".repeat(129));
        assert!(Reference::parse(&long).is_err());
        assert!(Reference::parse(&"a".repeat(256)).is_err());
        assert!(Reference::parse(&format!("a:{}", "t".repeat(128))).is_ok());
        assert!(
            Reference::parse("Host.IO/a").is_ok(),
            "upper case is a host"
        );
    }

    #[test]
    fn repo_tag_check() {
        check_repo_tag("hello:latest").unwrap();
        let e = check_repo_tag("hello").unwrap_err().to_string();
        assert!(e.contains("has no tag"), "{e}");
        check_repo_tag("localhost:5000/x:y").unwrap();
        assert!(check_repo_tag(&format!("a@sha256:{}", "0".repeat(64))).is_err());
        assert!(check_repo_tag("Hello:1").is_err());
    }
}
