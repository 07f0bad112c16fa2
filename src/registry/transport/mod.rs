//! HTTP to one registry: the scheme found by [`ping`], the `Authorization`
//! header ([`basic`], [`bearer`]), re-authentication on a 401, retries
//! ([`retry`]), TLS roots ([`tls`]), capped response bodies, and error
//! lines that name the registry and repository and never a credential.

pub mod basic;
pub mod bearer;
pub mod ping;
pub mod retry;
pub mod tls;

use std::io::Read;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use ureq::http::{self, HeaderMap};
use ureq::{Agent, SendBody};

use self::bearer::{Challenge, Token};
use self::retry::{transient_error, transient_status, RetryPolicy};
use super::{Credential, Options, Timeouts};
use crate::reference::Reference;

/// Bodies of answers we only show in errors are read up to this.
pub const ERROR_BODY_CAP: u64 = 64 * 1024;

/// A registry's answer, its body read up to a cap.
pub struct Resp {
    /// The HTTP status.
    pub status: u16,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, at most the request's cap.
    pub body: Vec<u8>,
    /// How many tries it took.
    pub tries: u32,
}

impl Resp {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// ` Not Found` for 404 (with the leading space), empty if unknown.
    pub fn reason(&self) -> String {
        http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .map(|r| format!(" {r}"))
            .unwrap_or_default()
    }

    /// The status, the registry's error code and message, and the tries:
    /// `404 Not Found: BLOB_UNKNOWN: blob unknown to registry`.
    pub fn describe(&self) -> String {
        let mut s = format!("{}{}", self.status, self.reason());
        if let Some(e) = registry_error(&self.body) {
            s.push_str(": ");
            s.push_str(&e);
        }
        if self.tries > 1 {
            s.push_str(&format!(" (after {} tries)", self.tries));
        }
        s
    }
}

/// The first entry of a distribution error body
/// (`{"errors":[{"code":…,"message":…}]}`), shortened to one line; or the
/// start of a text body.
fn registry_error(body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => {
            let e = v.get("errors")?.get(0)?;
            let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
            let msg = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
            format!("{code}: {msg}")
        }
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    };
    Some(one_line(&text, 200))
}

/// Printable, single-line, at most `max` characters.
pub fn one_line(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out.trim().to_owned()
}

/// A request without a streamed body.
pub struct Req<'a> {
    /// `GET`, `HEAD`, …
    pub method: &'static str,
    /// A path (`/v2/…`) on the registry, or an absolute URL (a `Location`).
    pub url: String,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body, if any (sent with its `Content-Length`).
    pub body: Option<&'a [u8]>,
    /// How much of the answer's body to read.
    pub cap: u64,
}

impl<'a> Req<'a> {
    /// A request with no body whose answer is read up to [`ERROR_BODY_CAP`].
    pub fn new(method: &'static str, url: String) -> Req<'a> {
        Req {
            method,
            url,
            headers: Vec::new(),
            body: None,
            cap: ERROR_BODY_CAP,
        }
    }
}

struct State {
    /// `https://host` or `http://host`, once pinged.
    base: Option<String>,
    challenge: Challenge,
    /// Token scopes: ours, plus mount sources and what 401s asked for.
    scopes: Vec<String>,
    token: Option<Token>,
    /// Bumped on every new token, so that several threads hitting a 401
    /// with the same token fetch one new token, not one each.
    generation: u64,
}

/// HTTP to one repository of one registry.
pub struct Transport {
    pub(crate) registry: String,
    pub(crate) repository: String,
    /// Where requests go (`registry-1.docker.io` for `docker.io`).
    host: String,
    insecure: bool,
    insecure_hosts: Vec<String>,
    agent: Agent,
    timeouts: Timeouts,
    user_agent: String,
    pub(crate) retry: RetryPolicy,
    creds: Option<Credential>,
    secrets: Vec<String>,
    /// Every token received (redacted like credentials). Apart from
    /// `state` so that errors can be made while `state` is locked.
    tokens: Mutex<Vec<String>>,
    state: Mutex<State>,
    /// Set when the registry refused a streamed PATCH: uploads then use one
    /// `PUT` with a `Content-Length`.
    pub(crate) monolithic: AtomicBool,
}

impl Transport {
    /// The transport for `reference`'s registry: TLS or plain HTTP as the
    /// options allow, credentials looked up, nothing sent yet.
    pub fn new(reference: &Reference, options: &Options) -> Result<Transport> {
        let host = reference.api_host().to_owned();
        let insecure_hosts: Vec<String> = options.insecure_registries.clone();
        let insecure = is_insecure(&insecure_hosts, &reference.registry)
            || is_insecure(&insecure_hosts, &host);
        let creds = match &options.creds {
            Some(c) => Some(c.clone()),
            None if options.no_credential_files => None,
            None => super::credentials::lookup(&reference.registry, &reference.repository)
                .map_err(|e| {
                    anyhow!(
                        "registry {}, repository {}: credentials: {e:#}",
                        reference.registry,
                        reference.repository
                    )
                })?,
        };
        let secrets = creds.as_ref().map(|c| c.secrets()).unwrap_or_default();
        Ok(Transport {
            registry: reference.registry.clone(),
            repository: reference.repository.clone(),
            agent: tls::agent(&host, !insecure, &options.timeouts, &options.user_agent),
            host,
            insecure,
            insecure_hosts,
            timeouts: options.timeouts,
            user_agent: options.user_agent.clone(),
            retry: options.retry,
            creds,
            secrets,
            tokens: Mutex::new(Vec::new()),
            state: Mutex::new(State {
                base: None,
                challenge: Challenge::Anonymous,
                scopes: vec![format!("repository:{}:pull,push", reference.repository)],
                token: None,
                generation: 0,
            }),
            monolithic: AtomicBool::new(false),
        })
    }

