"""The reliability promises of README.md ("Reliability"), end to end, as a user meets them:
a grid killed with SIGKILL loses no finished cell and its rerun runs only the rest; Ctrl-C
exits 130 cleanly; two writers of one result folder lose nothing and readers never see half
a file; `data check` reports every bad metadata line and image as file:line or file: reason,
never a traceback or a hang; pickles are refused; `--jobs 1` and `--jobs 2` give the same
metrics. Runs on the embedded datasets at the smoke budget, each in private folders."""
import json
import multiprocessing as mp
import os
import signal
import struct
import subprocess
import sys
import time
import zlib

import pandas as pd
import pytest
from PIL import Image

from bench.cli import main
from bench.entries import entry_checksum, parse_entry, write_entry
from bench.leaderboard import load_results, write_leaderboard
from bench.registry import REPO_ROOT
from bench.runner import result_path
from tests.conftest import set_flags
from tests.harness import run_tiny_grid
from tests.test_leaderboard import record
from tests.test_real_datasets import write_tree

GRID = ["--methods", "center,random", "--datasets", "synth-objects,synth-tissue", "--seeds", "0,1",
        "--budget", "smoke", *[x for f in set_flags() for x in ("--set", f)]]


def _run_args(shared_dirs, tmp_path, results):
    return ["run", *GRID, "--data-root", str(shared_dirs["data"]), "--cache-dir", str(tmp_path / "cache"),
            "--results", str(results)]


def _cli(args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=REPO_ROOT, env=env, **kw)


def _wait_for_entries(results, count, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and len(list(results.glob("*/*/seed*.json"))) < count:
        assert proc.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.05)


def _assert_whole(results):
    """Every entry on disk parses whole and is intact; no temp file of a write is left."""
    for path in results.glob("*/*/seed*.json"):
        record = parse_entry(path)
        assert record["checksum"] == entry_checksum(record), path
    assert not list(results.rglob("*.tmp"))


