#!/usr/bin/env bash
# The Python package's tests (scripts/test.sh runs them after `cargo test`): installs
# python/requirements.txt when missing (maturin, pyarrow, pytest, Polars, DuckDB), builds the
# wheel with maturin in the dev profile (cargo's target directory: the test build's
# dependencies are reused), installs it, and runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c "import maturin, pyarrow, pytest, polars, duckdb" 2>/dev/null; then
  echo "== installing python/requirements.txt for the Python package's tests"
  python3 -m pip install -q -r python/requirements.txt
fi

target="$(bash scripts/target-dir.sh)"
# The CLI and gen_km the tests compare with and generate data by (built by `cargo test`).
cargo build --quiet --bin idgraph --example gen_km
wheels="$target/wheels"
rm -rf "$wheels"
started=$SECONDS
(cd python && maturin build --quiet --profile dev --out "$wheels")
echo "== built the wheel in $((SECONDS - started)) s"
python3 -m pip install -q --force-reinstall --no-deps "$wheels"/idgraph-*.whl
IDGRAPH_BIN_DIR="$target/debug" python3 -m pytest -q python/tests "$@"