    /// An error line: `registry R, repository P: WHAT: DETAIL`, one line,
    /// with every credential replaced by `<redacted>`.
    pub fn fail(&self, what: &str, detail: impl std::fmt::Display) -> anyhow::Error {
        let line = format!(
            "registry {}, repository {}: {what}: {detail}",
            self.registry, self.repository
        );
        anyhow!(self.redact(&one_line(&line, 2000)))
    }

    /// Replaces every credential in `s`.
    pub fn redact(&self, s: &str) -> String {
        let mut out = s.to_owned();
        for secret in &self.secrets {
            out = out.replace(secret.as_str(), "<redacted>");
        }
        for token in self.tokens.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            out = out.replace(token.as_str(), "<redacted>");
        }
        out
    }

    /// The error for an answer we did not expect.
    pub fn unexpected(&self, what: &str, resp: &Resp) -> anyhow::Error {
        let hint = match resp.status {
            401 if self.creds.is_none() => {
                " (no credentials found for this registry: docker login, podman login or --creds)"
            }
            401 => " (the credentials were rejected)",
            403 => " (the credentials do not allow this)",
            _ => "",
        };
        self.fail(what, format!("{}{hint}", resp.describe()))
    }

    /// Adds `repository:FROM:pull` to the token scopes (for a mount), so
    /// the next token covers it.
    pub fn add_pull_scope(&self, from: &str) {
        let scope = format!("repository:{from}:pull");
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if !st.scopes.contains(&scope) {
            st.scopes.push(scope);
            if matches!(st.challenge, Challenge::Bearer { .. }) {
                st.token = None;
            }
        }
    }

