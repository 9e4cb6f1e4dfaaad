"""parse_lines: the importer's own verdict on every line, through Arrow."""

import json
import os

import pyarrow as pa
import pytest

import idgraph
from conftest import ROOT


def lines_batch(name, raw_lines, text_type=pa.binary()):
    return pa.record_batch({
        "file": pa.array([name] * len(raw_lines), pa.string()),
        "line": pa.array(range(1, len(raw_lines) + 1), pa.int64()),
        "text": pa.array(raw_lines, text_type),
    })


def table(reader, cols):
    """The rows of `reader`'s columns `cols`, sorted."""
    t = reader.read_all().select(cols)
    return sorted(zip(*(t.column(c).to_pylist() for c in cols)))


def apply_ops(store, ops):
    """Applies a parsed ops batch to `store`, as the importer would."""
    batch = []
    for op in ops.to_pylist():
        if op["properties"] is not None:
            op["properties"] = json.loads(op["properties"])
        op["id"] = op["a"]
        batch.append(op)
    store.apply(batch)


def corpus_lines():
    corpus = os.path.join(ROOT, "fuzz", "corpus", "km_json_line")
    out = []
    for name in sorted(os.listdir(corpus)):
        with open(os.path.join(corpus, name), "rb") as f:
            out.extend(f.read().split(b"\n"))
    return out


def test_every_corpus_line_is_judged_as_the_importer_judges_it(tmp_path, cli):
    """Every line of the fuzz corpus of the JSON-lines parser, in files of 20 lines: each
    file's rejected lines are word for word the ones `import --skip-invalid` skips, and the
    ops of the rest, applied, give the store the importer builds."""
    lines = corpus_lines()
    chunks = [lines[i:i + 20] for i in range(0, len(lines), 20)]
    rejected_all = 0
    applied = idgraph.Store(max_person_size=100_000)
    with idgraph.Store(tmp_path / "imported", max_person_size=100_000) as imported:
        for k, chunk in enumerate(chunks):
            path = tmp_path / f"c{k:04}.json"
            path.write_bytes(b"".join(x + b"\n" for x in chunk))
            ops, rejected = idgraph.parse_lines(lines_batch(str(path), chunk))
            report = imported.import_files(path, skip_invalid=True)
            assert rejected.column("error").to_pylist() == report["first_skipped"], path
            rejected_all += rejected.num_rows
            assert report["skipped"] == rejected.num_rows
            apply_ops(applied, ops)
        assert rejected_all > 100
        assert table(applied.export_mapping(), ["id", "person"]) == \
            table(imported.export_mapping(), ["id", "person"])
        ev = ["_p", "_p_original", "_n", "_t", "properties"]
        assert table(applied.export_events(), ev) == table(imported.export_events(), ev)
    applied.close()
    # And the CLI skips the same lines.
    first = tmp_path / "c0000.json"
    r = cli(tmp_path / "cli", "import", "--skip-invalid", first)
    _, rejected = idgraph.parse_lines(lines_batch(str(first), chunks[0]))
    said = [x[: -len(" (skipped)")] for x in r.stderr.splitlines() if x.endswith(" (skipped)")]
    assert said == rejected.column("error").to_pylist()


def test_every_corpus_csv_file_is_judged_as_the_importer_judges_it(tmp_path):
    """Every file of the fuzz corpus of the CSV reader: where the importer stops (a bad
    header, a record past the limit) parse_csv raises its words; elsewhere the rejected
    records are the ones `import --skip-invalid` skips, and the ops of the rest, applied,
    give the store the importer builds."""
    corpus = os.path.join(ROOT, "fuzz", "corpus", "csv")
    stopped = rejected_all = 0
    applied = idgraph.Store(max_person_size=100_000)
    scratch = idgraph.Store()
    with idgraph.Store(tmp_path / "imported", max_person_size=100_000) as imported:
        for k, name in enumerate(sorted(os.listdir(corpus))):
            with open(os.path.join(corpus, name), "rb") as f:
                data = f.read()
            if not data.endswith(b"\n"):
                data += b"\n"  # the importer waits for a last line's newline
            path = tmp_path / f"c{k:04}.csv"
            path.write_bytes(data)
            try:
                ops, rejected = idgraph.parse_csv(data, file=str(path))
            except idgraph.InputError as e:
                stopped += 1
                with pytest.raises(idgraph.InputError) as imp:
                    scratch.import_files(path, skip_invalid=True)
                assert str(imp.value) == str(e)
                continue
            report = imported.import_files(path, skip_invalid=True)
            assert report["skipped"] == rejected.num_rows, path
            assert rejected.column("error").to_pylist()[:20] == report["first_skipped"], path
            rejected_all += rejected.num_rows
            apply_ops(applied, ops)
        assert stopped > 100 and rejected_all > 100
        assert table(applied.export_mapping(), ["id", "person"]) == \
            table(imported.export_mapping(), ["id", "person"])
        ev = ["_p", "_p_original", "_n", "_t", "properties"]
        assert table(applied.export_events(), ev) == table(imported.export_events(), ev)
    applied.close()
    scratch.close()


