//! A fault-injecting HTTP proxy in front of a registry, on 127.0.0.1. It
//! reads each request's head, asks a rule what to do, and then forwards
//! it (with `Connection: close`, so every connection carries one request
//! the rule has seen), answers it itself (a 500, a 429 with `Retry-After`),
//! or forwards the head and some body bytes and then cuts the connection.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What to do with one request.
pub enum Action {
    Forward,
    /// Answer with this status and extra header lines (`Retry-After: 1`).
    Respond(u16, Vec<String>),
    /// The same, with this body.
    RespondBody(u16, Vec<String>, Vec<u8>),
    /// Forward the head and this many body bytes, then cut both sides.
    CutAfter(usize),
}

pub struct Proxy {
    pub port: u16,
    /// Every request line seen, in order.
    pub seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

type Rule = dyn Fn(&str) -> Action + Send + Sync;

impl Proxy {
    pub fn start(upstream: u16, rule: impl Fn(&str) -> Action + Send + Sync + 'static) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let rule: Arc<Rule> = Arc::new(rule);
        let (seen2, stop2) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let (rule, seen) = (rule.clone(), seen2.clone());
                        std::thread::spawn(move || {
                            let _ = handle(s, upstream, &*rule, &seen);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Proxy { port, seen, stop }
    }

    /// How many request lines seen so far contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn handle(
    mut client: TcpStream,
    upstream: u16,
    rule: &Rule,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    client.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut b)? == 0 || head.len() > 65536 {
            return Ok(());
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let line = text.lines().next().unwrap_or("").to_owned();
    seen.lock().unwrap().push(line.clone());
    let action = match rule(&line) {
        Action::Respond(status, headers) => Action::RespondBody(status, headers, Vec::new()),
        other => other,
    };
    match action {
        Action::RespondBody(status, headers, body) => {
            let mut resp = format!("HTTP/1.1 {status} Injected\r\n");
            for h in headers {
                resp.push_str(&h);
                resp.push_str("\r\n");
            }
            resp.push_str(&format!(
                "Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ));
            client.write_all(resp.as_bytes())?;
            client.write_all(&body)?;
            client.flush()?;
            // Drain what the client still sends (a body) so that closing
            // does not reset the connection before it reads the answer.
            client.set_read_timeout(Some(Duration::from_millis(300)))?;
            let mut sink = [0u8; 65536];
            while matches!(client.read(&mut sink), Ok(n) if n > 0) {}
            let _ = client.shutdown(Shutdown::Both);
            Ok(())
        }
        action => {
            let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
            let mut new_head = String::new();
            for l in text.split("\r\n").filter(|l| !l.is_empty()) {
                if !l.to_ascii_lowercase().starts_with("connection:") {
                    new_head.push_str(l);
                    new_head.push_str("\r\n");
                }
            }
            new_head.push_str("Connection: close\r\n\r\n");
            up.write_all(new_head.as_bytes())?;
            if let Action::CutAfter(n) = action {
                let mut left = n;
                let mut buf = [0u8; 8192];
                while left > 0 {
                    let k = client.read(&mut buf[..left.min(8192)])?;
                    if k == 0 {
                        break;
                    }
                    up.write_all(&buf[..k])?;
                    left -= k;
                }
                let _ = up.shutdown(Shutdown::Both);
                let _ = client.shutdown(Shutdown::Both);
                return Ok(());
            }
            let (mut c2, mut u2) = (client.try_clone()?, up.try_clone()?);
            let to_up = std::thread::spawn(move || {
                let _ = std::io::copy(&mut c2, &mut u2);
                let _ = u2.shutdown(Shutdown::Write);
            });
            let _ = std::io::copy(&mut up, &mut client);
            let _ = client.shutdown(Shutdown::Both);
            let _ = up.shutdown(Shutdown::Both);
            let _ = to_up.join();
            Ok(())
        }
    }
}
