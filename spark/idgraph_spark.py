#!/usr/bin/env python3
"""idgraph on Apache Spark: the identity graph of `idgraph import`, computed on a cluster.

    python3 spark/idgraph_spark.py INPUT... --output DIR [--format parquet|jsonl|csv]
                                   [--skip-invalid] [--master URL]
    spark-submit spark/idgraph_spark.py INPUT... --output DIR ...

Reads what `idgraph import` reads (KISSmetrics JSON lines and CSV; a directory is an export
bucket: the files its index.csv lists, else revisions/N.json in numeric order, then the other
*.json and *.csv files by name), applies the store's rules (spark/README.md says which, and where
the job differs), and writes DIR/mapping, DIR/events, DIR/persons, DIR/refused, DIR/oversized,
DIR/rejects (with --skip-invalid) and DIR/summary.json.

JSON lines are parsed in the executors by the store's own code: `idgraph.parse_lines`, from
the Python package built from this crate (python/; spark/README.md says how to ship it), over
Arrow batches (`mapInArrow`). CSV files are still parsed by a Python port of the importer's CSV
rules. Everything after parsing is DataFrame operations: connected components by alternating
large-star and small-star (Kiveris et al., 2014), checkpointed every round.
"""

import argparse
import csv
import io
import json
import os
import re
import sys
import time
import uuid
from urllib.parse import unquote

# ---------------------------------------------------------------------------------------------
# The store's rules. Keep in step with src/id.rs, src/op.rs, src/ingest/km_json.rs,
# src/ingest/csv.rs, src/ingest/files.rs and src/store/config.rs.

MAX_ID_CHARS = 255
MAX_NAME_CHARS = 255
MAX_PROPERTIES = 256
MAX_VALUE_BYTES = 8192
MAX_PROPERTIES_PER_ID = 1024
MAX_PERSON_SIZE = 10_000
MAX_SECONDS = 9_999_999_999
MAX_LINE_BYTES = 4 << 20
MAX_CSV_PROPS = 10
I64_MIN, I64_MAX = -(1 << 63), (1 << 63) - 1
DEFAULT_BLOCKED_IDS = [
    "", "null", "nil", "undefined", "anonymous", "guest", "0", "-1", "none",
    "[object object]", "nan", "true", "false", "unknown",
]
# Rust's char::is_control: the Unicode category Cc.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
DIGITS = re.compile(r"[+-]?[0-9]+\Z")
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


def check_id(s, field):
    rule = None
    if s == "":
        rule = "an ID must not be empty"
    elif len(s) > MAX_ID_CHARS:
        rule = "an ID must be at most 255 characters long"
    elif CONTROL.search(s):
        rule = "an ID must not contain control characters (tab, newline, NUL, ...)"
    if rule:
        raise Bad("%s: invalid ID %s: %s" % (field, shown(s), rule))
    return s


def check_name(what, s):
    rule = None
    if s == "":
        rule = "a name must not be empty"
    elif len(s) > MAX_NAME_CHARS:
        rule = "a name must be at most 255 characters long"
    elif CONTROL.search(s):
        rule = "a name must not contain control characters"
    if rule:
        raise Bad("invalid %s %s: %s" % (what, shown(s), rule))


def check_property_name(s):
    check_name("property name", s)
    if s.startswith("_"):
        raise Bad(
            "invalid property name %s: a name starting with _ is reserved for KISSmetrics "
            "parameters (_p, _n, _t, ...)" % shown(s)
        )


def limit(what, found, mx, name):
    return Bad("%d %s, more than the limit of %d (%s)" % (found, what, mx, name))


def blocked_key(s):
    """src/id.rs `blocked_key`: surrounding quotes removed (repeatedly), lower-cased."""
    t = s.strip()
    while len(t) >= 2 and t[0] in "\"'`" and t[-1] == t[0]:
        t = t[1:-1].strip()
    return t.lower()


def check_time(t):
    if t < 0:
        raise Bad("_t %d is before 1970" % t)
    if t > MAX_SECONDS:
        raise Bad("_t %d is too large for seconds (milliseconds? divide by 1000)" % t)
    return t


def timestamp(v):
    s = v.strip()
    if not DIGITS.match(s) or not I64_MIN <= int(s) <= I64_MAX:
        raise Bad("_t %s is not a whole number of seconds" % json.dumps(v, ensure_ascii=False))
    return check_time(int(s))


