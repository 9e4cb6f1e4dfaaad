"""Arrow out: the exports as streaming pyarrow readers, equal to the CLI's exports, read by
Polars and DuckDB as they are."""

import json
import threading

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

import idgraph


def rows(reader):
    return reader.read_all().to_pylist()


def test_exports_equal_the_clis(tmp_path, cli, gen_km):
    data = gen_km(tmp_path / "data", 8_000)
    with idgraph.Store(tmp_path / "s") as s:
        s.import_files(data)
        mapping = s.export_mapping()
        assert mapping.schema.names == ["id", "person", "first_seen"]
        mapping = rows(mapping)
        events = rows(s.export_events())
    want_map = cli.jsonl(tmp_path / "s", "export", "mapping", "--format", "jsonl")
    assert [{"id": r["id"], "person": r["person"]} for r in mapping] == want_map
    want_ev = cli.jsonl(tmp_path / "s", "export", "events", "--format", "km-json")
    got_ev = []
    for r in events:
        e = {"_p": r["_p"], "_t": r["_t"], "_n": r["_n"], "_p_original": r["_p_original"]}
        e.update(json.loads(r["properties"]))
        got_ev.append(e)
    assert got_ev == want_ev
    # The same rows as the CLI's Parquet export.
    out = tmp_path / "events.parquet"
    cli(tmp_path / "s", "export", "events", "--format", "parquet", "-o", out)
    assert pq.read_table(out).to_pylist() == events


def test_exports_stream_in_bounded_batches(tmp_path):
    n = 70_000
    with idgraph.Store(tmp_path / "s") as s:
        s.apply({"kind": "record", "id": f"u{i % 1000}", "event": "E", "at": i}
                for i in range(n))
        reader = s.export_events()
        sizes = [b.num_rows for b in reader]
        assert sizes == [65_536, n - 65_536]
        # A reader closed half-way lets writers go on (they wait while an export runs).
        reader = s.export_events()
        first = reader.read_next_batch()
        assert first.num_rows == 65_536
        reader.close()
        done = threading.Event()
        t = threading.Thread(target=lambda: (s.record("late", "E", at=1), done.set()))
        t.start()
        t.join(timeout=30)
        assert done.is_set(), "a write waited on an export whose reader was closed"
        # A reader dropped unread, too.
        reader = s.export_mapping()
        del reader
        s.record("later", "E", at=2)
        assert s.stats()["events"] == n + 2


def test_polars_and_duckdb_read_the_readers_as_they_are(tmp_path):
    with idgraph.Store() as s:
        for i in range(50):
            s.record(f"anon{i}", "Viewed", {"page": f"/p{i % 3}"}, at=i)
            if i % 5 == 0:
                s.alias("bob", f"anon{i}", at=100 + i, cause="identify")
        df = pl.from_arrow(s.export_events())
        assert df.height == 50
        top = df.group_by("_p").len().sort("len", descending=True).row(0)
        assert top == ("bob", 10)
        events = s.export_events()  # noqa: F841 (DuckDB scans it by its name)
        n = duckdb.sql("select count(*) from events where _p = 'bob'").fetchall()[0][0]
        assert n == 10
        mapping = pa.Table.from_batches(s.export_mapping())
        assert mapping.num_rows == 51


def test_an_empty_store_exports_empty_readers():
    with idgraph.Store() as s:
        assert s.export_events().read_all().num_rows == 0
        assert s.export_mapping().read_all().schema.names == ["id", "person", "first_seen"]
