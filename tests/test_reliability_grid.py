"""The grid's own defences: data fingerprints in hashes and caches, no silent replacement of
another run's entries, unwritable folders found first, damaged caches retrained, a dead worker
failing only its cell, one-line CLI errors."""
import json
import logging
from dataclasses import replace

import pytest

from bench.cli import main
from bench.config import get_budget
from bench.grid import Cell, run_grid
from bench.method import Localization, Method
from bench.runner import RunContext, cell_config
from bench.registry import get_dataset, get_method
from tests.conftest import set_flags
from tests.harness import registered, small_cell, smoke_settings
from tests.test_real_datasets import write_tree


def _center_config_hash(dataset, settings):
    center = get_method("center")
    return cell_config(center, center.Config(), dataset, 0, settings)["data"]


def test_other_metadata_on_disk_changes_the_cell_hash_and_the_stage1_key(tmp_path):
    root = tmp_path / "data"
    write_tree("cub", root)
    settings = smoke_settings({"data": root, "cache": tmp_path / "cache"})
    cub = get_dataset("cub")()
    before = _center_config_hash(cub, settings)
    ctx = RunContext(settings=settings, budget=settings.budget, seed=0, dataset=cub, splits=None)
    key_before = ctx.stage1_key()
    labels = cub.meta_dir(root, "train") / "class_labels.txt"
    lines = labels.read_text().splitlines()
    path, label = lines[0].split(",")
    labels.write_text("\n".join([f"{path},{1 - int(label)}", *lines[1:]]) + "\n")  # one label flipped
    assert before is not None and _center_config_hash(cub, settings) != before
    assert ctx.stage1_key() != key_before


def test_a_cell_on_changed_data_is_rerun_not_resumed(tmp_path):
    root = tmp_path / "data"
    write_tree("cub", root)
    settings = smoke_settings({"data": root, "cache": tmp_path / "cache"}, tmp_path / "results")
    cells = [Cell("center", "cub", 0)]
    assert len(run_grid(cells, settings).ran) == 1
    assert len(run_grid(cells, settings).resumed) == 1
    boxes_file = get_dataset("cub")().meta_dir(root, "test") / "localization.txt"
    boxes_file.write_text(boxes_file.read_text())  # rewritten with the same bytes: still resumes
    assert len(run_grid(cells, settings).resumed) == 1
    boxes = boxes_file.read_text().splitlines()
    path, x0, y0, x1, y1 = boxes[0].split(",")
    boxes_file.write_text("\n".join([f"{path},{x0},{y0},{int(x1) - 1},{y1}", *boxes[1:]]) + "\n")
    assert len(run_grid(cells, settings).ran) == 1


def test_the_synthetic_generator_version_keys_the_embedded_data(monkeypatch):
    ds = get_dataset("synth-objects")()
    before = ds.fingerprint("unused")
    monkeypatch.setattr(type(ds), "generator_version", type(ds).generator_version + 1)
    assert ds.fingerprint("unused") != before


def test_another_budget_never_silently_replaces_entries(shared_dirs, tmp_path):
    settings = smoke_settings(shared_dirs, tmp_path / "results")
    cells = [small_cell("center", "synth-objects", 0)]
    assert len(run_grid(cells, settings).ran) == 1
    entry = tmp_path / "results" / "synth-objects" / "center" / "seed0.json"
    written = entry.read_bytes()
    with pytest.raises(ValueError, match="would replace entries of another run.*budget smoke.*--overwrite"):
        run_grid(cells, settings.replace(budget=get_budget("quick")))
    with pytest.raises(ValueError, match="backbone small-cnn"):
        run_grid(cells, settings.replace(backbone="resnet50"))
    assert entry.read_bytes() == written
    assert len(run_grid(cells, settings.replace(budget=get_budget("quick"), overwrite=True)).ran) == 1
    assert json.loads(entry.read_text())["budget"] == "quick"


class Counting(Method):
    name = "counting-test"
    fits = 0

    def fit(self, train_set, val, ctx):
        Counting.fits += 1

    def localize(self, images, labels):
        return Localization(images.mean(1))


