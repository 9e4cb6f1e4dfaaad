"""The Spark job against `idgraph import` + `idgraph export`: the same rows, compared exactly.

Run by spark/test.sh (which scripts/test.sh calls). Spark starts once, on local[2], loopback
only; files are cut into many small blocks (spark.sql.files.maxPartitionBytes) so that line
numbers and input order cross block boundaries. IDGRAPH_BIN names the idgraph binary,
IDGRAPH_GEN_KM the gen_km example (spark/test.sh sets both; unset, cargo metadata says where).
"""

import glob
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import idgraph_spark as job  # noqa: E402



def built(env, *path):
    """The binary `env` names, else the one cargo built under `path` of its debug directory
    (wherever cargo puts it: CARGO_TARGET_DIR, build.target-dir; as spark/test.sh asks)."""
    if os.environ.get(env):
        return os.environ[env]
    target = subprocess.run(["bash", os.path.join(ROOT, "scripts", "target-dir.sh")],
                            check=True, capture_output=True, text=True).stdout.strip()
    return os.path.join(target, "debug", *path)


BIN = built("IDGRAPH_BIN", "idgraph")
SPARK = None


def setUpModule():
    global SPARK
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    SPARK = (
        SparkSession.builder.master("local[2]")
        .appName("idgraph-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.memory", "3g")  # one JVM runs every test's jobs
        .config("spark.sql.ui.retainedExecutions", "20")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "4")
        .config("spark.sql.files.maxPartitionBytes", str(64 << 10))
        .config("spark.sql.files.openCostInBytes", str(4 << 10))
        .getOrCreate()
    )
    SPARK.sparkContext.setLogLevel("ERROR")


def tearDownModule():
    if SPARK is not None:
        SPARK.stop()


