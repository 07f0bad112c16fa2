#!/bin/sh
# The README's first command: builds the example image offline with Nix
# (the nixpkgs stand-in as the flake's nixpkgs input, sandbox on), loads it
# into Docker and runs it. Prints "Hello, world!" at the end.
#
# Usage: tests/nix/example.sh [--no-bootstrap]
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
if [ "${1:-}" != "--no-bootstrap" ]; then
    tests/nix/bootstrap.sh
fi
set -x
nix build .#example \
    --override-input nixpkgs path:./tests/nixpkgs-standin \
    --no-write-lock-file \
    --extra-experimental-features 'nix-command flakes' \
    --option sandbox true --option substituters ''
./result | docker load
docker run --rm hello:latest
