//! Just enough HTTP/1.1 for the Docker Engine API: one request per
//! connection (`Connection: close`), request bodies in chunked transfer
//! encoding (so a body can be streamed without knowing its length, and an
//! unfinished body is never mistaken for a complete one), and responses
//! read with every size and time bounded: the daemon is a local process,
//! but a wedged or impostor one must give an error, never a hang or an
//! unbounded allocation.
//!
//! Hand-written rather than a crate: the HTTP clients on crates.io either
//! pull in an async runtime (hyper, reqwest) or do not speak over Unix
//! sockets (ureq needs a custom connector); the subset needed here (GET,
//! a streamed POST, three body framings) is a few hundred lines.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// The default when `DOCKER_HOST` is unset, as in the docker CLI.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
/// Status line plus headers of one response.
pub const MAX_HEADERS: usize = 64 * 1024;
/// One chunk-size line or trailer line of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;

/// Where the daemon listens: a Unix socket, or a loopback TCP port
/// (nothing here talks to another machine, and there is no TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// `unix:///path/to/docker.sock`
    Unix(PathBuf),
    /// `tcp://127.0.0.1:PORT` (or `[::1]`, or `localhost`)
    Tcp(SocketAddr),
}

impl Host {
    /// Parses a `DOCKER_HOST` value: `unix:///path` or `tcp://HOST:PORT`
    /// where HOST is a loopback IP address or `localhost`.
    pub fn parse(text: &str) -> Result<Host> {
        if let Some(path) = text.strip_prefix("unix://") {
            if path.is_empty() {
                bail!("{text}: no socket path");
            }
            return Ok(Host::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = text.strip_prefix("tcp://") {
            let authority = rest.trim_end_matches('/');
            // IP literals and `localhost` only: resolving any other name
            // would itself be network traffic.
            let addr = match authority.strip_prefix("localhost:") {
                Some(port) => port
                    .parse::<u16>()
                    .ok()
                    .map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
                None => authority.parse::<SocketAddr>().ok(),
            };
            return match addr {
                // Only loopback: the API is unauthenticated without TLS,
                // and nothing this tool does may leave the machine.
                Some(a) if a.ip().is_loopback() => Ok(Host::Tcp(a)),
                _ => bail!(
                    "{text}: only unix:// sockets and loopback tcp:// addresses \
                     (tcp://127.0.0.1:PORT) are supported (no TLS, no remote daemons)"
                ),
            };
        }
        bail!(
            "{text}: unsupported scheme (use unix:///path/to/docker.sock or tcp://127.0.0.1:PORT)"
        )
    }

    pub(crate) fn connect(&self, timeout: Duration) -> io::Result<Stream> {
        let stream = match self {
            Host::Unix(path) => Stream::Unix(UnixStream::connect(path)?),
            Host::Tcp(addr) => Stream::Tcp(TcpStream::connect_timeout(addr, timeout)?),
        };
        stream.set_timeouts(timeout)?;
        Ok(stream)
    }
}

/// A connected socket of either kind.
#[derive(Debug)]
pub(crate) enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    /// Every read and write gives up after `timeout` without progress.
    pub fn set_timeouts(&self, timeout: Duration) -> io::Result<()> {
        match self {
            Stream::Unix(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))
            }
            Stream::Tcp(s) => {
                s.set_read_timeout(Some(timeout))?;
                s.set_write_timeout(Some(timeout))
            }
        }
    }

    fn shutdown(&self, how: Shutdown) {
        // Best effort: the peer may already be gone.
        let _ = match self {
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tcp(s) => s.shutdown(how),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// True for the errors a socket timeout gives (`EAGAIN` on Unix sockets,
/// `ETIMEDOUT` elsewhere).
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// The request head: `Host` is required by HTTP/1.1 and ignored by the
/// daemon on a socket; `Connection: close` makes end-of-body unambiguous
/// for responses without framing and frees the daemon's handler.
fn head(method: &str, path: &str, extra: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nUser-Agent: stream-layered-image/{}\r\n\
         Connection: close\r\n{extra}\r\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// Sends a request without a body and reads the response head.
pub(crate) fn get(host: &Host, path: &str, timeout: Duration) -> Result<Response> {
    let mut stream = host.connect(timeout).map_err(connect_error)?;
    stream
        .write_all(head("GET", path, "").as_bytes())
        .map_err(|e| io_error(e, timeout, "sending the request"))?;
    Response::read(stream, timeout)
}

/// Turns a failed connect into its one-line cause (the caller names the
/// socket).
pub(crate) fn connect_error(e: io::Error) -> anyhow::Error {
    let why = match e.kind() {
        io::ErrorKind::NotFound => "no such socket (is the daemon running? DOCKER_HOST selects another)",
        io::ErrorKind::ConnectionRefused => "connection refused (is the daemon running?)",
        io::ErrorKind::PermissionDenied => {
            "permission denied on the socket (join the socket's group, e.g. `docker`, or run as root)"
        }
        _ if is_timeout(&e) => "timed out connecting",
        _ => return anyhow!("cannot connect: {e}"),
    };
    anyhow!("{why}")
}

fn io_error(e: io::Error, timeout: Duration, doing: &str) -> anyhow::Error {
    if is_timeout(&e) {
        anyhow!(
            "{doing}: no progress for {} s (daemon hung?)",
            timeout.as_secs()
        )
    } else {
        anyhow!("{doing}: {e}")
    }
}

/// A request whose body is streamed in chunked encoding; [`finish`]
/// (`Self::finish`) ends the body and reads the response. Dropped
/// unfinished, the connection closes without the terminating chunk, which
/// the daemon sees as a truncated body: nothing half-sent is ever loaded.
#[derive(Debug)]
pub(crate) struct ChunkedRequest {
    stream: Stream,
    timeout: Duration,
    buf: Vec<u8>,
}

/// Data is gathered up to this size before a chunk is sent; larger writes
/// go out as one chunk each without copying.
const CHUNK_BUF: usize = 64 * 1024;

impl ChunkedRequest {
    pub fn start(
        host: &Host,
        method: &str,
        path: &str,
        content_type: &str,
        timeout: Duration,
    ) -> Result<ChunkedRequest> {
        let mut stream = host.connect(timeout).map_err(connect_error)?;
        let extra = format!("Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n");
        stream
            .write_all(head(method, path, &extra).as_bytes())
            .map_err(|e| io_error(e, timeout, "sending the request"))?;
        Ok(ChunkedRequest {
            stream,
            timeout,
            buf: Vec::with_capacity(CHUNK_BUF),
        })
    }

    fn send_chunk(&mut self, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            // A zero-size chunk would end the body.
            return Ok(());
        }
        self.stream
            .write_all(format!("{:x}\r\n", data.len()).as_bytes())?;
        self.stream.write_all(data)?;
        self.stream.write_all(b"\r\n")
    }

    fn send_buffered(&mut self) -> io::Result<()> {
        let buf = std::mem::take(&mut self.buf);
        let sent = self.send_chunk(&buf);
        self.buf = buf;
        self.buf.clear();
        sent
    }

    /// Ends the body and reads the response head.
    pub fn finish(mut self) -> Result<Response> {
        self.send_buffered()
            .and_then(|()| self.stream.write_all(b"0\r\n\r\n"))
            .map_err(|e| io_error(e, self.timeout, "sending the request body"))?;
        self.stream.shutdown(Shutdown::Write);
        Response::read(self.stream, self.timeout)
    }

    /// After a failed write: the daemon may have answered (an error) and
    /// closed; reads that answer if one arrives within `wait`.
    pub fn response_after_failure(self, wait: Duration) -> Option<Response> {
        self.stream.shutdown(Shutdown::Write);
        self.stream.set_timeouts(wait).ok()?;
        Response::read(self.stream, wait).ok()
    }
}

impl Write for ChunkedRequest {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() <= CHUNK_BUF {
            self.buf.extend_from_slice(data);
            return Ok(data.len());
        }
        self.send_buffered()?;
        if data.len() >= CHUNK_BUF {
            self.send_chunk(data)?;
        } else {
            self.buf.extend_from_slice(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_buffered()
    }
}

/// How the response body ends.
#[derive(Debug)]
enum Framing {
    Length(u64),
    /// Bytes left in the current chunk; `None` before the first size line.
    Chunked {
        left: Option<u64>,
        done: bool,
    },
    UntilClose,
}

/// A response: status, headers, and its body as a reader.
#[derive(Debug)]
pub(crate) struct Response {
    pub status: u16,
    headers: Vec<(String, String)>,
    reader: BufReader<Stream>,
    framing: Framing,
    timeout: Duration,
}

impl Response {
    fn read(stream: Stream, timeout: Duration) -> Result<Response> {
        let mut reader = BufReader::with_capacity(64 * 1024, stream);
        let head = read_head(&mut reader).map_err(|e| match e.downcast::<io::Error>() {
            Ok(io) => io_error(io, timeout, "waiting for the answer"),
            Err(other) => other,
        })?;
        let text = String::from_utf8_lossy(&head);
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status = parts.next().and_then(|s| s.parse::<u16>().ok());
        let status = match status {
            Some(s) if version.starts_with("HTTP/1.") => s,
            _ => bail!(
                "not an HTTP answer: {:?}",
                status_line.chars().take(80).collect::<String>()
            ),
        };
        let mut headers = Vec::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| anyhow!("malformed HTTP header line {line:?}"))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let mut response = Response {
            status,
            headers,
            reader,
            framing: Framing::UntilClose,
            timeout,
        };
        response.framing = if response
            .header("transfer-encoding")
            .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"))
        {
            Framing::Chunked {
                left: None,
                done: false,
            }
        } else if let Some(len) = response.header("content-length") {
            Framing::Length(
                len.parse()
                    .map_err(|_| anyhow!("bad Content-Length {len:?}"))?,
            )
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            Framing::Length(0)
        } else {
            Framing::UntilClose
        };
        Ok(response)
    }

    /// A header's value (names are case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The whole body, refused past `limit` bytes.
    pub fn body(mut self, limit: usize) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        let timeout = self.timeout;
        (&mut self)
            .take(limit as u64 + 1)
            .read_to_end(&mut body)
            .map_err(|e| io_error(e, timeout, "reading the answer"))?;
        if body.len() > limit {
            bail!("answer larger than {} MiB; refused", limit >> 20);
        }
        Ok(body)
    }

    /// The body parsed as JSON, refused past `limit` bytes.
    pub fn json(self, limit: usize) -> Result<serde_json::Value> {
        let body = self.body(limit)?;
        serde_json::from_slice(&body).context("answer is not JSON")
    }

    /// The next line of a line-oriented body (the daemon's JSON message
    /// stream) without its newline, or `None` at the end; a line longer than
    /// `limit` is an error.
    pub fn next_line(&mut self, limit: usize) -> Result<Option<Vec<u8>>> {
        let mut line = Vec::new();
        let timeout = self.timeout;
        let mut byte = [0u8; 1];
        loop {
            // Byte at a time over the decoder, but from BufReader's buffer,
            // so this costs a copy, not a syscall, per byte.
            match self.read(&mut byte) {
                Ok(0) => return Ok((!line.is_empty()).then_some(line)),
                Ok(_) if byte[0] == b'\n' => return Ok(Some(line)),
                Ok(_) => {
                    if line.len() >= limit {
                        bail!("a message longer than {} KiB; refused", limit >> 10);
                    }
                    line.push(byte[0]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e, timeout, "reading the answer")),
            }
        }
    }

    /// Reads one chunk-size or trailer line (bounded).
    fn chunk_line(&mut self) -> io::Result<String> {
        let mut line = Vec::new();
        (&mut self.reader)
            .take(MAX_CHUNK_LINE as u64)
            .read_until(b'\n', &mut line)?;
        if line.last() != Some(&b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "chunked answer: truncated or overlong size line",
            ));
        }
        Ok(String::from_utf8_lossy(&line).trim().to_owned())
    }
}

