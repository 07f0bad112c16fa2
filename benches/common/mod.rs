//! Shared pieces of the benches: synthetic stores and child resource usage.

pub mod rusage;
pub mod store;
