#!/usr/bin/env bash
# Installs everything anypop's build, tests and demo need on a fresh Debian 12 machine.
# Idempotent: each step checks first and returns in well under a second when already done.
set -euo pipefail

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
    echo "anypop setup: must run as root (it installs Debian packages and loads eBPF programs)." >&2
    echo "Re-run with: sudo $0" >&2
    exit 1
fi

export PATH="$HOME/.cargo/bin:$PATH"

# Debian packages: LLVM 22 for bpf-linker, xdp-tools as benchmark peer, tshark/tcpdump for captures,
# iproute2/nftables for the lab and baselines.
need_pkgs=()
for p in llvm-22-dev libpolly-22-dev xdp-tools tshark tcpdump iproute2 nftables bpftool ethtool zlib1g-dev libzstd-dev systemd; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
if ((${#need_pkgs[@]})); then
    log "installing Debian packages: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # libpolly may not exist on every mirror; install what exists.
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null 2>&1 || {
        avail=()
        for p in "${need_pkgs[@]}"; do apt-cache show "$p" >/dev/null 2>&1 && avail+=("$p"); done
        apt-get install -y -qq --no-install-recommends "${avail[@]}"
    }
fi

# Rust: nightly with rust-src builds the eBPF crate (-Z build-std=core).
if ! rustup toolchain list | grep -q '^nightly'; then
    log "installing nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
    log "adding rust-src to nightly"
    rustup component add rust-src --toolchain nightly
fi

# bpf-linker against Debian's LLVM 22 (the LLVM rustc nightly uses).
if ! bpf-linker --version 2>/dev/null | grep -q '0.13.0'; then
    log "building bpf-linker 0.13.0 against LLVM 22 (about a minute)"
    LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --version 0.13.0 --locked \
        --no-default-features --features llvm-22 2>&1 | tail -3
fi

# bpffs for pins.
if ! mount | grep -q ' /sys/fs/bpf type bpf'; then
    mount -t bpf bpf /sys/fs/bpf 2>/dev/null || true
fi
log "toolchain ready"
