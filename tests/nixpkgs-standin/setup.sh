# The stand-in's `$stdenv/setup` (sourced by dash): as nixpkgs' stdenv
# setup does, it turns on `set -eu -o pipefail` (pipefail where the shell
# has it: Debian 12's dash does not) and puts the inputs' bin/ directories
# and coreutils on PATH. It defines none of nixpkgs' setup functions
# (runHook, substituteInPlace, ...): nothing in nix/ or the tests calls them.
set -eu
if (set -o pipefail) 2>/dev/null; then set -o pipefail; fi
PATH=$stdenvPath
export PATH