def test_parse_csv_numbers_records_by_their_first_line():
    data = (b"Identity,Timestamp,Event,Prop:Note\n"
            b'bob,5,Paid,"two\nlines"\n'
            b"\n"
            b"ann,x,Paid,\n"
            b"ann,,,\n")
    ops, rejected = idgraph.parse_csv(data, file="f.csv", now=9)
    assert ops.column("line").to_pylist() == [2]
    assert json.loads(ops.column("properties")[0].as_py()) == {"Note": "two\nlines"}
    assert rejected.column("error").to_pylist() == [
        'f.csv:5: Timestamp "x" is not a whole number of seconds',
        "f.csv:6: nothing to do: no Event, Alias or Prop: value",
    ]
    with pytest.raises(idgraph.InputError, match="^f.csv:1: unknown column"):
        idgraph.parse_csv(b"Identity,Colour\nbob,red\n", file="f.csv")


def test_any_string_and_integer_types_are_read():
    raw = ['{"_p":"a","_t":1,"_n":"E"}', "", '{"_p":"a","_p2":"b","_t":"2"}\r\n']
    for text in (pa.string(), pa.large_string(), pa.binary(), pa.large_binary()):
        b = pa.record_batch({
            "file": pa.array(["f"] * 3, pa.large_string()),
            "line": pa.array([1, 2, 3], pa.int32()),
            "text": pa.array(raw, text),
        })
        ops, rejected = idgraph.parse_lines(b)
        assert ops.column("kind").to_pylist() == ["record", "alias"]
        assert ops.column("line").to_pylist() == [1, 3]
        assert rejected.num_rows == 0


def test_a_batch_without_the_columns_is_an_input_error():
    with pytest.raises(idgraph.InputError, match="no column `file`.*it has value"):
        idgraph.parse_lines(pa.record_batch({"value": ["{}"]}))
    with pytest.raises(idgraph.InputError, match="`line`"):
        idgraph.parse_lines(pa.record_batch({"file": ["f"], "line": ["x"], "text": ["{}"]}))
    with pytest.raises(TypeError):
        idgraph.parse_lines("not a batch")


def test_a_line_past_the_limit_and_bad_utf8():
    big = b'{"_p":"a","_t":1,"x":"' + b"y" * idgraph.MAX_LINE_BYTES + b'"}'
    ops, rejected = idgraph.parse_lines(lines_batch("f", [big, b'{"_p":"\xff","_t":1}']))
    assert ops.num_rows == 0
    errors = rejected.column("error").to_pylist()
    assert errors[0].startswith(f"f:1: the line has {len(big) + 1} bytes, more than the limit")
    assert errors[1] == "f:2: not UTF-8"


def test_local_stars_are_the_components_of_the_edges():
    """local_stars against a breadth-first search over random edges: one row per ID but the
    smallest of its component, pointing at that smallest."""
    import random

    rng = random.Random(7)
    for _ in range(20):
        edges = [(rng.randrange(-50, 50), rng.randrange(-50, 50)) for _ in range(rng.randrange(0, 80))]
        batch = pa.record_batch({"u": pa.array([a for a, _ in edges], pa.int64()),
                                 "v": pa.array([b for _, b in edges], pa.int64())})
        out = idgraph.local_stars(batch)
        adj = {}
        for a, b in edges:
            adj.setdefault(a, set()).add(b)
            adj.setdefault(b, set()).add(a)
        smallest = {}
        for start in adj:
            if start in smallest:
                continue
            seen, todo = {start}, [start]
            while todo:
                for y in adj[todo.pop()] - seen:
                    seen.add(y)
                    todo.append(y)
            smallest.update((x, min(seen)) for x in seen)
        want = sorted((m, x) for x, m in smallest.items() if m != x)
        got = sorted(zip(out.column("u").to_pylist(), out.column("v").to_pylist()))
        assert got == want
    with pytest.raises(idgraph.InputError, match="`v`"):
        idgraph.local_stars(pa.record_batch({"u": pa.array([1], pa.int64())}))
