"""Bad inputs get one clear line naming the file or argument, never a traceback or a hang:
mistyped result folders, malformed or tampered entries, broken metadata and images, non-
checkpoint weights, pickled artifacts, broken plugin files, edge inputs of the compiled ops."""
import json
import logging
import os
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from bench import registry
from bench.cli import main
from bench.data.check import check_dataset
from bench.data.metadata import MetadataError, read_split
from bench.entries import write_entry
from bench.runner import result_path
from tests.fixtures import TinyBoxes, write_box_tree
from tests.test_leaderboard import record


def _entries(results, *names):
    """Sealed entries of methods `names` (seed 0, dataset d1) in `results`; their paths."""
    paths = []
    for i, name in enumerate(names):
        r = record(name, 0, 10.0 * (i + 1))
        paths.append(result_path(results, r["dataset"], r["method"], 0))
        write_entry(results, paths[-1], r)
    return paths


# --- a mistyped --results --------------------------------------------------------------------

def test_check_of_a_missing_or_empty_results_folder_is_an_error(tmp_path, capsys):
    wrong = tmp_path / "wrong"
    assert main(["leaderboard", "--check", "--results", str(wrong)]) == 2
    err = capsys.readouterr().err
    assert str(wrong) in err and "does not exist" in err and "all valid" not in err
    assert not wrong.exists(), "checking a folder must not create it"
    from bench.entries import ResultsFolderError, check_entries

    with pytest.raises(ResultsFolderError, match=f"result folder {wrong} does not exist"):
        check_entries(wrong)
    assert check_entries(wrong, allow_empty=True) == []
    wrong.mkdir()
    assert main(["leaderboard", "--check", "--results", str(wrong)]) == 2
    assert "holds no entry" in capsys.readouterr().err


def test_tables_are_never_replaced_by_empty_ones(tmp_path, capsys):
    from bench.leaderboard import write_leaderboard

    results = tmp_path / "results"
    _entries(results, "a")
    readme, csv = write_leaderboard(results, tmp_path, reported=None)
    before = readme.read_text(), csv.read_text()
    for wrong in (tmp_path / "typo", tmp_path / "empty"):
        if wrong.name == "empty":
            wrong.mkdir()
        assert main(["leaderboard", "--results", str(wrong), "--out", str(tmp_path)]) == 2
        assert str(wrong) in capsys.readouterr().err
        assert (readme.read_text(), csv.read_text()) == before
    assert not (tmp_path / "typo").exists()
    written = write_leaderboard(tmp_path / "empty", tmp_path / "out", reported=None, allow_empty=True)
    assert written.readme.is_file() and "## d1" not in written.readme.read_text()


# --- malformed and tampered entries ----------------------------------------------------------

MALFORMED = {
    "array": "[1, 2, 3]",
    "metrics-list": lambda r: {**r, "metrics": [1]},
    "timings-string": lambda r: {**r, "timings": "fast"},
    "code_version-list": lambda r: {**r, "code_version": ["x"]},
    "metric-string": lambda r: {**r, "metrics": {"PxAP": "high"}},
    "deviations-int": lambda r: {**r, "submission": {"deviations": 5}},
    "deep": "[" * 100_000 + "]" * 100_000,
    "not-utf8": b'{"method": "\xff"}',
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_entries_are_reported_as_file_and_reason(kind, tmp_path, capsys):
    results = tmp_path / "results"
    good, bad = _entries(results, "good", "bad")
    how = MALFORMED[kind]
    if callable(how):
        bad.write_text(json.dumps(how(json.loads(bad.read_text()))))
    else:
        bad.write_bytes(how if isinstance(how, bytes) else how.encode())
    assert main(["leaderboard", "--check", "--results", str(results)]) == 1
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith(f"{bad}: ")]
    assert lines, out
    assert main(["leaderboard", "--results", str(results), "--out", str(tmp_path)]) == 0
    table = (tmp_path / "README.md").read_text()
    assert "| good " in table and "| bad " not in table


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_resume_reads_a_malformed_entry_as_unfinished(kind, tmp_path):
    from bench.entries import is_finished_entry, read_entry

    results = tmp_path / "results"
    (path,) = _entries(results, "m")
    sealed = json.loads(path.read_text())
    assert read_entry(path) == sealed
    assert is_finished_entry(path, sealed["config_hash"], None)
    how = MALFORMED[kind]
    if callable(how):
        path.write_text(json.dumps(how(sealed)))
    else:
        path.write_bytes(how if isinstance(how, bytes) else how.encode())
    assert read_entry(path) is None
    assert not is_finished_entry(path, sealed["config_hash"], None)


