#!/usr/bin/env bash
# Set everything up and start the demo lab: three routers in a chain (a - b - c), each running
# tollway in its own network namespace. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
TOPOLOGY="${1:-examples/lab/chain3.toml}"
./target/release/tollway lab down --name "$(basename "$TOPOLOGY" .toml)" >/dev/null 2>&1 || true
./target/release/tollway lab up "$TOPOLOGY"
echo
./target/release/tollway lab status
