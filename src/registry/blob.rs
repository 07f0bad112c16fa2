//! Blobs (distribution spec, "Pushing blobs"): `HEAD` to learn whether the
//! registry has one, a cross-repository mount, and uploads.
//!
//! An upload is `POST /v2/NAME/blobs/uploads/`, then one of two forms,
//! decided while the blob is produced (its digest is not known before;
//! the bytes are hashed on the way, and produced once either way):
//!
//! - a blob of at most [`Options::whole_upload_max`] bytes is held in
//!   memory and sent whole: one `PUT LOCATION?digest=…` carrying it, with
//!   its `Content-Length`. The cheapest form for the registry (no upload
//!   session state to store and resume), as containerd pushes. A blob
//!   whose size hint says it is small is produced on the uploading thread
//!   (see [`pipe::stream_or_whole_hinted`]).
//! - a longer blob streams in one `PATCH` (chunked transfer encoding, the
//!   bytes held so far first), then `PUT LOCATION?digest=…` with no body.
//!   Memory stays bounded: no such blob is held whole.
//!
//! A registry that refuses the streamed `PATCH` (400, 405, 411, 413, 415,
//! 501) gets the monolithic form for long blobs from then on: the blob
//! produced once to learn its digest and length, then again into one
//! `PUT LOCATION?digest=…` with its `Content-Length`. A failed attempt
//! starts again from the `POST` (that is why the producer is `Fn`), a
//! bounded number of times.
//!
//! [`Options::whole_upload_max`]: super::Options::whole_upload_max

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;

use super::pipe::{self, Produced, Start};
use super::transport::retry::{retry_after, transient_error, transient_status};
use super::transport::{is_auth_failure, Req, Resp};
use super::Client;

/// A blob's producer: writes the blob's bytes (exactly the same bytes each
/// time it is called). Called once per upload attempt.
///
/// It returns the digest and size of what it wrote when it hashed those
/// very bytes itself (a layer's producer does, for the digest cache), so
/// the upload need not hash them again; `None` otherwise. Which of the two
/// is said up front (`self_hashed` of [`Client::upload_at`]).
pub type Producer<'a> = dyn Fn(&mut dyn Write) -> anyhow::Result<Option<BlobDigest>> + Sync + 'a;

/// A blob's digest (`sha256:<hex>`) and size in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobDigest {
    /// `sha256:<64 hex digits>`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
}

/// What a mount request did.
pub(crate) enum Mount {
    /// 201: the blob is now in our repository.
    Mounted,
    /// 202: the registry opened an upload instead, at this location.
    Opened(String),
}

/// How an attempt's body went.
enum Sent {
    /// The blob was held whole: the outcome of its `PUT`.
    Whole(Result<BlobDigest, Attempt>),
    /// The blob streamed: the `PATCH`'s answer.
    Patch(Result<(Resp, u64), ureq::Error>),
    /// Monolithic form, a blob over the limit: read to its end only to
    /// learn its digest and length.
    Hashed,
}

/// Why one upload attempt failed.
enum Attempt {
    /// Worth another try from the start, after the server's delay if any.
    Retry(anyhow::Error, Option<Duration>),
    /// Not worth it.
    Fatal(anyhow::Error),
}

impl Client {
    /// `HEAD /v2/NAME/blobs/DIGEST`: whether the registry has the blob in
    /// this repository. A redirect (to storage) counts as present.
    pub fn blob_exists(&self, digest: &str) -> Result<bool> {
        let what = format!("checking blob {digest}");
        let url = format!("/v2/{}/blobs/{digest}", self.t.repository);
        let resp = self.t.call(&what, &Req::new("HEAD", url))?;
        match resp.status {
            200..=299 | 307 | 308 => Ok(true),
            404 => Ok(false),
            _ => Err(self.t.unexpected(&what, &resp)),
        }
    }

    /// Mounts blob `digest` from repository `from_repo` of the same
    /// registry (`POST …/blobs/uploads/?mount=DIGEST&from=FROM`). `true`:
    /// mounted. `false`: the registry could not (it opened an upload
    /// instead, which is cancelled); upload the blob then.
    pub fn mount(&self, digest: &str, from_repo: &str) -> Result<bool> {
        match self.mount_or_open(digest, from_repo)? {
            Mount::Mounted => Ok(true),
            Mount::Opened(location) => {
                // Best effort: an abandoned upload expires on its own.
                let _ = self.t.send_once(&Req::new("DELETE", location), None);
                Ok(false)
            }
        }
    }