def test_grid_resume_survives_a_malformed_entry(tmp_path):
    from bench.grid import is_finished

    results = tmp_path / "results"
    (path,) = _entries(results, "m")
    sealed = json.loads(path.read_text())
    for how in (MALFORMED["code_version-list"], MALFORMED["deep"]):
        path.write_text(json.dumps(how(sealed)) if callable(how) else how)
        assert not is_finished(path, sealed["config_hash"], None)


def test_tampered_entries_are_left_out_of_the_tables_with_a_warning(tmp_path, caplog):
    from bench.leaderboard import write_leaderboard

    results = tmp_path / "results"
    _, tampered = _entries(results, "honest", "tampered")
    r = json.loads(tampered.read_text())
    r["metrics"]["PxAP"] = 99.9  # a hand edit: the checksum no longer matches
    tampered.write_text(json.dumps(r))
    with caplog.at_level(logging.WARNING):
        written = write_leaderboard(results, tmp_path, reported=None)
    table = written.readme.read_text()
    assert "| honest " in table and "| tampered " not in table and "99.9" not in table
    assert [p.path for p in written.excluded] == [str(tampered)]
    assert "checksum" in written.excluded[0].reason
    assert any(str(tampered) in m and "checksum" in m for m in caplog.messages)
    assert "tampered" not in (tmp_path / "results.csv").read_text()


# --- metadata and images ---------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path):
    return write_box_tree(tmp_path)


def _meta(root, split="test"):
    return root / "metadata" / "tiny-boxes" / split


def _image(root, split="test", i=0):
    return root / "tiny-boxes" / split / f"c{i % 2}" / f"{i:03d}.png"


def test_non_utf8_metadata_names_file_and_line_and_the_check_goes_on(tree):
    labels = _meta(tree) / "class_labels.txt"
    lines = labels.read_bytes().splitlines(keepends=True)
    lines[1] = b"test/c1/001.png,\xff1\n"
    labels.write_bytes(b"".join(lines))
    (_meta(tree) / "image_ids.txt").open("a").write("test/c0/missing.png\n")
    problems = []
    read_split(_meta(tree), "box", problems=problems)
    assert any(p.startswith(f"{labels}:2: not UTF-8") for p in problems), problems
    report = check_dataset(TinyBoxes(), tree)
    assert any(e.startswith(f"{labels}:2: not UTF-8") for e in report.errors)
    assert any("missing.png" in e for e in report.errors), "the check went on after the bad line"
    with pytest.raises(MetadataError, match=f"{labels}:2: not UTF-8"):
        read_split(_meta(tree), "box")


def test_a_nul_byte_in_an_image_id_names_file_and_line(tree):
    ids = _meta(tree) / "image_ids.txt"
    ids.write_text(ids.read_text().replace("test/c0/000.png", "test/c0/0\x0000.png"))
    with pytest.raises(MetadataError, match=rf"{ids}:1: path .* contains a NUL byte"):
        read_split(_meta(tree), "box")
    report = check_dataset(TinyBoxes(), tree)
    assert any(e.startswith(f"{ids}:1:") and "NUL" in e for e in report.errors), report.errors


def test_a_decompression_bomb_is_refused_naming_the_file(tree, monkeypatch):
    from bench.data.images import ImageFileError, read_image

    # Pillow's limit lowered so that a 32x32 test image counts as a bomb (it warns above the limit):
    # the code path of a real 20000x20000 PNG, without allocating one
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    big = _image(tree, i=1)
    with pytest.raises(ImageFileError, match=rf"{big}: image is refused: .*decompression bomb"):
        read_image(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # above twice the limit Pillow raises itself
    report = check_dataset(TinyBoxes(), tree)
    assert any(e.startswith(f"{big}: image is refused") for e in report.errors)
    assert len([e for e in report.errors if "is refused" in e]) == 12, "every image was still checked"


def test_a_run_entry_names_the_image_it_refused(tree, tmp_path, monkeypatch):
    from bench.grid import Cell
    from bench.registry import DATASETS
    from bench.runner import run_cell
    from tests.harness import smoke_settings

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)
    DATASETS.register(TinyBoxes)
    try:
        entry = run_cell(Cell("center", TinyBoxes.name, 0),
                         smoke_settings({"data": tree, "cache": tmp_path / "cache"}, tmp_path / "results"))
    finally:
        DATASETS.unregister(TinyBoxes.name)
    assert entry["status"] == "failed"
    assert "tiny-boxes/" in entry["error"] and ".png: image is refused" in entry["error"], entry["error"]


