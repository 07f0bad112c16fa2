//! Progress reporting. Library code never prints: it tells a [`Reporter`]
//! the caller chose. The executable's [`Stderr`] reporter prints nixpkgs'
//! progress lines (`Creating layer N from paths: [...]`) when stderr is
//! not a terminal, a live status line (layers, bytes, rate) when it is, and
//! nothing but warnings with `-q`.
#![warn(missing_docs)]

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::escape::one_line;

/// Receives what long-running work has to say.
pub trait Reporter: Sync {
    /// A step, in nixpkgs' wording where nixpkgs has one.
    fn step(&self, line: &str);
    /// `bytes` more bytes of layer data were read; `layer_done` when a
    /// layer ended.
    fn progress(&self, bytes: u64, layer_done: bool);
    /// Something the user should know that does not stop the work.
    fn warn(&self, line: &str);
}

/// Says nothing (library callers and tests that do not care).
pub struct Silent;

impl Reporter for Silent {
    fn step(&self, _: &str) {}
    fn progress(&self, _: u64, _: bool) {}
    fn warn(&self, _: &str) {}
}

/// The executable's reporter on stderr.
pub struct Stderr {
    mode: Mode,
    state: Mutex<Bar>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Quiet,
    Lines,
    Live,
}

struct Bar {
    started: Instant,
    drawn: Option<Instant>,
    bytes: u64,
    layers: usize,
    total_layers: usize,
    step: String,
}

impl Stderr {
    /// `quiet`: warnings only. Otherwise a live line on a terminal, plain
    /// lines elsewhere. `total_layers` is shown on the live line.
    pub fn new(quiet: bool, total_layers: usize) -> Stderr {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Live
        } else {
            Mode::Lines
        };
        Stderr {
            mode,
            state: Mutex::new(Bar {
                started: Instant::now(),
                drawn: None,
                bytes: 0,
                layers: 0,
                total_layers,
                step: String::new(),
            }),
        }
    }

    /// Clears the live line before the summary is printed.
    pub fn finish(&self) {
        if self.mode == Mode::Live {
            eprint!("\r\x1b[2K");
        }
    }

    fn draw(&self, bar: &mut Bar, force: bool) {
        let now = Instant::now();
        if !force
            && bar
                .drawn
                .is_some_and(|t| now - t < Duration::from_millis(100))
        {
            return;
        }
        bar.drawn = Some(now);
        let secs = (now - bar.started).as_secs_f64().max(1e-3);
        let mib = bar.bytes as f64 / (1024.0 * 1024.0);
        let mut step: String = bar.step.chars().take(60).collect();
        if step.len() < bar.step.len() {
            step.push('…');
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K[{}/{} layers] {mib:.1} MiB, {:.0} MiB/s  {step}",
            bar.layers,
            bar.total_layers,
            mib / secs
        );
        let _ = err.flush();
    }
}

impl Reporter for Stderr {
    fn step(&self, line: &str) {
        match self.mode {
            Mode::Quiet => {}
            Mode::Lines => crate::escape::to_stderr(&format!("{}\n", one_line(line))),
            Mode::Live => {
                if let Ok(mut bar) = self.state.lock() {
                    bar.step = one_line(line);
                    self.draw(&mut bar, true);
                }
            }
        }
    }

    fn progress(&self, bytes: u64, layer_done: bool) {
        if self.mode != Mode::Live {
            return;
        }
        if let Ok(mut bar) = self.state.lock() {
            bar.bytes += bytes;
            if layer_done {
                bar.layers += 1;
            }
            self.draw(&mut bar, layer_done);
        }
    }

    fn warn(&self, line: &str) {
        if self.mode == Mode::Live {
            eprint!("\r\x1b[2K");
        }
        crate::escape::to_stderr(&format!(
            "stream-layered-image: warning: {}\n",
            one_line(line)
        ));
    }
}