    /// Pings once (the first caller does; the others wait for it).
    pub fn ensure_pinged(&self) -> Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.base.is_some() {
            return Ok(());
        }
        let may_use_http = self.insecure || ping::is_loopback(&self.host);
        let start = Instant::now();
        let mut tries = 1;
        loop {
            let https = format!("https://{}", self.host);
            let (err, transient) = match self.raw(&https, "/v2/") {
                Ok(resp) if transient_status(resp.status) => (resp.describe(), true),
                Ok(resp) => return self.pinged(&mut st, https, resp),
                Err(e) if tls::is_certificate_error(&e) => {
                    return Err(self.fail(
                        &format!("TLS to {}", self.host),
                        format!(
                            "{e} (give its CA in certs.d/{}/ca.crt, or --insecure-registry {})",
                            self.registry, self.registry
                        ),
                    ))
                }
                Err(e) if may_use_http => {
                    let http = format!("http://{}", self.host);
                    match self.raw(&http, "/v2/") {
                        // Go's answer to plain HTTP on a TLS port: the TLS
                        // error is the one to show.
                        Ok(resp) if resp.status == 400 && speaks_tls(&resp) => {
                            return Err(self.fail(&format!("TLS to {}", self.host), e))
                        }
                        Ok(resp) if transient_status(resp.status) => (resp.describe(), true),
                        Ok(resp) => return self.pinged(&mut st, http, resp),
                        Err(e2) => {
                            let t = transient_error(&e2);
                            (format!("https: {e}; http: {e2}"), t)
                        }
                    }
                }
                Err(e) => {
                    let t = transient_error(&e);
                    (e.to_string(), t)
                }
            };
            if !transient || !self.may_retry(tries, start) {
                let after = if tries > 1 {
                    format!(" (after {tries} tries)")
                } else {
                    String::new()
                };
                return Err(self.fail(&format!("reaching {}", self.host), format!("{err}{after}")));
            }
            tries += 1;
            std::thread::sleep(self.retry.delay(tries, None));
        }
    }

    fn pinged(&self, st: &mut State, base: String, resp: Resp) -> Result<()> {
        st.challenge = ping::challenge_of(&resp).map_err(|e| self.fail("ping", e))?;
        st.base = Some(base);
        Ok(())
    }

    fn may_retry(&self, tries: u32, start: Instant) -> bool {
        tries < self.retry.attempts.max(1) && start.elapsed() < self.retry.max_total
    }

    /// One request straight to `base` + `path` with no auth and no retry.
    fn raw(&self, base: &str, path: &str) -> Result<Resp, ureq::Error> {
        let req = http::Request::builder()
            .method("GET")
            .uri(format!("{base}{path}"))
            .body(())
            .map_err(ureq::Error::from)?;
        let req = self
            .agent
            .configure_request(req)
            .timeout_global(Some(self.timeouts.request))
            .build();
        read_resp(self.agent.run(req)?, ERROR_BODY_CAP, false)
    }

    /// The absolute URL for a path or a `Location` (absolute or not).
    pub fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("https://") || path_or_url.starts_with("http://") {
            return path_or_url.to_owned();
        }
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let base = st
            .base
            .clone()
            .unwrap_or_else(|| format!("https://{}", self.host));
        if path_or_url.starts_with('/') {
            format!("{base}{path_or_url}")
        } else {
            format!("{base}/{path_or_url}")
        }
    }

    /// Whether `url` points at the registry itself (credentials go there
    /// and nowhere else, e.g. not to a storage redirect).
    fn is_ours(&self, url: &str) -> bool {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .unwrap_or(url);
        let authority = rest.split(['/', '?']).next().unwrap_or("");
        authority.eq_ignore_ascii_case(&self.host)
    }

    /// The `Authorization` header value for the registry now (fetching a
    /// token if the one we hold is missing or about to expire), and the
    /// token generation it belongs to.
    fn authorization(&self) -> Result<(Option<String>, u64)> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let gen = st.generation;
        match &st.challenge {
            Challenge::Anonymous => Ok((None, gen)),
            Challenge::Basic => Ok((
                match &self.creds {
                    Some(Credential::Basic { username, password }) => {
                        Some(basic::header(username, password))
                    }
                    _ => None,
                },
                gen,
            )),
            Challenge::Bearer { .. } => {
                let fresh = st
                    .token
                    .as_ref()
                    .is_some_and(|t| t.refresh_at > Instant::now());
                if !fresh {
                    let token = self.fetch_token(&st)?;
                    if token.value.len() >= 8 {
                        let mut all = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
                        all.push(token.value.clone());
                    }
                    st.token = Some(token);
                    st.generation += 1;
                }
                let t = st.token.as_ref().expect("just set");
                Ok((Some(format!("Bearer {}", t.value)), st.generation))
            }
        }
    }

    /// After a 401 with token generation `gen`: learn from its challenge
    /// and drop the token, unless another thread already replaced it.
    fn reauth(&self, resp: &Resp, gen: u64) -> Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(Ok(c)) = resp.header("www-authenticate").map(bearer::parse_challenge) {
            if let Challenge::Bearer { scope: Some(s), .. } = &c {
                for one in s.split(' ') {
                    if !one.is_empty() && !st.scopes.iter().any(|x| x == one) {
                        st.scopes.push(one.to_owned());
                    }
                }
            }
            let c = match c {
                Challenge::Bearer { realm, service, .. } => Challenge::Bearer {
                    realm,
                    service,
                    scope: None,
                },
                other => other,
            };
            st.challenge = c;
        }
        if st.generation == gen {
            st.token = None;
        }
        Ok(())
    }

    /// Asks the realm for a token covering the scopes.
    fn fetch_token(&self, st: &State) -> Result<Token> {
        let Challenge::Bearer { realm, service, .. } = &st.challenge else {
            unreachable!("only called for Bearer");
        };
        let realm_uri: http::Uri = realm
            .parse()
            .map_err(|_| self.fail("auth", format!("token realm {realm:?} is not a URL")))?;
        let realm_host = realm_uri
            .authority()
            .map(|a| a.as_str())
            .unwrap_or("")
            .to_owned();
        let realm_insecure = is_insecure(&self.insecure_hosts, &realm_host);
        if realm_uri.scheme_str() != Some("https")
            && !(ping::is_loopback(&realm_host) || realm_insecure)
        {
            return Err(self.fail(
                "auth",
                format!("the token realm {realm} is not HTTPS; refusing to send credentials there"),
            ));
        }
        let agent = if realm_host.eq_ignore_ascii_case(&self.host) {
            self.agent.clone()
        } else {
            tls::agent(
                &realm_host,
                !realm_insecure,
                &self.timeouts,
                &self.user_agent,
            )
        };
        let what = format!("getting a token from {}", strip_query(realm));
        let start = Instant::now();
        let mut tries = 1;
        loop {
            let result = match &self.creds {
                Some(Credential::IdentityToken(refresh)) => {
                    let mut form = format!(
                        "grant_type=refresh_token&client_id=stream-layered-image&refresh_token={}",
                        bearer::query_escape(refresh)
                    );
                    if let Some(s) = service {
                        form.push_str(&format!("&service={}", bearer::query_escape(s)));
                    }
                    form.push_str(&format!(
                        "&scope={}",
                        bearer::query_escape(&st.scopes.join(" "))
                    ));
                    let req = http::Request::builder()
                        .method("POST")
                        .uri(realm.as_str())
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(form.into_bytes())
                        .map_err(ureq::Error::from);
                    req.and_then(|r| {
                        let r = agent
                            .configure_request(r)
                            .timeout_global(Some(self.timeouts.request))
                            .build();
                        agent.run(r)
                    })
                }
                creds => {
                    let url = bearer::token_url(realm, service.as_deref(), &st.scopes);
                    let mut b = http::Request::builder().method("GET").uri(url);
                    if let Some(Credential::Basic { username, password }) = creds {
                        b = b.header("authorization", basic::header(username, password));
                    }
                    b.body(()).map_err(ureq::Error::from).and_then(|r| {
                        let r = agent
                            .configure_request(r)
                            .timeout_global(Some(self.timeouts.request))
                            .build();
                        agent.run(r)
                    })
                }
            };
            let retry_after;
            match result.and_then(|r| read_resp(r, 1 << 20, false)) {
                Ok(resp) if resp.status == 200 => {
                    return bearer::parse_token_response(&resp.body)
                        .map_err(|e| self.fail(&what, e))
                }
                Ok(resp) if transient_status(resp.status) && self.may_retry(tries, start) => {
                    retry_after = retry::retry_after(&resp.headers);
                }
                Ok(mut resp) => {
                    resp.tries = tries;
                    let hint = match (resp.status, &self.creds) {
                        (401 | 403, None) => {
                            " (anonymous access refused: docker login, podman login or --creds)"
                        }
                        (401 | 403, Some(_)) => " (the credentials were rejected)",
                        _ => "",
                    };
                    return Err(self.fail(&what, format!("{}{hint}", resp.describe())));
                }
                Err(e) if transient_error(&e) && self.may_retry(tries, start) => retry_after = None,
                Err(e) => return Err(self.fail(&what, e)),
            }
            tries += 1;
            std::thread::sleep(self.retry.delay(tries, retry_after));
        }
    }

    /// One try of `req`, with auth, without retries. `stream`, when given,
    /// is the body (chunked, or with `Content-Length` if the request's
    /// headers carry one).
    pub fn send_once(
        &self,
        req: &Req<'_>,
        stream: Option<&mut dyn Read>,
    ) -> Result<(Resp, u64), ureq::Error> {
        let url = self.url(&req.url);
        let (auth, gen) = match self.authorization() {
            Ok(a) => a,
            Err(e) => return Err(ureq::Error::Io(std::io::Error::other(AuthFailed(e)))),
        };
        let mut b = http::Request::builder()
            .method(req.method)
            .uri(url.as_str());
        if let (Some(a), true) = (&auth, self.is_ours(&url)) {
            b = b.header("authorization", a.as_str());
        }
        for (k, v) in &req.headers {
            b = b.header(*k, v.as_str());
        }
        let head = req.method == "HEAD";
        let resp = match stream {
            Some(reader) => {
                let r = b.body(SendBody::from_reader(reader))?;
                // No overall limit: a layer may take long; every read and
                // write still has `timeouts.io`.
                self.agent.run(r)?
            }
            None => {
                let r = b.body(req.body.unwrap_or(&[]))?;
                let r = self
                    .agent
                    .configure_request(r)
                    .timeout_global(Some(self.timeouts.request))
                    .build();
                self.agent.run(r)?
            }
        };
        Ok((read_resp(resp, req.cap, head)?, gen))
    }

    /// `req` with auth, one re-authentication on a 401, and retries on
    /// transient failures. A final answer of any status is `Ok`; the
    /// caller decides what it means. `Err` is a transport failure (after
    /// retries), already a full error line.
    pub fn call(&self, what: &str, req: &Req<'_>) -> Result<Resp> {
        self.ensure_pinged()?;
        let start = Instant::now();
        let mut tries = 1;
        let mut reauthed = false;
        loop {
            let delay: Option<Duration> = match self.send_once(req, None) {
                Ok((resp, gen)) if resp.status == 401 && !reauthed => {
                    reauthed = true;
                    self.reauth(&resp, gen)?;
                    continue;
                }
                Ok((resp, _)) if transient_status(resp.status) && self.may_retry(tries, start) => {
                    retry::retry_after(&resp.headers)
                }
                Ok((mut resp, _)) => {
                    resp.tries = tries;
                    return Ok(resp);
                }
                Err(e) if transient_error(&e) && self.may_retry(tries, start) => None,
                Err(e) => return Err(self.transport_error(what, e, tries)),
            };
            tries += 1;
            std::thread::sleep(self.retry.delay(tries, delay));
        }
    }

    /// The error line for a transport failure.
    pub fn transport_error(&self, what: &str, e: ureq::Error, tries: u32) -> anyhow::Error {
        if let ureq::Error::Io(io) = &e {
            if let Some(AuthFailed(inner)) = io.get_ref().and_then(|i| i.downcast_ref()) {
                // Already a full line.
                return anyhow!(self.redact(&inner.to_string()));
            }
        }
        let after = if tries > 1 {
            format!(" (after {tries} tries)")
        } else {
            String::new()
        };
        self.fail(what, format!("{e}{after}"))
    }

    /// After a 401 from a streamed request (which `call` cannot replay).
    pub fn reauth_after(&self, resp: &Resp, gen: u64) -> Result<()> {
        self.reauth(resp, gen)
    }
}