    pub(crate) fn mount_or_open(&self, digest: &str, from_repo: &str) -> Result<Mount> {
        self.t.add_pull_scope(from_repo);
        let what = format!("mounting blob {digest} from {from_repo}");
        let url = format!(
            "/v2/{}/blobs/uploads/?mount={digest}&from={}",
            self.t.repository,
            super::transport::bearer::query_escape(from_repo)
        );
        let mut req = Req::new("POST", url);
        req.body = Some(&[]);
        let resp = self.t.call(&what, &req)?;
        match resp.status {
            201 => Ok(Mount::Mounted),
            202 => Ok(Mount::Opened(self.location(&what, &resp)?)),
            _ => Err(self.t.unexpected(&what, &resp)),
        }
    }

    /// Uploads a blob whose bytes `produce` writes, and returns its digest
    /// and size. `known_digest`, when given, is what the bytes must hash
    /// to (a mismatch is an error, and nothing is committed); when `None`,
    /// the digest is computed while the bytes stream. Memory stays bounded
    /// whatever the blob's size: at most [`Options::whole_upload_max`]
    /// bytes of it are held. Does not check whether the registry
    /// already has it ([`Client::blob_exists`]).
    ///
    /// [`Options::whole_upload_max`]: super::Options::whole_upload_max
    pub fn upload(&self, known_digest: Option<&str>, produce: &Producer<'_>) -> Result<BlobDigest> {
        self.upload_at(known_digest, produce, false, 0, None, None)
    }

