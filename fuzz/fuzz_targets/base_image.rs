//! The base-image reader on plain, gzip- and zstd-compressed archives: the
//! first byte picks the compression applied to the rest, so the fuzzer
//! explores the tar structure under all three. Opening and streaming every
//! layer must end in an image or a one-line error, never a panic, and the
//! memory limit of the run (-rss_limit_mb) bounds what a header may cost.
#![no_main]

use std::io::{Read, Write};
use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use stream_layered_image::base_image::BaseImage;

fn scratch() -> PathBuf {
    let dir = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    dir.join(format!("sli-fuzz-base-{}.tar", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, tar)) = data.split_first() else {
        return;
    };
    let bytes = match mode % 3 {
        0 => tar.to_vec(),
        1 => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        _ => zstd::encode_all(tar, 1).unwrap(),
    };
    let path = scratch();
    std::fs::write(&path, &bytes).unwrap();
    if let Ok(base) = BaseImage::open(&path) {
        let _ = base.config();
        let _ = base.stream_layers(&mut |_, _, r| {
            let mut sink = Vec::new();
            r.read_to_end(&mut sink)?;
            Ok(())
        });
    }
    let _ = std::fs::remove_file(&path);
});