/// A token fetch that failed, carried through `ureq::Error::Io` so the
/// caller shows its line as is.
#[derive(Debug)]
struct AuthFailed(anyhow::Error);

impl std::fmt::Display for AuthFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for AuthFailed {}

/// Whether `e` is a failed token fetch (not worth a retry at this level).
pub fn is_auth_failure(e: &ureq::Error) -> bool {
    matches!(e, ureq::Error::Io(io) if io.get_ref().is_some_and(|i| i.is::<AuthFailed>()))
}

/// Whether `host` (`name[:port]`) is in `list`: as given, or by name alone
/// when the list entry has no port (`--insecure-registry myhost` covers
/// every port of `myhost`).
fn is_insecure(list: &[String], host: &str) -> bool {
    list.iter()
        .any(|h| h == host || (ping::strip_port(h) == h && ping::strip_port(host) == h))
}

fn speaks_tls(resp: &Resp) -> bool {
    String::from_utf8_lossy(&resp.body).contains("HTTPS server")
}

fn strip_query(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

fn read_resp(resp: http::Response<ureq::Body>, cap: u64, head: bool) -> Result<Resp, ureq::Error> {
    let (parts, body) = resp.into_parts();
    let mut bytes = Vec::new();
    if !head {
        body.into_reader().take(cap).read_to_end(&mut bytes)?;
    }
    Ok(Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: bytes,
        tries: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_hosts() {
        let l = vec!["a.io:5000".to_owned(), "b.io".to_owned()];
        assert!(is_insecure(&l, "a.io:5000"));
        assert!(!is_insecure(&l, "a.io:5001"));
        assert!(!is_insecure(&l, "a.io"));
        assert!(is_insecure(&l, "b.io"));
        assert!(is_insecure(&l, "b.io:443"));
        assert!(!is_insecure(&l, "c.io"));
    }

    #[test]
    fn error_bodies() {
        let b = br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown\nto registry","detail":"x"}]}"#;
        assert_eq!(
            registry_error(b).unwrap(),
            "BLOB_UNKNOWN: blob unknown to registry"
        );
        assert_eq!(registry_error(b"<html>\n oops").unwrap(), "<html>  oops");
        assert_eq!(registry_error(b""), None);
        assert_eq!(one_line(&"x".repeat(300), 10), "xxxxxxxxxx…");
    }
}