def idgraph(*args, check=True):
    r = subprocess.run([BIN, *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise AssertionError("idgraph %s: %s" % (" ".join(args), r.stderr))
    return r


def run_job(inputs, out, *flags):
    args = job.parse_args([*inputs, "--output", out, *flags])
    return job.Job(SPARK, args, log=lambda _: None).run()


def jsonl_rows(pattern):
    rows = []
    for f in sorted(glob.glob(pattern)):
        with open(f, encoding="utf-8") as fh:
            rows += [json.loads(line) for line in fh if line.strip()]
    return rows


def canonical(rows):
    """Rows as sorted JSON text: equal when the rows are, whatever their order. 1 and 1.0
    stay different (a number's type is part of the value)."""
    return sorted(json.dumps(r, sort_keys=True, ensure_ascii=False) for r in rows)


def store_results(tmp, inputs, *flags):
    """(mapping rows, event rows, refused count) from `idgraph import` and `export`."""
    db = os.path.join(tmp, "store")
    idgraph("--db", db, "import", *flags, *inputs)
    return (db, *store_rows(db))


def store_rows(db):
    """(mapping rows, event rows, refusals) of the store `db`, from `idgraph export` and
    `refused`."""
    mapping = [json.loads(x) for x in
               idgraph("--db", db, "export", "mapping", "--format", "jsonl").stdout.splitlines()]
    events = [json.loads(x) for x in
              idgraph("--db", db, "export", "events", "--format", "km-json").stdout.splitlines()]
    refused = json.loads(idgraph("--db", db, "refused", "--json").stdout)
    return mapping, events, refused


def refusals(rows):
    """The job's refused/ rows as `idgraph refused --json` shows them."""
    keep = ("a", "b", "at", "cause", "reason", "why")
    return canonical([{k: r[k] for k in keep} for r in rows])


def gen_km(out, lines, seed, hubs):
    gen = built("IDGRAPH_GEN_KM", "examples", "gen_km")
    subprocess.run([gen, "--lines", str(lines), "--seed", str(seed), "--hubs", str(hubs),
                    "--files", "3", "--out", out], check=True)


ANON = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def anon_id(rng):
    body = "".join(rng.choice(ANON) for _ in range(26))
    return body + rng.choice("AEIMQUYcgkosw048") + "="


def write(path, lines):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for x in lines:
            f.write(x if isinstance(x, str) else json.dumps(x, ensure_ascii=False))
            f.write("\n")


def extras(rng, n):
    """Lines gen_km does not write: blocked IDs, _p_original, case-variant names, ties."""
    ids = ["ann", "bob", "Bob", "cy@example.com", anon_id(rng), anon_id(rng), anon_id(rng),
           "guest", "'NULL'", " undefined ", "7", "é"]
    out = []
    for i in range(n):
        a, b = rng.choice(ids), rng.choice(ids)
        t = 1_400_000_000 + rng.randrange(5)
        kind = rng.randrange(6)
        if kind == 0:
            out.append({"_p": a, "_p2": b, "_t": t})
        elif kind == 1:
            out.append({"_p": a, "_t": t, "_n": rng.choice(["Viewed", "viewed", "Paid"]),
                        rng.choice(["plan", "Plan", "PLAN"]): rng.choice(["pro", 1, 1.5, True])})
        elif kind == 2:
            out.append({"_p": a, "_t": t, "tier": rng.choice(["a", "b", 2]), "x": None})
        elif kind == 3:
            out.append({"_p": a, "_p_original": b, "_t": t, "_n": "Signed Up"})
        elif kind == 4:
            out.append({"_p": a, "_p2": b, "_t": str(t), "_n": "Linked", "k": "v"})
        else:
            out.append({"_p": 12345, "_t": float(t), "_n": "Numbered"})
    return out


class Equivalence(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="idgraph-spark-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_gen_km_and_extras_give_the_stores_rows_and_import_back(self):
        data = os.path.join(self.tmp, "data")
        gen_km(data, 12_000, 7, 2)  # persons of thousands of IDs, duplicates, out of order
        rng = random.Random(3)
        write(os.path.join(data, "revisions", "4.json"), extras(rng, 600))
        # A person of 3,000 IDs, linked as a random tree, with events under some of them.
        big = [anon_id(rng) for _ in range(3000)]
        tree = [{"_p": big[i], "_p2": big[rng.randrange(i)], "_t": i} for i in range(1, 3000)]
        tree += [{"_p": rng.choice(big), "_t": 5, "_n": "Viewed"} for _ in range(300)]
        tree.append({"_p": "big@example.com", "_p2": big[1234], "_t": 9})
        rng.shuffle(tree)
        write(os.path.join(data, "revisions", "5.json"), tree)
        # An export bucket's index.csv decides the order (4.json first).
        write(os.path.join(data, "index.csv"),
              ["path", "revisions/4.json", "revisions/1.json", "revisions/2.json",
               "revisions/5.json", "revisions/3.json"])
        db, mapping, events, refused = store_results(self.tmp, [data])
        out = os.path.join(self.tmp, "out")
        summary = run_job([data], out, "--format", "jsonl")
        self.assertEqual(canonical(jsonl_rows(out + "/mapping/*.json")), canonical(mapping))
        self.assertEqual(canonical(jsonl_rows(out + "/events/*.json")), canonical(events))
        self.assertEqual(refusals(jsonl_rows(out + "/refused/*.json")), canonical(refused))
        self.assertEqual(summary["refused_merges"], len(refused))
        self.assertGreater(len(refused), 0)
        self.assertGreaterEqual(summary["largest_person"], 3001)
        self.assertEqual(summary["ids"], len(mapping))
        # Persons: the store's properties of a few persons, by the same rules.
        persons = {r["person"]: r for r in jsonl_rows(out + "/persons/*.json")}
        for person in sorted(persons)[:: max(1, len(persons) // 25)]:
            props = json.loads(idgraph("--db", db, "props", "--json", person).stdout or "{}")
            self.assertEqual(persons[person]["properties"], props, person)
        # The other direction: the job's events import back into a store with the same
        # persons for every ID that has an event.
        back = os.path.join(self.tmp, "back")
        idgraph("--db", back, "import", os.path.join(out, "events"))
        got = {json.loads(x)["id"]: json.loads(x)["person"] for x in idgraph(
            "--db", back, "export", "mapping", "--format", "jsonl").stdout.splitlines()}
        want = {m["id"]: m["person"] for m in mapping}
        for e in events:
            self.assertEqual(got[e["_p_original"]], want[e["_p_original"]])

    def test_suppressions_keep_a_forgotten_person_out_of_a_rebuild(self):
        """`idgraph forget` + `export suppressions`, then the job on the raw history with
        `--suppressions`: the same rows as the store after the forget, the person nowhere."""
        data = os.path.join(self.tmp, "data.json")
        rng = random.Random(5)
        lines = []
        for k in range(300):
            a = anon_id(rng)
            lines.append({"_p": a, "_t": 100 + k, "_n": "Viewed", "n": k})
            lines.append({"_p": "user%d@example.com" % k, "_p2": a, "_t": 200 + k})
            lines.append({"_p": "user%d@example.com" % k, "_t": 300 + k, "plan": "p%d" % k})
        write(data, lines)
        db = os.path.join(self.tmp, "store")
        idgraph("--db", db, "import", data)
        for who in ("user7@example.com", "user42@example.com"):
            idgraph("--db", db, "forget", who, "--yes")
        sup = os.path.join(self.tmp, "suppressions.jsonl")
        with open(sup, "w", encoding="utf-8") as f:
            f.write(idgraph("--db", db, "export", "suppressions").stdout)
        mapping = [json.loads(x) for x in idgraph(
            "--db", db, "export", "mapping", "--format", "jsonl").stdout.splitlines()]
        events = [json.loads(x) for x in idgraph(
            "--db", db, "export", "events", "--format", "km-json").stdout.splitlines()]
        out = os.path.join(self.tmp, "out")
        summary = run_job([data], out, "--format", "jsonl", "--suppressions", sup)
        got = jsonl_rows(out + "/mapping/*.json")
        self.assertEqual(canonical(got), canonical(mapping))
        self.assertEqual(canonical(jsonl_rows(out + "/events/*.json")), canonical(events))
        self.assertFalse(any("user7@" in r["id"] for r in got))
        self.assertEqual(summary["suppressed_ops"], 6)  # 3 lines per person, 2 persons
        # Without the list, the person is rebuilt: the check above is not empty.
        out2 = os.path.join(self.tmp, "out2")
        run_job([data], out2, "--format", "jsonl")
        self.assertTrue(any("user7@" in r["id"] for r in jsonl_rows(out2 + "/mapping/*.json")))

    def test_a_de_aliased_export_read_again_gives_the_same(self):
        data = os.path.join(self.tmp, "data")
        gen_km(data, 3_000, 11, 1)
        db, _, events, _ = store_results(self.tmp, [data])
        export = os.path.join(self.tmp, "export", "events.json")
        write(export, [json.dumps(e) for e in events])
        tmp2 = os.path.join(self.tmp, "again")
        os.makedirs(tmp2)
        _, mapping2, events2, _ = store_results(tmp2, [export])
        out = os.path.join(self.tmp, "out")
        # As a large run keeps its tables: cached, not checkpointed (`Job.keep`).
        leaf_max, job.LEAF_MAX_BYTES = job.LEAF_MAX_BYTES, 0
        try:
            run_job([export], out, "--format", "jsonl", "--no-state")
        finally:
            job.LEAF_MAX_BYTES = leaf_max
        self.assertFalse(os.path.exists(os.path.join(out, "state")))
        self.assertEqual(canonical(jsonl_rows(out + "/mapping/*.json")), canonical(mapping2))
        self.assertEqual(canonical(jsonl_rows(out + "/events/*.json")), canonical(events2))

    def test_many_small_random_inputs_agree(self):
        """Property-style: 60 random inputs over small pools of IDs (each its own file and
        its own IDs, so one run checks them all), also in CSV; Parquet output."""
        rng = random.Random(int(os.environ.get("IDGRAPH_SPARK_SEED", "5")))
        files = []
        for case in range(60):
            pool = ["c%d-%s" % (case, n) for n in ("ann", "bob", "Bob", "x")]
            pool += [anon_id(rng) for _ in range(3)] + ["guest", "none"]
            lines = []
            for _ in range(rng.randrange(1, 30)):
                a, b = rng.choice(pool), rng.choice(pool)
                t = rng.randrange(4)
                k = rng.randrange(5)
                if k == 0:
                    lines.append({"_p": a, "_p2": b, "_t": t})
                elif k == 1:
                    lines.append({"_p": a, "_t": t, "_n": rng.choice(["E", "e", "F"]),
                                  rng.choice(["p", "P"]): rng.choice([1, "1", 2.5, "x"])})
                elif k == 2:
                    lines.append({"_p": a, "_t": t, rng.choice(["p", "q"]): rng.randrange(3)})
                elif k == 3:
                    lines.append({"_p": a, "_p_original": b, "_t": t, "_n": "O"})
                else:
                    lines.append({"_t": t, "_p2": b, "_p": a})
            if case % 5 == 0:
                path = os.path.join(self.tmp, "in", "%03d.csv" % case)
                write(path, ["Identity,Timestamp,Event,Alias,Prop:p"] + [
                    ",".join('"%s"' % str(x).replace('"', '""') for x in (
                        ln["_p"], ln["_t"], ln.get("_n", ""), ln.get("_p2", ""),
                        ln.get("p", ln.get("P", ""))))
                    for ln in lines if "_p_original" not in ln and "q" not in ln
                    and ("_p2" in ln or "_n" in ln or "p" in ln or "P" in ln)])
            else:
                path = os.path.join(self.tmp, "in", "%03d.json" % case)
                write(path, lines)
            files.append(path)
        _, mapping, events, refused = store_results(self.tmp, files)
        out = os.path.join(self.tmp, "out")
        summary = run_job(files, out)  # Parquet, the default
        got_map = [r.asDict() for r in SPARK.read.parquet(out + "/mapping").collect()]
        self.assertEqual(canonical(got_map), canonical(mapping))
        got_ev = []
        for r in SPARK.read.parquet(out + "/events").collect():
            e = json.loads(r["properties"])
            e.update({"_p": r["_p"], "_p_original": r["_p_original"], "_n": r["_n"],
                      "_t": r["_t"]})
            got_ev.append(e)
        self.assertEqual(canonical(got_ev), canonical(events))
        got_ref = [r.asDict() for r in SPARK.read.parquet(out + "/refused").collect()]
        self.assertEqual(refusals(got_ref), canonical(refused))
        self.assertEqual(summary["refused_merges"], len(refused))
        # The default solves these few links in one task, without rounds; the rounds give the
        # same persons.
        self.assertEqual(summary["rounds"], 0)
        rounds = os.path.join(self.tmp, "out-rounds")
        self.assertGreater(run_job(files, rounds, "--local-max-edges", "0")["rounds"], 0)
        got = [r.asDict() for r in SPARK.read.parquet(rounds + "/mapping").collect()]
        self.assertEqual(canonical(got), canonical(mapping))

    def test_a_person_of_100000_ids_finishes_and_agrees(self):
        """Skew: one ID linked to 100,000 others, and a chain through them."""
        path = os.path.join(self.tmp, "star.json")
        n = 100_000
        with open(path, "w") as f:
            for i in range(n):
                f.write('{"_p":"hub","_p2":"id%d","_t":%d}\n' % (i, i))
                if i % 1000 == 0:
                    f.write('{"_p":"id%d","_p2":"id%d","_t":%d,"_n":"Seen"}\n' % (i, i + 1, i))
        _, mapping, events, _ = store_results(self.tmp, [path], "--max-person-size", "200000")
        out = os.path.join(self.tmp, "out")
        summary = run_job([path], out, "--format", "jsonl", "--max-person-size", "200000")
        self.assertEqual(summary["largest_person"], n + 1)
        self.assertEqual(canonical(jsonl_rows(out + "/mapping/*.json")), canonical(mapping))
        self.assertEqual(canonical(jsonl_rows(out + "/events/*.json")), canonical(events))


class SameValidation(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="idgraph-spark-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_the_fuzz_corpus_is_judged_as_the_store_judges_it(self):
        """Every line of the checked-in fuzz corpus of the JSON-lines parser (hostile and odd
        lines: bad UTF-8, duplicates, huge numbers, nesting, surrogates...), as one input:
        the same lines skipped, for the same reasons, and the same IDs, events and refusals
        from the rest."""
        corpus = os.path.join(ROOT, "fuzz", "corpus", "km_json_line")
        path = os.path.join(self.tmp, "corpus.json")
        with open(path, "wb") as out:
            for name in sorted(os.listdir(corpus)):
                with open(os.path.join(corpus, name), "rb") as f:
                    data = f.read()
                for line in data.split(b"\n"):
                    out.write(line + b"\n")
        db = os.path.join(self.tmp, "store")
        r = idgraph("--db", db, "import", "--skip-invalid", "--json", path)
        store = json.loads(r.stdout)
        mapping, events, refused = store_rows(db)
        out = os.path.join(self.tmp, "out")
        summary = run_job([path], out, "--skip-invalid", "--format", "jsonl")
        self.assertGreater(store["skipped"], 100)
        self.assertEqual(summary["lines_skipped"], store["skipped"])
        # The CLI lists the first 20 skipped lines on stderr: the job's first 20 rejects are
        # those lines, for the same reasons, word for word.
        cli = [ln[:-len(" (skipped)")] for ln in r.stderr.splitlines()
               if ln.endswith(" (skipped)")]
        self.assertEqual(len(cli), 20)
        rejects = sorted(jsonl_rows(out + "/rejects/*.json"), key=lambda x: x["line"])
        self.assertEqual(len(rejects), store["skipped"])
        self.assertEqual(["%s:%d: %s" % (path, x["line"], x["reason"]) for x in rejects[:20]],
                         cli)
        self.assertEqual(canonical(jsonl_rows(out + "/mapping/*.json")), canonical(mapping))
        self.assertEqual(canonical(jsonl_rows(out + "/events/*.json")), canonical(events))
        self.assertEqual(refusals(jsonl_rows(out + "/refused/*.json")), canonical(refused))


    def test_the_csv_fuzz_corpus_is_judged_as_the_store_judges_it(self):
        """Files of the checked-in fuzz corpus of the CSV reader (bad headers, quotes, bad
        UTF-8, ragged rows...), each its own input: the files the importer reads give the same
        lines skipped for the same reasons, and the same IDs, events and refusals; a file where
        the importer stops stops the job with the importer's words. One file in six: every
        file is judged against the importer by `parse_csv`, the job's parser, in the Rust and
        Python tests; this checks the job's use of it (a job over all 885 files the importer
        reads took 123 s, most of it listing files on the driver and tiny read tasks)."""
        import idgraph as pkg

        corpus = os.path.join(ROOT, "fuzz", "corpus", "csv")
        paths, stop = [], None
        for k, name in enumerate(sorted(os.listdir(corpus))[::6]):
            with open(os.path.join(corpus, name), "rb") as f:
                data = f.read()
            if not data.endswith(b"\n"):
                data += b"\n"  # the importer waits for a last line's newline
            path = os.path.join(self.tmp, "in", "%04d.csv" % k)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
            try:
                pkg.parse_csv(data, file=path)  # only sorts the files: the CLI judges below
                paths.append(path)
            except pkg.InputError:
                stop = stop or path
        db = os.path.join(self.tmp, "store")
        r = idgraph("--db", db, "import", "--skip-invalid", "--json", *paths)
        store = json.loads(r.stdout)
        mapping, events, refused = store_rows(db)
        out = os.path.join(self.tmp, "out")
        summary = run_job(paths, out, "--skip-invalid", "--format", "jsonl")
        self.assertGreater(len(paths), 100)
        self.assertIsNotNone(stop)
        self.assertGreater(store["skipped"], 500)
        self.assertEqual(summary["lines_skipped"], store["skipped"])
        cli = [ln[:-len(" (skipped)")] for ln in r.stderr.splitlines()
               if ln.endswith(" (skipped)")]
        rejects = sorted(jsonl_rows(out + "/rejects/*.json"), key=lambda x: (x["source"], x["line"]))
        self.assertEqual(["%s:%d: %s" % (x["source"], x["line"], x["reason"])
                          for x in rejects[:20]], cli)
        self.assertEqual(canonical(jsonl_rows(out + "/mapping/*.json")), canonical(mapping))
        self.assertEqual(canonical(jsonl_rows(out + "/events/*.json")), canonical(events))
        # An alias row without a Timestamp takes the time of the run: `at` not compared.
        keep = ("a", "b", "cause", "reason", "why")
        self.assertEqual(canonical([{k: x[k] for k in keep}
                                    for x in jsonl_rows(out + "/refused/*.json")]),
                         canonical([{k: x[k] for k in keep} for x in refused]))
        # Where the importer stops, the job stops, --skip-invalid or not, with its words.
        said = idgraph("--db", os.path.join(self.tmp, "db2"), "import", "--skip-invalid",
                       stop, check=False).stderr
        with self.assertRaises(job.Bad) as e:
            run_job([paths[0], stop], os.path.join(self.tmp, "out2"), "--skip-invalid")
        where = str(e.exception).split("; nothing was written")[0]
        self.assertTrue(where.startswith(stop + ":"), where)
        self.assertIn(where, said)

    def test_directories_are_read_in_the_stores_order(self):
        """src/ingest/files.rs `directories_read_revisions_in_numeric_order`, and index.csv."""
        d = os.path.join(self.tmp, "bucket")
        os.makedirs(os.path.join(d, "revisions"))
        for f in ["revisions/10.json", "revisions/9.json", "revisions/2.json", "b.csv",
                  "a.json", "notes.txt", "revisions/x.json"]:
            open(os.path.join(d, f), "w").close()
        inputs = job.Inputs(SPARK)
        names = [os.path.relpath(f, d) for f, _ in inputs.expand([d], lambda _: None)]
        self.assertEqual(names, ["revisions/2.json", "revisions/9.json", "revisions/10.json",
                                 "a.json", "b.csv", "revisions/x.json"])
        with self.assertRaises(job.Bad):
            inputs.expand([os.path.join(d, "notes.txt")], lambda _: None)
        with self.assertRaises(job.Bad):
            inputs.expand([os.path.join(d, "missing")], lambda _: None)
        write(os.path.join(d, "index.csv"), ["path", "revisions/9.json", "a.json"])
        warned = []
        names = [os.path.relpath(f, d) for f, _ in inputs.expand([d], warned.append)]
        self.assertEqual(names, ["revisions/9.json", "a.json"])
        self.assertEqual(len(warned), 4)
        write(os.path.join(d, "index.csv"), ["path", "../etc/passwd"])
        with self.assertRaises(job.Bad):
            inputs.expand([d], lambda _: None)


class Failures(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="idgraph-spark-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def inputs(self):
        a = os.path.join(self.tmp, "in", "1.json")
        b = os.path.join(self.tmp, "in", "2.json")
        write(a, [{"_p": "a%d" % i, "_t": i, "_n": "E"} for i in range(3000)])
        good = [{"_p": "b%d" % i, "_t": i, "_p2": "a%d" % i} for i in range(3000)]
        good[2500] = '{"_p":"b","_t":-5,"_n":"E"}'
        good[2700] = "not json"
        write(b, good)
        return a, b

    def test_strict_mode_names_the_first_bad_line_and_writes_nothing(self):
        a, b = self.inputs()
        r = idgraph("--db", os.path.join(self.tmp, "db"), "import", a, b, check=False)
        self.assertIn("%s:2501: _t -5 is before 1970" % b, r.stderr)
        out = os.path.join(self.tmp, "out")
        with self.assertRaises(job.Bad) as e:
            run_job([a, b], out)
        self.assertIn("%s:2501: _t -5 is before 1970" % b, str(e.exception))
        self.assertEqual(os.listdir(out) if os.path.exists(out) else [], [])

    def test_skip_invalid_counts_and_reports_the_bad_lines(self):
        a, b = self.inputs()
        out = os.path.join(self.tmp, "out")
        summary = run_job([a, b], out, "--skip-invalid", "--format", "jsonl")
        self.assertEqual(summary["lines_skipped"], 2)
        self.assertEqual(summary["lines_read"], 6000)
        rejects = sorted((r["source"], r["line"]) for r in jsonl_rows(out + "/rejects/*.json"))
        self.assertEqual(rejects, [(b, 2501), (b, 2701)])
        r = idgraph("--db", os.path.join(self.tmp, "db"), "import", "--skip-invalid", "--json",
                    a, b)
        self.assertEqual(json.loads(r.stdout)["skipped"], 2)
        # An output that exists is refused, not overwritten.
        with self.assertRaises(job.Bad):
            run_job([a], out)

    def test_a_person_over_the_size_limit_keeps_its_ids_apart_and_is_reported(self):
        path = os.path.join(self.tmp, "p.json")
        write(path, [{"_p": "hub", "_p2": "x%d" % i, "_t": i} for i in range(5)]
              + [{"_p": "y", "_p2": "z", "_t": 9}])
        out = os.path.join(self.tmp, "out")
        summary = run_job([path], out, "--format", "jsonl", "--max-person-size", "3")
        self.assertEqual(summary["oversized_persons"], 1)
        mapping = {r["id"]: r["person"] for r in jsonl_rows(out + "/mapping/*.json")}
        self.assertEqual(mapping["hub"], "hub")
        self.assertEqual(mapping["x3"], "x3")
        self.assertEqual(mapping["z"], "y")
        [over] = jsonl_rows(out + "/oversized/*.json")
        self.assertEqual(over["size"], 6)
        self.assertEqual(over["highest_degree_ids"][0], {"id": "hub", "links": 5})


class Incremental(unittest.TestCase):
    """`--previous DIR`: a bucket that gained files and lines since a run, read again with that
    run's output; the result equals a full run over all of it, row for row."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="idgraph-spark-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    TABLES = ("mapping", "events", "persons", "refused", "oversized", "rejects")

    def outputs(self, out):
        import pyarrow.parquet as pq

        return {t: canonical(r for f in sorted(glob.glob("%s/%s/*.parquet" % (out, t)))
                             for r in pq.read_table(f).to_pylist()) for t in self.TABLES}

    def test_a_grown_bucket_gives_a_full_runs_rows_and_reads_only_what_is_new(self):
        rng = random.Random(int(os.environ.get("IDGRAPH_SPARK_SEED", "9")))
        src = os.path.join(self.tmp, "src")
        gen_km(src, 3_000, 13, 1)
        whole = {}
        for n in (1, 2, 3):
            with open(os.path.join(src, "revisions", "%d.json" % n), encoding="utf-8") as f:
                whole[n] = f.read().splitlines()
        # A person that grows past the size limit in the increment; one over it already,
        # growing; one that the increment links to a named ID seen in the history.
        grow = [anon_id(rng) for _ in range(50)]
        over = [anon_id(rng) for _ in range(60)]
        tree = lambda ids, lo, hi: [  # noqa: E731
            json.dumps({"_p": ids[i], "_p2": ids[rng.randrange(i)], "_t": 50 + i})
            for i in range(lo, hi)]
        early = tree(grow, 1, 30) + tree(over, 1, 45) + [
            json.dumps({"_p": grow[3], "_t": 7, "_n": "Viewed", "plan": "a"})]
        late = tree(grow, 30, 50) + tree(over, 45, 60) + [
            json.dumps({"_p": grow[3], "_t": 7, "_n": "viewed", "plan": "b"}),
            json.dumps({"_p": "late@example.com", "_p2": grow[40], "_t": 8})]
        bad = ['{"_p":"x","_t":-1,"_n":"E"}', "not json"]
        ex_a = [json.dumps(x) for x in extras(rng, 300)]
        ex_b = [json.dumps(x) for x in extras(rng, 300)]
        # The history: 1.json whole, the first half of 2.json and 3.json (2.json gains lines
        # too, though it is not the last: lines there come before 3.json's in input order).
        h2, h3 = len(whole[2]) // 2, len(whole[3]) // 2
        data = os.path.join(self.tmp, "bucket")
        write(os.path.join(data, "revisions", "1.json"), whole[1] + early + bad[:1])
        write(os.path.join(data, "revisions", "2.json"), whole[2][:h2] + ex_a)
        write(os.path.join(data, "revisions", "3.json"), whole[3][:h3])
        # A CSV file that grows too: read whole again, only the records past its old lines
        # kept (a blank line and a quoted field over two lines before the cut).
        csv_path = os.path.join(data, "extra.csv")
        with open(csv_path, "w", encoding="utf-8") as f:
            f.write('Identity,Timestamp,Event,Alias,Prop:note\n'
                    'csv-a,10,Signed Up,,first\n'
                    'csv-b,11,,csv-a,\n'
                    '\n'
                    'csv-c,12,Paid,,"two\nlines"\n')
        write(os.path.join(data, "index.csv"),
              ["path", "revisions/1.json", "revisions/2.json", "revisions/3.json", "extra.csv"])
        # A forgotten person stays out of both runs.
        full_in = os.path.join(self.tmp, "forgotten.json")
        write(full_in, whole[1][:50])
        db = os.path.join(self.tmp, "store")
        idgraph("--db", db, "import", full_in)
        who = json.loads(whole[1][0])["_p"]
        idgraph("--db", db, "forget", who, "--yes")
        sup = os.path.join(self.tmp, "suppressions.jsonl")
        with open(sup, "w", encoding="utf-8") as f:
            f.write(idgraph("--db", db, "export", "suppressions").stdout)
        flags = ["--skip-invalid", "--max-person-size", "40", "--suppressions", sup]
        # The history in JSON lines, the increment in Parquet: an incremental run's outputs
        # come from the earlier state's tables, whatever format the earlier run wrote.
        history = os.path.join(self.tmp, "history")
        before = run_job([data], history, *flags, "--format", "jsonl")
        person = {m["id"]: m["person"] for m in jsonl_rows(history + "/mapping/*.json")}
        self.assertEqual(person[grow[1]], person[grow[2]])
        self.assertEqual(person[over[1]], over[1])  # over the limit: its IDs apart
        # The increment: lines appended to 2.json and 3.json, a new file listed after them.
        with open(os.path.join(data, "revisions", "2.json"), "a", encoding="utf-8") as f:
            f.write("\n".join(whole[2][h2:] + late + bad[1:]) + "\n")
        with open(os.path.join(data, "revisions", "3.json"), "a", encoding="utf-8") as f:
            f.write("\n".join(whole[3][h3:]) + "\n")
        with open(csv_path, "a", encoding="utf-8") as f:
            f.write('\ncsv-c,13,Paid,,"and\nmore"\ncsv-d,14,,csv-c,\ncsv-b,15,Paid,,\n')
        write(os.path.join(data, "revisions", "4.json"), ex_b)
        write(os.path.join(data, "index.csv"), ["path", "revisions/1.json", "revisions/2.json",
                                               "revisions/3.json", "extra.csv",
                                               "revisions/4.json"])
        inc = os.path.join(self.tmp, "inc")
        got = run_job([data], inc, *flags, "--previous", history)
        full = os.path.join(self.tmp, "full")
        want = run_job([data], full, *flags)
        self.assertEqual(got["incremental"]["files_grown"], 3)
        self.assertEqual(got["incremental"]["files_new"], 1)
        self.assertEqual(got["incremental"]["files_unchanged"], 1)
        self.assertGreater(got["incremental"]["bytes_not_read"],
                           os.path.getsize(os.path.join(data, "revisions", "1.json")))
        self.assertNotIn("full_run_because", got)
        a, b = self.outputs(inc), self.outputs(full)
        for t in a:
            self.assertEqual(a[t], b[t], t)
        volatile = ("stage_seconds", "seconds", "rounds", "shuffle_bytes_per_round",
                    "previous", "incremental")
        self.assertEqual({k: v for k, v in got.items() if k not in volatile},
                         {k: v for k, v in want.items() if k not in volatile})
        self.assertEqual(want["oversized_persons"], before["oversized_persons"] + 1)
        self.assertGreater(want["suppressed_ops"], 0)
        self.assertEqual(want["lines_skipped"], 2)
        self.assertGreater(want["refused_merges"], 0)
        person = {m["id"]: m["person"] for m in self.rows(inc, "mapping")}
        self.assertEqual(person[grow[2]], grow[2])  # grown past the limit
        self.assertEqual(person["csv-b"], person["csv-a"])  # the CSV file, before and after
        self.assertEqual(person["csv-d"], person["csv-c"])
        self.assertEqual(sorted(e["_t"] for e in self.rows(inc, "events")
                                if e["_p_original"] == "csv-c"), [12, 13])
        self.assertNotIn(who, person)

        # Nothing new: nothing read, the same rows (in JSON lines: written whole from state/,
        # where Parquet outputs were carried over file by file).
        again = os.path.join(self.tmp, "again")
        same = run_job([data], again, *flags, "--format", "jsonl", "--previous", inc)
        self.assertEqual(same["incremental"]["files_unchanged"], 5)
        self.assertEqual(same["lines_read"], want["lines_read"])
        self.assertEqual(canonical(jsonl_rows(again + "/mapping/*.json")), a["mapping"])
        self.assertEqual(len(jsonl_rows(again + "/events/*.json")), want["events"])

        # What is read again in full, and why.
        def plan(*extra):
            args = job.parse_args([data, "--output", "-", *flags, *extra, "--previous", inc])
            j = job.Job(SPARK, args, log=lambda _: None)
            files = j.io.expand([data], lambda _: None)
            listing = [j.listing(f) for f, _ in files]
            return j.previous(files, listing, j.options(job.load_suppressions(sup)))

        self.assertEqual(plan()[1], [None] * 5)
        self.assertIn("max_person_size", plan("--max-person-size", "41")[1])
        p1 = os.path.join(data, "revisions", "1.json")
        with open(p1, "r+b") as f:
            f.seek(os.path.getsize(p1) - 40)
            f.write(b" ")
        self.assertIn("1.json: the bytes read before have changed", plan()[1])
        with open(p1, "ab") as f:
            f.truncate(100)
        self.assertIn("shorter than", plan()[1])
        with self.assertRaises(job.Bad):
            run_job([data], os.path.join(self.tmp, "x"), *flags, "--previous", data)
        with self.assertRaises(job.Bad):
            run_job([data], os.path.join(self.tmp, "x"), *flags, "--previous", inc, "--no-state")
        # What the runs kept (checkpoints, caches) was freed when each ended.
        self.assertEqual(SPARK.sparkContext._jsc.getPersistentRDDs().size(), 0)

    def test_appended_bytes_are_read_in_chunks_as_the_whole_would_be_split(self):
        """`read_tail` reads a file's new bytes a chunk at a time: the same lines, numbered on
        from the lines before, as splitting all of them at once — whatever the chunk size; and
        `tail_lines` batches them, each batch within TAIL_BATCH_LINES lines and TAIL_CHUNK bytes
        (or one longer line)."""
        import pyarrow as pa

        rng = random.Random(4)
        path = os.path.join(self.tmp, "tail.json")
        chunk, per_batch = job.TAIL_CHUNK, job.TAIL_BATCH_LINES
        try:
            for case in range(40):
                data = bytes(rng.choice(b"ab\n\r") for _ in range(rng.randrange(0, 60)))
                with open(path, "wb") as f:
                    f.write(data)
                start = rng.randrange(0, len(data) + 1)
                pieces = data[start:].split(b"\n")
                if pieces[-1] == b"":
                    pieces.pop()
                want = [(7, 10 + k + 1, x) for k, x in enumerate(pieces)]
                job.TAIL_CHUNK = rng.randrange(1, 9)
                self.assertEqual(list(job.read_tail((7, "file:" + path, start, len(data), 10))),
                                 want, (case, data, start))
                job.TAIL_BATCH_LINES = rng.randrange(1, 5)
                items = pa.record_batch([[7], ["file:" + path], [start], [len(data)], [10]],
                                        names=["file", "uri", "start", "end", "before"])
                got = list(job.tail_lines([items]))
                self.assertEqual([(r["file"], r["line"], r["raw"]) for b in got
                                  for r in b.to_pylist()], want, (case, data, start))
                for b in got:
                    self.assertLessEqual(b.num_rows, job.TAIL_BATCH_LINES)
                    if b.num_rows > 1:
                        self.assertLessEqual(sum(map(len, b.column("raw").to_pylist())),
                                             job.TAIL_CHUNK)
        finally:
            job.TAIL_CHUNK, job.TAIL_BATCH_LINES = chunk, per_batch

    def rows(self, out, table):
        import pyarrow.parquet as pq

        return [r for f in sorted(glob.glob("%s/%s/*.parquet" % (out, table)))
                for r in pq.read_table(f).to_pylist()]


if __name__ == "__main__":
    unittest.main(verbosity=2)