impl Read for Response {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.framing {
            Framing::Length(0) => Ok(0),
            Framing::Length(left) => {
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = self.reader.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "answer ended before its Content-Length",
                    ));
                }
                self.framing = Framing::Length(left - n as u64);
                Ok(n)
            }
            Framing::UntilClose => self.reader.read(buf),
            Framing::Chunked { done: true, .. } => Ok(0),
            Framing::Chunked { left, done: false } => {
                let left = match left {
                    Some(0) => {
                        // End of a chunk's data: its CRLF, then the next size.
                        if !self.chunk_line()?.is_empty() {
                            return Err(bad_chunk("no CRLF after chunk data"));
                        }
                        self.next_chunk_size()?
                    }
                    Some(n) => n,
                    None => self.next_chunk_size()?,
                };
                if left == 0 {
                    // The last chunk: skip trailers up to the empty line.
                    let mut trailers = 0;
                    while !self.chunk_line()?.is_empty() {
                        trailers += 1;
                        if trailers > 64 {
                            return Err(bad_chunk("too many trailers"));
                        }
                    }
                    self.framing = Framing::Chunked {
                        left: Some(0),
                        done: true,
                    };
                    return Ok(0);
                }
                let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let n = self.reader.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "chunked answer ended inside a chunk",
                    ));
                }
                self.framing = Framing::Chunked {
                    left: Some(left - n as u64),
                    done: false,
                };
                Ok(n)
            }
        }
    }
}

