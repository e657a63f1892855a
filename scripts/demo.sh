#!/usr/bin/env bash
# Set everything up and start the demo lab: three routers in a chain (a - b - c), each running
# tollway in its own network namespace, with prices: a asks 0.002 per MB, b 0.0015, c buys.
# A few seconds of traffic then show money moving. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
T=./target/release/tollway
TOPOLOGY="${1:-examples/lab/chain3.toml}"
NAME="$(basename "$TOPOLOGY" .toml)"
$T lab down --name "$NAME" >/dev/null 2>&1 || true
$T lab up "$TOPOLOGY"

if [ "$NAME" = chain3 ]; then
  echo
  echo "==> 5 s of traffic: b downloads from a, c downloads from b (iperf3 at 100 Mbit/s capacity)"
  sock() { echo "/run/tollway-lab/$NAME/$1/api.sock"; }
  ip_of() { $T status --socket "$(sock "$1")" --json | sed -n 's/.*"mesh_ip": *"\([^"]*\)".*/\1/p' | head -1; }
  A_IP=$(ip_of a); B_IP=$(ip_of b)
  $T lab exec --name "$NAME" a -- iperf3 -s -D -1 -p 5201 >/dev/null
  $T lab exec --name "$NAME" b -- iperf3 -s -D -1 -p 5202 >/dev/null
  sleep 0.5
  $T lab exec --name "$NAME" b -- iperf3 -c "$A_IP" -p 5201 -R -t 5 >/dev/null &
  $T lab exec --name "$NAME" c -- iperf3 -c "$B_IP" -p 5202 -R -t 5 >/dev/null
  wait
  sleep 2
  for n in a b c; do
    echo; echo "==> node $n: tollway status"
    $T lab exec --name "$NAME" "$n" -- "$T" status
  done
  echo
  echo "==> b's ledger: tollway ledger"
  $T lab exec --name "$NAME" b -- "$T" ledger --limit 5
fi
echo
echo "More to try:"
echo "  $T lab status --name $NAME"
echo "  $T lab exec --name $NAME b -- $T status        # inside a node, tollway talks to its daemon"
echo "  $T lab exec --name $NAME b -- $T price set --ask 0.0018"
echo "  $T lab exec --name $NAME c -- $T payments pause"
echo "  $T lab down --name $NAME"
