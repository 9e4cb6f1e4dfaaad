#!/usr/bin/env python3
"""idgraph on Apache Spark: the identity graph of `idgraph import`, computed on a cluster.

    python3 spark/idgraph_spark.py INPUT... --output DIR [--format parquet|jsonl|csv]
                                   [--skip-invalid] [--master URL]
    spark-submit spark/idgraph_spark.py INPUT... --output DIR ...

Reads what `idgraph import` reads (KISSmetrics JSON lines and CSV; a directory is an export
bucket: the files its index.csv lists, else revisions/N.json in numeric order, then the other
*.json and *.csv files by name), applies the store's rules (spark/README.md says which, and where
the job differs), and writes DIR/mapping, DIR/events, DIR/persons, DIR/refused, DIR/oversized,
DIR/rejects (with --skip-invalid), DIR/state (what a later run needs) and DIR/summary.json.

With --previous EARLIER_DIR (an earlier output over the same inputs, since grown), only the new
lines are read and only the persons they touch computed again; the output is a full run's.

Input is parsed in the executors by the store's own code, from the Python package built from
this crate (python/; spark/README.md says how to ship it), through `mapInArrow`: JSON lines by
`idgraph.parse_lines` over Arrow batches of lines, CSV files whole by `idgraph.parse_csv`.
Everything after parsing is DataFrame operations: connected components by alternating
large-star and small-star (Kiveris et al., 2014), checkpointed every round.
"""

import argparse
import csv
import io
import json
import os
import sys
import time
import uuid
from urllib.parse import unquote

# ---------------------------------------------------------------------------------------------
# The store's rules past parsing. Keep in step with src/id.rs, src/ingest/files.rs and
# src/store/config.rs.

MAX_PROPERTIES_PER_ID = 1024
MAX_PERSON_SIZE = 10_000
DEFAULT_BLOCKED_IDS = [
    "", "null", "nil", "undefined", "anonymous", "guest", "0", "-1", "none",
    "[object object]", "nan", "true", "false", "unknown",
]
# KISSmetrics' anonymous IDs: base64 of a 20-byte digest (src/id.rs).
ANON_RE = r"^[A-Za-z0-9+/]{26}[AEIMQUYcgkosw048]=$"
# Op order keys: (file << 43) | (line << 3) | (op << 1) | endpoint.
FILE_SHIFT, LINE_SHIFT = 43, 3
MAX_FILES, MAX_LINES = 1 << 20, 1 << 40


class Bad(Exception):
    """A bad line: the reason, as `idgraph import` words it."""


def shown(s):
    """How an error shows a value (src/error.rs `shown`): quoted, cut at 60 characters."""
    if len(s) > 60:
        return "%s... (%d characters)" % (json.dumps(s[:60], ensure_ascii=False), len(s))
    return json.dumps(s, ensure_ascii=False)


def json_ops(blocked_ids):
    """Batches of (file index, line number, raw bytes) → batches of op and error rows
    (`op_schema`), parsed by the store's own code: `idgraph.parse_lines`, the Python package
    built from this crate (python/), in each executor through `mapInArrow`."""

    def run(batches):
        import pyarrow as pa
        import pyarrow.compute as pc

        import idgraph

        for b in batches:
            if b.num_rows == 0:
                continue
            lines = pa.record_batch([pc.cast(b.column("file"), pa.string()), b.column("line"),
                                     b.column("raw")], names=["file", "line", "text"])
            ops, bad = idgraph.parse_lines(lines, blocked_ids=blocked_ids)
            if ops.num_rows:
                yield op_batch(ops)
            if bad.num_rows:
                yield error_batch(bad)

    return run


def order_key(file, line, op=None):
    """`file << 43 | line << 3 | op << 1` (FILE_SHIFT, LINE_SHIFT), over Arrow columns."""
    import pyarrow as pa
    import pyarrow.compute as pc

    key = pc.bit_wise_or(pc.shift_left(pc.cast(file, pa.int64()), FILE_SHIFT),
                         pc.shift_left(line, LINE_SHIFT))
    if op is not None:
        key = pc.bit_wise_or(key, pc.shift_left(pc.cast(op, pa.int64()), 1))
    return key


def op_batch(ops):
    """`parse_lines`' ops as `op_schema` rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    file = pc.cast(ops.column("file"), pa.int32())
    plist = ops.column("property_list")
    entries = plist.values
    props = pa.ListArray.from_arrays(
        plist.offsets,
        pa.StructArray.from_arrays(
            [entries.field("name"), entries.field("folded"), entries.field("name_json"),
             entries.field("value_json")], names=["name", "lname", "nj", "vj"]),
        mask=plist.is_null())
    # ',"name":value' for every property, in the line's order.
    each = pc.binary_join_element_wise(
        "", pc.binary_join_element_wise(entries.field("name_json"), entries.field("value_json"),
                                        ":"), ",")
    frag = pc.binary_join(pa.ListArray.from_arrays(plist.offsets, each, mask=plist.is_null()),
                          "")
    none = pa.nulls(ops.num_rows, pa.string())
    return pa.record_batch(
        [file, ops.column("line"), order_key(file, ops.column("line"), ops.column("op")),
         ops.column("kind"), ops.column("a"), ops.column("b"), ops.column("at"),
         ops.column("event"), ops.column("event_folded"), props, frag, ops.column("blocked"),
         none],
        names=OP_COLUMNS)


def error_batch(bad, kind="error"):
    """`parse_lines`' rejected lines as `op_schema` error rows (`kind`: `stop` for where the
    importer stops reading, `--skip-invalid` or not)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = bad.num_rows
    file = pc.cast(bad.column("file"), pa.int32())
    text = pa.nulls(n, pa.string())
    return pa.record_batch(
        [file, bad.column("line"), order_key(file, bad.column("line")),
         pa.array([kind] * n, pa.string()), text, text, pa.nulls(n, pa.int64()), text, text,
         pa.nulls(n, op_props_type()), text, text, bad.column("reason")],
        names=OP_COLUMNS)


def csv_ops(index, skip, now, blocked_ids):
    """Batches of whole CSV files (the `binaryFile` source's `path`, `content`) → batches of
    op and error rows (`op_schema`), parsed by the store's own code: `idgraph.parse_csv`.
    `index`: a file's path → its input index; `skip`: its lines read before (of a grown file
    only the records starting past them are kept). Where the importer stops reading (a bad
    header, a record past the limit), one `stop` row."""

    def run(batches):
        import pyarrow as pa
        import pyarrow.compute as pc

        import idgraph

        for b in batches:
            paths, content = b.column("path"), b.column("content")
            for k in range(b.num_rows):
                i = index[unquote(paths[k].as_py())]
                try:
                    ops, bad = idgraph.parse_csv(content[k].as_py(), file=str(i), now=now,
                                                 blocked_ids=blocked_ids)
                except idgraph.InputError as e:
                    # "FILE:LINE: reason", FILE being the index (no colon in it).
                    where, reason = str(e).split(": ", 1)
                    line = int(where.rsplit(":", 1)[1])
                    yield error_batch(pa.record_batch(
                        [pa.array([str(i)]), pa.array([line], pa.int64()),
                         pa.array([reason])], names=["file", "line", "reason"]), "stop")
                    continue
                if skip[i]:
                    ops = ops.filter(pc.greater(ops.column("line"), skip[i]))
                    bad = bad.filter(pc.greater(bad.column("line"), skip[i]))
                if ops.num_rows:
                    yield op_batch(ops)
                if bad.num_rows:
                    yield error_batch(bad)

    return run


def local_stars(batches):
    """A partition's edges (u, v) → its connected components as star edges (smallest, other),
    by the store's union-find (`idgraph.local_stars`, in Rust), in an executor."""
    import pyarrow as pa

    import idgraph

    batches = [b for b in batches if b.num_rows]
    if not batches:
        return
    t = pa.Table.from_batches(batches)
    out = idgraph.local_stars(pa.record_batch(
        [t.column("u").combine_chunks(), t.column("v").combine_chunks()], names=["u", "v"]))
    if out.num_rows:
        yield out