def test_a_symlink_leaving_the_image_root_is_refused(tree, tmp_path):
    from bench.data.images import ImageFileError, read_image

    outside = tmp_path / "elsewhere.png"
    Image.new("RGB", (32, 32)).save(outside)
    link = _image(tree, i=2)
    link.unlink()
    link.symlink_to(outside)
    root = tree / "tiny-boxes"
    with pytest.raises(ImageFileError, match=rf"{link}: image resolves to .*outside the image root"):
        read_image(link, root)
    inside = _image(tree, i=3)
    inside.unlink()
    inside.symlink_to(_image(tree, "train", 3))  # a symlink within the root is fine
    assert read_image(inside, root).size == (32, 32)
    report = check_dataset(TinyBoxes(), tree)
    assert [e for e in report.errors if "outside the image root" in e] == [
        f"{link}: image resolves to {outside.resolve()}, outside the image root {root.resolve()} "
        f"(symlinks leaving the data root are refused)"]


def test_a_fifo_named_as_an_image_does_not_block_the_check(tree):
    fifo = _image(tree, i=0)
    fifo.unlink()
    os.mkfifo(fifo)
    done = {}
    worker = threading.Thread(target=lambda: done.update(report=check_dataset(TinyBoxes(), tree)), daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():  # release the reader blocked in open() before failing
        os.close(os.open(fifo, os.O_WRONLY))
        worker.join(5)
        pytest.fail("data check blocked on a FIFO")
    assert f"{fifo}: image is a FIFO, not an image file" in done["report"].errors


# --- weights, artifacts, op arguments --------------------------------------------------------

class _Pickled:
    def __reduce__(self):
        return (print, ("unpickled",))


def test_weights_that_are_not_a_checkpoint_name_the_file(tmp_path):
    from bench.models import build_classifier

    junk = tmp_path / "notes.pt"
    junk.write_text("this is not a checkpoint\n")
    with pytest.raises(ValueError, match=rf"--weights {junk}: not a PyTorch checkpoint"):
        build_classifier("small-cnn", 2, junk)
    pickled = tmp_path / "pickled.pt"
    torch.save({"conv.weight": _Pickled()}, pickled)
    with pytest.raises(ValueError, match=rf"--weights {pickled}: refused, it holds a pickled object"):
        build_classifier("small-cnn", 2, pickled)
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(ValueError, match=rf"--weights {listed}: expected a state dict"):
        build_classifier("small-cnn", 2, listed)


def test_a_pickled_artifact_is_refused_naming_the_file(tmp_path):
    from bench.artifacts import load_npz

    npz = tmp_path / "seed0.npz"
    np.savez(npz, cams=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=rf"{npz}: holds pickled \(object\) arrays, refused"):
        load_npz(npz)
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match=rf"{broken}: not a readable .npz"):
        load_npz(broken)


