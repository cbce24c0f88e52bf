#!/usr/bin/env bash
# The whole test suite: set-up (idempotent), formatting, lints, host unit tests and the
# kernel-backed tests (real eBPF programs via BPF_PROG_TEST_RUN, in private network namespaces).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
    exec sudo -E "$0" "$@"
fi
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"

echo "== format"
cargo fmt --all -- --check
rustfmt --edition 2024 --check crates/anypop-ebpf/src/*.rs

echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== tests (host unit tests + kernel golden-packet tests)"
cargo test --workspace -- --test-threads=2 "$@"
