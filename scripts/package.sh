#!/usr/bin/env bash
# Builds the Debian package of anypop: the binary, the systemd unit template anypop@.service,
# an example network file under /etc/anypop and the docs.
#
#   scripts/package.sh            release build -> target/debian/anypop_<version>_<arch>.deb
#   scripts/package.sh --check    (CI) package the binary the tests built, then check it:
#                                 `systemd-analyze verify` on the unit, install the package
#                                 into an empty root with dpkg and run `anypop --version` there.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

check=false
[[ "${1:-}" == "--check" ]] && check=true

log() { printf '\033[1;34m[package]\033[0m %s\n' "$*" >&2; }

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
if $check; then
    cargo build -q -p anypop
    bin=target/debug/anypop
else
    log "building the release binary"
    cargo build -q --release -p anypop
    bin=target/release/anypop
fi

stage=$(mktemp -d)
root=$(mktemp -d)
trap 'rm -rf "$stage" "$root"' EXIT
pkg="$stage/anypop"
install -D -m 0755 "$bin" "$pkg/usr/bin/anypop"
install -D -m 0644 packaging/anypop@.service "$pkg/lib/systemd/system/anypop@.service"
install -D -m 0644 crates/anypop/src/config/example.toml "$pkg/usr/share/doc/anypop/examples/network.toml"
install -d -m 0755 "$pkg/etc/anypop"
for doc in README.md docs/OPERATIONS.md docs/NETWORK.md docs/ARCHITECTURE.md; do
    install -D -m 0644 "$doc" "$pkg/usr/share/doc/anypop/$(basename "$doc")"
done
install -d "$pkg/DEBIAN"
cat > "$pkg/DEBIAN/control" <<CONTROL
Package: anypop
Version: $version
Architecture: $arch
Maintainer: anypop developers <anypop@localhost>
Depends: libc6, iproute2
Recommends: xdp-tools, ethtool
Section: net
Priority: optional
Description: anycast game-server protection and forwarding with XDP
 POPs drop floods in XDP and forward players over IPIP to backends chosen by
 Maglev; backends answer players directly (direct server return) from TC.
 Run one node with: systemctl enable --now anypop@NODE (network file in
 /etc/anypop/network.toml; see /usr/share/doc/anypop/OPERATIONS.md).
CONTROL
mkdir -p target/debian
deb="target/debian/anypop_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$pkg" "$deb" >/dev/null
log "built $deb"

if $check; then
    log "systemd-analyze verify on the unit"
    # Verified as an instance of the template, with the packaged binary where ExecStart says.
    unitdir="$stage/units"
    mkdir -p "$unitdir"
    cp packaging/anypop@.service "$unitdir/anypop@pop-1.service"
    sed -i "s#/usr/bin/anypop#$PWD/$bin#" "$unitdir/anypop@pop-1.service"
    rc=0
    out=$(systemd-analyze verify "$unitdir/anypop@pop-1.service" 2>&1) || rc=$?
    if [[ $rc -ne 0 || -n "$out" ]]; then
        echo "$out" >&2
        echo "package check: systemd-analyze verify found problems in packaging/anypop@.service" >&2
        exit 1
    fi
    log "installing the package into an empty root"
    mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
    touch "$root/var/lib/dpkg/status" "$root/var/lib/dpkg/available"
    # An empty root has neither libc6 nor iproute2 registered: the dependencies are forced.
    dpkg --root="$root" --force-depends --force-not-root -i "$deb" >"$stage/dpkg.log" 2>&1 ||
        { cat "$stage/dpkg.log" >&2; echo "package check: dpkg could not install $deb" >&2; exit 1; }
    got=$("$root/usr/bin/anypop" --version)
    [[ "$got" == "anypop $version" ]] || { echo "package check: anypop --version said: $got" >&2; exit 1; }
    test -f "$root/lib/systemd/system/anypop@.service"
    log "package ok: $got, unit verified, installs into an empty root"
fi
