//! Where registry credentials come from, in this order:
//!
//! 1. `Options::creds` (`--creds USER:PASS`);
//! 2. `$SLI_REGISTRY_CREDS` (`USER:PASS`);
//! 3. podman's auth files: `$REGISTRY_AUTH_FILE`, then
//!    `$XDG_RUNTIME_DIR/containers/auth.json`, then
//!    `~/.config/containers/auth.json`;
//! 4. docker's `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`).
//!
//! In each file, as docker and containers/image do: a `credHelpers` entry
//! for the registry runs `docker-credential-HELPER get`; else `credsStore`
//! does; else `auths` is read (`auth` = base64 `user:pass`, or
//! `username`/`password`, or `identitytoken`). `auths` keys may carry a
//! scheme and a path (`https://index.docker.io/v1/`) or name a repository
//! namespace (podman's `host/org`; the longest match wins).
//!
//! We read these files ourselves rather than through the
//! `docker_credential` crate (1.4): its `HelperFailure` error carries the
//! helper's stdout, where a secret can be; it waits for a helper with no
//! time limit; it does not match podman's repository-namespaced keys; and
//! the order above (podman's files, then docker's) would still be ours to
//! write. The reader is small. Nothing read here ever appears in a
//! message: errors name the file or the helper and the problem, never a
//! value.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use std::{env, fmt, fs};

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;

use super::transport::basic;
use crate::reference::DOCKER_HUB;

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A user name and password (or a personal access token as password).
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// An identity token (OAuth2 refresh token), from `docker login` with
    /// some registries.
    IdentityToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { .. } => f.write_str("Credential::Basic(<redacted>)"),
            Credential::IdentityToken(_) => f.write_str("Credential::IdentityToken(<redacted>)"),
        }
    }
}

impl Credential {
    /// Parses `USER:PASS` (the password may contain ':'). The error never
    /// shows the input.
    pub fn parse_user_pass(text: &str) -> Result<Credential> {
        match text.split_once(':') {
            Some((u, p)) if !u.is_empty() => Ok(Credential::Basic {
                username: u.to_owned(),
                password: p.to_owned(),
            }),
            _ => bail!("credentials must be USER:PASS with a non-empty USER"),
        }
    }

    /// The strings that must never be shown (kept for redaction).
    pub(crate) fn secrets(&self) -> Vec<String> {
        let mut v = match self {
            Credential::Basic {
                username: _,
                password,
            } => {
                vec![password.clone()]
            }
            Credential::IdentityToken(t) => vec![t.clone()],
        };
        if let Credential::Basic { username, password } = self {
            // The Basic header's base64 too, in case a server echoes it.
            v.push(basic::encode(format!("{username}:{password}").as_bytes()));
        }
        v.retain(|s| s.len() >= 3);
        v
    }
}

/// Looks up credentials for `registry` (as in the reference: `docker.io`,
/// `host:port`) and `repository`, from the environment and the files
/// above. `Ok(None)`: none anywhere (anonymous access).
pub fn lookup(registry: &str, repository: &str) -> Result<Option<Credential>> {
    if let Ok(v) = env::var(super::CREDS_ENV) {
        return Credential::parse_user_pass(&v)
            .map(Some)
            .with_context(|| format!("${}", super::CREDS_ENV));
    }
    for file in config_files() {
        if let Some(c) = from_file(&file, registry, repository)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

fn config_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(f) = env::var_os("REGISTRY_AUTH_FILE") {
        files.push(PathBuf::from(f));
    }
    if let Some(d) = env::var_os("XDG_RUNTIME_DIR") {
        files.push(Path::new(&d).join("containers/auth.json"));
    }
    let home = env::var_os("HOME").map(PathBuf::from);
    match env::var_os("XDG_CONFIG_HOME") {
        Some(d) => files.push(Path::new(&d).join("containers/auth.json")),
        None => files.extend(
            home.as_ref()
                .map(|h| h.join(".config/containers/auth.json")),
        ),
    }
    match env::var_os("DOCKER_CONFIG") {
        Some(d) => files.push(Path::new(&d).join("config.json")),
        None => files.extend(home.as_ref().map(|h| h.join(".docker/config.json"))),
    }
    files
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// Reads one config file; a missing file is no credentials.
fn from_file(file: &Path, registry: &str, repository: &str) -> Result<Option<Credential>> {
    let text = match fs::read(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow!("reading {}: {e}", file.display())),
    };
    let conf: ConfigFile = serde_json::from_slice(&text).map_err(|e| {
        anyhow!(
            "reading {}: not a docker/podman auth file: {e}",
            file.display()
        )
    })?;
    from_config(&conf, registry, repository).with_context(|| format!("reading {}", file.display()))
}

fn from_config(conf: &ConfigFile, registry: &str, repository: &str) -> Result<Option<Credential>> {
    let hosts = aliases(registry);
    if let Some(helper) = hosts.iter().find_map(|h| conf.cred_helpers.get(*h)) {
        return run_helper(helper, registry);
    }
    if let Some(store) = conf.creds_store.as_deref().filter(|s| !s.is_empty()) {
        if let Some(c) = run_helper(store, registry)? {
            return Ok(Some(c));
        }
    }
    // The longest key that names the registry, or a namespace of it that
    // holds the repository.
    let full = format!("{registry}/{repository}");
    let mut best: Option<(usize, &AuthEntry)> = None;
    for (key, entry) in &conf.auths {
        let k = normalise_key(key);
        let matches = hosts.contains(&k.as_str())
            || (full.starts_with(&k) && full.as_bytes().get(k.len()) == Some(&b'/'));
        if matches && best.is_none_or(|(len, _)| k.len() > len) {
            best = Some((k.len(), entry));
        }
    }
    match best {
        Some((_, e)) => entry_credential(e, registry),
        None => Ok(None),
    }
}

fn entry_credential(e: &AuthEntry, registry: &str) -> Result<Option<Credential>> {
    if let Some(t) = e.identitytoken.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Some(Credential::IdentityToken(t.to_owned())));
    }
    if let Some(auth) = e.auth.as_deref().filter(|a| !a.is_empty()) {
        let decoded = basic::decode(auth)
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| anyhow!("the \"auth\" entry for {registry} is not base64"))?;
        return Credential::parse_user_pass(&decoded)
            .map(Some)
            .with_context(|| format!("the \"auth\" entry for {registry}"));
    }
    match (&e.username, &e.password) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credential::Basic {
            username: u.clone(),
            password: p.clone(),
        })),
        _ => Ok(None),
    }
}