    /// [`Client::upload`], the first attempt at an upload already opened;
    /// no retry starts once `cancel` is set (another blob of the push
    /// failed). With `self_hashed`, `produce` returns the digest of what it
    /// wrote, and the bytes are not hashed again on the way. `size_hint`:
    /// about how long the blob is (0: unknown), see
    /// [`pipe::stream_or_whole_hinted`].
    pub(crate) fn upload_at(
        &self,
        known: Option<&str>,
        produce: &Producer<'_>,
        self_hashed: bool,
        size_hint: u64,
        mut opened: Option<String>,
        cancel: Option<&AtomicBool>,
    ) -> Result<BlobDigest> {
        self.t.ensure_pinged()?;
        let policy = self.t.retry;
        let start = Instant::now();
        let mut tries = 1;
        loop {
            match self.upload_once(known, produce, self_hashed, size_hint, opened.take()) {
                Ok(d) => return Ok(d),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(e, delay)) => {
                    if tries >= policy.attempts.max(1) || start.elapsed() >= policy.max_total {
                        return Err(anyhow::anyhow!("{e} (after {tries} tries)"));
                    }
                    if cancel.is_some_and(|c| c.load(Ordering::SeqCst)) {
                        return Err(e);
                    }
                    tries += 1;
                    std::thread::sleep(policy.delay(tries, delay));
                }
            }
        }
    }

    fn upload_once(
        &self,
        known: Option<&str>,
        produce: &Producer<'_>,
        self_hashed: bool,
        size_hint: u64,
        opened: Option<String>,
    ) -> Result<BlobDigest, Attempt> {
        let label = known.unwrap_or("(digest not known yet)");
        let what = format!("uploading blob {label}");
        let location = match opened {
            Some(l) => l,
            None => self.start_upload(&what).map_err(Attempt::Fatal)?,
        };
        let monolithic = self.t.monolithic.load(Ordering::Relaxed);
        let mut patch = Req::new("PATCH", location.clone());
        patch
            .headers
            .push(("content-type", "application/octet-stream".into()));
        let limit = self.whole_upload_max;
        let run =
            pipe::stream_or_whole_hinted(
                produce,
                self_hashed,
                limit,
                size_hint,
                |start| match start {
                    Start::Whole(body, blob) => {
                        Sent::Whole(self.put_held(&what, known, &location, body, blob))
                    }
                    Start::Stream(body) if monolithic => {
                        // An error here is the producer's, reported below.
                        let _ = std::io::copy(body, &mut std::io::sink());
                        Sent::Hashed
                    }
                    Start::Stream(body) => Sent::Patch(self.t.send_once(&patch, Some(body))),
                },
            );
        let (sent, produced) = run.map_err(|e| self.producing(&what, e))?;
        let blob = match produced {
            Produced::Done(d) => Some(d),
            Produced::Failed(e) => return Err(self.producing(&what, e)),
            Produced::Abandoned => None,
        };
        match sent {
            Sent::Whole(r) => r,
            Sent::Patch(sent) => self.patched(&what, known, location, sent, blob),
            Sent::Hashed => match blob {
                Some(blob) => self.put_whole(&what, known, produce, self_hashed, location, blob),
                // Not reached: the body was read to its end.
                None => Err(self.producing(&what, anyhow::anyhow!("it ended early"))),
            },
        }
    }

    /// The whole form: one `PUT` carrying the held bytes, after checking
    /// their digest (nothing is sent when it is not the expected one).
    fn put_held(
        &self,
        what: &str,
        known: Option<&str>,
        location: &str,
        body: &mut dyn Read,
        blob: BlobDigest,
    ) -> Result<BlobDigest, Attempt> {
        self.check_known(what, known, &blob)?;
        let what = format!("uploading blob {}", blob.digest);
        // Sent as a reader, as the long forms are: no overall time limit
        // (`timeouts.request`, for requests without a blob, could cut a
        // few MiB on a slow link), each read and write still limited.
        let sent = self
            .t
            .send_once(&put_with_length(location, &blob), Some(body));
        self.finished(&what, blob, sent)
    }

    /// After the streamed `PATCH`: its answer, then the closing
    /// `PUT ?digest=` with no body.
    fn patched(
        &self,
        what: &str,
        known: Option<&str>,
        location: String,
        sent: Result<(Resp, u64), ureq::Error>,
        blob: Option<BlobDigest>,
    ) -> Result<BlobDigest, Attempt> {
        let resp = match sent {
            Ok((resp, gen)) => {
                if resp.status == 401 {
                    let _ = self.t.reauth_after(&resp, gen);
                    return Err(Attempt::Retry(self.t.unexpected(what, &resp), None));
                }
                resp
            }
            Err(e) => return Err(self.classify_error(what, e)),
        };
        match resp.status {
            202 | 204 => {}
            400 | 405 | 411 | 413 | 415 | 501 => {
                // The registry does not take a streamed PATCH: switch to
                // one PUT per blob and start again.
                self.t.monolithic.store(true, Ordering::Relaxed);
                return Err(Attempt::Retry(
                    self.t.unexpected(what, &resp),
                    Some(Duration::ZERO),
                ));
            }
            s if transient_status(s) => {
                return Err(Attempt::Retry(
                    self.t.unexpected(what, &resp),
                    retry_after(&resp.headers),
                ))
            }
            _ => return Err(Attempt::Fatal(self.t.unexpected(what, &resp))),
        }
        let Some(blob) = blob else {
            return Err(Attempt::Fatal(self.t.fail(
                what,
                format!(
                    "the registry answered {} before reading the whole blob",
                    resp.status
                ),
            )));
        };
        self.check_known(what, known, &blob)?;
        let what = format!("uploading blob {}", blob.digest);
        let next = self.location(&what, &resp).unwrap_or(location);
        let mut put = Req::new("PUT", with_digest(&next, &blob.digest));
        put.body = Some(&[]);
        self.finished(&what, blob, self.t.send_once(&put, None))
    }

    /// The monolithic form for a blob over the limit, produced once
    /// already to learn `first` (its digest and length): produced again
    /// into one `PUT` with its length, instead of being held.
    fn put_whole(
        &self,
        what: &str,
        known: Option<&str>,
        produce: &Producer<'_>,
        self_hashed: bool,
        location: String,
        first: BlobDigest,
    ) -> Result<BlobDigest, Attempt> {
        self.check_known(what, known, &first)?;
        let what = format!("uploading blob {}", first.digest);
        let req = put_with_length(&location, &first);
        let (sent, produced) = pipe::stream(produce, self_hashed, |body| {
            self.t.send_once(&req, Some(body))
        });
        match produced {
            Produced::Done(d) if d != first => {
                return Err(Attempt::Fatal(self.t.fail(
                    &what,
                    format!(
                        "the producer wrote different bytes the second time ({})",
                        d.digest
                    ),
                )))
            }
            Produced::Failed(e) => return Err(self.producing(&what, e)),
            _ => {}
        }
        self.finished(&what, first, sent)
    }

    /// A mismatch with the expected digest is fatal: the producer does not
    /// write what the caller said it would, a retry cannot help.
    fn check_known(
        &self,
        what: &str,
        known: Option<&str>,
        blob: &BlobDigest,
    ) -> Result<(), Attempt> {
        match known {
            Some(k) if k != blob.digest => Err(Attempt::Fatal(self.t.fail(
                what,
                format!("the bytes hash to {}, not to the expected {k}", blob.digest),
            ))),
            _ => Ok(()),
        }
    }

    /// The producer's own failure: not retried.
    fn producing(&self, what: &str, e: anyhow::Error) -> Attempt {
        Attempt::Fatal(self.t.fail(what, format!("producing the blob: {e:#}")))
    }

    /// Checks the answer to the upload's closing PUT (or how it failed):
    /// `blob` when the registry has it.
    fn finished(
        &self,
        what: &str,
        blob: BlobDigest,
        sent: Result<(Resp, u64), ureq::Error>,
    ) -> Result<BlobDigest, Attempt> {
        let (resp, gen) = sent.map_err(|e| self.classify_error(what, e))?;
        match resp.status {
            201 | 204 | 200 => {
                if let Some(d) = resp.header("docker-content-digest") {
                    if d != blob.digest {
                        return Err(Attempt::Fatal(self.t.fail(
                            what,
                            format!(
                                "the registry says it stored {d}, but we sent {}",
                                blob.digest
                            ),
                        )));
                    }
                }
                Ok(blob)
            }
            401 => {
                let _ = self.t.reauth_after(&resp, gen);
                Err(Attempt::Retry(self.t.unexpected(what, &resp), None))
            }
            s if transient_status(s) => Err(Attempt::Retry(
                self.t.unexpected(what, &resp),
                retry_after(&resp.headers),
            )),
            // 400 DIGEST_INVALID / BLOB_UPLOAD_INVALID: the registry got
            // other bytes than we hashed. A registry that lies, or a path
            // that corrupts: an error either way.
            _ => Err(Attempt::Fatal(self.t.unexpected(what, &resp))),
        }
    }

    fn classify_error(&self, what: &str, e: ureq::Error) -> Attempt {
        if is_auth_failure(&e) {
            Attempt::Fatal(self.t.transport_error(what, e, 1))
        } else if transient_error(&e) {
            Attempt::Retry(self.t.transport_error(what, e, 1), None)
        } else {
            Attempt::Fatal(self.t.transport_error(what, e, 1))
        }
    }

    /// `POST /v2/NAME/blobs/uploads/`: the upload's location.
    fn start_upload(&self, what: &str) -> Result<String> {
        let url = format!("/v2/{}/blobs/uploads/", self.t.repository);
        let mut req = Req::new("POST", url);
        req.body = Some(&[]);
        let resp = self.t.call(what, &req)?;
        match resp.status {
            202 => self.location(what, &resp),
            _ => Err(self.t.unexpected(what, &resp)),
        }
    }

    fn location(&self, what: &str, resp: &Resp) -> Result<String> {
        match resp.header("location") {
            Some(l) if !l.is_empty() => Ok(self.t.url(l)),
            _ => Err(self
                .t
                .fail(what, format!("{} without a Location", resp.status))),
        }
    }
}

/// The `PUT` that carries a whole blob, with its length.
fn put_with_length(location: &str, blob: &BlobDigest) -> Req<'static> {
    let mut req = Req::new("PUT", with_digest(location, &blob.digest));
    req.headers
        .push(("content-type", "application/octet-stream".into()));
    req.headers.push(("content-length", blob.size.to_string()));
    req
}

/// `LOCATION` with `digest=D` added to its query.
fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn digest_query() {
        assert_eq!(
            super::with_digest("/u/1", "sha256:a"),
            "/u/1?digest=sha256:a"
        );
        assert_eq!(
            super::with_digest("/u/1?_state=x", "sha256:a"),
            "/u/1?_state=x&digest=sha256:a"
        );
    }
}