# Links solved whole by one task (`--local-max-edges`): 16 bytes each in Arrow, and the
# union-find's map and forest in Rust: 2.5 GB peak for the Python worker and 42 s at this
# count of random links (BENCHMARKS.md, "Spark"; measured with the release wheel).
LOCAL_MAX_EDGES = 20_000_000
# Runs that read at most this many bytes of input keep their intermediate tables as local
# checkpoints, larger ones cache them (`Job.keep`). Measured on local[2] (BENCHMARKS.md, "Spark",
# "Plans"): checkpoints made the job over 1M gen_km lines (83 MB) 14-36% faster, and over 10M
# lines (831 MB) no faster, with rows held where a cache compresses them.
LEAF_MAX_BYTES = 256 << 20


OP_COLUMNS = ["file", "line", "ord", "kind", "a", "b", "t", "name", "lname", "props", "frag",
              "blocked", "reason"]


def op_props_type():
    import pyarrow as pa

    return pa.list_(pa.struct([("name", pa.string()), ("lname", pa.string()),
                               ("nj", pa.string()), ("vj", pa.string())]))


# ---------------------------------------------------------------------------------------------
# Inputs: the files of each command-line path, in import order (src/ingest/files.rs).


class Inputs:
    """Lists files through Hadoop's FileSystem, so that any path Spark reads works (local,
    HDFS, S3)."""

    def __init__(self, spark):
        self.spark = spark
        self.jvm = spark._jvm
        self.conf = spark._jsc.hadoopConfiguration()

    def path(self, p):
        return self.jvm.org.apache.hadoop.fs.Path(p)

    def fs(self, p):
        return self.path(p).getFileSystem(self.conf)

    def qualified(self, p):
        return self.fs(p).makeQualified(self.path(p)).toString()

    def is_dir(self, p):
        fs = self.fs(p)
        return fs.exists(self.path(p)) and fs.getFileStatus(self.path(p)).isDirectory()

    def is_file(self, p):
        fs = self.fs(p)
        return fs.exists(self.path(p)) and fs.getFileStatus(self.path(p)).isFile()

    def children(self, d):
        fs = self.fs(d)
        return [
            (s.getPath().getName(), s.isFile())
            for s in fs.listStatus(self.path(d))
        ]

    def read_small(self, p):
        return self.spark.sparkContext.binaryFiles(p).collect()[0][1]

    @staticmethod
    def order_key(name):
        stem = name[:-5] if name.endswith(".json") else None
        if stem and stem.isascii() and stem.isdigit():
            return (0, int(stem), name)
        return (1, 0, name)

    def listed(self, d):
        out = []
        for sub in (d, join(d, "revisions")):
            if sub != d and not self.is_dir(sub):
                continue
            for name, is_file in self.children(sub):
                ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
                if is_file and not (sub == d and name == "index.csv") and ext in ("json", "csv"):
                    out.append((self.order_key(name), join(sub, name)))
        out.sort()
        return [p for _, p in out]

    def dir_files(self, d, warn):
        found = self.listed(d)
        index = join(d, "index.csv")
        if not self.is_file(index):
            return found
        text = self.read_small(index).decode("utf-8", errors="replace")
        out, seen, missing = [], {}, []
        rdr = csv.reader(io.StringIO(text))
        try:
            next(rdr)
        except StopIteration:
            return []
        for rec in rdr:
            line = rdr.line_num
            field = rec[0].strip() if rec else ""
            if not field:
                raise Bad("%s:%d: no file path in the first column" % (index, line))
            parts = [c for c in field.split("/") if c not in ("", ".")]
            if field.startswith("/") or ".." in parts:
                raise Bad("%s:%d: %s is not a path inside the export directory"
                          % (index, line, shown(field)))
            path = join(d, *parts)
            if path in seen:
                raise Bad("%s:%d: %s is listed twice (first on line %d)"
                          % (index, line, shown(field), seen[path]))
            seen[path] = line
            if not self.is_file(path):
                missing.append(field)
            out.append(path)
        if missing:
            n = len(missing)
            raise Bad("%s lists %d file%s that %s not on disk: %s%s" % (
                index, n, "" if n == 1 else "s", "is" if n == 1 else "are",
                ", ".join(missing[:10]), ", ..." if n > 10 else ""))
        for f in found:
            if f not in seen:
                warn("%s: a data file that %s does not list; not imported" % (f, index))
        return out

    def expand(self, paths, warn):
        """[(name, format)] in import order."""
        out = []
        for p in paths:
            if self.is_dir(p):
                files = self.dir_files(p, warn)
            elif self.is_file(p):
                files = [p]
            else:
                raise Bad("%s: no such file or directory" % p)
            for f in files:
                ext = f.rsplit(".", 1)[-1].lower() if "." in f.rsplit("/", 1)[-1] else ""
                if ext in ("json", "jsonl", "ndjson"):
                    out.append((f, "json"))
                elif ext == "csv":
                    out.append((f, "csv"))
                else:
                    raise Bad("%s: cannot tell the format from the name (.json, .jsonl, "
                              ".ndjson or .csv)" % f)
        if len(out) >= MAX_FILES:
            raise Bad("%d input files; at most %d" % (len(out), MAX_FILES - 1))
        return out


def join(d, *parts):
    return "/".join([d.rstrip("/")] + list(parts)) if d not in ("", "/") else "/" + "/".join(parts)



# ---------------------------------------------------------------------------------------------
# Reading parts of files (lines appended since --previous), from the driver or an executor.

STATE_VERSION = 1
CHECKED_BYTES = 4096  # of a file's part read before, its last bytes are hashed


def arrow_fs(uri):
    """(pyarrow filesystem, path) of a file Spark names (`file:/...`, `hdfs://...`,
    `s3a://...`)."""
    import pyarrow.fs as pafs

    if uri.startswith("file:") or uri.startswith("/"):
        path = uri[len("file:"):] if uri.startswith("file:") else uri
        while path.startswith("//"):
            path = path[1:]
        return pafs.LocalFileSystem(), path
    if uri.startswith("s3a://"):
        uri = "s3://" + uri[len("s3a://"):]
    return pafs.FileSystem.from_uri(uri)


def open_input(uri):
    fs, path = arrow_fs(uri)
    return fs.open_input_file(path)


