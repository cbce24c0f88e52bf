#!/usr/bin/env bash
# The whole test suite: set-up (idempotent), formatting, lints, host unit tests and the
# kernel-backed tests (real eBPF programs via BPF_PROG_TEST_RUN, in private network namespaces).
source "$(dirname "$0")/lib.sh"

echo "== format"
cargo fmt --all -- --check
shopt -s globstar
rustfmt --edition 2024 --check crates/anypop-ebpf/src/**/*.rs

echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== package (Debian package and systemd unit, checked)"
bash scripts/package.sh --check

echo "== tests (host unit tests, kernel golden-packet, property, flow and CLI tests)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --all-targets -- --test-threads=2 "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "Tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
