# Sourced (not run) by the scripts that need root and the toolchain — test.sh, demo.sh — so they
# start the same way: strict mode, the repository root as working directory, re-run under sudo
# when not root (with the caller's arguments), the set-up made sure of, cargo on PATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ $(id -u) -ne 0 ]]; then
    exec sudo -E "$0" "$@"
fi
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