class Props:
    """src/op.rs `Properties::from_pairs`: names checked, case-insensitive, a later value
    replaces an earlier one and keeps the first spelling."""

    def __init__(self):
        self.items = []  # [name, lname, value]
        self.index = {}

    def add(self, name, value):
        check_property_name(name)
        lname = name.lower()
        i = self.index.get(lname)
        if i is None:
            self.index[lname] = len(self.items)
            self.items.append([name, lname, value])
        else:
            self.items[i][2] = value

    def validate(self):
        if len(self.items) > MAX_PROPERTIES:
            raise limit("properties in one op", len(self.items), MAX_PROPERTIES, "max_properties")
        for name, _, value in self.items:
            check_property_name(name)
            if isinstance(value, str):
                n = len(value.encode("utf-8"))
                if n > MAX_VALUE_BYTES:
                    raise limit(
                        "bytes in the value of a property", n, MAX_VALUE_BYTES, "max_value_bytes"
                    )


def csv_columns(header):
    """src/ingest/csv.rs `columns`."""
    cols = {"props": []}
    for i, h in enumerate(header):
        h = h.strip()
        low = h.lower()
        key = {
            "identity": "identity",
            "timestamp": "timestamp",
            "event": "event",
            "alias": "alias",
            "prop:_p_original": "original",
        }.get(low)
        if key is None:
            if low.startswith("prop:") and len(h) > 5:
                cols["props"].append((i, h[5:]))
                continue
            raise Bad(
                "unknown column %s (expected Identity, Timestamp, Event, Alias, Prop:<name>)"
                % shown(h)
            )
        if key in cols:
            raise Bad("column %s appears twice" % shown(h))
        cols[key] = i
    if len(cols["props"]) > MAX_CSV_PROPS:
        raise Bad("%d Prop: columns; at most 10" % len(cols["props"]))
    if "identity" not in cols:
        raise Bad("no Identity column")
    return cols


def parse_csv_row(cols, row, now):
    """src/ingest/csv.rs `parse_row`."""

    def cell(key):
        i = cols.get(key)
        return row[i] if i is not None and i < len(row) else ""

    ident = check_id(cell("identity"), "Identity")
    ts = cell("timestamp")
    at = None
    if ts.strip():
        try:
            at = timestamp(ts)
        except Bad as e:
            raise Bad(str(e).replace("_t", "Timestamp"))
    props = Props()
    for i, name in cols["props"]:
        v = row[i] if i < len(row) else ""
        if v != "":
            props.add(name, v)
    event, alias, original = cell("event"), cell("alias"), cell("original")
    ops = []
    if original != "" and original != ident:
        check_id(original, "Prop:_p_original")
        ops.append(("alias", ident, original, at if at is not None else now, None, None))
        ident = original
    if alias != "":
        check_id(alias, "Alias")
        ops.append(("alias", ident, alias, at if at is not None else now, None, None))
    if event != "" or props.items:
        if at is None:
            raise Bad("Timestamp is required for an event or properties")
        if event != "":
            check_name("event name", event)
        props.validate()
        ops.append(("record" if event != "" else "set", ident, None, at, event or None, props.items))
    if not ops:
        raise Bad("nothing to do: no Event, Alias or Prop: value")
    return ops


def op_rows(file_idx, line, ops, blocked):
    """The rows of one line's ops (see `op_schema`)."""
    out = []
    for k, (kind, a, b, t, name, props) in enumerate(ops):
        order = (file_idx << FILE_SHIFT) | (line << LINE_SHIFT) | (k << 1)
        plist = frag = refused = None
        if props is not None:
            plist = [
                (pn, pl, json.dumps(pn, ensure_ascii=False), json.dumps(pv, ensure_ascii=False))
                for pn, pl, pv in props
            ]
            frag = "".join(",%s:%s" % (x[2], x[3]) for x in plist)
        if kind == "alias" and a != b:
            # src/store/plan.rs: a blocked endpoint (a, then b) refuses the alias.
            refused = next((x for x in (a, b) if blocked_key(x) in blocked), None)
        out.append((file_idx, line, order, kind, a, b, t, name,
                    name.lower() if name is not None else None, plist, frag, refused, None))
    return out


def error_row(file_idx, line, reason):
    return (file_idx, line, (file_idx << FILE_SHIFT) | (line << LINE_SHIFT), "error",
            None, None, None, None, None, None, None, None, reason)


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


