# The stand-in's generic builder (run by dash): nixpkgs' stdenv runs
# a runCommand's script with `set -eu -o pipefail` and the inputs' bin/
# directories on PATH; so does this (pipefail where the shell has it:
# Debian 12's dash does not).
set -eu
if (set -o pipefail) 2>/dev/null; then set -o pipefail; fi
PATH=$stdenvPath
export PATH
if [ -n "${buildCommandPath:-}" ]; then
    . "$buildCommandPath"
else
    eval "$buildCommand"
fi
