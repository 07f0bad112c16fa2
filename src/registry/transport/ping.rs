//! `GET /v2/`: is this a v2 registry, HTTPS or plain HTTP, and how does it
//! want us to authenticate (go-containerregistry's `transport/ping.go`).
//!
//! HTTPS is tried first. Plain HTTP is tried next only for loopback hosts
//! (`localhost`, `127.0.0.0/8`, `[::1]`) and `--insecure-registry` hosts;
//! a loopback host that speaks TLS with an untrusted certificate is an
//! error (only an explicitly insecure registry skips verification).

use std::net::IpAddr;

use super::bearer::{parse_challenge, Challenge};
use super::Resp;

/// Whether `host` (`name[:port]`, `[v6][:port]`) is on loopback.
pub fn is_loopback(host: &str) -> bool {
    let name = strip_port(host);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `host:port` → `host`; `[::1]:5000` → `[::1]`.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// What a ping answer says about auth; `Err` with a reason when the
/// answer is not a v2 registry's.
pub fn challenge_of(resp: &Resp) -> Result<Challenge, String> {
    match resp.status {
        200..=299 => Ok(Challenge::Anonymous),
        401 => {
            let Some(h) = resp.header("www-authenticate") else {
                return Err("GET /v2/ answered 401 without a WWW-Authenticate challenge".into());
            };
            parse_challenge(h).map_err(|e| format!("GET /v2/ answered 401: {e}"))
        }
        s => Err(format!(
            "GET /v2/ answered {s}{}: not a registry speaking the v2 API",
            resp.reason()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.3.4.5:80",
            "[::1]",
            "[::1]:5000",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "example.com",
            "10.0.0.1:5000",
            "[::2]:5000",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
        assert_eq!(strip_port("a.io:5000"), "a.io");
        assert_eq!(strip_port("[::1]:5000"), "[::1]");
    }
}
