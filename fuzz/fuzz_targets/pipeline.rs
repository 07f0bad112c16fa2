//! The layering pipeline parser, and a run of what it accepts over a
//! small fixed graph (a chain with a shared leaf).
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use stream_layered_image::graph::Graph;
use stream_layered_image::layering::pipeline;
use stream_layered_image::nix;

const REGISTRATION: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a\n\n100\n\n2\n/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b\n/nix/store/cccccccccccccccccccccccccccccccc-c\n\
/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b\n\n20\n\n1\n/nix/store/cccccccccccccccccccccccccccccccc-c\n\
/nix/store/cccccccccccccccccccccccccccccccc-c\n\n3\n\n0\n\
/nix/store/dddddddddddddddddddddddddddddddd-d\n\n7\n\n1\n/nix/store/cccccccccccccccccccccccccccccccc-c\n";

fuzz_target!(|data: &[u8]| {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(steps) = pipeline::parse(&json) else {
        return;
    };
    let g =
        Graph::from_entries(nix::parse_registration(REGISTRATION).unwrap(), "/nix/store").unwrap();
    let _ = pipeline::run(&g, &HashSet::new(), &steps);
});