def test_lattice_filter_names_a_wrong_valid_shape():
    from bench.ops.lattice_filter import lattice_filter

    f, v = torch.rand(2, 3, 4, 5), torch.rand(2, 1, 4, 5)
    with pytest.raises(ValueError, match=r"valid must be \[B, H, W\] = \[2, 4, 5\].*got \(2, 5, 4\)"):
        lattice_filter(f, v, torch.ones(2, 5, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"valid must be \[B, N\] = \[2, 20\].*got \(2, 19\)"):
        lattice_filter(f.flatten(2), v.flatten(2), torch.ones(2, 19, dtype=torch.bool))
    assert lattice_filter(f, v, torch.ones(2, 20, dtype=torch.bool)).shape == v.shape


# --- plugin files that raise at import -------------------------------------------------------

@pytest.fixture
def broken_plugin(tmp_path, monkeypatch):
    folder = tmp_path / "plugins"
    folder.mkdir()
    path = folder / "broken.py"
    path.write_text("import math\nraise RuntimeError('this plugin is broken')\n")
    monkeypatch.setenv("WSOLBENCH_PLUGINS", str(folder))
    monkeypatch.setattr(registry, "_failures", {})
    return path


def test_a_plugin_that_raises_at_import_is_listed_and_the_command_goes_on(broken_plugin, capsys, caplog):
    with caplog.at_level(logging.WARNING):
        assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "center" in out, "the other plugins are listed"
    assert any(str(broken_plugin.resolve()) in m and "RuntimeError: this plugin is broken (line 2)" in m
               for m in caplog.messages)
    assert [str(f) for f in registry.plugin_failures()] == [
        f"{broken_plugin.resolve()}: RuntimeError: this plugin is broken (line 2)"]


def test_check_reports_a_plugin_that_raises_at_import(broken_plugin, tmp_path, capsys):
    results = tmp_path / "results"
    _entries(results, "a")
    assert main(["leaderboard", "--check", "--results", str(results)]) == 1
    out = capsys.readouterr().out
    assert f"{broken_plugin.resolve()}: plugin file failed to import: RuntimeError: this plugin is broken (line 2)" in out


# --- compiled ops and their references on edge inputs ----------------------------------------

def _tmp_paths():
    from bench._ext import has_op
    from bench.ops.temporal_max_pool import DIRECTIONS, temporal_max_pool_reference

    def op(cams, reweight_h=None, normalize=False):
        shots = torch.zeros(cams.shape[:2], dtype=torch.int64)
        return torch.ops.wsolbench.temporal_max_pool(cams, shots, 1, DIRECTIONS["both"], reweight_h is not None,
                                                     float(reweight_h or 0.0), normalize)

    def ref(cams, reweight_h=None, normalize=False):
        return temporal_max_pool_reference(cams, None, 1, "both", reweight_h, normalize)

    return [("reference", ref)] + ([("compiled", op)] if has_op("temporal_max_pool") else [])


@pytest.mark.parametrize("path", [name for name, _ in _tmp_paths()])
def test_temporal_max_pool_edge_inputs_agree(path):
    fn = dict(_tmp_paths())[path]
    cams = torch.rand(2, 4, 3, 3, dtype=torch.float64)
    for bad in (float("nan"), float("inf"), -float("inf")):
        for frame in (0, 2):
            x = cams.clone()
            x[1, frame, 1, 2] = bad
            for reweight_h in (None, 3.0):
                for normalize in (False, True):
                    with pytest.raises(ValueError, match="cams must be finite"):
                        fn(x, reweight_h, normalize)
    for h in (float("inf"), -float("inf"), float("nan")):
        with pytest.raises(ValueError, match="reweight_h must be finite"):
            fn(cams, h)
    for shape in ((2, 4, 0, 3), (2, 4, 3, 0), (0, 4, 3, 3)):
        pooled, winner = fn(torch.rand(shape), 2.0, True)
        assert pooled.shape == winner.shape == shape and winner.dtype == torch.int32
    pooled, winner = fn(cams, 3.0, True)  # finite inputs: both paths give the same maps
    want, want_winner = dict(_tmp_paths())["reference"](cams, 3.0, True)
    torch.testing.assert_close(pooled, want)
    assert torch.equal(winner, want_winner)


def _rb_paths():
    from bench._ext import has_op
    from bench.ops.region_boxes import region_boxes_reference

    paths = [("reference", region_boxes_reference)]
    if has_op("region_boxes"):
        paths.append(("compiled", lambda q, b, o, t: torch.ops.wsolbench.region_boxes(q, b, o, list(t), True)))
    return paths


@pytest.mark.parametrize("path", [name for name, _ in _rb_paths()])
def test_region_boxes_refuses_empty_maps(path):
    from bench.ops.region_boxes import pack_boxes

    fn = dict(_rb_paths())[path]
    boxes, offsets = pack_boxes([torch.zeros(1, 4)])
    for shape in ((1, 4, 0), (1, 0, 4), (1, 0, 0)):
        with pytest.raises(ValueError, match=rf"at least one pixel, got H x W = {shape[1]} x {shape[2]}"):
            fn(torch.zeros(shape, dtype=torch.uint8), boxes, offsets, [0.5])
    none, off0 = pack_boxes([])
    v1, v2 = fn(torch.zeros((0, 4, 0), dtype=torch.uint8), none, off0, [0.5])
    assert v1.shape == v2.shape == (0, 1, 256)
    v1, v2 = fn(torch.zeros((1, 1, 1), dtype=torch.uint8), boxes, offsets, [0.5])
    assert v1.all() and v2.all(), "a 1x1 map without foreground has the box [0, 0, 0, 0]"
