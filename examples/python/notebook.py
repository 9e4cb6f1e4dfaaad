"""A notebook-sized tour of idgraph from Python: import a KISSmetrics export, find the largest
persons, explain one, and write Parquet that DuckDB reads.

    cargo run --release --example gen_km -- --lines 100000 --out /tmp/km
    pip install ./python duckdb
    python examples/python/notebook.py /tmp/km /tmp/km-out

Each step is a cell: `tour()` returns what it found, so a test (python/tests/test_example.py)
checks the answers against the store.
"""

import os
import sys
import tempfile

import duckdb
import pyarrow.parquet as pq

import idgraph


def write_parquet(reader, path):
    """Streams a pyarrow RecordBatchReader into a Parquet file, batch by batch."""
    with pq.ParquetWriter(path, reader.schema, compression="zstd") as w:
        for batch in reader:
            w.write_batch(batch)
    return path


def tour(data, out):
    os.makedirs(out, exist_ok=True)
    found = {}
    with idgraph.Store(os.path.join(out, "store")) as store:
        # 1. Import: the same path as `idgraph import`; again, it reads only what is new.
        report = store.import_files(data, skip_invalid=True)
        print(f"imported {report['lines']:,} lines: {report['events']:,} events, "
              f"{report['aliases']:,} aliases ({report['joined']:,} merges); "
              f"{report['ids']:,} IDs in {report['persons']:,} persons")
        found["report"] = report

        # 2. The largest persons: hubs are what to look at first in a new history.
        largest = store.hubs(5)["largest"]
        for person, ids in largest:
            print(f"  {person}: {ids:,} IDs")
        found["largest"] = largest

        # 3. Explain one: why is the largest person's newest ID the same person?
        person = store.resolve(largest[0][0])
        newest = person["ids"][-1]
        why = store.explain(person["person"], newest)
        print(f"{newest} is {person['person']} through {len(why['edges'])} links:")
        for link in why["edges"][:5]:
            print(f"  {link['a']} ~ {link['b']} ({link['cause']} at {link['at']}, "
                  f"{link['source'] or 'no source'})")
        found["explained"] = (person["person"], newest, why)

        # 4. Parquet out, streamed: the mapping and the events with their persons now.
        found["events_file"] = write_parquet(store.export_events(),
                                             os.path.join(out, "events.parquet"))
        found["mapping_file"] = write_parquet(store.export_mapping(),
                                              os.path.join(out, "mapping.parquet"))
        found["events_of_largest"] = len(store.events(largest[0][0]))

    # 5. DuckDB reads the files as they are: events per person, the most active first.
    top = duckdb.sql(f"""
        select _p as person, count(*) as events, count(distinct _p_original) as ids_used
        from '{found["events_file"]}' group by _p order by events desc, person limit 5
    """).fetchall()
    for person, events, ids_used in top:
        print(f"  {person}: {events:,} events under {ids_used} IDs")
    found["duckdb_top"] = top
    found["duckdb_events_of_largest"] = duckdb.sql(
        f"select count(*) from '{found['events_file']}' where _p = $p",
        params={"p": largest[0][0]}).fetchall()[0][0]
    return found


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    tour(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp())
