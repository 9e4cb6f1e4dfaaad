#!/usr/bin/env bash
# The test suite, as README.md gives it: installs what the browser tests need when it is missing
# (Debian's chromium and chromium-driver) and the Parquet tests (DuckDB, tests/requirements.txt),
# runs `cargo test`, then the Python package's tests (python/test.sh: builds the wheel with
# maturin, installs it and python/requirements.txt, runs pytest), then the Spark job's tests
# (spark/test.sh: installs Java 17 and pyspark when missing). Extra arguments go to
# `cargo test`. Without a browser: IDGRAPH_SKIP_BROWSER=1; without Spark: IDGRAPH_SKIP_SPARK=1.
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

if ! python3 -c "import duckdb" 2>/dev/null; then
  echo "== installing duckdb (tests/requirements.txt) for the Parquet tests"
  python3 -m pip install -q -r tests/requirements.txt
fi

cargo test "$@"
bash python/test.sh
bash spark/test.sh
