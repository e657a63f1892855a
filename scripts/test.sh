#!/usr/bin/env bash
# Set everything up and run the whole test suite: unit tests, the simulator, and the
# integration tests that build their own network namespaces (they need root).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
echo "==> running the test suite"
# The integration tests start real daemons, tunnels and iperf3 runs; on a 2-core machine they
# are more reliable one binary at a time, each with a few threads.
export RUST_BACKTRACE=1
# The lab crate's own test with the real daemon runs when it knows where the binary is.
export TOLLWAY_BIN="$PWD/target/release/tollway"
# An integration test that cannot run here (not root, a program missing) skips when run by hand;
# here it fails instead, so that a missing install step cannot hide behind a green run.
export TOLLWAY_REQUIRE_ALL_TESTS=1
cargo test --release --locked --workspace --no-fail-fast -- --test-threads=2

# The Debian package: built with cargo-deb and checked (files, depends, the unit with
# systemd-analyze verify).
./scripts/package.sh

# Every fuzz target for 30 s (fuzz/README.md; longer runs by hand): cargo-fuzz, pinned, on the stable toolchain.
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
  echo "==> installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
echo "==> fuzzing every target for 30 s"
./scripts/fuzz.sh smoke 30
echo "==> all tests passed"
