//! Shared machinery of the no-panic tests: a seeded xorshift generator (so
//! every case reproduces from its seed and number), a tally that runs each
//! case under `catch_unwind` and collects every panic or malformed error
//! instead of stopping at the first, scratch directories, and JSON
//! mutations (type swaps, removals, byte-level damage).

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

use serde_json::{json, Value};

/// xorshift64: tiny, deterministic, good enough to pick mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Spread small seeds over the state; the state must never be 0.
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

thread_local! {
    /// Set while a case runs: the hook then records instead of printing.
    static CATCHING: Cell<bool> = const { Cell::new(false) };
    static CAUGHT: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once per test binary) a panic hook that records the message
/// and location of a panic inside a case, and leaves every other panic
/// (a failing assertion of the test itself) to the default hook.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CATCHING.get() {
                CAUGHT.set(Some(one_line(&info.to_string())));
            } else {
                default(info);
            }
        }));
    });
}

/// The newline-holding string [`odd_values`] puts into names.
pub const INJECTED_NEWLINE: &str = "line\nbreak";

pub fn one_line(text: &str) -> String {
    text.replace('\n', " | ")
}

/// The cases one test ran and what went wrong in them, reported together
/// at the end so one run lists every panicking input.
pub struct Tally {
    name: &'static str,
    cases: usize,
    failures: Vec<String>,
    /// Flaws that the executable hides but a library caller would see.
    notes: Vec<String>,
}