def error_batch(bad):
    """`parse_lines`' rejected lines as `op_schema` error rows."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = bad.num_rows
    file = pc.cast(bad.column("file"), pa.int32())
    text = pa.nulls(n, pa.string())
    return pa.record_batch(
        [file, bad.column("line"), order_key(file, bad.column("line")),
         pa.array(["error"] * n, pa.string()), text, text, pa.nulls(n, pa.int64()), text, text,
         pa.nulls(n, op_props_type()), text, text, bad.column("reason")],
        names=OP_COLUMNS)


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


OP_COLUMNS = ["file", "line", "ord", "kind", "a", "b", "t", "name", "lname", "props", "frag",
              "blocked", "reason"]


def op_props_type():
    import pyarrow as pa

    return pa.list_(pa.struct([("name", pa.string()), ("lname", pa.string()),
                               ("nj", pa.string()), ("vj", pa.string())]))


def parse_csv_file(file_idx, data, now, blocked):
    """One CSV file, whole (a quoted field may span lines): its op and error rows, each with
    the line its record starts on."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        yield error_row(file_idx, 1, "not UTF-8 (%s)" % e)
        return
    rdr = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1
    header = cols = None
    while True:
        try:
            row = next(rdr)
        except StopIteration:
            break
        except csv.Error as e:
            yield error_row(file_idx, start, str(e))
            start = rdr.line_num + 1
            continue
        line, start = start, rdr.line_num + 1
        if header is None:
            header = row
            try:
                cols = csv_columns(row)
            except Bad as e:
                yield error_row(file_idx, 1, str(e))
                return
            continue
        if not row:
            continue
        if sum(len(c) for c in row) > MAX_LINE_BYTES:
            yield error_row(file_idx, line, "a record of more than %d bytes (max_line_bytes)"
                            % MAX_LINE_BYTES)
            continue
        if len(row) != len(header):
            yield error_row(file_idx, line, "the row has %d fields, the header %d"
                            % (len(row), len(header)))
            continue
        try:
            ops = parse_csv_row(cols, row, now)
        except Bad as e:
            yield error_row(file_idx, line, str(e))
            continue
        yield from op_rows(file_idx, line, ops, blocked)


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

    OUTPUTS = ("mapping", "events", "persons", "refused", "oversized", "rejects")

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
        self.blocked = frozenset(blocked_key(b) for b in self.blocked_ids)

    def stage(self, name, t0):
        self.stages[name] = round(time.time() - t0, 3)
        self.log("  %s: %.1f s" % (name, self.stages[name]))

    # -- reading --------------------------------------------------------------------------

    def read_ops(self, files):
        """One DataFrame of op and error rows (`op_schema`) over every input file."""
        from pyspark.sql import functions as F

        spark = self.spark
        schema = op_schema()
        blocked = self.blocked
        parts = []
        json_files = [(i, f) for i, (f, fmt) in enumerate(files) if fmt == "json"]
        csv_files = [(i, f) for i, (f, fmt) in enumerate(files) if fmt == "csv"]
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
            offsets = spark.createDataFrame(
                rows, "path string, block long, first long, before long, file int"
            )
            lines = df.join(F.broadcast(offsets), ["path", "block"]).select(
                "file", (F.col("mono") - F.col("first") + F.col("before") + 1).alias("line"),
                "raw",
            )
            parts.append(lines.mapInArrow(json_ops(self.blocked_ids), schema))
        if csv_files:
            now = int(time.time())
            index = {unquote(self.io.qualified(f)): i for i, f in csv_files}
            whole = spark.sparkContext.binaryFiles(",".join(f for _, f in csv_files))

            def parse_csv(kv):
                path, data = kv
                return parse_csv_file(index[unquote(path)], data, now, blocked)

            parts.append(spark.createDataFrame(whole.flatMap(parse_csv), schema,
                                               verifySchema=False))
        out = parts[0]
        for p in parts[1:]:
            out = out.unionByName(p)
        return out

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
            fs.delete(self.io.path(tmp), True)

    def write_text(self, path, text):
        stream = self.io.fs(path).create(self.io.path(path), True)
        try:
            stream.write(bytearray(text.encode("utf-8")))
        finally:
            stream.close()

    def _run(self, tmp):
        from pyspark import StorageLevel
        from pyspark.sql import functions as F
        from pyspark.sql.window import Window

        args, spark = self.args, self.spark
        keep = StorageLevel.MEMORY_AND_DISK
        fmt = args.format
        warnings = []
        files = self.io.expand(args.inputs, warnings.append)
        for w in warnings:
            self.log("warning: " + w)
        self.log("%d input files" % len(files))

        t0 = time.time()
        ops = self.read_ops(files)
        n_suppressed = 0
        if args.suppressions:
            dropped = suppressed_ops(load_suppressions(args.suppressions))
            if dropped is not None:
                ops = ops.persist(keep)
                n_suppressed = ops.where(dropped).count()
                ops = ops.where(~dropped)
        ops = ops.persist(keep)
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
        n_lines = sum(n for _, n in counts.values())
        n_errors = counts.get("error", (0, 0))[0]
        errors = ops.where(F.col("kind") == "error")
        if n_errors and not args.skip_invalid:
            first = errors.orderBy("file", "line").first()
            raise Bad("%s:%d: %s; nothing was written (--skip-invalid skips bad lines)"
                      % (files[first["file"]][0], first["line"], first["reason"]))
        self.stage("read and check", t0)

        t0 = time.time()
        if n_errors:
            self.write(errors.join(F.broadcast(sources), "file")
                       .select("source", "line", "reason"), join(tmp, "rejects"), fmt)
        good = ops.where(F.col("kind") != "error")
        alias = good.where(F.col("kind") == "alias")
        refused = alias.where(F.col("blocked").isNotNull())
        kept = alias.where(F.col("blocked").isNull())
        # The refusal log: one entry per pair of IDs (either order), the last refusal's.
        why = F.concat(
            F.to_json(F.array("blocked")).substr(F.lit(2), F.length(F.to_json(
                F.array("blocked"))) - 2),
            F.lit(" is a blocked ID (it would squish unrelated people into one)"))
        refused = (
            refused.groupBy(F.least("a", "b").alias("x"), F.greatest("a", "b").alias("y"))
            .agg(F.max(F.struct("ord", "a", "b", "t", "blocked", "file", "line")).alias("r"),
                 F.count(F.lit(1)).alias("times"))
            .select("r.*", "times")
            .join(F.broadcast(sources), "file")
            .select("a", "b", F.col("t").alias("at"), F.lit("import").alias("cause"),
                    F.lit("blocked_id").alias("reason"), why.alias("why"),
                    F.concat_ws(":", "source", F.col("line").cast("string")).alias("source"),
                    "times")
            .persist(keep)
        )
        self.write(refused, join(tmp, "refused"), fmt)
        n_refused = refused.count()

        # Every ID an accepted op names, at the place the store first sees it: its node.
        # The node order decides the canonical ID.
        occ = (
            kept.select(F.col("a").alias("id"), F.col("ord").alias("occ"))
            .unionAll(kept.select(F.col("b").alias("id"), (F.col("ord") + 1).alias("occ")))
            .unionAll(good.where(F.col("kind") != "alias")
                      .select(F.col("a").alias("id"), F.col("ord").alias("occ")))
        )
        ids = occ.groupBy("id").agg(F.min("occ").alias("node")) \
            .withColumn("anon", F.col("id").rlike(ANON_RE)).persist(keep)
        n_ids = ids.count()
        self.stage("IDs", t0)

        t0 = time.time()
        edges = (
            kept.where(F.col("a") != F.col("b")).select("a", "b")
            .join(ids.select(F.col("id").alias("a"), F.col("node").alias("u")), "a")
            .join(ids.select(F.col("id").alias("b"), F.col("node").alias("v")), "b")
            .select("u", "v").persist(keep)
        )
        labels, rounds = self.components(edges)
        self.log("  components: %d rounds" % rounds)
        comp = ids.join(labels, ids.node == labels.node, "left").select(
            ids.id, ids.node, ids.anon, F.coalesce(labels.comp, ids.node).alias("comp")
        ).persist(keep)
        # A person over the size limit keeps its IDs apart (spark/README.md), and is
        # reported with its best-linked IDs.
        big = comp.groupBy("comp").agg(F.count(F.lit(1)).alias("size")) \
            .where(F.col("size") > args.max_person_size).persist(keep)
        n_big = big.count()
        if n_big:
            degree = edges.select(F.col("u").alias("node")).unionAll(
                edges.select(F.col("v").alias("node"))
            ).groupBy("node").agg(F.count(F.lit(1)).alias("links"))
            ranked = comp.join(F.broadcast(big), "comp").join(degree, "node", "left") \
                .fillna(0, ["links"]).withColumn("r", F.row_number().over(
                    Window.partitionBy("comp").orderBy(F.col("links").desc(), "node")))
            top = ranked.where(F.col("r") <= 10).groupBy("comp", "size").agg(
                F.sort_array(F.collect_list(F.struct("r", "id", "links"))).alias("top"))
            self.write(top.select("size", F.to_json(F.transform(
                "top", lambda x: F.struct(x["id"].alias("id"), x["links"].alias("links"))
            )).alias("highest_degree_ids")), join(tmp, "oversized"), fmt,
                json_cols=["highest_degree_ids"])
            comp = comp.join(F.broadcast(big.select("comp", F.lit(True).alias("over"))),
                             "comp", "left").select(
                "id", "node", "anon",
                F.when(F.col("over"), F.col("node")).otherwise(F.col("comp")).alias("comp"))
        canon = comp.groupBy("comp").agg(
            F.min(F.struct("anon", "node", "id")).alias("c"), F.count(F.lit(1)).alias("size")
        ).select("comp", F.col("c.id").alias("person"), "size").persist(keep)
        mapping = comp.join(canon, "comp").select("id", "node", "person").persist(keep)
        stats = canon.agg(F.count(F.lit(1)).alias("n"), F.max("size").alias("largest")).first()
        self.write(mapping.select("id", "person"), join(tmp, "mapping"), fmt)
        self.stage("persons", t0)

        # Events: one per ID, lower-cased name and second; the copy applied last wins.
        t0 = time.time()
        events = (
            good.where(F.col("kind") == "record")
            .groupBy("a", "lname", "t").agg(F.max(F.struct("ord", "name", "frag")).alias("e"))
            .join(mapping.select(F.col("id").alias("a"), "person"), "a")
            .select(F.col("person").alias("_p"), F.col("a").alias("_p_original"),
                    F.col("e.name").alias("_n"), F.col("t").alias("_t"),
                    F.col("e.frag").alias("frag"))
            .persist(keep)
        )
        self.write_events(events, join(tmp, "events"), fmt)
        n_events = events.count()
        self.stage("events", t0)

        # Properties. Per ID and lower-cased name: the latest (time, then input order), in the
        # spelling that first brought the name; an ID keeps only its first
        # max_properties_per_id names. Per person: the latest of its IDs', spelled as its
        # earliest-seen ID holding the name spells it.
        t0 = time.time()
        per_id = (
            good.where(F.col("kind") != "alias")
            .select(F.col("a").alias("id"), "t", "ord", F.explode("props").alias("p"))
            .groupBy("id", F.col("p.lname").alias("lname")).agg(
                F.min(F.struct("ord", F.col("p.nj").alias("nj"))).alias("first"),
                F.max(F.struct("t", "ord", F.col("p.vj").alias("vj"))).alias("last"),
            )
            .withColumn("rank", F.row_number().over(
                Window.partitionBy("id").orderBy(F.col("first.ord"))))
            .where(F.col("rank") <= args.max_properties_per_id)
        )
        per_person = (
            per_id.join(mapping, "id")
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
        persons = canon.select("person", F.col("size").alias("ids")) \
            .join(per_person, "person", "left").select(
                "person", "ids",
                F.concat(F.lit("{"), F.concat_ws(",", F.transform(
                    F.coalesce(F.col("es"), F.array()), lambda x: x["entry"])), F.lit("}"))
                .alias("properties"))
        self.write(persons, join(tmp, "persons"), fmt, json_cols=["properties"])
        self.stage("properties", t0)
        return {
            "inputs": [f for f, _ in files],
            "lines_read": n_lines,
            "lines_skipped": n_errors,
            "ops": {k: v[0] for k, v in sorted(counts.items()) if k != "error"},
            "ids": n_ids,
            "persons": stats["n"],
            "largest_person": stats["largest"] or 0,
            "refused_merges": n_refused,
            "suppressed_ops": n_suppressed,
            "oversized_persons": n_big,
            "events": n_events,
            "rounds": rounds,
            "shuffle_bytes_per_round": self.round_shuffle,
            "stage_seconds": self.stages,
        }

    # -- writing --------------------------------------------------------------------------

    def write(self, df, path, fmt, json_cols=()):
        """Writes `df` in `fmt`; `json_cols` hold JSON text, which JSON lines embed as JSON
        (Parquet and CSV keep it as text)."""
        from pyspark.sql import functions as F

        if fmt == "parquet":
            df.write.parquet(path)
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

    def write_events(self, ev, path, fmt):
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
            out.write.parquet(path)
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
    ap.add_argument("--local-max-edges", type=int, default=LOCAL_MAX_EDGES, metavar="N",
                    help="an edge set of at most N links is solved whole by one task, without "
                         "rounds (default %(default)s: 2.5 GB peak for the task's Python "
                         "worker; 0: always rounds)")
    ap.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                    help="a Spark setting (repeatable)")
    return ap.parse_args(argv)


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
