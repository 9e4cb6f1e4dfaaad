"""Fixtures of the Python package's tests: the `idgraph` CLI and `gen_km` built by cargo
(python/test.sh passes IDGRAPH_BIN_DIR; else target/debug as cargo metadata names it)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def bin_dir():
    d = os.environ.get("IDGRAPH_BIN_DIR")
    if d:
        return d
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    )
    return os.path.join(json.loads(meta.stdout)["target_directory"], "debug")


class Cli:
    """The `idgraph` binary of the same checkout."""

    def __init__(self, path):
        if not os.path.exists(path):
            pytest.fail(f"{path} is missing: run `cargo build` first (python/test.sh does)")
        self.path = path

    def __call__(self, db, *args, check=True):
        r = subprocess.run([self.path, "--db", str(db), *map(str, args)],
                           capture_output=True, text=True)
        if check and r.returncode != 0:
            raise AssertionError(f"idgraph {' '.join(map(str, args))}: {r.stderr}")
        return r

    def jsonl(self, db, *args):
        return [json.loads(x) for x in self(db, *args).stdout.splitlines()]


@pytest.fixture(scope="session")
def cli():
    return Cli(os.path.join(bin_dir(), "idgraph"))


@pytest.fixture(scope="session")
def gen_km():
    """gen_km(out_dir, lines, seed=1) writes out_dir/revisions/N.json."""
    exe = os.path.join(bin_dir(), "examples", "gen_km")
    if not os.path.exists(exe):
        pytest.fail(f"{exe} is missing: run `cargo build --examples` first (python/test.sh does)")

    def run(out, lines, seed=1, files=2):
        subprocess.run([exe, "--lines", str(lines), "--seed", str(seed), "--out", str(out),
                        "--files", str(files), "--hubs", "1"], check=True, capture_output=True)
        return out

    return run


sys.path.insert(0, os.path.join(ROOT, "examples", "python"))
