#!/usr/bin/env bash
# The lab demo: set-up (idempotent), release build, then `anypop lab demo` (an anycast network
# in namespaces: players, a flood, a route flap; everything is removed at the end). Extra flags go to the demo,
# e.g. `--duration 60`.
source "$(dirname "$0")/lib.sh"
echo "building anypop (release) …"
cargo build --release --quiet
exec ./target/release/anypop lab demo "$@"
