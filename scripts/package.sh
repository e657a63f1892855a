#!/usr/bin/env bash
# Build the Debian package (target/debian/tollway_<version>-1_<arch>.deb) with cargo-deb, then
# check it: its files, its dependencies, the default config as the packaged binary reads it, and
# the systemd unit with `systemd-analyze verify` (any complaint fails). Run as root after
# scripts/setup.sh (scripts/test.sh runs it).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=2.12.1
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
  echo "==> installing cargo-deb $CARGO_DEB_VERSION"
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi
echo "==> building the Debian package"
cargo build --release --locked -p tollway
# Stripped: the release profile keeps line tables for backtraces in tests, not worth 80 MB here.
deb=$(cargo deb -p tollway --no-build --strip | tail -1)
[ -f "$deb" ] || { echo "package.sh: cargo deb made no package (said: $deb)" >&2; exit 1; }
echo "==> checking $deb"
fail() { echo "package.sh: $deb: $*" >&2; exit 1; }
files=$(dpkg-deb -c "$deb")
for f in usr/bin/tollway etc/tollway/tollway.toml usr/share/doc/tollway/README.md \
         usr/share/doc/tollway/openwrt/tollway.init; do
  grep -qE " (\./)?$f\$" <<<"$files" || fail "missing $f"
done
unit=$(grep -oE '(usr/)?lib/systemd/system/tollway\.service$' <<<"$files") || fail "no systemd unit"
depends=$(dpkg-deb -f "$deb" Depends)
for d in iproute2 nftables babeld; do grep -qw "$d" <<<"$depends" || fail "Depends lacks $d: $depends"; done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dpkg-deb -x "$deb" "$tmp"
dpkg-deb -e "$deb" "$tmp/DEBIAN"
grep -q "systemctl" "$tmp/DEBIAN/postinst" || fail "postinst does not register the unit"
grep -qx "/etc/tollway/tollway.toml" <(dpkg-deb -I "$deb" conffiles) || fail "the config is not a conffile"
# The default config loads (its placeholder interface may not exist here: a warning, not an error).
"$tmp/usr/bin/tollway" check-config --config "$tmp/etc/tollway/tollway.toml" >/dev/null 2>"$tmp/warnings" \
  || fail "its default config does not load: $(cat "$tmp/warnings")"
# The unit, pointed at the extracted binary: systemd-analyze must have nothing to say.
sed "s#/usr/bin/tollway#$tmp/usr/bin/tollway#g" "$tmp/$unit" > "$tmp/tollway.service"
out=$(systemd-analyze verify "$tmp/tollway.service" 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify: $out"
echo "==> $deb: ok"
