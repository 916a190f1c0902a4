"""Sealed leaderboard entries and `leaderboard --check`: every kind of problem is named with
its file; artifacts for the report are written beside each entry."""
import json
import shutil

import numpy as np
import pytest

from bench.cli import main
from bench.entries import check_entries, entry_checksum
from bench.registry import get_method
from tests.harness import run_tiny_grid


@pytest.fixture(scope="module")
def sealed(shared_dirs, tmp_path_factory):
    """A tiny result folder: two methods x two datasets, seed 0."""
    results = tmp_path_factory.mktemp("sealed") / "results"
    report = run_tiny_grid(["cam", "center"], ["synth-objects", "synth-tissue"], [0], shared_dirs, results)
    assert not report.failed
    return results


@pytest.fixture
def results(sealed, tmp_path):
    copy = tmp_path / "results"
    shutil.copytree(sealed, copy)
    return copy


def _edit(path, change):
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record, indent=2, sort_keys=True))


def test_fresh_entries_pass_the_check(results, capsys):
    assert check_entries(results) == []
    assert main(["leaderboard", "--check", "--results", str(results)]) == 0
    assert "4 entries" in capsys.readouterr().out
    record = json.loads((results / "synth-objects" / "cam" / "seed0.json").read_text())
    assert record["checksum"] == entry_checksum(record)
    assert record["code_version"]["method_file_sha256"]


def test_hand_edited_metric_fails_the_check(results, capsys):
    path = results / "synth-objects" / "cam" / "seed0.json"
    _edit(path, lambda r: r["metrics"].__setitem__("MaxBoxAccV2", 99.9))
    assert main(["leaderboard", "--check", "--results", str(results)]) == 1
    out = capsys.readouterr().out
    assert f"{path}: checksum does not match the content" in out
    assert "1 problem(s) in 4 entries" in out


def test_each_kind_of_problem_is_named(results):
    base = results / "synth-objects"
    _edit(base / "cam" / "seed0.json", lambda r: r["config"]["budget"].__setitem__("batch_size", 1))
    _edit(base / "center" / "seed0.json", lambda r: r.pop("checksum"))
    moved = results / "synth-tissue" / "cam" / "seed1.json"  # a copy of seed0 under another seed's name
    shutil.copy(results / "synth-tissue" / "cam" / "seed0.json", moved)
    (results / "synth-tissue" / "notes.json").write_text("{}")
    problems = {(p.path, p.reason.split(" (")[0].split(":")[0]) for p in check_entries(results)}
    assert (str(base / "cam" / "seed0.json"), "checksum does not match the content") in problems
    assert any(p == str(base / "cam" / "seed0.json") and r.startswith("config_hash") for p, r in problems)
    assert (str(base / "center" / "seed0.json"), "missing field 'checksum'") in problems
    assert any(p == str(moved) and r.startswith("lies at synth-tissue/cam/seed1.json") for p, r in problems)
    assert any(p == str(moved) and r.startswith("duplicate cell synth-tissue/cam/seed0") for p, r in problems)
    assert (str(results / "synth-tissue" / "notes.json"), "not an entry path") in problems


def test_a_changed_method_file_or_artifact_fails_the_check(results, monkeypatch):
    cam = get_method("cam")
    monkeypatch.setattr(cam, "source_file", str(get_method("center").source_file))
    reasons = [p.reason for p in check_entries(results) if "/cam/" in p.path]
    assert len(reasons) == 2 and all(r.startswith("method file changed since this entry was written") for r in reasons)
    monkeypatch.undo()
    npz = results / "synth-tissue" / "center" / "seed0.npz"
    npz.write_bytes(npz.read_bytes()[:-10])
    assert [p.reason for p in check_entries(results)] == ["its artifact file seed0.npz does not match its sha256"]


def test_committed_entries_without_checksums_are_flagged(tmp_path):
    legacy = {"schema": 1, "method": "cam", "dataset": "d", "seed": 0}
    (tmp_path / "d" / "cam").mkdir(parents=True)
    (tmp_path / "d" / "cam" / "seed0.json").write_text(json.dumps(legacy))
    reasons = [p.reason for p in check_entries(tmp_path)]
    assert any("missing field 'checksum' (written before entries were sealed: rerun the cell)" == r for r in reasons)


def test_artifacts_hold_the_same_samples_for_every_method(sealed):
    from bench.artifacts import load_npz

    for dataset in ("synth-objects", "synth-tissue"):
        arrays = {m: load_npz(sealed / dataset / m / "seed0.npz") for m in ("cam", "center")}
        records = {m: json.loads((sealed / dataset / m / "seed0.json").read_text()) for m in ("cam", "center")}
        assert records["cam"]["artifacts"]["samples"] == records["center"]["artifacts"]["samples"]
        samples = load_npz(sealed / dataset / records["cam"]["artifacts"]["samples"])
        k = samples["images"].shape[0]
        assert k == 4 and samples["images"].dtype == np.uint8 and samples["images"].shape[-1] == 3
        for m, a in arrays.items():
            assert a["cams"].shape == (k, *samples["images"].shape[1:3]) and a["cams"].dtype == np.uint8
            assert (a["sample_index"] == samples["sample_index"]).all()
        kinds = {key.split(".")[1] for key in arrays["cam"] if key.startswith("curve.")}
        assert kinds == ({"box", "mask"} if dataset == "synth-objects" else {"mask"})
        assert (sealed / dataset / "cam" / "seed0.npz").stat().st_size < 40_000


def test_resume_reruns_edited_or_unsealed_entries(results, shared_dirs):
    path = results / "synth-objects" / "cam" / "seed0.json"
    _edit(path, lambda r: r["metrics"].__setitem__("MaxBoxAccV2", 99.9))
    _edit(results / "synth-objects" / "center" / "seed0.json", lambda r: r.pop("checksum"))
    again = run_tiny_grid(["cam", "center"], ["synth-objects", "synth-tissue"], [0], shared_dirs, results)
    assert sorted(again.ran) == ["synth-objects/cam/seed0", "synth-objects/center/seed0"] and len(again.resumed) == 2
    assert check_entries(results) == []
