#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each, one at a time,
# on the stable toolchain (RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z
# sanitizer flags to a stable rustc). Prints one line per target:
#   fuzz TARGET: N runs in S s, ok
# and exits 1 if any target crashes, leaks or times out (the reproducer is
# left in fuzz/artifacts/TARGET/). New interesting inputs go to
# fuzz/corpus/TARGET (git-ignored); the committed seeds are fuzz/seeds/TARGET.
#
# Usage: fuzz/run.sh [SECONDS] [TARGET...]     (default 25 s, all targets)
set -euo pipefail
cd "$(dirname "$0")"
seconds=${1:-25}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then targets=(conf graph pipeline base_image tar_names gzip_layers); fi

command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz >/dev/null 2>&1
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O >build.log 2>&1 || { cat build.log >&2; exit 1; }

failed=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="artifacts/$t/last-run.log"
    # -rss_limit_mb bounds memory per input (a huge tar header must not
    # cost more); -timeout bounds time per input (a hang is a finding).
    if nice -n 19 cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 \
        >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
        echo "fuzz $t: ${runs:-?} runs in $seconds s, ok"
    else
        echo "fuzz $t: FAILED (see fuzz/$log; reproducer in fuzz/artifacts/$t/)"
        grep -m 3 -E 'panicked|ERROR|SUMMARY' "$log" || true
        failed=1
    fi
done
exit $failed
