//! The token flow of the distribution spec ("Token Authentication
//! Specification"): the registry's 401 carries
//! `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`; we ask the
//! realm for a token covering our scopes (`repository:NAME:pull,push`, plus
//! `repository:SOURCE:pull` for a mount), with Basic credentials, an
//! identity token (OAuth2 refresh-token grant) or anonymously, and send it
//! as `Authorization: Bearer …` until it expires or a 401 says otherwise.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Deserialize;

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// No auth needed (the ping answered 200).
    Anonymous,
    /// `Basic realm=…`: send the credentials on every request.
    Basic,
    /// `Bearer realm=…,service=…[,scope=…]`.
    Bearer {
        /// Where tokens come from.
        realm: String,
        /// The `service` parameter to send back.
        service: Option<String>,
        /// The scope the registry asked for, if it said.
        scope: Option<String>,
    },
}

/// Parses one `WWW-Authenticate` header value. Unknown schemes are an
/// error naming the scheme.
pub fn parse_challenge(header: &str) -> Result<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let params = parse_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        Ok(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        let Some(realm) = get("realm") else {
            bail!("Bearer challenge without a realm");
        };
        Ok(Challenge::Bearer {
            realm,
            service: get("service"),
            scope: get("scope"),
        })
    } else {
        let shown: String = scheme.chars().take(32).collect();
        bail!("unsupported auth scheme {shown:?}")
    }
}

/// `k=v, k="quoted, \"v\""` pairs.
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() && chars.peek().is_none() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while chars.peek().is_some_and(|c| *c == ' ' || *c == '\t') {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        out.push((key.trim().to_owned(), value.trim().to_owned()));
        if chars.peek().is_none() {
            break;
        }
    }
    out
}

/// A token and when to stop using it.
#[derive(Clone)]
pub struct Token {
    /// The bearer token.
    pub value: String,
    /// A little before the server's `expires_in` (60 s when not said, as
    /// the spec's default).
    pub refresh_at: Instant,
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// Reads a token endpoint's JSON answer.
pub fn parse_token_response(body: &[u8]) -> Result<Token> {
    let r: TokenResponse = serde_json::from_slice(body)
        .map_err(|e| anyhow::anyhow!("the token answer is not JSON: {e}"))?;
    let Some(value) = r.token.or(r.access_token).filter(|t| !t.is_empty()) else {
        bail!("the token answer holds no token");
    };
    let lifetime = Duration::from_secs(r.expires_in.unwrap_or(60).max(1));
    // Refresh at 90% of the lifetime so no request carries a token that
    // expires on the way.
    Ok(Token {
        value,
        refresh_at: Instant::now() + lifetime.mul_f64(0.9),
    })
}

/// Percent-encodes a query component.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The token request URL: the realm with `service` and each scope.
pub fn token_url(realm: &str, service: Option<&str>, scopes: &[String]) -> String {
    let mut url = realm.to_owned();
    let mut sep = if url.contains('?') { '&' } else { '?' };
    if let Some(s) = service {
        url.push_str(&format!("{sep}service={}", query_escape(s)));
        sep = '&';
    }
    for scope in scopes {
        url.push_str(&format!("{sep}scope={}", query_escape(scope)));
        sep = '&';
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(
            parse_challenge(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/x:pull,push""#).unwrap(),
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/x:pull,push".into()),
            }
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#).unwrap(),
            Challenge::Basic
        );
        assert_eq!(
            parse_challenge(r#"bearer realm=http://a/t , service = "s\"q""#).unwrap(),
            Challenge::Bearer {
                realm: "http://a/t".into(),
                service: Some("s\"q".into()),
                scope: None
            }
        );
        assert!(parse_challenge("Bearer service=x").is_err());
        assert!(parse_challenge("Negotiate abc").is_err());
    }

    #[test]
    fn token_answers() {
        let t = parse_token_response(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!(t.value, "abc");
        assert!(t.refresh_at > Instant::now() + Duration::from_secs(200));
        assert_eq!(
            parse_token_response(br#"{"access_token":"x"}"#)
                .unwrap()
                .value,
            "x"
        );
        assert!(parse_token_response(b"{}").is_err());
        assert!(parse_token_response(b"<html>").is_err());
    }

    #[test]
    fn token_urls() {
        assert_eq!(
            token_url("https://a/token", Some("reg"), &["repository:x/y:pull,push".into(), "repository:z:pull".into()]),
            "https://a/token?service=reg&scope=repository%3Ax%2Fy%3Apull%2Cpush&scope=repository%3Az%3Apull"
        );
        assert_eq!(token_url("https://a/t?x=1", None, &[]), "https://a/t?x=1");
    }
}
