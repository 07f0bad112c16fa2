//! The conf reader: any bytes give a `Conf` or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stream_layered_image::conf::Conf;

fuzz_target!(|data: &[u8]| {
    if let Ok(conf) = Conf::parse(data) {
        // What main does next with the conf's own text.
        let _ = stream_layered_image::reference::check_repo_tag(&conf.repo_tag);
    }
});
