"""The Python package's goals, measured on demand (BENCHMARKS.md, "The Python package"):

    cargo build --release --bin idgraph --example gen_km
    (cd python && maturin build --release --out ../target/wheels-release)
    pip install --force-reinstall --no-deps target/wheels-release/idgraph-*.whl
    python3 python/benches/bench.py import  --lines 1000000            # import_files against `idgraph import`
    python3 python/benches/bench.py parse   --lines 1000000            # parse_lines against the Spark job's former Python parser
    python3 python/benches/bench.py export  --lines 10000000           # export_events() against `export events`
    python3 python/benches/bench.py stream  --lines 10000000           # peak RSS: streamed, read_all, opened only

Each compares with its baseline in the same run, alternating, and prints one JSON line per
measurement and a summary. The data is gen_km's (`--seed 1`), written once under --work.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time

import pyarrow as pa

import idgraph

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def release(name):
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                          cwd=ROOT, check=True, capture_output=True, text=True)
    return os.path.join(json.loads(meta.stdout)["target_directory"], "release", name)


def data(work, lines):
    out = os.path.join(work, f"km-{lines}")
    if not os.path.exists(os.path.join(out, "done")):
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([release("examples/gen_km"), "--lines", str(lines), "--out", out],
                       check=True, stdout=subprocess.DEVNULL)
        open(os.path.join(out, "done"), "w").close()
    return os.path.join(out, "revisions")


def report(what, **kv):
    print(json.dumps({"what": what, **kv}), flush=True)


def bench_import(args):
    src = data(args.work, args.lines)
    cli, py = [], []
    for run in range(args.runs):
        for who in (["cli", "py"] if run % 2 == 0 else ["py", "cli"]):
            db = os.path.join(args.work, f"store-{who}")
            shutil.rmtree(db, ignore_errors=True)
            started = time.perf_counter()
            if who == "cli":
                subprocess.run([release("idgraph"), "--db", db, "import", "--json", src],
                               check=True, capture_output=True)
            else:
                with idgraph.Store(db) as s:
                    s.import_files(src)
            took = time.perf_counter() - started
            (cli if who == "cli" else py).append(took)
            report("import", who=who, run=run, seconds=round(took, 3),
                   lines_per_second=round(args.lines / took))
    ratio = min(py) / min(cli)
    report("import summary", cli_best=round(min(cli), 3), py_best=round(min(py), 3),
           py_over_cli=round(ratio, 3), runs=args.runs)


def lines_of(src):
    """(file index, line number, bytes) of every line, as the Spark job's parser takes them."""
    rows = []
    for i, path in enumerate(sorted(glob.glob(os.path.join(src, "*.json")))):
        with open(path, "rb") as f:
            for n, raw in enumerate(f.read().split(b"\n"), start=1):
                if raw:
                    rows.append((i, n, raw))
    return rows


# The Spark job's Python port of the JSON-lines parser, the baseline of `parse`: the job now
# parses with `parse_lines`, so the port is read from the last commit that had it.
PORT_COMMIT = "d4bfdff"


def spark_port(work):
    path = os.path.join(work, "port")
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "idgraph_spark.py"), "wb") as f:
        f.write(subprocess.run(["git", "-C", ROOT, "show", PORT_COMMIT + ":spark/idgraph_spark.py"],
                               check=True, capture_output=True).stdout)
    sys.path.insert(0, path)
    import idgraph_spark  # no Spark needed to call its parser

    return idgraph_spark


def bench_parse(args):
    idgraph_spark = spark_port(args.work)

    rows = lines_of(data(args.work, args.lines))
    batches = []
    for at in range(0, len(rows), 65_536):
        part = rows[at:at + 65_536]
        batches.append(pa.record_batch({
            "file": pa.array([str(r[0]) for r in part], pa.string()),
            "line": pa.array([r[1] for r in part], pa.int64()),
            "text": pa.array([r[2] for r in part], pa.binary()),
        }))
    rust, port = [], []
    for run in range(args.runs):
        started = time.perf_counter()
        ops = sum(idgraph.parse_lines(b)[0].num_rows for b in batches)
        rust.append(time.perf_counter() - started)
        report("parse", who="parse_lines", run=run, seconds=round(rust[-1], 3), ops=ops,
               lines_per_second=round(len(rows) / rust[-1]))
        parse = idgraph_spark.json_parser(set())
        started = time.perf_counter()
        n = sum(1 for r in parse(rows) if r[3] != "error")
        port.append(time.perf_counter() - started)
        report("parse", who="spark_python_parser", run=run, seconds=round(port[-1], 3), ops=n,
               lines_per_second=round(len(rows) / port[-1]))
    report("parse summary", lines=len(rows), parse_lines_best=round(min(rust), 3),
           python_parser_best=round(min(port), 3), speedup=round(min(port) / min(rust), 1))


def bench_export(args):
    db = export_store(args)
    out = os.path.join(args.work, "events.jsonl")
    cli, py = [], []
    for run in range(args.runs):
        started = time.perf_counter()
        subprocess.run([release("idgraph"), "--db", db, "export", "events", "--format", "km-json",
                        "-o", out], check=True)
        cli.append(time.perf_counter() - started)
        rows = sum(1 for _ in open(out, "rb"))
        report("export", who="cli_km_json_file", run=run, seconds=round(cli[-1], 3), rows=rows,
               rows_per_second=round(rows / cli[-1]))
        started = time.perf_counter()
        with idgraph.Store(db) as s:
            t = s.export_events().read_all()
        py.append(time.perf_counter() - started)
        report("export", who="export_events_read_all", run=run, seconds=round(py[-1], 3),
               rows=t.num_rows, rows_per_second=round(t.num_rows / py[-1]),
               table_bytes=t.nbytes)
        del t
    report("export summary", rows=rows, cli_best=round(min(cli), 3), py_best=round(min(py), 3),
           py_rows_per_second=round(rows / min(py)), cli_rows_per_second=round(rows / min(cli)))


def export_store(args):
    src = data(args.work, args.lines)
    db = os.path.join(args.work, f"export-store-{args.lines}")
    if not os.path.exists(os.path.join(db, "done")):
        shutil.rmtree(db, ignore_errors=True)
        subprocess.run([release("idgraph"), "--db", db, "import", src], check=True,
                       capture_output=True)
        open(os.path.join(db, "done"), "w").close()
    return db


STREAM = """
import resource, sys, time, idgraph
with idgraph.Store(sys.argv[1]) as s:
    started = time.perf_counter()
    if sys.argv[2] == "opened":
        rows = s.export_events().read_next_batch().num_rows
    elif sys.argv[2] == "streamed":
        rows = sum(b.num_rows for b in s.export_events())
    else:
        rows = s.export_events().read_all().num_rows
    took = time.perf_counter() - started
print(rows, took, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def bench_stream(args):
    db = export_store(args)
    for mode in ("opened", "streamed", "read_all"):
        out = subprocess.run([sys.executable, "-c", STREAM, db, mode], check=True,
                             capture_output=True, text=True, cwd=args.work).stdout.split()
        report("stream", mode=mode, rows=int(out[0]), seconds=round(float(out[1]), 2),
               peak_rss_mib=int(out[2]))


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["import", "parse", "export", "stream"])
    p.add_argument("--lines", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--work", default="/tmp/idgraph-python-bench")
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)
    {"import": bench_import, "parse": bench_parse, "export": bench_export,
     "stream": bench_stream}[args.what](args)


if __name__ == "__main__":
    main()
