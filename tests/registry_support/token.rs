//! A small token service for distribution's `auth: token:` (the Bearer
//! flow): checks Basic credentials, grants whatever scopes are asked, and
//! signs RS256 JWTs with `openssl dgst -sha256 -sign`, carrying its
//! certificate in `x5c` (the registry trusts it through `rootcertbundle`).
//! `expire_first` makes the first token already expired, as if it had
//! lapsed mid-push.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use stream_layered_image::registry::transport::basic;

use super::server::TokenAuth;
use super::{run, TempDir};

pub struct TokenService {
    pub port: u16,
    pub issued: Arc<AtomicUsize>,
    pub refused: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    pub auth: TokenAuth,
    _dir: TempDir,
}

struct Shared {
    key: PathBuf,
    cert_b64: String,
    creds: Option<(String, String)>,
    refresh: Option<String>,
    expire_first: AtomicBool,
    issued: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

impl TokenService {
    pub fn start(creds: Option<(String, String)>, expire_first: bool) -> TokenService {
        TokenService::start_with(creds, None, expire_first)
    }

    /// Also accepts the OAuth2 refresh-token grant (`POST`) with `refresh`
    /// (an identity token).
    pub fn start_with(
        creds: Option<(String, String)>,
        refresh: Option<String>,
        expire_first: bool,
    ) -> TokenService {
        let dir = TempDir::new("token");
        let key = dir.path().join("token.key");
        let cert = dir.path().join("token.crt");
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=sli-test-token",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null()));
        let der = run(Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let issued = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            key,
            cert_b64: basic::encode(&der),
            creds,
            refresh,
            expire_first: AtomicBool::new(expire_first),
            issued: issued.clone(),
            refused: refused.clone(),
        });
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let shared = shared.clone();
                        std::thread::spawn(move || handle(s, &shared));
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
        });
        TokenService {
            port,
            issued,
            refused,
            stop,
            auth: TokenAuth {
                realm: format!("http://127.0.0.1:{port}/token"),
                service: "sli-test-registry".into(),
                issuer: "sli-test-issuer".into(),
                cert,
            },
            _dir: dir,
        }
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn handle(mut s: TcpStream, shared: &Shared) {
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head.split(' ').nth(1).unwrap_or("").to_owned();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let user = header("authorization")
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
        .and_then(basic::decode)
        .map(|d| String::from_utf8_lossy(&d).into_owned());
    let refuse = |mut s: TcpStream| {
        shared.refused.fetch_add(1, Ordering::SeqCst);
        let body = r#"{"details":"wrong credentials"}"#;
        let _ = write!(s, "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    };
    // GET: the query; POST (refresh-token grant): the form body.
    let (query, oauth) = if head.starts_with("POST ") {
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len.min(65536)];
        if s.read_exact(&mut body).is_err() {
            return;
        }
        let form = String::from_utf8_lossy(&body).into_owned();
        let refresh = form
            .split('&')
            .find_map(|p| p.strip_prefix("refresh_token="))
            .map(unescape);
        if shared.refresh.is_none() || refresh != shared.refresh {
            return refuse(s);
        }
        (form, true)
    } else {
        if let Some((u, p)) = &shared.creds {
            if user.as_deref() != Some(&format!("{u}:{p}")) {
                return refuse(s);
            }
        }
        (
            target.split_once('?').map(|x| x.1).unwrap_or("").to_owned(),
            false,
        )
    };
    let mut access = Vec::new();
    for pair in query.split('&') {
        let Some(("scope", v)) = pair.split_once('=') else {
            continue;
        };
        for scope in unescape(v).split(' ') {
            let parts: Vec<&str> = scope.split(':').collect();
            if parts.len() == 3 {
                access.push(serde_json::json!({
                    "type": parts[0], "name": parts[1], "actions": parts[2].split(',').collect::<Vec<_>>(),
                }));
            }
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let expired = shared.expire_first.swap(false, Ordering::SeqCst);
    let exp = if expired { now - 3600 } else { now + 600 };
    let n = shared.issued.fetch_add(1, Ordering::SeqCst);
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [shared.cert_b64]});
    let claims = serde_json::json!({
        "iss": "sli-test-issuer",
        "sub": user.as_deref().and_then(|u| u.split(':').next()).unwrap_or(""),
        "aud": "sli-test-registry",
        "exp": exp,
        "nbf": exp - 7200,
        "iat": exp - 7200,
        "jti": format!("sli-{n}"),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        b64url(&serde_json::to_vec(&header).unwrap()),
        b64url(&serde_json::to_vec(&claims).unwrap())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-binary", "-sign"])
        .arg(&shared.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let sig = child.wait_with_output().unwrap().stdout;
    let jwt = format!("{input}.{}", b64url(&sig));
    let key = if oauth { "access_token" } else { "token" };
    let body = serde_json::json!({key: jwt, "expires_in": 600}).to_string();
    let _ = write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn b64url(b: &[u8]) -> String {
    basic::encode(b)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
