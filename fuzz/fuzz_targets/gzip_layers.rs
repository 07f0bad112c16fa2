//! The gzip layer encoder against a decoder: whatever bytes a layer holds,
//! cut into whatever writes, the blob must read back as those bytes, and
//! the bytes of the blob must not depend on how the input was cut.
//!
//! The input is a recipe rather than the layer itself, so that short
//! inputs still build what the encoder decides between: runs of random
//! 512-byte units (stored), short runs between them (islands, written by
//! our own fixed-Huffman encoder), longer compressible runs (zlib-rs), at
//! any length and across the 256 KiB block edges. Each recipe step is a
//! tag byte and a length byte.
#![no_main]

use std::io::{Read, Write};

use libfuzzer_sys::fuzz_target;
use stream_layered_image::compression::gzip::GzipEncoder;

fuzz_target!(|recipe: &[u8]| {
    let mut layer = Vec::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut steps = recipe.chunks_exact(2);
    for step in &mut steps {
        let (tag, n) = (step[0], usize::from(step[1]));
        match tag % 5 {
            // Random units: n + 1 of them, from a generator the recipe seeds.
            0 => {
                seed ^= u64::from(tag) << 32 | n as u64;
                for _ in 0..(n + 1) * 512 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    layer.push((seed >> 24) as u8);
                }
            }
            // A run of one byte value.
            1 => layer.extend(std::iter::repeat_n(tag, n * 37 + 1)),
            // Text-like bytes that repeat.
            2 => layer.extend(b"nix/store/abc-hello/bin ".iter().cycle().take(n * 13 + 1)),
            // A copy of earlier bytes (far matches).
            3 if !layer.is_empty() => {
                let from = (n * 4099) % layer.len();
                let copy: Vec<u8> = layer[from..].iter().take(n * 97 + 1).copied().collect();
                layer.extend_from_slice(&copy);
            }
            // Raw bytes of the recipe itself.
            _ => layer.extend_from_slice(&step[..]),
        }
        if layer.len() > 3 << 20 {
            break;
        }
    }
    layer.extend_from_slice(steps.remainder());

    let encode = |cut: usize| {
        let mut e = GzipEncoder::new(Vec::new());
        for part in layer.chunks(cut.max(1)) {
            e.write_all(part).unwrap();
        }
        e.finish().unwrap()
    };
    let cut = recipe.first().map_or(1, |&b| usize::from(b) * 251 + 1);
    let gz = encode(cut);
    let mut back = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut back)
        .expect("our gzip must decode");
    assert!(back == layer, "round trip of {} bytes", layer.len());
    assert!(
        encode(usize::MAX) == gz,
        "bytes depend on how writes were cut"
    );
});
