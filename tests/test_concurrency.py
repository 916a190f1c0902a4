"""Two processes writing entries and regenerating the tables at once lose nothing and never
leave a half-written file."""
import multiprocessing as mp
import time

import pandas as pd

from bench.entries import entry_checksum, write_entry
from bench.leaderboard import load_results, write_leaderboard
from bench.runner import result_path
from tests.test_leaderboard import record

PER_WRITER = 15


def writer(results_dir, name: str, start) -> None:
    """Write PER_WRITER entries, regenerating the tables after each, as a grid worker does.
    Reading the entries is made slow (a large leaderboard): without the lock, a writer would
    often overwrite the other's newer tables with its older snapshot."""
    import bench.leaderboard as lb

    read = lb.load_entries
    lb.load_entries = lambda folder: (read(folder), time.sleep(0.05))[0]
    start.wait()
    for i in range(PER_WRITER):
        r = dict(record(f"{name}-{i:02d}", 0, float(i)), schema=2, checksum="")
        write_entry(results_dir, result_path(results_dir, r["dataset"], r["method"], 0), r)
        write_leaderboard(results_dir, results_dir.parent, reported=None)


def test_two_writers_lose_nothing_and_readers_never_see_half_a_file(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=writer, args=(results, name, start)) for name in ("alpha", "beta")]
    for p in procs:
        p.start()
    start.set()
    readme, table = tmp_path / "README.md", tmp_path / "results.csv"
    reads = rows_seen = 0
    while any(p.is_alive() for p in procs):  # read as a browser or a second run would, without the lock
        if readme.exists() and table.exists():
            text = readme.read_text()
            assert text.startswith("# wsolbench leaderboard") and text.endswith("\n"), "half-written README"
            frame = pd.read_csv(table)
            assert list(frame.columns[:3]) == ["dataset", "method", "seed"], "half-written results.csv"
            assert len(frame) >= rows_seen, "a writer replaced newer tables with an older snapshot"
            rows_seen = len(frame)
            for r in load_results(results):  # every entry parses whole
                assert r["checksum"] == entry_checksum(r)
            reads += 1
        time.sleep(0.01)
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert reads > 0
    final = pd.read_csv(table)
    assert len(final) == 2 * PER_WRITER, "the last table regeneration saw every entry"
    text = readme.read_text()
    for name in ("alpha", "beta"):
        for i in range(PER_WRITER):
            assert f"| {name}-{i:02d} " in text
    assert not list(tmp_path.rglob("*.tmp"))
