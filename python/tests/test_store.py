"""idgraph.Store: the store's answers, errors and guarantees through Python."""

import json
import random
import threading
import time

import pytest

import idgraph


def test_a_visitor_becomes_a_person():
    with idgraph.Store() as s:
        assert s.record("anon-1", "Viewed Pricing", {"plan": "pro", "n": 3, "x": 1.5}, at=100) \
            == {"outcome": "stored"}
        assert s.alias("bob@example.com", "anon-1", at=160, cause="identify") \
            == {"outcome": "joined", "size": 2}
        assert s.alias("bob@example.com", "anon-1") == {"outcome": "already_same"}
        assert s.canonical("anon-1") == "bob@example.com"
        assert s.resolve("anon-1") == {"person": "bob@example.com",
                                       "ids": ["anon-1", "bob@example.com"]}
        assert s.resolve("nobody") is None and s.canonical("nobody") is None
        assert "anon-1" in s and "nobody" not in s
        assert s.events("bob@example.com") == [{
            "id": "anon-1", "event": "Viewed Pricing", "at": 100,
            "properties": {"plan": "pro", "n": 3, "x": 1.5}}]
        props = {p["name"]: p["value"] for p in s.props("bob@example.com")}
        assert props == {"plan": "pro", "n": 3, "x": 1.5}
        why = s.explain("anon-1", "bob@example.com")
        assert why["same_person"] and len(why["edges"]) == 1
        assert why["edges"][0]["cause"] == "identify" and why["edges"][0]["at"] == 160
        st = s.stats()
        assert (st["ids"], st["persons"], st["events"], st["edges"]) == (2, 1, 1, 1)
        assert s.verify()["ok"]


def test_guardrails_refuse_and_say_why():
    with idgraph.Store(blocked_ids=["guest"], max_person_size=3) as s:
        r = s.alias("bob", "guest")
        assert r["outcome"] == "refused" and "guest" in r["reason"]
        s.alias("a", "b")
        s.alias("c", "d")
        r = s.alias("a", "c")
        assert r["outcome"] == "refused" and "4" in r["reason"], r
        assert s.canonical("c") == "c"


def test_errors_are_exceptions_with_the_stores_messages():
    with idgraph.Store() as s:
        with pytest.raises(idgraph.InputError, match="must not be empty"):
            s.record("", "E")
        with pytest.raises(idgraph.InputError, match="must be a str, an int or a float"):
            s.set("bob", {"nested": {"a": 1}})
        with pytest.raises(idgraph.InputError, match="one of identify"):
            s.alias("a", "b", cause="magic")
        with pytest.raises(idgraph.InputError, match="more than the limit of 256"):
            s.set("bob", {f"p{i}": i for i in range(300)})
        assert issubclass(idgraph.InputError, idgraph.IdgraphError)
    with pytest.raises(idgraph.IdgraphError, match="closed"):
        s.canonical("a")


def test_a_batch_is_all_or_nothing():
    with idgraph.Store() as s:
        ok = [{"kind": "alias", "a": "a", "b": "b", "at": 5},
              {"kind": "record", "id": "b", "event": "E", "properties": {"k": "v"}, "at": 6},
              {"kind": "set", "a": "a", "properties": {"age": 40}}]
        bad = ok + [{"kind": "set", "id": "c", "properties": {f"p{i}": i for i in range(300)}}]
        with pytest.raises(idgraph.InputError):
            s.apply(bad)
        assert s.stats()["ids"] == 0, "nothing of a refused batch is stored"
        with pytest.raises(idgraph.InputError, match="op 1: missing \"b\""):
            s.apply([ok[0], {"kind": "alias", "a": "x"}])
        assert [o["outcome"] for o in s.apply(ok)] == ["joined", "stored", "stored"]
        assert [e["event"] for e in s.events("a")] == ["E"]


def test_a_store_is_one_process_at_a_time_and_survives_reopening(tmp_path, cli):
    path = tmp_path / "store"
    with idgraph.Store(path) as s:
        s.alias("bob", "anon", at=1)
        s.record("anon", "Signed Up", at=2)
        with pytest.raises(idgraph.LockedError):
            idgraph.Store(path)
        assert str(s.path) == str(path)
        busy = cli(path, "stats", check=False)
        assert busy.returncode != 0
    assert s.closed
    with idgraph.Store(path) as s:
        assert s.canonical("anon") == "bob"
    assert "Signed Up" in cli(path, "events", "anon").stdout


def test_forget_erases_and_keeps_the_person_away():
    with idgraph.Store() as s:
        s.alias("bob", "anon", at=1)
        s.record("anon", "E", at=2)
        gone = s.forget("bob")
        assert sorted(gone["ids"]) == ["anon", "bob"] and gone["events"] == 1
        assert s.resolve("bob") is None
        assert s.record("anon", "E", at=3) == {"outcome": "suppressed"}
        assert s.forget("nobody") is None


