"""examples/python/notebook.py runs, and its answers are the store's."""

import pyarrow.parquet as pq

import idgraph
import notebook


def test_the_notebook_tour(tmp_path, gen_km, cli):
    data = gen_km(tmp_path / "km", 6_000)
    found = notebook.tour(str(data), str(tmp_path / "out"))
    report = found["report"]
    assert report["lines"] == 6_000 and report["persons"] > 100
    with idgraph.Store(tmp_path / "out" / "store") as s:
        sizes = [len(s.resolve(p)["ids"]) for p, _ in found["largest"]]
        assert sizes == [n for _, n in found["largest"]] and sizes == sorted(sizes, reverse=True)
        person, newest, why = found["explained"]
        assert why["same_person"] and s.canonical(newest) == person
        # The chain links the two IDs, link by link.
        at = person
        for link in why["edges"]:
            assert at == link["a"]
            at = link["b"]
        assert at == newest
        assert pq.read_metadata(found["events_file"]).num_rows == s.stats()["events"]
        assert pq.read_metadata(found["mapping_file"]).num_rows == s.stats()["ids"]
        top_person, top_events, _ = found["duckdb_top"][0]
        assert len(s.events(top_person)) == top_events
    assert found["duckdb_events_of_largest"] == found["events_of_largest"]
    # The CLI reads the same store and imports the Parquet the notebook wrote.
    assert cli(tmp_path / "out" / "store", "verify").returncode == 0
    r = cli(tmp_path / "again", "import", "--json", found["events_file"])
    assert r.returncode == 0