def test_an_unwritable_results_folder_is_refused_before_any_cell(shared_dirs, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    Counting.fits = 0
    with registered(Counting), pytest.raises(ValueError, match=r"results folder .*a-file/results: cannot write there"):
        run_grid([small_cell("counting-test", "synth-objects", 0)], smoke_settings(shared_dirs, blocker / "results"))
    assert Counting.fits == 0


def test_the_cli_says_it_in_one_line(shared_dirs, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code = main(["run", "--methods", "center", "--datasets", "synth-objects", "--seeds", "0", "--budget", "smoke",
                 "--data-root", str(shared_dirs["data"]), "--cache-dir", str(shared_dirs["cache"]),
                 "--results", str(blocker / "r"), *[x for f in set_flags() for x in ("--set", f)]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: results folder {blocker / 'r'}: cannot write there (Not a directory)"]


def test_a_damaged_stage1_cache_file_is_named_and_retrained(shared_dirs, tmp_path, caplog):
    dirs = {"data": shared_dirs["data"], "cache": tmp_path / "cache"}
    cells = [small_cell("cam", "synth-objects", 0)]
    first = run_grid(cells, smoke_settings(dirs, tmp_path / "a"))
    assert first.ran and not first.failed
    (cached,) = (tmp_path / "cache" / "stage1").rglob("*.pt")
    metrics = json.loads((tmp_path / "a" / "synth-objects" / "cam" / "seed0.json").read_text())["metrics"]
    cached.write_bytes(cached.read_bytes()[:100])  # truncated
    with caplog.at_level(logging.WARNING, logger="bench.runner"):
        again = run_grid(cells, smoke_settings(dirs, tmp_path / "b"))
    assert again.ran and not again.failed
    assert f"cache file {cached} is damaged (its checksum does not match): removed, retraining" in caplog.text
    assert json.loads((tmp_path / "b" / "synth-objects" / "cam" / "seed0.json").read_text())["metrics"] == metrics
    assert cached.is_file() and cached.with_name(cached.name + ".sha256").is_file()


def test_a_dead_worker_fails_only_its_own_cell(shared_dirs, tmp_path, monkeypatch):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "dies.py").write_text(
        "import os, signal\n\nfrom bench.method import Localization, Method, register_method\n\n\n"
        "@register_method\nclass Dies(Method):\n    name = 'dies-test'\n\n"
        "    def fit(self, train, val, ctx):\n        if ctx.seed == 1:\n"
        "            os.kill(os.getpid(), signal.SIGKILL)\n\n"
        "    def localize(self, images, labels):\n        return Localization(images.mean(1))\n")
    monkeypatch.setenv("WSOLBENCH_PLUGINS", str(plugins))
    from bench import registry

    try:
        cells = [small_cell("dies-test", "synth-objects", seed) for seed in (0, 1, 2)]
        report = run_grid(cells, smoke_settings(shared_dirs, tmp_path / "r", jobs=2))
    finally:
        registry.METHODS.unregister("dies-test")
    assert report.failed == ["synth-objects/dies-test/seed1"]
    assert sorted(report.ran) == ["synth-objects/dies-test/seed0", "synth-objects/dies-test/seed2"]
    failed = json.loads((tmp_path / "r" / "synth-objects" / "dies-test" / "seed1.json").read_text())
    assert failed["status"] == "failed" and failed["error"].startswith("WorkerDied")


@pytest.mark.parametrize("flags,message", [
    (["--seeds", "-1"], "error: --seeds: seeds are non-negative integers, got -1"),
    (["--seeds", "0,a"], "error: --seeds '0,a': 'a' is not an integer (e.g. --seeds 0,1,2)"),
    (["--device", "tpu"], "error: --device 'tpu': not a device (cpu, cuda, cuda:1)"),
])
def test_bad_run_flags_are_one_line_errors(flags, message, tmp_path, capsys):
    code = main(["run", "--methods", "center", "--datasets", "synth-objects", "--budget", "smoke",
                 "--results", str(tmp_path / "r"), *flags])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [message]
    assert not (tmp_path / "r").exists()


def test_a_stage1_key_names_the_data():
    ds = get_dataset("synth-tissue")()
    settings = smoke_settings({"data": "unused", "cache": "unused"})
    ctx = RunContext(settings=settings, budget=settings.budget, seed=0, dataset=ds, splits=None)
    assert ctx.stage1_key()["data"] == ds.fingerprint("unused")
    other = get_dataset("synth-tissue")(replace(ds.cfg, n_train=ds.cfg.n_train + 1))
    assert other.fingerprint("unused") != ds.fingerprint("unused")
