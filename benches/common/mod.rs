//! Shared pieces of the benches: synthetic stores, the images the load and
//! push benches move, and child resource usage. Each bench uses a different
//! part of this module, so what one of them leaves unused is not dead code.
#![allow(dead_code)]

pub mod incremental;
pub mod run;
pub mod rusage;
pub mod store;
