#!/usr/bin/env bash
# The test suite, as README.md gives it: installs what the browser tests need when it is missing
# (Debian's chromium and chromium-driver), then runs `cargo test`. Extra arguments go to
# `cargo test`. To run without a browser: IDGRAPH_SKIP_BROWSER=1 cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${IDGRAPH_SKIP_BROWSER:-}" ] && { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; }; then
  echo "== installing chromium and chromium-driver for the browser tests"
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
fi

cargo test "$@"
