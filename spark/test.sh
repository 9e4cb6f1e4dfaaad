#!/usr/bin/env bash
# The Spark job's tests (spark/test_idgraph_spark.py), as scripts/test.sh runs them after
# `cargo test`: installs what they need when it is missing — Java 17 (Debian's
# openjdk-17-jre-headless) and pyspark (spark/requirements.txt) in a virtual environment,
# spark/.venv — then runs them on local[2], loopback only. IDGRAPH_SKIP_SPARK=1 skips them.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${IDGRAPH_SKIP_SPARK:-}" ]; then
  echo "== Spark tests skipped (IDGRAPH_SKIP_SPARK)"
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
if ! command -v java >/dev/null || ! java -version 2>&1 | grep -qE 'version "(1[7-9]|2[0-9])'; then
  echo "== installing Java 17 for the Spark tests"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq openjdk-17-jre-headless >/dev/null
fi
venv=spark/.venv
if ! "$venv/bin/python" -c 'import pyspark' 2>/dev/null \
  || ! cmp -s spark/requirements.txt "$venv/requirements.txt"; then
  echo "== installing pyspark (spark/requirements.txt) into $venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    $sudo apt-get update -qq && $sudo apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q -r spark/requirements.txt
  cp spark/requirements.txt "$venv/requirements.txt"
fi
# The tests use the debug binaries `cargo test` built, wherever cargo puts them
# (CARGO_TARGET_DIR, build.target-dir): cargo metadata says.
cargo build -q --bin idgraph --example gen_km
target=$(bash scripts/target-dir.sh)
# The executors parse with the idgraph Python package: the wheel python/test.sh built (built
# here when it is missing, with maturin from python/requirements.txt).
wheel=$(ls "$target"/wheels/idgraph-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
  python3 -c "import maturin" 2>/dev/null || python3 -m pip install -q -r python/requirements.txt
  (cd python && maturin build --quiet --profile dev --out "$target/wheels")
  wheel=$(ls "$target"/wheels/idgraph-*.whl | head -n 1)
fi
"$venv/bin/pip" install -q --force-reinstall --no-deps "$wheel"
export IDGRAPH_BIN="${IDGRAPH_BIN:-$target/debug/idgraph}"
export IDGRAPH_GEN_KM="${IDGRAPH_GEN_KM:-$target/debug/examples/gen_km}"
export SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON="$PWD/$venv/bin/python"
cd spark
"../$venv/bin/python" -W ignore -m unittest -v test_idgraph_spark
