//! Compressing one stream on several cores: the encoders cut their input
//! into pieces whose compressed bytes depend on those pieces alone, hand
//! each to a [`Pool`] of threads, and write the results out in input
//! order through [`InOrder`]. What a piece compresses to never depends on
//! which thread ran it or when, so the stream is the same whatever the
//! thread count.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, OnceLock};

/// The threads that compress pieces, shared by every encoder in the
/// process: as many as rayon's (so `RAYON_NUM_THREADS` bounds both).
pub(super) fn shared_pool() -> &'static Arc<Pool> {
    static POOL: OnceLock<Arc<Pool>> = OnceLock::new();
    POOL.get_or_init(|| Arc::new(Pool::new(rayon::current_num_threads())))
}

type Job = Box<dyn FnOnce() + Send>;

/// A plain pool of threads that sleep while there is no piece. Not
/// rayon's: its workers may be busy producing the very layers whose
/// pieces wait here, and idle rayon workers spin (`sched_yield`), which
/// costs the CPU a registry or daemon on the same machine needs.
pub(super) struct Pool {
    jobs: Mutex<mpsc::Sender<Job>>,
    threads: usize,
}

impl Pool {
    /// A pool of `threads` threads (at least one).
    pub(super) fn new(threads: usize) -> Pool {
        let threads = threads.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            // A thread that cannot start leaves the others to do its share;
            // with none at all, jobs run on the caller's thread (below).
            let _ = std::thread::Builder::new()
                .name(format!("compress-{i}"))
                .spawn(move || loop {
                    // The lock is held only while waiting for a job.
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        // The pool was dropped.
                        Err(_) => return,
                    }
                });
        }
        Pool {
            jobs: Mutex::new(tx),
            threads,
        }
    }

    fn spawn(&self, job: Job) {
        let failed = match self.jobs.lock() {
            Ok(tx) => tx.send(job).err().map(|e| e.0),
            Err(_) => Some(job),
        };
        // No thread to take it (none could start): run it here.
        if let Some(job) = failed {
            job();
        }
    }
}

/// Pieces compressed on a [`Pool`], written to `W` in the order they were
/// submitted, after `head` (a format's header, written with the first
/// piece so that nothing is written before there is something to say).
pub(super) struct InOrder<W: Write> {
    out: W,
    pool: Arc<Pool>,
    head: &'static [u8],
    head_written: bool,
    /// Pieces handed to the pool, oldest first.
    pending: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    /// How many pieces may be in flight (bounds memory).
    max_pending: usize,
}

impl<W: Write> InOrder<W> {
    pub(super) fn new(out: W, pool: Arc<Pool>, head: &'static [u8]) -> InOrder<W> {
        // One more piece than threads keeps every thread busy while the
        // oldest piece is written out.
        let max_pending = pool.threads + 1;
        InOrder {
            out,
            pool,
            head,
            head_written: false,
            pending: VecDeque::new(),
            max_pending,
        }
    }

    /// Hands `compress` to the pool; its output is written after every
    /// piece submitted before it. Waits only when too many are in flight.
    pub(super) fn submit(
        &mut self,
        compress: impl FnOnce() -> io::Result<Vec<u8>> + Send + 'static,
    ) -> io::Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.pool.spawn(Box::new(move || {
            // The receiver may be gone (the encoder was dropped mid-way).
            let _ = tx.send(compress());
        }));
        self.pending.push_back(rx);
        while self.pending.len() >= self.max_pending {
            self.write_oldest()?;
        }
        // Pass on whatever is already done, without waiting.
        while let Some(Ok(done)) = self.pending.front().map(Receiver::try_recv) {
            self.pending.pop_front();
            self.emit(done?)?;
        }
        Ok(())
    }

    /// Waits for the oldest piece and writes it out.
    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(rx) = self.pending.pop_front() else {
            return Ok(());
        };
        let done = rx
            .recv()
            .map_err(|_| io::Error::other("a compression thread stopped"))??;
        self.emit(done)
    }

    fn emit(&mut self, compressed: Vec<u8>) -> io::Result<()> {
        if !self.head_written {
            self.out.write_all(self.head)?;
            self.head_written = true;
        }
        self.out.write_all(&compressed)
    }

    /// Writes out every piece still in flight; returns the writer.
    pub(super) fn finish(mut self) -> io::Result<W> {
        while !self.pending.is_empty() {
            self.write_oldest()?;
        }
        Ok(self.out)
    }

    /// Flushes the writer; pieces in flight stay where they are.
    pub(super) fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}
