#!/usr/bin/env bash
# Run the fuzz targets in fuzz/ (libFuzzer through cargo-fuzz; see fuzz/README.md).
#
#   scripts/fuzz.sh smoke [SECS]             every target for SECS seconds (default 60): stable
#                                            toolchain, no sanitizer. scripts/test.sh runs this.
#   scripts/fuzz.sh long TARGET [RUNS] [SECS] one target until RUNS executions (default 10000000)
#                                            or SECS seconds (default 1800), whichever comes
#                                            first: nightly toolchain, AddressSanitizer, nice 19.
#                                            Prints the figures BENCHMARKS.md records.
#
# Inputs that find something are saved under fuzz/artifacts/<target>/ and the run fails.
# Needs cargo-fuzz (scripts/setup.sh installs the pinned version) and a C++ compiler.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

# The fuzz crate's dependencies are pinned by fuzz/Cargo.lock: refuse to run if it is stale
# (cargo-fuzz has no --locked of its own).
cargo metadata --locked --format-version 1 >/dev/null

mode="${1:-}"
case "$mode" in
  smoke)
    secs="${2:-60}"
    targets=$(cargo fuzz list)
    # Build everything first, so that the time limit is spent fuzzing (in a directory of its
    # own: the long runs' nightly AddressSanitizer builds live in target/).
    build=(-s none --target-dir target/stable)
    cargo fuzz build "${build[@]}"
    for t in $targets; do
      # New inputs go to a scratch directory; the seeds in corpus/<target>/ stay as committed.
      scratch=$(mktemp -d)
      dict=()
      [ -f "dicts/$t.dict" ] && dict=("-dict=dicts/$t.dict")
      echo "==> fuzzing $t for $secs s"
      if ! cargo fuzz run "${build[@]}" "$t" "$scratch" "corpus/$t" -- \
          -max_total_time="$secs" -print_final_stats=1 "${dict[@]}" >"$scratch.log" 2>&1; then
        tail -n 60 "$scratch.log"
        echo "fuzz target $t failed: the input is in fuzz/artifacts/$t/, the log above" >&2
        exit 1
      fi
      grep -E '^stat::(number_of_executed_units|average_exec_per_sec)' "$scratch.log" | tr '\n' ' '
      echo
      rm -rf "$scratch" "$scratch.log"
    done
    ;;
  long)
    t="${2:?usage: scripts/fuzz.sh long TARGET [RUNS] [SECS]}"
    runs="${3:-10000000}"
    secs="${4:-1800}"
    dict=()
    [ -f "dicts/$t.dict" ] && dict=("-dict=dicts/$t.dict")
    mkdir -p runs
    log="runs/$t-$(date -u +%Y%m%dT%H%M%SZ).log"
    echo "==> fuzzing $t (nightly, AddressSanitizer) until $runs runs or $secs s; log in fuzz/$log"
    start=$(date +%s)
    set +e
    nice -n 19 cargo +nightly fuzz run "$t" "corpus/$t" -- \
      -runs="$runs" -max_total_time="$secs" -print_final_stats=1 "${dict[@]}" >"$log" 2>&1
    rc=$?
    set -e
    end=$(date +%s)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    corpus=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | sed -n 's/.*corp: \([^ ]*\).*/\1/p')
    crashes=$(find "artifacts/$t" -type f 2>/dev/null | wc -l)
    echo "$t: exit $rc, $execs executions in $((end - start)) s ($rate exec/s), corpus $corpus (units/bytes), $crashes artifacts"
    exit "$rc"
    ;;
  *)
    sed -n '2,14p' "$0" >&2
    exit 2
    ;;
esac
