#!/usr/bin/env bash
# An incremental run next to a full run over the same input, in one run (BENCHMARKS.md, "Spark",
# "Incremental runs"):
#   bash spark/bench_incremental.sh DATA [PERCENT] [SPARK OPTIONS...]
# e.g. cargo run --release --example gen_km -- --lines 10000000 --out /tmp/km10m
#      bash spark/bench_incremental.sh /tmp/km10m 1
# Copies DATA without the last PERCENT (default 1) of the lines of its last file, runs the job
# over it (the history), appends the lines held back, then times the job with --previous (the
# increment) and without it (the full run), checks that the two outputs hold the same rows, and
# times `idgraph import` of all of it. Needs the release build and spark/.venv (spark/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
data=$1; shift
pct=${1:-1}; shift || true
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
target=$(bash scripts/target-dir.sh)
cp -r "$data" "$work/in"
# The last file: by version order of the path (revisions/N.json); a bucket whose index.csv
# orders its files otherwise needs its last file named by hand.
last=$(find "$work/in" -type f \( -name '*.json' -o -name '*.jsonl' \) | sort -V | tail -1)
total=$(find "$work/in" -type f \( -name '*.json' -o -name '*.jsonl' \) -exec cat {} + | wc -l)
hold=$(( total * pct / 100 ))
n=$(wc -l < "$last")
if [ "$hold" -ge "$n" ]; then echo "the last file ($n lines) is shorter than $pct% of the input" >&2; exit 2; fi
tail -n "$hold" "$last" > "$work/held"
head -n $(( n - hold )) "$last" > "$work/head" && mv "$work/head" "$last"
echo "history: $(( total - hold )) lines; increment: $hold lines appended to $(basename "$last")"
job() {
  SPARK_LOCAL_IP=127.0.0.1 PYSPARK_PYTHON="$PWD/spark/.venv/bin/python" spark/.venv/bin/python \
    spark/idgraph_spark.py "$work/in" --master 'local[2]' --conf spark.driver.memory=6g \
    --conf spark.sql.shuffle.partitions=16 "$@" 2>&1 | grep -v '^WARN\|^Setting default\|^To adjust' >&2
}
timed() {
  local label=$1; shift; local t0; t0=$(date +%s.%N)
  "$@"
  echo "$label: $(echo "$(date +%s.%N) - $t0" | bc) s"
}
timed "history (full run)" job --output "$work/history" "$@"
cat "$work/held" >> "$last"
timed "incremental run" job --output "$work/inc" --previous "$work/history" "$@"
timed "full run" job --output "$work/full" "$@"
timed "idgraph import" "$target/release/idgraph" --db "$work/store" import "$work/in" >/dev/null
spark/.venv/bin/python - "$work/inc" "$work/full" <<'PY'
import glob, sys
import pyarrow.parquet as pq
a, b = sys.argv[1:]
for t in ("mapping", "events", "persons", "refused", "oversized", "rejects"):
    ta = [pq.read_table(f) for f in sorted(glob.glob(f"{a}/{t}/*.parquet"))]
    tb = [pq.read_table(f) for f in sorted(glob.glob(f"{b}/{t}/*.parquet"))]
    if not ta and not tb:
        continue
    rows = lambda ts: sorted(tuple(sorted((k, repr(v)) for k, v in r.items()))
                             for x in ts for r in x.to_pylist())
    same = rows(ta) == rows(tb)
    print("%s: %s" % (t, "the same rows" if same else "DIFFERENT"))
    if not same:
        sys.exit(1)
PY
