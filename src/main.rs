//! The `stream-layered-image` executable: conf in, docker-archive out.
fn main() {}