def test_kill_9_loses_no_finished_cell_and_the_rerun_runs_only_the_rest(shared_dirs, tmp_path):
    results = tmp_path / "results"
    args = _run_args(shared_dirs, tmp_path, results)
    proc = _cli(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_entries(results, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = {p: p.stat().st_mtime_ns for p in results.glob("*/*/seed*.json")}
    assert 2 <= len(done_before) < 8, "the kill should land half-way through the 8 cells"
    for path in done_before:
        parse_entry(path)  # whole, though the process died mid-grid
    out = subprocess.run([sys.executable, "-m", "bench", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    assert f"ran {8 - len(done_before)}, resumed {len(done_before)}, failed 0" in out.stdout
    assert {p: p.stat().st_mtime_ns for p in done_before} == done_before  # not rewritten
    finished = list(results.glob("*/*/seed*.json"))
    assert len(finished) == 8
    assert all(json.loads(p.read_text())["status"] == "ok" for p in finished), "every result is whole"
    # a temp file orphaned by the kill sits beside a cell that was rerun and is swept then
    _assert_whole(results)
    table = (tmp_path / "README.md").read_text()
    assert "## synth-objects" in table and "## synth-tissue" in table


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_ctrl_c_exits_130_cleanly(jobs, shared_dirs, tmp_path):
    results = tmp_path / "results"
    # a terminal's Ctrl-C signals the whole process group: the run and its workers
    proc = _cli([*_run_args(shared_dirs, tmp_path, results), "--jobs", jobs], stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True, start_new_session=True)
    _wait_for_entries(results, 1, proc)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: finished cells are saved; rerun the same command to resume" in err
    assert "Traceback" not in err, err
    _assert_whole(results)
    assert _group_ends(proc.pid, 30), "a worker outlived the interrupted run"


def _group_ends(pgid: int, timeout: float) -> bool:
    """Whether every process of group `pgid` has ended (and been reaped) within `timeout` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


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
        r = dict(record(f"{name}-{i:02d}", 0, float(i)), checksum="")
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


def _png_bomb(path, width=100_000, height=100_000) -> None:
    """A few-byte PNG whose header declares 10^10 pixels (a decompression bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_data_check_names_every_bad_file_and_line_and_never_hangs(tmp_path):
    root = write_tree("cub", tmp_path / "data")
    images, meta = root / "CUB", root / "metadata" / "CUB"
    labels = meta / "test" / "class_labels.txt"
    lines = labels.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b",", b",\xe9", 1)  # Latin-1, not UTF-8
    labels.write_bytes(b"".join(lines))
    ids = meta / "val" / "image_ids.txt"
    ids.write_text(ids.read_text() + "val/c0/nul\x00.png\n")
    _png_bomb(images / "train" / "c0" / "000.png")
    (images / "train" / "c1" / "001.png").unlink()
    os.mkfifo(images / "train" / "c1" / "001.png")
    outside = tmp_path / "outside.png"
    Image.new("RGB", (24, 20)).save(outside)
    (images / "test" / "c1" / "003.png").unlink()
    (images / "test" / "c1" / "003.png").symlink_to(outside)
    out = subprocess.run([sys.executable, "-m", "bench", "data", "check", "--dataset", "cub", "--root", str(root)],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    report = out.stdout
    assert f"ERROR {labels}:3: not UTF-8 text" in report
    assert f"ERROR {ids}:5: path 'val/c0/nul\\x00.png' contains a NUL byte" in report
    assert f"ERROR {images / 'train' / 'c0' / '000.png'}: image is refused: " in report
    assert "decompression bomb" in report
    assert f"ERROR {images / 'train' / 'c1' / '001.png'}: image is a FIFO, not an image file" in report
    assert f"ERROR {images / 'test' / 'c1' / '003.png'}: image resolves to {outside.resolve()}, outside" in report
    assert "FIX THE ERRORS BEFORE A RUN" in report


class _Payload:
    """Unpickling this would create `marker`: a stand-in for code in a malicious checkpoint."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickles_are_refused(shared_dirs, tmp_path, capsys):
    import torch

    marker = tmp_path / "unpickled"
    weights = tmp_path / "weights.pt"
    torch.save({"body.0.0.weight": _Payload(marker)}, weights)
    results = tmp_path / "results"
    code = main(["run", "--methods", "cam", "--datasets", "synth-objects", "--seeds", "0", "--budget", "smoke",
                 "--jobs", "1", "--weights", str(weights), "--data-root", str(shared_dirs["data"]),
                 "--cache-dir", str(tmp_path / "cache"), "--results", str(results),
                 *[x for f in set_flags() for x in ("--set", f)]])
    assert code == 1 and "FAILED synth-objects/cam/seed0" in capsys.readouterr().out
    assert not marker.exists(), "the checkpoint was unpickled"
    entry = parse_entry(results / "synth-objects" / "cam" / "seed0.json")
    assert entry["status"] == "failed"
    assert f"--weights {weights}: refused, it holds a pickled object" in entry["error"]


METHODS, DATASETS, SEEDS = ["cam", "center"], ["synth-objects", "synth-tissue"], [0, 1]


def _metrics(results):
    return {str(p.relative_to(results)): (json.loads(p.read_text())["metrics"], json.loads(p.read_text())["config_hash"])
            for p in sorted(results.glob("*/*/seed*.json"))}


def test_jobs_2_gives_the_results_of_jobs_1(shared_dirs, tmp_path):
    one = run_tiny_grid(METHODS, DATASETS, SEEDS, {"data": shared_dirs["data"], "cache": tmp_path / "c1"},
                        tmp_path / "one", threads=1)
    two = run_tiny_grid(METHODS, DATASETS, SEEDS, {"data": shared_dirs["data"], "cache": tmp_path / "c2"},
                        tmp_path / "two", jobs=2, threads=1)
    assert not one.failed and not two.failed and len(one.ran) == len(two.ran) == 8
    assert sorted(one.ran) == sorted(two.ran)
    a, b = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert len(a) == 8 and a == b
    # each stage-1 classifier was trained once, by one worker
    assert len(list((tmp_path / "c2" / "stage1").rglob("*.pt"))) == len(DATASETS) * len(SEEDS)
    again = run_tiny_grid(METHODS, DATASETS, SEEDS, {"data": shared_dirs["data"], "cache": tmp_path / "c2"},
                          tmp_path / "two", jobs=2)
    assert len(again.resumed) == 8 and not again.ran