impl Tally {
    pub fn new(name: &'static str) -> Tally {
        install_hook();
        Tally {
            name,
            cases: 0,
            failures: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn fail(&mut self, what: String) {
        self.failures.push(what);
    }

    /// Runs one case; `None` (and a recorded failure) when it panicked.
    pub fn call<T>(&mut self, case: &str, f: impl FnOnce() -> T) -> Option<T> {
        self.cases += 1;
        CATCHING.set(true);
        let result = panic::catch_unwind(AssertUnwindSafe(f));
        CATCHING.set(false);
        match result {
            Ok(v) => Some(v),
            Err(_) => {
                let msg = CAUGHT.take().unwrap_or_else(|| "(no message)".into());
                self.fail(format!("{case}: PANIC {msg}"));
                None
            }
        }
    }

    /// Runs one fallible case and checks its error, if any: one line, and
    /// containing `names` (the input the user must be told about) when given.
    /// Returns the value when the case succeeded.
    pub fn check<T>(
        &mut self,
        case: &str,
        names: Option<&str>,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> Option<T> {
        match self.call(case, f)? {
            Ok(v) => Some(v),
            Err(e) => {
                let msg = format!("{e:#}");
                // A newline the input itself put into a name is escaped by
                // the executable (main.rs prints errors on one line), so a
                // library error may carry it; any other newline is a bug.
                if msg.replace(INJECTED_NEWLINE, "").contains('\n') {
                    self.fail(format!("{case}: error is not one line: {}", one_line(&msg)));
                } else if msg.contains(INJECTED_NEWLINE) {
                    self.notes.push(format!(
                        "{case}: input newline kept verbatim: {}",
                        one_line(&msg)
                    ));
                }
                if msg.trim().is_empty() {
                    self.fail(format!("{case}: empty error message"));
                } else if let Some(name) = names {
                    // Named verbatim, or quoted with escapes ({:?}).
                    if !msg.contains(name) && !msg.contains(&format!("{name:?}")) {
                        self.fail(format!("{case}: error does not name {name:?}: {msg}"));
                    }
                }
                None
            }
        }
    }

    /// Fails the test, listing every failure, unless there were none.
    pub fn finish(self) {
        eprintln!(
            "{}: {} cases, {} failures",
            self.name,
            self.cases,
            self.failures.len()
        );
        if let Some(first) = self.notes.first() {
            eprintln!("{}: {} notes, e.g. {first}", self.name, self.notes.len());
        }
        assert!(self.cases > 0, "{}: no cases ran", self.name);
        if !self.failures.is_empty() {
            let shown: Vec<&str> = self.failures.iter().take(40).map(String::as_str).collect();
            panic!(
                "{}: {} of {} cases failed (first {} shown):\n{}",
                self.name,
                self.failures.len(),
                self.cases,
                shown.len(),
                shown.join("\n")
            );
        }
    }
}

/// A directory under Cargo's test scratch area, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("no-panic-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("cannot create scratch directory");
        Scratch(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).expect("cannot write scratch file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The repository's reference vectors.
pub fn vectors() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

pub fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One step of a path into a JSON value.
#[derive(Debug, Clone)]
pub enum Seg {
    Key(String),
    Index(usize),
}

pub fn show(path: &[Seg]) -> String {
    let mut s = String::from("$");
    for seg in path {
        match seg {
            Seg::Key(k) => s.push_str(&format!(".{k}")),
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Every node of `v` (the root excluded), parents before children.
pub fn slots(v: &Value) -> Vec<Vec<Seg>> {
    fn walk(v: &Value, at: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
        let children: Vec<(Seg, &Value)> = match v {
            Value::Object(m) => m.iter().map(|(k, c)| (Seg::Key(k.clone()), c)).collect(),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, c)| (Seg::Index(i), c))
                .collect(),
            _ => Vec::new(),
        };
        for (seg, child) in children {
            at.push(seg);
            out.push(at.clone());
            walk(child, at, out);
            at.pop();
        }
    }
    let mut out = Vec::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn parent_mut<'a>(v: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    let mut cur = v;
    for seg in path {
        cur = match (seg, cur) {
            (Seg::Key(k), Value::Object(m)) => m.get_mut(k)?,
            (Seg::Index(i), Value::Array(a)) => a.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Replaces the node at `path` (which must exist).
pub fn set_at(v: &mut Value, path: &[Seg], new: Value) {
    if let Some(node) = parent_mut(v, path) {
        *node = new;
    }
}

/// Removes the node at `path`: the key of an object or the list element.
pub fn remove_at(v: &mut Value, path: &[Seg]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    match (last, parent_mut(v, parent)) {
        (Seg::Key(k), Some(Value::Object(m))) => {
            m.shift_remove(k);
        }
        (Seg::Index(i), Some(Value::Array(a))) if *i < a.len() => {
            a.remove(*i);
        }
        _ => {}
    }
}

/// Values of every JSON type, and the edge cases of each, that a field
/// may be swapped for.
pub fn odd_values() -> Vec<Value> {
    vec![
        Value::Null,
        json!(true),
        json!(0),
        json!(-1),
        json!(4_294_967_296u64),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1e308),
        json!(-0.5),
        json!(""),
        json!("x"),
        json!("-1"),
        json!(" 7 "),
        json!("18446744073709551616"),
        json!("line\nbreak"),
        json!("nul\u{0}é\u{202e}"),
        json!("/".repeat(5000)),
        json!([]),
        json!([[]]),
        json!([null]),
        json!({}),
        json!({"": {"": []}}),
    ]
}

/// Every single-node mutation of `v`: each node swapped for each odd value,
/// each node removed, each list element doubled. Returns (description, mutated JSON).
pub fn structural_mutations(v: &Value) -> Vec<(String, Value)> {
    let odd = odd_values();
    let mut out = Vec::new();
    for path in slots(v) {
        let mut removed = v.clone();
        remove_at(&mut removed, &path);
        out.push((format!("remove {}", show(&path)), removed));
        if let Some((Seg::Index(i), parent)) = path.split_last() {
            let mut doubled = v.clone();
            if let Some(Value::Array(list)) = parent_mut(&mut doubled, parent) {
                let copy = list[*i].clone();
                list.insert(*i, copy);
            }
            out.push((format!("duplicate {}", show(&path)), doubled));
        }
        for o in &odd {
            let mut m = v.clone();
            set_at(&mut m, &path, o.clone());
            let mut shown = o.to_string();
            shown.truncate(40);
            out.push((format!("set {} to {shown}", show(&path)), m));
        }
    }
    out
}

/// One random single-node mutation of `v`, as [`structural_mutations`]
/// gives them all (cheaper for big values).
pub fn random_mutation(rng: &mut Rng, v: &Value) -> (String, Value) {
    let all = slots(v);
    let path = rng.pick(&all);
    let mut m = v.clone();
    let odd = odd_values();
    let choice = rng.below(odd.len() + 1);
    if choice == odd.len() {
        remove_at(&mut m, path);
        return (format!("remove {}", show(path)), m);
    }
    set_at(&mut m, path, odd[choice].clone());
    let mut shown = odd[choice].to_string();
    shown.truncate(40);
    (format!("set {} to {shown}", show(path)), m)
}

/// Byte-level damage: bit flips, JSON-significant bytes, invalid UTF-8,
/// deletions, duplications and truncation. Returns the description too.
pub fn damage_bytes(rng: &mut Rng, bytes: &[u8]) -> (String, Vec<u8>) {
    let mut b = bytes.to_vec();
    if b.is_empty() {
        return ("insert 0xff".into(), vec![0xff]);
    }
    let at = rng.below(b.len());
    let what = match rng.below(7) {
        0 => {
            let bit = rng.below(8);
            b[at] ^= 1 << bit;
            format!("flip bit {bit} of byte {at}")
        }
        1 => {
            let c = *rng.pick(b"{}[]\",:-0123456789e.\\ nul\xff\x00\n");
            b[at] = c;
            format!("byte {at} := {c:#04x}")
        }
        2 => {
            let len = 1 + rng.below(16.min(b.len() - at));
            b.drain(at..at + len);
            format!("delete {len} bytes at {at}")
        }
        3 => {
            let len = 1 + rng.below(32.min(b.len() - at));
            let copy = b[at..at + len].to_vec();
            b.splice(at..at, copy);
            format!("duplicate {len} bytes at {at}")
        }
        4 => {
            b.truncate(at);
            format!("truncate at {at}")
        }
        5 => {
            let digits = "9".repeat(1 + rng.below(40));
            b.splice(at..at, digits.bytes());
            format!("insert {} nines at {at}", digits.len())
        }
        _ => {
            b.splice(at..at, [0xc3, 0x28]);
            format!("insert invalid UTF-8 at {at}")
        }
    };
    (what, b)
}
