#!/usr/bin/env bash
# Short smoke run of every fuzz target: builds them, writes the seed corpora, then fuzzes each for
# SECONDS_PER_TARGET seconds (default 20) from its seeds in a throw-away corpus. Exits non-zero on
# the first crash, leak or timeout (the input is left in fuzz/artifacts/<target>/). Not part of
# .ci/run. cargo-fuzz needs nightly flags; on a stable toolchain RUSTC_BOOTSTRAP=1 allows them.
#
#   cargo install cargo-fuzz --locked
#   bash fuzz/smoke.sh                       # or: SECONDS_PER_TARGET=60 bash fuzz/smoke.sh
set -euo pipefail
cd "$(dirname "$0")"

export RUSTC_BOOTSTRAP=1
seconds=${SECONDS_PER_TARGET:-20}
targets=(frame startup extended sql session)

python3 seeds.py
cargo fuzz build
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  echo "== $t: ${seconds}s"
  if ! cargo fuzz run "$t" "$scratch/$t" "seeds/$t" -- \
    -max_total_time="$seconds" -timeout=5 -print_final_stats=1 >"$scratch/$t.log" 2>&1; then
    tail -n 60 "$scratch/$t.log"
    echo "== $t: FAILED (input in fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' "$scratch/$t.log"
done
echo "== all targets passed"
