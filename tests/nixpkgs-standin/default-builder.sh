# The stand-in's generic builder (run by dash), nixpkgs' default-builder.sh
# reduced to runCommand's case: source `$stdenv/setup`, run `buildCommand`.
. "$stdenv/setup"
if [ -n "${buildCommandPath:-}" ]; then
    . "$buildCommandPath"
else
    eval "$buildCommand"
fi