impl Response {
    fn next_chunk_size(&mut self) -> io::Result<u64> {
        let line = self.chunk_line()?;
        let size = line.split(';').next().unwrap_or_default().trim();
        u64::from_str_radix(size, 16).map_err(|_| bad_chunk("bad chunk size"))
    }
}

fn bad_chunk(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("chunked answer: {why}"))
}

/// Reads the status line and headers, up to the empty line; refuses more
/// than [`MAX_HEADERS`] bytes.
fn read_head(reader: &mut BufReader<Stream>) -> Result<Vec<u8>> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let room = (MAX_HEADERS + 1).saturating_sub(head.len()) as u64;
        let n = reader.by_ref().take(room).read_until(b'\n', &mut head)?;
        if n == 0 {
            if head.is_empty() {
                bail!("connection closed without an answer");
            }
            bail!("connection closed in the middle of the answer's headers");
        }
        if head.len() > MAX_HEADERS {
            bail!(
                "answer headers larger than {} KiB; refused",
                MAX_HEADERS >> 10
            );
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            // A `100 Continue` interim answer is followed by the real one.
            if head.starts_with(b"HTTP/1.1 100 ") || head.starts_with(b"HTTP/1.0 100 ") {
                head.clear();
                continue;
            }
            head.truncate(before);
            while head.last().is_some_and(|b| *b == b'\r' || *b == b'\n') {
                head.pop();
            }
            return Ok(head);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse() {
        assert_eq!(
            Host::parse("unix:///var/run/docker.sock").unwrap(),
            Host::Unix(PathBuf::from("/var/run/docker.sock"))
        );
        assert!(matches!(
            Host::parse("tcp://127.0.0.1:2375").unwrap(),
            Host::Tcp(a) if a.port() == 2375
        ));
        let remote = Host::parse("tcp://192.0.2.1:2375").unwrap_err();
        assert!(format!("{remote:#}").contains("loopback"), "{remote:#}");
        let ssh = Host::parse("ssh://me@box").unwrap_err();
        assert!(format!("{ssh:#}").contains("unsupported scheme"), "{ssh:#}");
        assert!(Host::parse("unix://").is_err());
        assert_eq!(
            Host::parse("tcp://localhost:2375/").unwrap(),
            Host::Tcp(SocketAddr::from(([127, 0, 0, 1], 2375)))
        );
        assert!(Host::parse("tcp://[::1]:2375").is_ok());
        // Names other than localhost are not resolved.
        assert!(Host::parse("tcp://docker.example:2375").is_err());
    }

    /// A connected pair: a response written into one end is read from the
    /// other as the daemon's answer.
    fn answer(raw: &[u8]) -> Result<Response> {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        // From a thread: more than a socket buffer would block here.
        let raw = raw.to_vec();
        std::thread::spawn(move || {
            let _ = theirs.write_all(&raw);
        });
        let stream = Stream::Unix(ours);
        stream.set_timeouts(Duration::from_secs(5)).unwrap();
        Response::read(stream, Duration::from_secs(5))
    }

    #[test]
    fn content_length_body() {
        let r = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nApi-Version: 1.41\r\n\r\nhello!")
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("API-VERSION"), Some("1.41"));
        assert_eq!(r.body(100).unwrap(), b"hello");
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                    3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nX-T: 1\r\n\r\nGARBAGE";
        let r = answer(raw).unwrap();
        assert_eq!(r.body(100).unwrap(), b"abc0123456789abcdef");
    }

    #[test]
    fn truncated_chunked_body_is_an_error() {
        let r = answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc").unwrap();
        assert!(r.body(100).is_err());
        let r = answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc").unwrap();
        assert!(r.body(100).is_err());
    }

    #[test]
    fn body_over_the_limit_is_refused() {
        let mut raw = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        raw.extend(vec![b'x'; 3 << 20]);
        let err = answer(&raw).unwrap().body(2 << 20).unwrap_err();
        assert!(format!("{err:#}").contains("larger than 2 MiB"), "{err:#}");
    }

    #[test]
    fn lines_are_split_and_bounded() {
        let mut r =
            answer(b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n{\"a\":1}\r\nxyzzy").unwrap();
        assert_eq!(r.next_line(100).unwrap().unwrap(), b"{\"a\":1}\r");
        assert_eq!(r.next_line(100).unwrap().unwrap(), b"xyzzy");
        assert_eq!(r.next_line(100).unwrap(), None);
        let mut r = answer(b"HTTP/1.1 200 OK\r\n\r\n0123456789").unwrap();
        assert!(r.next_line(4).is_err());
    }

    #[test]
    fn oversize_or_broken_heads_are_refused() {
        let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
        while raw.len() < MAX_HEADERS + 100 {
            raw.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        raw.extend_from_slice(b"\r\n");
        let err = answer(&raw).unwrap_err();
        assert!(
            format!("{err:#}").contains("headers larger than 64 KiB"),
            "{err:#}"
        );
        // One endless line, no newline at all.
        let err = answer(&vec![b'H'; MAX_HEADERS * 2]).unwrap_err();
        assert!(format!("{err:#}").contains("larger than 64 KiB"), "{err:#}");
        assert!(
            format!("{:#}", answer(b"SSH-2.0-OpenSSH\r\n\r\n").unwrap_err())
                .contains("not an HTTP answer")
        );
        assert!(format!("{:#}", answer(b"").unwrap_err()).contains("without an answer"));
    }

    #[test]
    fn interim_100_continue_is_skipped() {
        let r = answer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!(r.status, 204);
        assert_eq!(r.body(10).unwrap(), b"");
    }

    #[test]
    fn chunked_request_encoding() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut req = ChunkedRequest {
            stream: Stream::Unix(ours),
            timeout: Duration::from_secs(5),
            buf: Vec::new(),
        };
        let reading = std::thread::spawn(move || {
            let mut theirs = theirs;
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).unwrap();
            got
        });
        req.write_all(b"ab").unwrap();
        req.write_all(&vec![b'z'; CHUNK_BUF]).unwrap();
        req.write_all(b"").unwrap();
        req.flush().unwrap();
        req.send_chunk(b"").unwrap();
        req.stream.write_all(b"0\r\n\r\n").unwrap();
        req.stream.shutdown(Shutdown::Both);
        drop(req);
        let got = reading.join().unwrap();
        let mut want = b"2\r\nab\r\n".to_vec();
        want.extend_from_slice(format!("{CHUNK_BUF:x}\r\n").as_bytes());
        want.extend(vec![b'z'; CHUNK_BUF]);
        want.extend_from_slice(b"\r\n0\r\n\r\n");
        assert_eq!(got, want);
    }
}
