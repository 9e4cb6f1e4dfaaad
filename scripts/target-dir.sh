#!/usr/bin/env bash
# Prints where cargo puts build outputs (CARGO_TARGET_DIR, build.target-dir, or ./target), as
# cargo itself says: scripts that run a built binary ask here instead of assuming ./target.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
