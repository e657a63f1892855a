#!/usr/bin/env bash
# Set everything up and start the demo lab: three routers in a chain (a - b - c), each running
# tollway in its own network namespace. a has the uplink to the lab's internet host
# (2001:db8::1, 192.0.2.1) and asks 0.002 per MB; b resells at 0.0015; c buys, for the LAN
# device behind it (c-lan). The LAN device downloads from the internet through c, b and a:
# then each node's routes, and the money flowing c -> b -> a. Run as root on Debian 12.
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
  echo "==> waiting for babeld to carry c's LAN to the internet (c-lan -> c -> b -> a -> internet)"
  for i in $(seq 1 60); do
    if $T lab exec --name "$NAME" c-lan -- ping -c 1 -W 1 2001:db8::1 >/dev/null 2>&1; then
      echo "    c-lan reaches 2001:db8::1 (after ~${i} s)"
      break
    fi
    if [ "$i" = 60 ]; then
      echo "demo: c-lan cannot reach the internet host after 60 s; see $T lab status --name $NAME" >&2
      exit 1
    fi
  done
  $T lab exec --name "$NAME" c-lan -- ping -c 2 192.0.2.1

  echo
  echo "==> c-lan downloads from the internet host for 5 s (iperf3; c's capacity is 100 Mbit/s)"
  $T lab exec --name "$NAME" internet -- iperf3 -s -D -1 -p 5201 >/dev/null
  sleep 0.5
  $T lab exec --name "$NAME" c-lan -- iperf3 -c 2001:db8::1 -p 5201 -R -t 5 | grep -E "receiver|sender"
  sleep 3
  for n in a b c; do
    echo; echo "==> node $n: tollway routes"
    $T lab exec --name "$NAME" "$n" -- "$T" routes
  done
  for n in a b c; do
    echo; echo "==> node $n: tollway status"
    $T lab exec --name "$NAME" "$n" -- "$T" status
  done
  echo
  echo "c paid b for every byte at b's ask; b paid a at a's ask, and keeps the difference."
  echo "==> b's ledger: tollway ledger"
  $T lab exec --name "$NAME" b -- "$T" ledger --limit 6
fi
echo
echo "More to try:"
echo "  $T lab status --name $NAME"
echo "  $T lab exec --name $NAME b -- $T status        # inside a node, tollway talks to its daemon"
echo "  $T lab exec --name $NAME b -- $T routes        # what babeld chose, per prefix"
echo "  $T lab exec --name $NAME b -- curl -s 127.0.0.1:7480/metrics   # b's Prometheus metrics (its dashboard is at /)"
echo "  $T lab exec --name $NAME c -- $T speedtest --config /run/tollway-lab/$NAME/c/tollway.toml   # against the internet host's pinned server"
echo "  $T lab exec --name $NAME b -- $T price set --ask 0.0018"
echo "  $T lab exec --name $NAME c -- $T payments pause"
echo "  $T lab link down a internet --name $NAME       # a's uplink fails: the default routes go"
echo "  $T lab down --name $NAME"