def output_rows(table, batch):
    """The Parquet output `table` (mapping, events, persons) of a batch of its state table's
    rows (ids, events, persons): the columns `Job.write_all` writes, over Arrow."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if table == "mapping":
        return pa.record_batch([batch.column("id"), batch.column("person")],
                               names=["id", "person"])
    if table == "events":
        # As `Job.write_events`: the fragment ',"k":v,...' as the object '{"k":v,...}'.
        frag = pc.utf8_slice_codeunits(pc.fill_null(batch.column("frag"), ""), 1)
        props = pc.binary_join_element_wise("{", frag, "}", "")
        return pa.record_batch(
            [batch.column("_p"), batch.column("a"), batch.column("name"), batch.column("t"),
             props], names=["_p", "_p_original", "_n", "_t", "properties"])
    return batch  # persons: the same rows


def carry(drop, column, top=None, output=None):
    """Carries Parquet files over, each by one task with pyarrow, without the rows whose
    `column` is in the broadcast set `drop`: (source, kept to, dropped to or None, output to
    or None) → (rows kept, (largest `top` kept, its `person`) or None). With `output` (an
    output table's name), the kept rows also go, as `output_rows` makes them, to the fourth
    path: an output carried from the state in the same pass. Untouched rows never pass through
    Spark's rows: this is what keeps an incremental run's cost near its new input."""

    def run(items):
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        for src, kept_to, dropped_to, output_to in items:
            sfs, spath = arrow_fs(src)
            reader = pq.ParquetFile(spath, filesystem=sfs)
            schema = reader.schema_arrow
            value_set = pa.array(list(drop.value), schema.field(column).type)
            out_schema = output and output_rows(output, pa.record_batch(
                [pa.array([], f.type) for f in schema], schema=schema)).schema
            writers = {}  # every file written, rows or not: a folder read later has a schema
            for to, sch in ((kept_to, schema), (dropped_to, schema), (output_to, out_schema)):
                if to is not None:
                    tfs, tpath = arrow_fs(to)
                    writers[to] = pq.ParquetWriter(tpath, sch, filesystem=tfs)
            rows, best = 0, None
            try:
                for batch in reader.iter_batches(batch_size=1 << 16):
                    gone = pc.is_in(batch.column(column), value_set=value_set)
                    kept = batch.filter(pc.invert(gone))
                    rows += kept.num_rows
                    writers[kept_to].write_batch(kept)
                    if dropped_to is not None:
                        writers[dropped_to].write_batch(batch.filter(gone))
                    if output_to is not None:
                        writers[output_to].write_batch(output_rows(output, kept))
                    if top is not None and kept.num_rows:
                        i = pc.index(kept.column(top), pc.max(kept.column(top))).as_py()
                        cand = (kept.column(top)[i].as_py(), kept.column("person")[i].as_py())
                        best = cand if best is None or cand[0] > best[0] else best
            finally:
                for w in writers.values():
                    w.close()
            yield rows, best

    return run


def read_range(uri, start, end):
    if end <= start:
        return b""
    with open_input(uri) as f:
        return f.read_at(end - start, start)


def checked_hash(data):
    import hashlib

    return hashlib.blake2b(data, digest_size=16).hexdigest()


def tail_hash(uri, size):
    """BLAKE2b of the last CHECKED_BYTES of a file's first `size` bytes: a part read before
    and rewritten since is read again, not taken as read."""
    return checked_hash(read_range(uri, max(0, size - CHECKED_BYTES), size))


def line_count(data):
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


TAIL_CHUNK = 8 << 20  # appended bytes are read this much at a time


def read_tail(item):
    """(file index, path, first byte, end, lines before) → (file, line, raw) rows of the lines
    in those bytes, numbered on from the lines before (a last line without its newline is a
    line, as Spark's text reader has it). Read in chunks: the task holds one chunk and one
    line (whole, as Spark's reader holds it), not the whole tail."""
    i, uri, start, end, before = item
    n, rest = before, b""
    with open_input(uri) as f:
        pos = start
        while pos < end:
            chunk = f.read_at(min(TAIL_CHUNK, end - pos), pos)
            if not chunk:
                break
            pos += len(chunk)
            pieces = (rest + chunk).split(b"\n")
            rest = pieces.pop()
            for raw in pieces:
                n += 1
                yield (i, n, raw)
    if rest:
        yield (i, n + 1, rest)


TAIL_BATCH_LINES = 8192  # at most this many lines per Arrow batch of `tail_lines`


def tail_lines(batches):
    """Batches of grown files (file, uri, start, end, before) → batches of their new lines
    (file, line, raw), by `read_tail`: built as Arrow in the executor, so that the lines reach
    the parser without passing through Python rows. A batch holds at most TAIL_BATCH_LINES
    lines and TAIL_CHUNK bytes of them (or one longer line): a task's memory is bounded as
    `read_tail`'s is, whatever the lines' lengths."""
    import pyarrow as pa

    schema = pa.schema([("file", pa.int32()), ("line", pa.int64()), ("raw", pa.binary())])

    def batch(rows):
        return pa.record_batch(list(map(list, zip(*rows))), schema=schema)

    for b in batches:
        for item in zip(*(b.column(k).to_pylist() for k in range(5))):
            rows, size = [], 0
            for row in read_tail(item):
                if rows and (len(rows) == TAIL_BATCH_LINES or size + len(row[2]) > TAIL_CHUNK):
                    yield batch(rows)
                    rows, size = [], 0
                rows.append(row)
                size += len(row[2])
            if rows:
                yield batch(rows)


# ---------------------------------------------------------------------------------------------
# The job.


def load_suppressions(path):
    """(key, set of hashes) from `idgraph export suppressions` (JSON lines: `{"key": hex}`,
    then `{"suppressed": hex}` per forgotten ID); an empty file suppresses nothing."""
    key, hashes = None, set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if "key" in row:
                    key = bytes.fromhex(row["key"])
                else:
                    hashes.add(bytes.fromhex(row["suppressed"]))
            except (ValueError, KeyError, TypeError) as e:
                raise Bad("%s:%d: not a suppression (%s)" % (path, n, e))
    if hashes and (key is None or len(key) != 32):
        raise Bad("%s: no 32-byte key line" % path)
    return key, hashes


def suppressed_id(key, hashes):
    """Whether an ID is suppressed: its BLAKE2b-128 keyed with the store's secret is listed
    (the store's `store/suppress.rs` computes the same)."""
    import hashlib

    def test(x):
        return x is not None and hashlib.blake2b(
            x.encode("utf-8"), key=key, digest_size=16).digest() in hashes
    return test


def suppressed_ops(suppressions):
    """A column: true for an op (alias, record, set) naming a suppressed ID; None when
    nothing is suppressed."""
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    key, hashes = suppressions
    if not hashes:
        return None
    sup = F.udf(suppressed_id(key, hashes), T.BooleanType())
    return F.col("kind").isin("alias", "record", "set") & (sup("a") | sup("b"))


def op_schema():
    from pyspark.sql import types as T

    prop = T.StructType([
        T.StructField("name", T.StringType(), False),
        T.StructField("lname", T.StringType(), False),
        T.StructField("nj", T.StringType(), False),  # the name as JSON text
        T.StructField("vj", T.StringType(), False),  # the value as JSON text (type kept)
    ])
    return T.StructType([
        T.StructField("file", T.IntegerType(), False),
        T.StructField("line", T.LongType(), False),
        T.StructField("ord", T.LongType(), False),  # input order: file, line, op in line
        T.StructField("kind", T.StringType(), False),  # alias, record, set or error
        T.StructField("a", T.StringType(), True),
        T.StructField("b", T.StringType(), True),
        T.StructField("t", T.LongType(), True),
        T.StructField("name", T.StringType(), True),
        T.StructField("lname", T.StringType(), True),
        T.StructField("props", T.ArrayType(prop), True),
        T.StructField("frag", T.StringType(), True),  # ',"name":value' for every property
        T.StructField("blocked", T.StringType(), True),  # the endpoint refusing an alias
        T.StructField("reason", T.StringType(), True),  # why a line is bad
    ])


class Job:
    """One run: inputs → DIR/mapping, events, persons, refused, oversized, rejects,
    summary.json."""

    OUTPUTS = ("mapping", "events", "persons", "refused", "oversized", "rejects", "state")

    def __init__(self, spark, args, log=None):
        self.spark = spark
        self.args = args
        self.log = log or (lambda msg: print(msg, file=sys.stderr))
        self.stages = {}
        self.round_shuffle = []  # shuffle bytes written by each round (with the UI on)
        self.io = Inputs(spark)
        if __name__ != "__main__":
            # Imported (tests, a notebook): the workers must import this module too. (Run as
            # a script, its functions travel with the tasks.)
            spark.sparkContext.addPyFile(os.path.abspath(__file__))
        self.blocked_ids = DEFAULT_BLOCKED_IDS + list(args.blocked_id or [])
        self.kept = []  # what `keep` checkpointed, freed by `release`
        self.leaves = True  # whether `keep` checkpoints (set from the bytes a run reads)

    def keep(self, df):
        """`df` computed now and kept for its next uses. In a run that reads at most
        LEAF_MAX_BYTES, as a local checkpoint: a table whose plan is a leaf, in executors'
        storage (memory, then local disk). A persisted table's plan stays inside every plan
        built on it, and adaptive execution writes the whole plan out for Spark's UI at every
        stage: with tables built on tables, that was most of a small run's time
        (BENCHMARKS.md, "Spark", "Plans"). In a larger run, cached (`persist`): there the work
        dwarfs the plans, and a cached table is compressed by column where a checkpoint keeps
        rows. (A local checkpoint is lost with its executor: a small run is run again.)"""
        from pyspark import StorageLevel

        if not self.leaves:
            return df.persist(StorageLevel.MEMORY_AND_DISK)
        kept = df.localCheckpoint(eager=True)
        self.kept.append(kept)
        return kept

    def release(self):
        """Frees what `keep` checkpointed (a session that runs the job again, as the tests do,
        would otherwise hold it until the JVM's garbage collector finds it unreferenced)."""
        for df in self.kept:
            df._jdf.queryExecution().logical().rdd().unpersist(False)
        self.kept = []

    def stage(self, name, t0):
        self.stages[name] = round(time.time() - t0, 3)
        self.log("  %s: %.1f s" % (name, self.stages[name]))

    # -- reading --------------------------------------------------------------------------

    def read_ops(self, files, listing, plan):
        """One DataFrame of op and error rows (`op_schema`) over what `plan` says to read of
        each input file ((first byte, lines before it), (0, 0) for all of it, None for
        nothing), and how many lines each file read has (its earlier lines included)."""
        from pyspark.sql import functions as F

        spark = self.spark
        schema = op_schema()
        parts, lines, counted = [], [], {}
        json_files = [(i, f) for i, (f, fmt) in enumerate(files)
                      if fmt == "json" and plan[i] == (0, 0)]
        tails = [(i, listing[i][0], plan[i][0], listing[i][1], plan[i][1])
                 for i, (f, fmt) in enumerate(files)
                 if fmt == "json" and plan[i] not in (None, (0, 0))]
        csv_files = [(i, f) for i, (f, fmt) in enumerate(files)
                     if fmt == "csv" and plan[i] is not None]
        if json_files:
            df = spark.read.option("lineSep", "\n").text([f for _, f in json_files]).select(
                F.col("value").cast("binary").alias("raw"),
                F.col("_metadata.file_path").alias("path"),
                F.col("_metadata.file_block_start").alias("block"),
                F.monotonically_increasing_id().alias("mono"),
            )
            # Line numbers: the lines of one block of a file are consecutive in one partition,
            # in file order, so a line's number is the lines of the file's earlier blocks plus
            # its rank in its block. Blocks are few (one per 128 MiB): counted on the driver.
            blocks = df.groupBy("path", "block").agg(
                F.min("mono").alias("first"), F.count(F.lit(1)).alias("n")
            ).collect()
            index = {unquote(self.io.qualified(f)): i for i, f in json_files}
            by_file = {}
            for b in blocks:
                by_file.setdefault(b["path"], []).append(b)
            rows = []
            for path, bs in by_file.items():
                i = index.get(unquote(path))
                if i is None:
                    raise Bad("%s: read, but not among the inputs" % path)
                before = 0
                for b in sorted(bs, key=lambda b: b["block"]):
                    rows.append((path, b["block"], b["first"], before, i))
                    before += b["n"]
                if before >= MAX_LINES:
                    raise Bad("%s: more than %d lines" % (files[i][0], MAX_LINES))
                counted[i] = before
            offsets = spark.createDataFrame(
                rows, "path string, block long, first long, before long, file int"
            )
            lines.append(df.join(F.broadcast(offsets), ["path", "block"]).select(
                "file", (F.col("mono") - F.col("first") + F.col("before") + 1).alias("line"),
                "raw",
            ))
        if tails:
            # Lines appended since --previous: each file's new bytes, read by one task.
            items = spark.createDataFrame(  # a task per file
                spark.sparkContext.parallelize(tails, len(tails)),
                "file int, uri string, start long, end long, before long")
            tail = items.mapInArrow(tail_lines, "file int, line long, raw binary") \
                .transform(self.keep)
            counted.update({r["file"]: r["n"] for r in tail.groupBy("file").agg(
                F.max("line").alias("n")).collect()})
            lines.append(tail)
        if lines:
            all_lines = lines[0]
            for x in lines[1:]:
                all_lines = all_lines.unionByName(x)
            parts.append(all_lines.mapInArrow(json_ops(self.blocked_ids), schema))
        if csv_files:
            now = int(time.time())
            index = {unquote(self.io.qualified(f)): i for i, f in csv_files}
            # A grown CSV file is read whole (a quoted field may span lines) and keeps the
            # records that start past the lines read before.
            skip = {i: plan[i][1] for i, _ in csv_files}
            whole = spark.sparkContext.binaryFiles(",".join(f for _, f in csv_files))
            counted.update(dict(whole.map(
                lambda kv: (index[unquote(kv[0])], line_count(kv[1]))).collect()))

            files_df = spark.read.format("binaryFile").load([f for _, f in csv_files])
            parts.append(files_df.select("path", "content").mapInArrow(
                csv_ops(index, skip, now, self.blocked_ids), schema))
        if not parts:
            return spark.createDataFrame([], schema), counted
        out = parts[0]
        for p in parts[1:]:
            out = out.unionByName(p)
        return out, counted

    # -- connected components -------------------------------------------------------------

    def components(self, edges):
        """Connected components of `edges` (u, v: nodes, u != v): up to --local-max-edges
        links, the store's union-find in one task (no round); else alternating large-star
        and small-star (Kiveris et al., "Connected Components in
        MapReduce and Beyond", 2014): O(log n) rounds, each a few shuffles, checkpointed so
        that the plan does not grow with the rounds. Returns (labels: node → comp, the
        smallest node of its component, for every node with an edge; rounds)."""
        from pyspark.sql import functions as F

        lo, hi = F.least("u", "v"), F.greatest("u", "v")
        # An edge set of at most --local-max-edges links is solved whole by one task, with
        # the store's union-find (Rust: `idgraph.local_stars`): its stars are the components,
        # and no round is needed. (Union-find within each partition before the rounds did not
        # pay: BENCHMARKS.md, "Spark".)
        whole = edges.count() <= self.args.local_max_edges
        if whole:
            edges = edges.repartition(1).mapInArrow(local_stars, "u long, v long")
        e = edges.select(lo.alias("u"), hi.alias("v")).distinct().checkpoint(eager=True)
        rounds = 0
        shuffled = self.shuffle_bytes()
        while not whole:
            rounds += 1
            # Large-star: each node's larger neighbours go to the smallest node of its
            # neighbourhood (itself included). A node's minimum is an aggregation (combined
            # map-side: a node of millions of links is no hot spot); the join that hands it
            # to the links of such a node is split by adaptive execution.
            both = e.unionAll(e.select(F.col("v").alias("u"), F.col("u").alias("v")))
            m = both.groupBy("u").agg(F.least(F.min("v"), F.first("u")).alias("m"))
            large = both.where(F.col("v") > F.col("u")).join(m, "u").select(
                F.col("v").alias("u"), F.col("m").alias("v")
            )
            # Small-star: each node and its smaller neighbours go to the smallest of them.
            m2 = large.groupBy("u").agg(F.min("v").alias("m"))
            small = (
                large.join(m2, "u").select(F.col("v").alias("u"), F.col("m").alias("v"))
                .unionAll(m2.select("u", F.col("m").alias("v")))
                .where(F.col("u") != F.col("v"))
                .select(lo.alias("u"), hi.alias("v"))
                .distinct()
                .checkpoint(eager=True)
            )
            same = small.exceptAll(e).limit(1).count() == 0 and \
                e.exceptAll(small).limit(1).count() == 0
            e = small
            now = self.shuffle_bytes()
            if now is not None and shuffled is not None:
                self.round_shuffle.append(now - shuffled)
                self.log("  round %d: %d edges, %.1f MB shuffled" % (
                    rounds, e.count(), (now - shuffled) / 1e6))
            shuffled = now
            if same:
                break
            if rounds >= 100:
                raise RuntimeError("connected components did not converge in 100 rounds")
        # A fixed point is a set of stars: (root, leaf), the root the smallest node.
        labels = e.select(F.col("v").alias("node"), F.col("u").alias("comp")).unionAll(
            e.select(F.col("u").alias("node"), F.col("u").alias("comp"))
        ).groupBy("node").agg(F.min("comp").alias("comp"))
        return labels, rounds

    def shuffle_bytes(self):
        """Shuffle bytes written so far by this application, from Spark's own monitoring
        API (None when the UI is off): for the per-round figures of the summary."""
        url = self.spark.sparkContext.uiWebUrl
        if not url:
            return None
        import urllib.request

        app = self.spark.sparkContext.applicationId
        try:
            with urllib.request.urlopen("%s/api/v1/applications/%s/stages" % (url, app),
                                        timeout=10) as r:
                stages = json.load(r)
        except OSError:
            return None
        return sum(st.get("shuffleWriteBytes", 0) for st in stages)

    # -- the whole job --------------------------------------------------------------------

    def run(self):
        """Runs the job; the results appear in --output only once all are written."""
        out_dir = self.args.output.rstrip("/") or "/"
        fs = self.io.fs(out_dir)
        for name in self.OUTPUTS + ("summary.json",):
            if fs.exists(self.io.path(join(out_dir, name))):
                raise Bad("%s already exists: choose another --output, or remove it"
                          % join(out_dir, name))
        tmp = join(out_dir, "_tmp-" + uuid.uuid4().hex)
        self.spark.sparkContext.setCheckpointDir(
            self.args.checkpoint_dir or join(tmp, "checkpoints")
        )
        started = time.time()
        try:
            summary = self._run(tmp)
            for name in self.OUTPUTS:
                src = self.io.path(join(tmp, name))
                if fs.exists(src) and not fs.rename(src, self.io.path(join(out_dir, name))):
                    raise RuntimeError("could not move %s to %s" % (src, out_dir))
            summary["seconds"] = round(time.time() - started, 3)
            self.write_text(join(out_dir, "summary.json"), json.dumps(summary, indent=2) + "\n")
            return summary
        finally:
            # What the run cached is dropped (a session that runs the job again, as the tests
            # do, would otherwise fill its heap with it).
            self.spark.catalog.clearCache()
            self.release()
            fs.delete(self.io.path(tmp), True)

    def write_text(self, path, text):
        stream = self.io.fs(path).create(self.io.path(path), True)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()

    # -- what a run remembers (state/), and --previous ------------------------------------

    def options(self, suppressions):
        """The settings a result depends on: an incremental run needs the same."""
        import hashlib

        key, hashes = suppressions
        digest = None
        if hashes:
            digest = hashlib.sha256(key + b"".join(sorted(hashes))).hexdigest()
        return {
            "max_person_size": self.args.max_person_size,
            "max_properties_per_id": self.args.max_properties_per_id,
            "blocked_ids": sorted(set(self.blocked_ids)),
            "suppressions": digest,
        }

    def listing(self, f):
        """(qualified path, size, ends with a newline, check hash of its last bytes)."""
        q = self.io.qualified(f)
        size = self.io.fs(f).getFileStatus(self.io.path(f)).getLen()
        last = read_range(q, max(0, size - CHECKED_BYTES), size)
        return q, size, last[-1:] in (b"", b"\n"), checked_hash(last)

    def previous(self, files, listing, options):
        """--previous DIR: (its run.json, the plan of what to read of each input), or
        (None, why) when this run must read everything again."""
        d = self.args.previous.rstrip("/") or "/"
        fs = self.io.fs(d)
        if not fs.exists(self.io.path(join(d, "summary.json"))):
            raise Bad("--previous %s: not a complete output of this job (no summary.json)" % d)
        if not fs.exists(self.io.path(join(d, "state", "run.json"))):
            raise Bad("--previous %s: no state/run.json (written by an older version of the "
                      "job): run once without --previous" % d)
        run = json.loads(self.io.read_small(join(d, "state", "run.json")).decode("utf-8"))
        if run.get("version") != STATE_VERSION:
            raise Bad("--previous %s: state version %s, this job reads %d"
                      % (d, run.get("version"), STATE_VERSION))

        def full(why):
            self.log("warning: --previous %s: %s; reading all the input again" % (d, why))
            return None, why

        differ = [k for k in options if run["options"].get(k) != options[k]]
        if differ:
            return full("%s differ from that run's" % ", ".join(differ))
        old = run["files"]
        if len(old) > len(files):
            return full("it read %d input files, %d are given now" % (len(old), len(files)))
        plan = []
        for i, (f, fmt) in enumerate(files):
            q, size = listing[i][0], listing[i][1]
            if i >= len(old):
                plan.append((0, 0))
                continue
            o = old[i]
            if (o["path"], o["format"]) != (q, fmt):
                return full("input file %d is %s, that run's was %s (new files must come "
                            "after those read before)" % (i + 1, q, o["path"]))
            if size < o["size"]:
                return full("%s is %d bytes, shorter than the %d bytes read before"
                            % (f, size, o["size"]))
            now = listing[i][3] if size == o["size"] else tail_hash(q, o["size"])
            if now != o["tail"]:
                return full("%s: the bytes read before have changed" % f)
            if size == o["size"]:
                plan.append(None)
            elif not o["newline"]:
                return full("%s: its last line read (line %d) had no newline and has grown "
                            "since" % (f, o["lines"]))
            else:
                plan.append((o["size"], o["lines"]))
        return run, plan

    def read_state(self, name):
        return self.spark.read.parquet(join(self.args.previous, "state", name))

    def carry_table(self, src, dst, column, dropped, touched=None, top=None, output=None):
        """The Parquet files of folder `src` into folder `dst` without the rows whose `column`
        is in `dropped` (those go to folder `touched`, when given); with `output` (folder,
        table), the kept rows as that output table's too: see `carry`. Returns (rows kept,
        (largest `top` kept, its person) or None)."""
        sc = self.spark.sparkContext
        fs = self.io.fs(src)
        files = sorted(st.getPath().toString() for st in fs.listStatus(self.io.path(src))
                       if st.getPath().getName().endswith(".parquet"))
        out_dir, table = output or (None, None)
        for d in (dst, touched, out_dir):
            if d is not None:
                self.io.fs(d).mkdirs(self.io.path(d))
        if not files:
            return 0, None
        to, back, out = (d and self.io.qualified(d) for d in (dst, touched, out_dir))
        items = [(f, join(to, "carried-%05d.parquet" % k),
                  join(back, "part-%05d.parquet" % k) if back else None,
                  join(out, "carried-%05d.parquet" % k) if out else None)
                 for k, f in enumerate(files)]
        drop = sc.broadcast(set(dropped))
        try:
            got = sc.parallelize(items, len(items)).mapPartitions(
                carry(drop, column, top, table)).collect()
        finally:
            drop.unpersist()
        best = [b for _, b in got if b is not None]
        return sum(r for r, _ in got), max(best) if best else None

    # -- the stages, for a full run and for the persons an incremental run touches --------

    def resolve(self, idn, pairs, links):
        """Persons of the IDs `idn` (id, node, anon) linked by `pairs` (a, b: IDs, a != b),
        with `links` (id, links: aliases naming it). Returns (ids: id, node, anon, comp,
        links, person; sizes: person, size; oversized: comp, size, highest_degree_ids or None;
        how many are oversized; rounds)."""
        from pyspark.sql import functions as F
        from pyspark.sql.window import Window

        idn = idn.transform(self.keep)  # three uses below; recomputing it is a shuffle of every op
        edges = (
            pairs.join(idn.select(F.col("id").alias("a"), F.col("node").alias("u")), "a")
            .join(idn.select(F.col("id").alias("b"), F.col("node").alias("v")), "b")
            .select("u", "v")
        )
        labels, rounds = self.components(edges)
        self.log("  components: %d rounds" % rounds)
        comp = idn.join(labels, idn.node == labels.node, "left").select(
            idn.id, idn.node, idn.anon, F.coalesce(labels.comp, idn.node).alias("comp")
        ).join(links, "id", "left").fillna(0, ["links"]).transform(self.keep)
        # A person over the size limit keeps its IDs apart (spark/README.md), and is
        # reported with its best-linked IDs.
        big = comp.groupBy("comp").agg(F.count(F.lit(1)).alias("size")) \
            .where(F.col("size") > self.args.max_person_size).transform(self.keep)
        n_big = big.count()
        oversized = None
        own = F.col("comp")
        if n_big:
            ranked = comp.join(F.broadcast(big), "comp").withColumn("r", F.row_number().over(
                Window.partitionBy("comp").orderBy(F.col("links").desc(), "node")))
            top = ranked.where(F.col("r") <= 10).groupBy("comp", "size").agg(
                F.sort_array(F.collect_list(F.struct("r", "id", "links"))).alias("top"))
            oversized = top.select("comp", "size", F.to_json(F.transform(
                "top", lambda x: F.struct(x["id"].alias("id"), x["links"].alias("links"))
            )).alias("highest_degree_ids"))
            comp = comp.join(F.broadcast(big.select("comp", F.lit(True).alias("over"))),
                             "comp", "left")
            own = F.when(F.col("over"), F.col("node")).otherwise(F.col("comp"))
        comp = comp.select("id", "node", "anon", "comp", "links", own.alias("own"))
        sizes = comp.groupBy("own").agg(
            F.min(F.struct("anon", "node", "id")).alias("c"), F.count(F.lit(1)).alias("size")
        ).select("own", F.col("c.id").alias("person"), "size").transform(self.keep)
        ids = comp.join(sizes.select("own", "person"), "own") \
            .select("id", "node", "anon", "comp", "links", "person").transform(self.keep)
        return ids, sizes.select("person", "size"), oversized, n_big, rounds

    @staticmethod
    def largest(sizes):
        """(persons, (the largest's size, its person)) of `sizes` (person, size), one job."""
        from pyspark.sql import functions as F

        r = sizes.agg(F.count(F.lit(1)).alias("n"),
                      F.max(F.struct("size", "person")).alias("top")).first()
        return r["n"], (r["top"]["size"], r["top"]["person"]) if r["top"] else (0, None)

    @staticmethod
    def events_of(rows, ids):
        """Events (`_p`, a, lname, t, ord, name, frag) of `rows` (a, lname, t, e: struct of
        ord, name, frag): one per ID, lower-cased name and second; the one applied last."""
        from pyspark.sql import functions as F

        return (
            rows.groupBy("a", "lname", "t").agg(F.max("e").alias("e"))
            .join(ids.select(F.col("id").alias("a"), F.col("person").alias("_p")), "a")
            .select("_p", "a", "lname", "t", "e.ord", "e.name", "e.frag")
        )

    @staticmethod
    def props_of(rows, ids):
        """Properties of IDs (person, id, node, lname, first, last) from `rows` (id, lname,
        first: struct of ord, nj; last: struct of t, ord, vj): per ID and lower-cased name, the
        spelling that first brought it and the latest value (time, then input order)."""
        from pyspark.sql import functions as F

        return (
            rows.groupBy("id", "lname").agg(F.min("first").alias("first"),
                                            F.max("last").alias("last"))
            .join(ids.select("id", "person", "node"), "id")
            .select("person", "id", "node", "lname", "first", "last")
        )

    def persons_of(self, props, sizes):
        """Persons (person, ids, properties): an ID keeps its first max_properties_per_id
        names; per person and name, the latest of its IDs' values, spelled as its
        earliest-seen ID holding the name spells it."""
        from pyspark.sql import functions as F
        from pyspark.sql.window import Window

        per_person = (
            props.withColumn("rank", F.row_number().over(
                Window.partitionBy("id").orderBy(F.col("first.ord"))))
            .where(F.col("rank") <= self.args.max_properties_per_id)
            .groupBy("person", "lname").agg(
                F.min(F.struct("node", F.col("first.nj").alias("nj"))).alias("sp"),
                F.max(F.struct(F.col("last.t").alias("t"), F.col("last.ord").alias("ord"),
                               F.col("last.vj").alias("vj"))).alias("v"),
            )
            .select("person", "lname",
                    F.concat(F.col("sp.nj"), F.lit(":"), F.col("v.vj")).alias("entry"))
            .groupBy("person").agg(
                F.sort_array(F.collect_list(F.struct("lname", "entry"))).alias("es"))
        )
        return sizes.select("person", F.col("size").alias("ids")) \
            .join(per_person, "person", "left").select(
                "person", "ids",
                F.concat(F.lit("{"), F.concat_ws(",", F.transform(
                    F.coalesce(F.col("es"), F.array()), lambda x: x["entry"])), F.lit("}"))
                .alias("properties"))

    # -- the whole job --------------------------------------------------------------------

    def _run(self, tmp):
        from pyspark.sql import functions as F

        args, spark = self.args, self.spark
        fmt = args.format
        warnings = []
        files = self.io.expand(args.inputs, warnings.append)
        for w in warnings:
            self.log("warning: " + w)
        self.log("%d input files" % len(files))
        listing = [self.listing(f) for f, _ in files]
        suppressions = load_suppressions(args.suppressions) if args.suppressions \
            else (None, set())
        options = self.options(suppressions)
        prev, plan, why_full = None, [(0, 0)] * len(files), None
        if args.previous and args.no_state:
            raise Bad("--no-state and --previous: an incremental run writes the state the next "
                      "one reads")
        if args.previous:
            prev, got = self.previous(files, listing, options)
            if prev is None:
                why_full = got
            else:
                plan = got

        t0 = time.time()
        # The bytes this run reads: new files whole, a grown JSON file from where the earlier
        # run stopped, a grown CSV file whole.
        self.leaves = sum(
            0 if p is None else size - (p[0] if kind == "json" else 0)
            for p, (_, kind), (_, size, _, _) in zip(plan, files, listing)) <= LEAF_MAX_BYTES
        ops, counted = self.read_ops(files, listing, plan)
        n_suppressed = 0
        dropped = suppressed_ops(suppressions)
        # Kept once: the suppressed ops are a filter on the kept table, not a second copy.
        ops = ops.transform(self.keep)
        if dropped is not None:
            n_suppressed = ops.where(dropped).count()
            ops = ops.where(~dropped)
        sources = spark.createDataFrame(
            [(i, f) for i, (f, _) in enumerate(files)], "file int, source string"
        )
        first_op = (F.col("ord").bitwiseAND(6) == 0) | (F.col("kind") == "error")
        counts = {
            r["kind"]: (r["ops"], r["lines"])
            for r in ops.groupBy("kind").agg(
                F.count(F.lit(1)).alias("ops"),
                F.sum(first_op.cast("long")).alias("lines"),
            ).collect()
        }
        n_lines = sum(n for k, (_, n) in counts.items() if k != "stop")
        n_errors = counts.get("error", (0, 0))[0]
        op_counts = {k: v[0] for k, v in counts.items() if k not in ("error", "stop")}
        errors = ops.where(F.col("kind") == "error")
        # The first bad line in input order stops the job, as it stops `idgraph import`; with
        # --skip-invalid only where the importer stops too (a CSV file's bad header or a
        # record past the limit).
        stopping = ["stop"] if args.skip_invalid else ["stop", "error"]
        if any(k in counts for k in stopping):
            first = ops.where(F.col("kind").isin(stopping)).orderBy("file", "line").first()
            raise Bad("%s:%d: %s; nothing was written%s"
                      % (files[first["file"]][0], first["line"], first["reason"],
                         "" if first["kind"] == "stop"
                         else " (--skip-invalid skips bad lines)"))
        self.stage("read and check", t0)

        t0 = time.time()
        rejects = errors.join(F.broadcast(sources), "file").select("source", "line", "reason")
        if prev is not None and prev["counts"]["lines_skipped"]:
            rejects = self.read_state("rejects").unionByName(rejects)
        if n_errors or (prev is not None and prev["counts"]["lines_skipped"]):
            self.write(rejects, join(tmp, "rejects"), fmt)
            self.save(rejects, tmp, "rejects")
        good = ops.where(F.col("kind") != "error")
        alias = good.where(F.col("kind") == "alias")
        kept = alias.where(F.col("blocked").isNull())
        # The refusal log: one entry per pair of IDs (either order), the last refusal's.
        refused = alias.where(F.col("blocked").isNotNull()).groupBy(
            F.least("a", "b").alias("x"), F.greatest("a", "b").alias("y")
        ).agg(F.max(F.struct("ord", "a", "b", "t", "blocked", "file", "line")).alias("r"),
              F.count(F.lit(1)).alias("times"))
        if prev is not None:
            refused = refused.unionByName(self.read_state("refused")).groupBy("x", "y").agg(
                F.max("r").alias("r"), F.sum("times").alias("times"))
        refused = refused.transform(self.keep)
        n_refused = refused.count()
        self.save(refused, tmp, "refused")
        why = F.concat(
            F.to_json(F.array("blocked")).substr(F.lit(2), F.length(F.to_json(
                F.array("blocked"))) - 2),
            F.lit(" is a blocked ID (it would squish unrelated people into one)"))
        self.write(
            refused.select("r.*", "times").join(F.broadcast(sources), "file")
            .select("a", "b", F.col("t").alias("at"), F.lit("import").alias("cause"),
                    F.lit("blocked_id").alias("reason"), why.alias("why"),
                    F.concat_ws(":", "source", F.col("line").cast("string")).alias("source"),
                    "times"),
            join(tmp, "refused"), fmt)

        # What this run's ops bring. Every ID an accepted op names, at the place the store
        # first sees it (its node, which decides the canonical ID); the links between IDs;
        # events; property values.
        occ = (
            kept.select(F.col("a").alias("id"), F.col("ord").alias("occ"))
            .unionAll(kept.select(F.col("b").alias("id"), (F.col("ord") + 1).alias("occ")))
            .unionAll(good.where(F.col("kind") != "alias")
                      .select(F.col("a").alias("id"), F.col("ord").alias("occ")))
        )
        pairs = kept.where(F.col("a") != F.col("b")).select("a", "b")
        links = pairs.select(F.col("a").alias("id")).unionAll(
            pairs.select(F.col("b").alias("id"))
        ).groupBy("id").agg(F.count(F.lit(1)).alias("links"))
        records = good.where(F.col("kind") == "record").select(
            "a", "lname", "t", F.struct("ord", "name", "frag").alias("e"))
        values = (
            good.where(F.col("kind") != "alias")
            .select(F.col("a").alias("id"), "t", "ord", F.explode("props").alias("p"))
            .select("id", F.col("p.lname").alias("lname"),
                    F.struct("ord", F.col("p.nj").alias("nj")).alias("first"),
                    F.struct("t", "ord", F.col("p.vj").alias("vj")).alias("last"))
        )
        node_of = F.min("occ").alias("node")
        anon = F.col("id").rlike(ANON_RE)
        if prev is None:
            idn = occ.groupBy("id").agg(node_of).withColumn("anon", anon)
            ids, sizes, oversized, n_big, rounds = self.resolve(idn, pairs, links)
            n_ids = ids.count()
            self.stage("IDs and persons", t0)
            t0 = time.time()
            events = self.events_of(records, ids).transform(self.keep)
            n_events = events.count()
            props = self.props_of(values, ids).transform(self.keep)
            persons = self.persons_of(props, sizes)
            n_persons, largest = self.largest(sizes)
            touched = None
        else:
            # Incremental: only the persons this run's IDs belong to are computed again, from
            # what state/ keeps of them and this run's ops. The rows of every other person are
            # carried over file by file (`carry`), which also sets the touched persons' rows
            # apart in tmp/touched/.
            state, was_dir = join(tmp, "state"), join(tmp, "touched")
            # Parquet outputs are carried in the same pass as the state tables they show.
            carried = fmt == "parquet"
            output_of = (lambda name: (join(tmp, name), name)) if carried else (lambda _: None)
            prev_dir = join(args.previous, "state")
            named = occ.select("id").distinct()
            comps = [r[0] for r in self.read_state("ids").join(F.broadcast(named), "id",
                                                               "left_semi")
                     .select("comp").distinct().collect()]
            kept_ids, _ = self.carry_table(join(prev_dir, "ids"), join(state, "ids"), "comp",
                                           comps, join(was_dir, "ids"),
                                           output=output_of("mapping"))
            was = spark.read.parquet(join(was_dir, "ids")).transform(self.keep)
            gone = [r[0] for r in was.select("person").distinct().collect()]
            # The touched IDs: their old nodes with this run's places (a line appended to an
            # earlier file comes first), old persons as stars (each ID to its component's
            # first), their old links plus this run's.
            idn = was.select("id", F.col("node").alias("occ")).unionAll(occ) \
                .groupBy("id").agg(node_of).withColumn("anon", anon)
            roots = was.where(F.col("node") == F.col("comp")).select("comp", F.col("id").alias("b"))
            stars = was.join(roots, "comp").where(F.col("id") != F.col("b")) \
                .select(F.col("id").alias("a"), "b")
            links = was.select("id", "links").unionAll(links).groupBy("id") \
                .agg(F.sum("links").alias("links"))
            ids, sizes, oversized, n_big, rounds = self.resolve(idn, pairs.unionAll(stars),
                                                                links)
            n_ids = kept_ids + ids.count()
            if prev["counts"]["oversized_persons"]:
                old_over = self.read_state("oversized").where(~F.col("comp").isin(comps)) \
                    .transform(self.keep)
                n_big += old_over.count()
                oversized = old_over if oversized is None else old_over.unionByName(oversized)
            self.stage("IDs and persons", t0)
            t0 = time.time()
            kept_events, _ = self.carry_table(join(prev_dir, "events"), join(state, "events"),
                                              "_p", gone, join(was_dir, "events"),
                                              output=output_of("events"))
            events = self.events_of(spark.read.parquet(join(was_dir, "events")).select(
                "a", "lname", "t", F.struct("ord", "name", "frag").alias("e")
            ).unionByName(records), ids).transform(self.keep)
            n_events = kept_events + events.count()
            self.carry_table(join(prev_dir, "props"), join(state, "props"), "person", gone,
                             join(was_dir, "props"))
            props = self.props_of(spark.read.parquet(join(was_dir, "props")).select(
                "id", "lname", "first", "last").unionByName(values), ids).transform(self.keep)
            persons = self.persons_of(props, sizes).transform(self.keep)
            kept_persons, best = self.carry_table(join(prev_dir, "persons"),
                                                  join(state, "persons"), "person", gone,
                                                  top="ids", output=output_of("persons"))
            n_touched, top = self.largest(sizes)
            n_persons = kept_persons + n_touched
            largest = max([top] + ([best] if best else []))
            touched = {"ids": n_ids - kept_ids, "persons_before": len(gone),
                       "persons_after": n_touched}
            self.write_all(tmp, fmt, ids, events, props, persons, oversized, carried)
            self.io.fs(was_dir).delete(self.io.path(was_dir), True)
            self.stage("events, properties and writing", t0)

        if prev is None:
            self.write_all(tmp, fmt, ids, events, props, persons, oversized)
            self.stage("events, properties and writing", t0)
        was_read = prev["counts"] if prev is not None else None
        if was_read:
            n_lines += was_read["lines_read"]
            n_errors += was_read["lines_skipped"]
            n_suppressed += was_read["suppressed_ops"]
            for k, v in was_read["ops"].items():
                op_counts[k] = op_counts.get(k, 0) + v
        summary = {
            "inputs": [f for f, _ in files],
            "lines_read": n_lines,
            "lines_skipped": n_errors,
            "ops": dict(sorted(op_counts.items())),
            "ids": n_ids,
            "persons": n_persons,
            "largest_person": largest[0],
            "refused_merges": n_refused,
            "suppressed_ops": n_suppressed,
            "oversized_persons": n_big,
            "events": n_events,
            "rounds": rounds,
            "shuffle_bytes_per_round": self.round_shuffle,
            "stage_seconds": self.stages,
        }
        if args.previous:
            summary["previous"] = args.previous
            if why_full:
                summary["full_run_because"] = why_full
            else:
                summary["incremental"] = dict(
                    touched,
                    files_new=sum(1 for i, p in enumerate(plan) if p == (0, 0)),
                    files_grown=sum(1 for p in plan if p not in (None, (0, 0))),
                    files_unchanged=sum(1 for p in plan if p is None),
                    bytes_not_read=sum(p[0] for p in plan if p not in (None, (0, 0))) + sum(
                        listing[i][1] for i, p in enumerate(plan) if p is None),
                )
        old_files = prev["files"] if prev is not None else []
        state = {
            "version": STATE_VERSION,
            "options": options,
            "files": [{
                "path": q, "format": fmt_i, "size": size, "newline": nl, "tail": tail,
                "lines": counted.get(i, old_files[i]["lines"] if i < len(old_files) else 0),
            } for i, ((_, fmt_i), (q, size, nl, tail)) in enumerate(zip(files, listing))],
            "counts": {
                "lines_read": n_lines, "lines_skipped": n_errors, "ops": op_counts,
                "suppressed_ops": n_suppressed, "ids": n_ids, "persons": n_persons,
                "largest_person": largest[0], "largest_person_id": largest[1],
                "events": n_events, "oversized_persons": n_big, "refused_merges": n_refused,
            },
        }
        if not args.no_state:
            self.write_text(join(tmp, "state", "run.json"), json.dumps(state, indent=1) + "\n")
        return summary

    # -- writing --------------------------------------------------------------------------

    def save(self, df, tmp, name, mode=None):
        """A table of state/ (unless --no-state); `mode="append"` next to carried files."""
        if not self.args.no_state:
            df.write.mode(mode or "errorifexists").parquet(join(tmp, "state", name))

    def write_all(self, tmp, fmt, ids, events, props, persons, oversized, carried=None):
        """The tables of a run: state/, and the outputs in `fmt`. `carried`: None for a full
        run; for an incremental one, whether the outputs' other rows were carried over (then
        these rows are added to them) or not (then the outputs are written whole from the
        new state, which holds the carried rows)."""
        from pyspark.sql import functions as F

        mode = None if carried is None else "append"
        for df, name in ((ids, "ids"), (events, "events"), (props, "props"),
                         (persons, "persons")):
            self.save(df, tmp, name, mode)
        if carried is False:
            ids, events, persons = (self.spark.read.parquet(join(tmp, "state", name))
                                    for name in ("ids", "events", "persons"))
            mode = None
        self.write(ids.select("id", "person"), join(tmp, "mapping"), fmt, mode=mode)
        self.write_events(events.select("_p", F.col("a").alias("_p_original"),
                                        F.col("name").alias("_n"), F.col("t").alias("_t"),
                                        "frag"), join(tmp, "events"), fmt, mode=mode)
        self.write(persons, join(tmp, "persons"), fmt, json_cols=["properties"], mode=mode)
        if oversized is not None:
            self.write(oversized.select("size", "highest_degree_ids"), join(tmp, "oversized"),
                       fmt, json_cols=["highest_degree_ids"])
            self.save(oversized, tmp, "oversized")

    def write(self, df, path, fmt, json_cols=(), mode=None):
        """Writes `df` in `fmt`; `json_cols` hold JSON text, which JSON lines embed as JSON
        (Parquet and CSV keep it as text). `mode="append"` adds Parquet files to a folder."""
        from pyspark.sql import functions as F

        if fmt == "parquet":
            df.write.mode(mode or "errorifexists").parquet(path)
        elif fmt == "csv":
            df.write.option("header", True).option("escape", "\"").csv(path)
        else:
            plain = F.to_json(F.struct(*[c for c in df.columns if c not in json_cols]))
            line = F.concat(
                plain.substr(F.lit(1), F.length(plain) - 1),
                *[F.concat(F.lit(',"%s":' % c), F.col(c)) for c in json_cols],
                F.lit("}"),
            )
            self.write_lines(df.select(line.alias("value")), path)

    def write_lines(self, df, path):
        """JSON lines as `part-*.json` files (`idgraph import` reads them back)."""
        df.write.text(path)
        fs = self.io.fs(path)
        for st in fs.listStatus(self.io.path(path)):
            name = st.getPath().getName()
            if name.startswith("part-") and name.endswith(".txt"):
                fs.rename(st.getPath(), self.io.path(join(path, name[:-4] + ".json")))

    def write_events(self, ev, path, fmt, mode=None):
        """Events as `idgraph export events --format km-json` writes them (JSON lines), or
        with the properties as one JSON column (Parquet, CSV)."""
        from pyspark.sql import functions as F

        frag = F.coalesce(F.col("frag"), F.lit(""))
        if fmt == "jsonl":
            head = F.to_json(F.struct("_p", "_p_original", "_n", "_t"))
            line = F.concat(head.substr(F.lit(1), F.length(head) - 1), frag, F.lit("}"))
            self.write_lines(ev.select(line.alias("value")), path)
            return
        props = F.concat(F.lit("{"), frag.substr(F.lit(2), F.length(frag)), F.lit("}"))
        out = ev.select("_p", "_p_original", "_n", "_t", props.alias("properties"))
        if fmt == "parquet":
            out.write.mode(mode or "errorifexists").parquet(path)
        else:
            out.write.option("header", True).option("escape", "\"").csv(path)


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="idgraph_spark.py",
        description="The identity graph of `idgraph import`, computed on Apache Spark.",
    )
    ap.add_argument("inputs", nargs="+", metavar="INPUT",
                    help="files or export directories (any path Spark reads)")
    ap.add_argument("--output", required=True, metavar="DIR",
                    help="where the results go (mapping/, events/, ... must not exist yet)")
    ap.add_argument("--format", choices=["parquet", "jsonl", "csv"], default="parquet")
    ap.add_argument("--skip-invalid", action="store_true",
                    help="skip bad lines (counted, written to rejects/) instead of stopping")
    ap.add_argument("--master", help="Spark master URL (default: local[*], or spark-submit's)")
    ap.add_argument("--max-person-size", type=int, default=MAX_PERSON_SIZE,
                    help="persons with more IDs keep their IDs apart (default %(default)s)")
    ap.add_argument("--max-properties-per-id", type=int, default=MAX_PROPERTIES_PER_ID,
                    help="property names one ID keeps (default %(default)s)")
    ap.add_argument("--blocked-id", action="append", metavar="ID",
                    help="another value refused as an alias endpoint (repeatable)")
    ap.add_argument("--checkpoint-dir", help="where rounds are checkpointed "
                    "(default: a temporary folder in --output)")
    ap.add_argument("--suppressions", metavar="FILE",
                    help="the output of `idgraph export suppressions`: ops naming a forgotten "
                    "ID are dropped, so a rebuild from raw history brings no one back")
    ap.add_argument("--previous", metavar="DIR",
                    help="a complete earlier output of this job over the same inputs (which "
                         "have since gained files, and lines at the end of files): only the "
                         "new lines are read, only the persons they touch computed again")
    ap.add_argument("--no-state", action="store_true",
                    help="write no state/ (a one-off run, faster; its output cannot be a "
                         "later run's --previous)")
    ap.add_argument("--local-max-edges", type=int, default=LOCAL_MAX_EDGES, metavar="N",
                    help="an edge set of at most N links is solved whole by one task, without "
                         "rounds (default %(default)s: 2.5 GB peak for the task's Python "
                         "worker; 0: always rounds)")
    ap.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                    help="a Spark setting (repeatable)")
    return ap.parse_args(argv)


# Session settings the job runs with unless given (--conf, or spark-submit's): adaptive execution
# merges small shuffle partitions up to its advisory size (64 MiB) instead of keeping one per
# core, so the few touched persons of an incremental run, or a small run's tables, are a task or
# two rather than spark.sql.shuffle.partitions tasks of almost nothing. Measured (BENCHMARKS.md,
# "Spark", "Outputs carried with their state"): 10M + 1% incremental 89.5 / 73.1 s -> 74.2 /
# 69.4 s, 1M full 75.2 / 66.3 s -> 70.2 / 63.1 s; a large run's partitions are past 64 MiB anyway.
SESSION_DEFAULTS = {"spark.sql.adaptive.coalescePartitions.parallelismFirst": "false"}


def session(args):
    from pyspark.sql import SparkSession

    b = SparkSession.builder.appName("idgraph")
    if args.master:
        b = b.master(args.master)
    elif "PYSPARK_GATEWAY_PORT" not in os.environ and not any(
        kv.startswith("spark.master=") for kv in args.conf
    ):
        # Not under spark-submit (whose JVM starts this process and sets the master).
        b = b.master("local[*]")
    b = b.config("spark.ui.showConsoleProgress", "false")
    for kv in args.conf:
        k, _, v = kv.partition("=")
        b = b.config(k, v)
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    given = spark.sparkContext.getConf()
    for k, v in SESSION_DEFAULTS.items():
        if not given.contains(k):
            spark.conf.set(k, v)
    return spark


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    spark = session(args)
    try:
        summary = Job(spark, args).run()
    except Bad as e:
        print("idgraph_spark: %s" % e, file=sys.stderr)
        return 2
    finally:
        spark.stop()
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