def test_random_aliases_agree_with_a_union_find_model():
    rng = random.Random(7)
    for _ in range(5):
        parent = {}

        def find(x):
            while parent.setdefault(x, x) != x:
                x = parent[x]
            return x

        with idgraph.Store(max_person_size=10_000) as s:
            ids = [f"id{i}" for i in range(40)]
            for t in range(120):
                a, b = rng.choice(ids), rng.choice(ids)
                if rng.random() < 0.3:
                    s.record(a, "E", at=t)
                    find(a)
                else:
                    s.alias(a, b, at=t)
                    parent[find(a)] = find(b)
            groups = {}
            for x in parent:
                groups.setdefault(find(x), set()).add(x)
            for members in groups.values():
                people = {s.canonical(x) for x in members}
                assert len(people) == 1, members
                assert set(s.resolve(next(iter(members)))["ids"]) == members
            assert s.stats()["persons"] == len(groups)


def test_threads_share_a_store():
    with idgraph.Store() as s:
        def work(k):
            for i in range(150):
                s.record(f"t{k}-{i % 10}", "E", {"i": i}, at=i)
                s.alias(f"t{k}-0", f"t{k}-{i % 10}", at=i)
                s.canonical(f"t{k}-{i % 10}")
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        reads = 0
        while any(t.is_alive() for t in threads):
            reads += s.export_mapping().read_all().num_rows >= 0
        for t in threads:
            t.join()
        st = s.stats()
        assert (st["ids"], st["persons"], st["events"]) == (40, 4, 600)
        assert s.verify()["ok"]


def test_long_calls_release_the_gil(tmp_path, gen_km):
    data = gen_km(tmp_path / "data", 30_000)
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.001)

    with idgraph.Store(tmp_path / "s") as s:
        t = threading.Thread(target=tick)
        t.start()
        time.sleep(0.05)
        started = time.monotonic()
        s.import_files(data)
        took = time.monotonic() - started
        stop.set()
        t.join()
    # A call that kept the GIL would let the other thread run only once it returned: no tick
    # could fall in the first half of the import.
    assert took > 0.02, f"the import took {took:.3f} s: too short to tell"
    early = [x for x in ticks if started < x < started + took / 2]
    assert len(early) > 3, f"{len(early)} ticks in the first half of a {took:.2f} s import"


def test_import_files_is_the_clis_import(tmp_path, cli, gen_km):
    data = gen_km(tmp_path / "data", 5_000)
    bad = tmp_path / "bad.json"
    bad.write_text('{"_p":"x","_t":1,"_n":"E"}\n{"_p":"x"}\nnot json\n')
    want = json.loads(cli(tmp_path / "cli", "import", "--json", data).stdout)
    with idgraph.Store(tmp_path / "py") as s:
        got = s.import_files(data)
        for k in want:
            if k not in ("seconds", "lines_per_second"):
                assert got[k] == want[k], k
        again = s.import_files([str(data)])
        assert again["files"] == 0 and again["unchanged_files"] == 2
        with pytest.raises(idgraph.InputError) as e:
            s.import_files(bad)
        assert str(e.value) == f"{bad}:2: missing _t (the time in seconds)"
        assert s.canonical("x") is None, "a failed import imports nothing"
        r = s.import_files(bad, skip_invalid=True)
        assert r["skipped"] == 2 and r["events"] == 1
        assert r["first_skipped"][1].startswith(f"{bad}:3: not a JSON object")
        with pytest.raises(idgraph.InputError, match="missing"):
            s.import_files(tmp_path / "missing.json")
        with pytest.raises(idgraph.InputError, match="format"):
            s.import_files(bad, format="xml")
    cli_map = cli.jsonl(tmp_path / "cli", "export", "mapping", "--format", "jsonl")
    py_map = cli.jsonl(tmp_path / "py", "export", "mapping", "--format", "jsonl")
    assert len(py_map) == len(cli_map) + 1 and {"id": "x", "person": "x"} in py_map


def test_the_stubs_name_what_the_module_has():
    """idgraph/_idgraph.pyi types every public name of the module and every method of Store,
    and nothing that is not there; each has a docstring."""
    import ast
    import os

    stub = ast.parse(open(os.path.join(os.path.dirname(idgraph.__file__), "_idgraph.pyi")).read())
    store = next(n for n in stub.body if isinstance(n, ast.ClassDef) and n.name == "Store")
    typed = {n.name for n in store.body if isinstance(n, ast.FunctionDef)} - {"__init__"}
    has = {n for n in dir(idgraph.Store) if not n.startswith("_")} | \
        {"__enter__", "__exit__", "__contains__"}
    assert typed == has
    for name in has:
        assert getattr(idgraph.Store, name).__doc__, name
    top = {n.name for n in stub.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))} | \
        {t.id for n in stub.body if isinstance(n, ast.AnnAssign) for t in [n.target]}
    assert set(idgraph.__all__) <= top | {"__version__"}
