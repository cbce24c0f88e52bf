#!/usr/bin/env bash
# The lab demo: set-up (idempotent), release build, then `anypop lab demo` (an anycast network
# in namespaces: players, a flood, a route flap; everything is removed at the end). Extra flags go to the demo,
# e.g. `--duration 60`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
    exec sudo -E "$0" "$@"
fi
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
echo "building anypop (release) …"
cargo build --release --quiet
exec ./target/release/anypop lab demo "$@"
