//! TLS: which certificates a registry's must chain to, and the HTTP agents.
//!
//! Roots are the system's CA store (as docker and skopeo use; Mozilla's
//! webpki roots only when the system has none) plus the per-registry CAs
//! of `/etc/docker/certs.d/HOST/ca.crt` and `/etc/containers/certs.d/HOST/*.crt`
//! (both directories replaced by `$SLI_CERTS_D` when it is set, for tests).
//! Client certificates (`*.cert`/`*.key` there) are not supported yet.
//! An insecure registry's certificate is not verified at all.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use ureq::tls::{Certificate, PemItem, RootCerts, TlsConfig};
use ureq::Agent;

use super::super::{Timeouts, CERTS_D_ENV};

/// The system's roots, loaded once.
fn system_roots() -> &'static [Certificate<'static>] {
    static ROOTS: OnceLock<Vec<Certificate<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut roots: Vec<Certificate<'static>> = found
            .certs
            .iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect();
        roots.shrink_to_fit();
        roots
    })
}

/// The certs.d directories for `host` (`host:port` as written in the
/// reference), in the order they are read.
pub fn certs_d_dirs(host: &str) -> Vec<PathBuf> {
    match std::env::var_os(CERTS_D_ENV) {
        Some(root) => vec![PathBuf::from(root).join(host)],
        None => vec![
            PathBuf::from("/etc/docker/certs.d").join(host),
            PathBuf::from("/etc/containers/certs.d").join(host),
        ],
    }
}

/// The extra CAs for `host`: every `*.crt` of its certs.d directories
/// (docker reads `ca.crt`, containers every `*.crt`; `ca.crt` is both).
fn extra_roots(host: &str) -> Vec<Certificate<'static>> {
    let mut out = Vec::new();
    for dir in certs_d_dirs(host) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        files.sort();
        for f in files {
            let Ok(pem) = std::fs::read(&f) else { continue };
            for item in ureq::tls::parse_pem(&pem).flatten() {
                if let PemItem::Certificate(c) = item {
                    out.push(c);
                }
            }
        }
    }
    out
}

/// An agent for `host`: statuses are answers (not errors), no redirects
/// followed (a caller decides), the time limits of `timeouts`, and TLS
/// verified against the roots above unless `verify` is false.
pub fn agent(host: &str, verify: bool, timeouts: &Timeouts, user_agent: &str) -> Agent {
    let mut roots: Vec<Certificate<'static>> = system_roots().to_vec();
    roots.extend(extra_roots(host));
    // No system store and no certs.d (a bare container): Mozilla's roots.
    let root_certs = if roots.is_empty() {
        RootCerts::WebPki
    } else {
        RootCerts::Specific(Arc::new(roots))
    };
    let tls = TlsConfig::builder()
        .root_certs(root_certs)
        .disable_verification(!verify)
        .build();
    Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .user_agent(user_agent)
        .timeout_connect(Some(timeouts.connect))
        .timeout_recv_response(Some(timeouts.io))
        .timeout_per_read(Some(timeouts.io))
        .timeout_per_write(Some(timeouts.io))
        .tls_config(tls)
        .build()
        .into()
}

/// Whether a failed request failed because the peer's certificate is not
/// trusted (as opposed to the peer not speaking TLS at all).
pub fn is_certificate_error(e: &ureq::Error) -> bool {
    let rustls_error = match e {
        ureq::Error::Rustls(r) => Some(r),
        // rustls's stream reports handshake failures as io errors.
        ureq::Error::Io(io) => io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()),
        _ => None,
    };
    matches!(
        rustls_error,
        Some(rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented)
    )
}