/// `https://index.docker.io/v1/` → `index.docker.io`.
fn normalise_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let k = k.trim_end_matches('/');
    let k = k
        .strip_suffix("/v1")
        .or_else(|| k.strip_suffix("/v2"))
        .unwrap_or(k);
    k.to_owned()
}

/// The names a registry goes by in config files.
fn aliases(registry: &str) -> Vec<&str> {
    if registry == DOCKER_HUB {
        vec!["docker.io", "index.docker.io", "registry-1.docker.io"]
    } else {
        vec![registry]
    }
}

/// What a helper is asked about (docker's convention).
fn helper_server(registry: &str) -> String {
    if registry == DOCKER_HUB {
        "https://index.docker.io/v1/".to_owned()
    } else {
        registry.to_owned()
    }
}

#[derive(Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// Runs `docker-credential-NAME get` (30 s at most). "Not found" is no
/// credentials; the helper's output is never quoted.
fn run_helper(name: &str, registry: &str) -> Result<Option<Credential>> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        bail!("credential helper name {name:?} is not allowed");
    }
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow!("running credential helper {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(helper_server(registry).as_bytes());
    }
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.by_ref().take(1 << 20).read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("credential helper {program} did not answer within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        if String::from_utf8_lossy(&out).contains("credentials not found") {
            return Ok(None);
        }
        bail!("credential helper {program} failed ({status})");
    }
    let answer: HelperAnswer = serde_json::from_slice(&out).map_err(|_| {
        anyhow!("credential helper {program} answered something that is not its JSON")
    })?;
    if answer.secret.is_empty() {
        return Ok(None);
    }
    if answer.username == "<token>" {
        return Ok(Some(Credential::IdentityToken(answer.secret)));
    }
    Ok(Some(Credential::Basic {
        username: answer.username,
        password: answer.secret,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(json: &str) -> ConfigFile {
        serde_json::from_str(json).unwrap()
    }

    fn basic(u: &str, p: &str) -> Option<Credential> {
        Some(Credential::Basic {
            username: u.into(),
            password: p.into(),
        })
    }

    #[test]
    fn reads_auths() {
        let c = conf(&format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "reg.io:5000": {{"username": "u2", "password": "p2"}},
                "reg.io:5000/team": {{"auth": "{}"}},
                "tok.io": {{"identitytoken": "idt"}}
            }}}}"#,
            basic::encode(b"hub:pa:ss"),
            basic::encode(b"team:tp")
        ));
        assert_eq!(
            from_config(&c, "docker.io", "library/x").unwrap(),
            basic("hub", "pa:ss")
        );
        assert_eq!(
            from_config(&c, "reg.io:5000", "other/x").unwrap(),
            basic("u2", "p2")
        );
        assert_eq!(
            from_config(&c, "reg.io:5000", "team/x").unwrap(),
            basic("team", "tp")
        );
        assert_eq!(
            from_config(&c, "reg.io:5000", "teamx/x").unwrap(),
            basic("u2", "p2")
        );
        assert_eq!(
            from_config(&c, "tok.io", "a").unwrap(),
            Some(Credential::IdentityToken("idt".into()))
        );
        assert_eq!(from_config(&c, "none.io", "a").unwrap(), None);
    }

    #[test]
    fn bad_entries_never_show_the_secret() {
        let c = conf(r#"{"auths": {"r.io": {"auth": "bm9jb2xvbg=="}}}"#); // "nocolon"
        let e = format!("{:#}", from_config(&c, "r.io", "a").unwrap_err());
        assert!(!e.contains("nocolon") && !e.contains("bm9jb2xvbg"), "{e}");
        let e = Credential::parse_user_pass("secretonly")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secretonly"), "{e}");
        let d = format!("{:?}", Credential::parse_user_pass("u:hunter2").unwrap());
        assert!(!d.contains("hunter2"), "{d}");
    }

    #[test]
    fn missing_helper_is_one_line() {
        let c = conf(r#"{"credHelpers": {"r.io": "sli-test-no-such-helper"}}"#);
        let e = format!("{:#}", from_config(&c, "r.io", "a").unwrap_err());
        assert!(
            e.contains("docker-credential-sli-test-no-such-helper"),
            "{e}"
        );
        let c = conf(r#"{"credHelpers": {"r.io": "../x"}}"#);
        assert!(from_config(&c, "r.io", "a").is_err());
    }

    #[test]
    fn keys_normalise() {
        assert_eq!(
            normalise_key("https://index.docker.io/v1/"),
            "index.docker.io"
        );
        assert_eq!(normalise_key("http://r.io:5000/v2/"), "r.io:5000");
        assert_eq!(normalise_key("r.io"), "r.io");
    }
}
