//! The graph readers: closureInfo's `registration` text and
//! exportReferencesGraph JSON, then the graph built from their entries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stream_layered_image::graph::Graph;
use stream_layered_image::nix;

fuzz_target!(|data: &[u8]| {
    let entries = match data.first() {
        Some(b'[') | Some(b'{') => nix::parse_references_graph(data),
        _ => nix::parse_registration(&String::from_utf8_lossy(data)),
    };
    if let Ok(entries) = entries {
        if let Ok(g) = Graph::from_entries(entries, "/nix/store") {
            let _ = g.topo_order();
        }
    }
});
