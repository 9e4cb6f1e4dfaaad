#!/usr/bin/env bash
# The Spark job next to `idgraph import` on the same data, in one run (BENCHMARKS.md, "Spark"):
#   bash spark/bench.sh DATA [SPARK OPTIONS...]
# e.g. cargo run --release --example gen_km -- --lines 1000000 --out /tmp/km1m
#      bash spark/bench.sh /tmp/km1m
# Prints each one's wall time, idgraph's peak RSS, the JVM's peak RSS (sampled every second),
# and the job's summary (rounds, shuffle bytes per round, seconds per stage). Needs the release
# build (`cargo build --release`) and spark/.venv (spark/test.sh makes it).
set -euo pipefail
cd "$(dirname "$0")/.."
data=$1; shift
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
target=$(bash scripts/target-dir.sh)
/usr/bin/time -f "idgraph import: %e s, peak RSS %M KB" "$target/release/idgraph" --db "$work/store" import "$data"
rm -rf "$work/store"
( peak=0; while true; do
    r=$( (ps -C java -o rss= || true) | awk '{s+=$1} END {print s+0}')
    if [ "$r" -gt "$peak" ]; then peak=$r; echo "$peak" > "$work/peak"; fi
    sleep 1
  done ) &
sampler=$!
SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON="$PWD/spark/.venv/bin/python" /usr/bin/time -f "spark job: %e s" spark/.venv/bin/python spark/idgraph_spark.py \
  "$data" --output "$work/out" --master 'local[2]' --conf spark.driver.memory=6g \
  --conf spark.sql.shuffle.partitions=16 "$@"
kill "$sampler" 2>/dev/null || true
echo "JVM peak RSS: $(cat "$work/peak") KB"
