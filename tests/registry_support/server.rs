//! `docker-registry serve CONFIG` on 127.0.0.1 and a free port, with its
//! own config and storage in a temporary directory; killed on drop.

use std::fmt::Write as _;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{run, TempDir};

/// How the registry authenticates and whether it speaks TLS.
#[derive(Default)]
pub struct Setup {
    /// Serve TLS with a certificate for 127.0.0.1 signed by a fresh CA.
    pub tls: bool,
    /// htpasswd Basic auth with this user and password.
    pub htpasswd: Option<(String, String)>,
    /// Bearer tokens from this realm (`auth: token:`), trusting this
    /// certificate (PEM path).
    pub token: Option<TokenAuth>,
}

#[derive(Clone)]
pub struct TokenAuth {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    pub cert: PathBuf,
}

pub struct Registry {
    child: Child,
    pub port: u16,
    pub dir: TempDir,
    /// The CA (PEM) when `tls`.
    pub ca: Option<PathBuf>,
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    pub fn start(setup: Setup) -> Registry {
        assert!(
            super::have("docker-registry"),
            "docker-registry is not installed (tests/run installs it: apt-get install docker-registry)"
        );
        let dir = TempDir::new("registry");
        let d = dir.path().to_path_buf();
        let port = free_port();
        let mut conf = String::new();
        writeln!(
            conf,
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: sli-test-secret",
            d.join("data").display()
        )
        .unwrap();
        let mut ca = None;
        if setup.tls {
            let (ca_pem, cert, key) = make_tls(&d);
            writeln!(
                conf,
                "  tls:\n    certificate: {}\n    key: {}",
                cert.display(),
                key.display()
            )
            .unwrap();
            ca = Some(ca_pem);
        }
        if let Some((user, pass)) = &setup.htpasswd {
            let line = run(Command::new("htpasswd").args(["-Bbn", user, pass]));
            let f = d.join("htpasswd");
            fs::write(&f, line).unwrap();
            writeln!(
                conf,
                "auth:\n  htpasswd:\n    realm: sli-test\n    path: {}",
                f.display()
            )
            .unwrap();
        }
        if let Some(t) = &setup.token {
            writeln!(
                conf,
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}",
                t.realm,
                t.service,
                t.issuer,
                t.cert.display()
            )
            .unwrap();
        }
        let conf_path = d.join("config.yml");
        fs::write(&conf_path, conf).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(fs::File::create(d.join("access.log")).unwrap())
            .stderr(fs::File::create(d.join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry starts");
        let mut r = Registry {
            child,
            port,
            dir,
            ca,
        };
        r.wait_ready();
        r
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("docker-registry exited ({status}): {}", self.log());
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "docker-registry did not listen: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's own log (stderr).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// The access log (stdout, Apache combined format).
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Completed blob uploads seen so far: `PUT …/blobs/uploads/…` answered 201.
    pub fn uploads(&self) -> usize {
        self.access_log()
            .lines()
            .filter(|l| {
                l.contains("\"PUT /v2/") && l.contains("/blobs/uploads/") && l.contains("\" 201 ")
            })
            .count()
    }

    /// The request lines (`GET /v2/ HTTP/1.1`) of the access log from the
    /// `skip`th on: what a push did after [`Registry::mark`].
    pub fn request_lines_from(&self, skip: usize) -> Vec<String> {
        self.access_log()
            .lines()
            .filter_map(|l| l.split('"').nth(1).map(str::to_owned))
            .skip(skip)
            .collect()
    }

    /// How many requests the access log holds now.
    pub fn mark(&self) -> usize {
        self.request_lines_from(0).len()
    }

    /// `DELETE /v2/REPO/blobs/DIGEST` (the registry allows deletes): the
    /// blob leaves the repository although manifests still name it.
    pub fn delete_blob(&self, repo: &str, digest: &str) {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        write!(
            s,
            "DELETE /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.host()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 202"), "delete {digest}: {resp}");
    }

    /// Requests whose request line contains `needle` (`"PATCH /v2/`).
    pub fn requests(&self, needle: &str) -> usize {
        self.access_log()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA, and a certificate for 127.0.0.1 (and localhost) it signs.
fn make_tls(d: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let (ca_key, ca, key, csr, cert, ext) = (
        d.join("ca.key"),
        d.join("ca.crt"),
        d.join("server.key"),
        d.join("server.csr"),
        d.join("server.crt"),
        d.join("san.ext"),
    );
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
            "/CN=sli-test-ca",
        ])
        .arg("-keyout")
        .arg(&ca_key)
        .arg("-out")
        .arg(&ca)
        .stderr(Stdio::null()));
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&csr)
        .stderr(Stdio::null()));
    fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n").unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(&csr)
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .arg("-out")
        .arg(&cert)
        .arg("-extfile")
        .arg(&ext)
        .stderr(Stdio::null()));
    (ca, cert, key)
}
