//! The tar writer's name and link encoding against a decoder: whatever
//! bytes a Unix file name can hold (no NUL), our bounded reader (the one
//! that reads base images) must read back the name and link target we
//! wrote (ustar fields or PAX records). The tar crate is not the decoder:
//! it splits PAX records at newlines, which a name may hold (the first
//! finding of this target).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stream_layered_image::base_image::tar_reader::TarReader;
use stream_layered_image::tar::{encode_header, Header, Kind, Owner};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let kind = match data[0] % 3 {
        0 => Kind::Regular,
        1 => Kind::Directory,
        _ => Kind::Symlink,
    };
    let rest = &data[1..];
    let split = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    let name = &rest[..split];
    let link = if kind == Kind::Symlink && split < rest.len() {
        &rest[split + 1..]
    } else {
        &b""[..]
    };
    if name.is_empty() || link.contains(&0) || name.ends_with(b"/") {
        return;
    }
    let owner = Owner {
        uid: 0,
        gid: 0,
        uname: "root".into(),
        gname: "root".into(),
        mtime: 1,
    };
    let h = Header {
        name,
        kind,
        mode: 0o644,
        size: 0,
        linkname: link,
        owner: &owner,
    };
    let mut out = Vec::new();
    encode_header(&h, &mut out);
    out.resize(out.len() + 1024, 0);
    let mut reader = TarReader::new(&out[..]);
    let m = reader
        .next_member()
        .expect("a valid header")
        .expect("one member");
    let mut want = name.to_vec();
    if kind == Kind::Directory {
        want.push(b'/');
    }
    assert_eq!(m.name, want, "name round trip");
    assert_eq!(m.link, link, "link round trip");
    assert_eq!(m.size, 0);
    assert!(
        reader.next_member().expect("an end").is_none(),
        "one member only"
    );
});
