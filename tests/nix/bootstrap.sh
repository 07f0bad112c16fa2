#!/bin/sh
# Prepares everything the offline nixpkgs stand-in (tests/nixpkgs-standin)
# needs on this machine, then prints nothing but progress on stderr.
#
# 1. Installs Debian's nix-bin, busybox-static, fakeroot, sqlite3 and proot when
#    they are missing (apt-get; needs root, as on CI).
# 2. Builds a statically linked stream-layered-image into target/static.
# 3. Copies into tests/nixpkgs-standin/bootstrap/ (git-ignored; a `path:`
#    flake input includes untracked files):
#      busybox/bin/busybox                 the stand-in's shell and coreutils
#      stream-layered-image/bin/...        what rustPlatform.buildRustPackage "builds"
#      host/libexec/<tool>, host/lib/*.so  Debian's dash and dynamically linked GNU tar,
#                                          date, chown, fakeroot, proot, nix-store
#                                          and sqlite3 with their libraries and
#                                          loader, the way nixpkgs' bootstrap
#                                          tools are a bundle of prebuilt binaries.
#    Files are only rewritten when they change, so store paths stay stable.
#
# Usage: tests/nix/bootstrap.sh [--no-build]   (--no-build: reuse the binary)
set -eu

repo=$(cd "$(dirname "$0")/../.." && pwd)
dest="$repo/tests/nixpkgs-standin/bootstrap"
log() { echo "bootstrap: $*" >&2; }

need_apt=""
command -v nix-build >/dev/null 2>&1 || need_apt="$need_apt nix-bin"
[ -x /bin/busybox ] || need_apt="$need_apt busybox-static"
command -v fakeroot >/dev/null 2>&1 || need_apt="$need_apt fakeroot"
command -v sqlite3 >/dev/null 2>&1 || need_apt="$need_apt sqlite3"
command -v proot >/dev/null 2>&1 || need_apt="$need_apt proot"
if [ -n "$need_apt" ]; then
    log "installing$need_apt"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need_apt >&2
fi
# Debian's busybox-static installs /bin/busybox; make sure it is the static one.
busybox=/bin/busybox
if ! file -L "$busybox" 2>/dev/null | grep -q 'statically linked'; then
    ldd "$busybox" >/dev/null 2>&1 && { log "$busybox is not static"; exit 1; }
fi

if [ "${1:-}" != "--no-build" ]; then
    log "building the static executable (target/static)"
    (cd "$repo" && RUSTFLAGS='-C target-feature=+crt-static' \
        cargo build --release --locked --target x86_64-unknown-linux-gnu \
        --target-dir target/static >&2)
fi
exe="$repo/target/static/x86_64-unknown-linux-gnu/release/stream-layered-image"
[ -x "$exe" ] || { log "missing $exe (run without --no-build)"; exit 1; }

# put SRC DST [MODE]: copies only when the bytes differ.
put() {
    mkdir -p "$(dirname "$2")"
    if ! cmp -s "$1" "$2" 2>/dev/null; then
        rm -f "$2"
        cp -L "$1" "$2"
    fi
    chmod "${3:-0555}" "$2"
}

put "$busybox" "$dest/busybox/bin/busybox"
put "$exe" "$dest/stream-layered-image/bin/stream-layered-image"

# Host tools, each with every library ldd names and the ELF loader.
# The stand-in wraps each as `ld.so --library-path lib libexec/<tool>`.
host_tool() { # NAME PATH
    put "$2" "$dest/host/libexec/$1"
    ldd "$2" | awk '/=> \//{print $3} /^\t\/.*ld-linux/{print $1}' | while read -r lib; do
        put "$lib" "$dest/host/lib/$(basename "$lib")"
    done
}
# dash: the stand-in's build shell. busybox-static's ash prefers its own
# applets over PATH, so it would never run the GNU tools below.
host_tool dash /bin/dash
host_tool tar "$(command -v tar)"
host_tool date "$(command -v date)"
host_tool chown "$(command -v chown)"
host_tool chgrp "$(command -v chgrp)"
host_tool chmod "$(command -v chmod)"
host_tool mknod "$(command -v mknod)"
host_tool sha256sum "$(command -v sha256sum)"
host_tool nix-store "$(command -v nix-store)"
host_tool sqlite3 "$(command -v sqlite3)"
host_tool faked-sysv /usr/bin/faked-sysv
fakelib=$(ls /usr/lib/*/libfakeroot/libfakeroot-sysv.so | head -n1)
put "$fakelib" "$dest/host/lib/libfakeroot-sysv.so" 0444
host_tool proot "$(command -v proot)"
log "ready: $dest"
