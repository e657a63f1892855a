#!/usr/bin/env bash
# Install everything tollway needs on Debian 12 (run as root), then build it.
# Idempotent: safe to run again. Used by demo.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (tollway creates network namespaces, tunnels and firewall rules)" >&2
  exit 1
fi

# (g++ builds libFuzzer, the driver of the fuzz targets that scripts/test.sh runs; chromium is
# the headless browser the dashboard test drives.)
PACKAGES=(iproute2 nftables iperf3 iputils-ping wireguard-tools wireguard-go babeld
          ca-certificates curl gcc g++ libc6-dev pkg-config procps chromium fonts-dejavu-core)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "==> installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Rust: use the machine's toolchain if it has one, else install the stable one with rustup.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "==> installing Rust (rustup, stable)"
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  export PATH="$HOME/.cargo/bin:$PATH"
fi

# The kernel facilities the lab and the tests need.
modprobe ifb 2>/dev/null || true
[ -e /dev/net/tun ] || { mkdir -p /dev/net && mknod /dev/net/tun c 10 200 && chmod 0666 /dev/net/tun; }

echo "==> building tollway (release)"
cargo build --release --locked -p tollway
echo "==> built $(pwd)/target/release/tollway"
