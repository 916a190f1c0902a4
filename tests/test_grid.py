"""Grid runner: failures recorded, determinism, CLI errors (resume after a kill: test_reliability.py)."""
import dataclasses
import json
from pathlib import Path

import torch

from bench.cli import main
from bench.config import BUDGETS
from bench.grid import Cell, build_cells, run_grid
from bench.method import Localization, Method
from bench.registry import REPO_ROOT
from bench.method.training import train
from tests.conftest import set_flags
from tests.harness import SMOKE, registered, run_small_cell, small_cell, smoke_settings


class Boom(Method):
    name = "boom"

    def fit(self, train_set, val, ctx):
        raise RuntimeError("deliberate failure in fit")


class NaNLoss(Method):
    name = "nan-loss"

    def fit(self, train_set, val, ctx):
        model = ctx.new_classifier()
        train(model, model.parameters(), train_set, ctx.budget, ctx.device,
              dataclasses.replace(ctx.budget.stage1_schedule(), epochs=1), ctx.seed,
              loss_fn=lambda m, x, y: m(x).logits.sum() * float("nan"))

    def localize(self, images, labels):
        return Localization(images.mean(1))


def test_same_seed_gives_identical_metrics(shared_dirs, tmp_path):
    dirs_a = {"data": shared_dirs["data"], "cache": tmp_path / "cache_a"}
    dirs_b = {"data": shared_dirs["data"], "cache": tmp_path / "cache_b"}
    a = run_small_cell("cam", "synth-objects", 3, dirs_a, tmp_path / "a")
    b = run_small_cell("cam", "synth-objects", 3, dirs_b, tmp_path / "b")
    assert a["status"] == b["status"] == "ok"
    assert a["metrics"] == b["metrics"]
    assert a["config_hash"] == b["config_hash"]


def test_failing_cells_are_recorded_and_the_grid_goes_on(shared_dirs, tmp_path):
    settings = smoke_settings(shared_dirs, tmp_path)
    cells = [small_cell("boom", "synth-objects", 0), small_cell("nan-loss", "synth-objects", 0)]
    cells += build_cells(["center"], ["synth-objects"], settings.replace(seeds=(0,)),
                         {"synth-objects": {"n_train": "12", "n_val": "2", "n_test": "4", "image_size": "64"}})[0]
    with registered(Boom, NaNLoss):
        report = run_grid(cells, settings)
    assert report.failed == ["synth-objects/boom/seed0", "synth-objects/nan-loss/seed0"]
    assert report.ran == ["synth-objects/center/seed0"]
    boom = json.loads((tmp_path / "synth-objects" / "boom" / "seed0.json").read_text())
    assert boom["status"] == "failed" and "deliberate failure in fit" in boom["error"]
    nan = json.loads((tmp_path / "synth-objects" / "nan-loss" / "seed0.json").read_text())
    assert nan["status"] == "failed" and "not finite" in nan["error"]
    # failed cells are retried on the next run, finished ones are not
    with registered(Boom, NaNLoss):
        again = run_grid(cells, settings)
    assert len(again.resumed) == 1 and len(again.failed) == 2


def test_unknown_names_list_the_known_ones(capsys):
    assert main(["run", "--methods", "no-such-method", "--budget", "smoke"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'no-such-method'" in err and "cam" in err and "center" in err
    assert main(["run", "--all", "--budget", "nope"]) == 2
    assert "known budgets: smoke, quick, paper" in capsys.readouterr().err
    assert main(["run", "--all", "--set", "cam.nothing=1", "--budget", "smoke"]) == 2
    assert "cam has no setting 'nothing'" in capsys.readouterr().err


def test_exit_status_says_a_cell_failed(shared_dirs, tmp_path, monkeypatch):
    plugin_dir = tmp_path / "plugins"
    plugin_dir.mkdir()
    (plugin_dir / "explode.py").write_text(
        "from bench.method import Method\nfrom bench.registry import register_method\n\n"
        "@register_method\nclass Explode(Method):\n    name = 'explode-test'\n\n"
        "    def fit(self, train, val, ctx):\n        raise ValueError('kaboom')\n")
    monkeypatch.setenv("WSOLBENCH_PLUGINS", str(plugin_dir))
    from bench import registry
    try:
        code = main(["run", "--methods", "explode-test,center", "--datasets", "synth-objects", "--seeds", "0",
                     "--budget", "smoke", "--data-root", str(shared_dirs["data"]), "--cache-dir",
                     str(shared_dirs["cache"]), "--results", str(tmp_path / "r"),
                     *[x for f in set_flags() for x in ("--set", f) if not f.startswith("synth-tissue")]])
    finally:
        registry.METHODS.unregister("explode-test")
    assert code == 1
    assert json.loads((tmp_path / "r" / "synth-objects" / "explode-test" / "seed0.json").read_text())["error"] == \
        "ValueError: kaboom"
    assert json.loads((tmp_path / "r" / "synth-objects" / "center" / "seed0.json").read_text())["status"] == "ok"


def test_methods_and_datasets_out_of_the_grid_run_only_by_name(shared_dirs):
    from tests.harness import settings_at

    settings = settings_at(shared_dirs["data"])
    cells, skipped = build_cells(None, ["synth-objects"], settings)
    assert "sscam" not in {c.method for c in cells} and "cam" in {c.method for c in cells}
    assert dict(skipped)["sscam x synth-objects"].startswith("left out of --all")
    assert {c.method for c in build_cells(["sscam"], ["synth-objects"], settings)[0]} == {"sscam"}
    everywhere, skipped = build_cells(["cam"], None, settings)
    assert "synth-tissue-shifted" not in {c.dataset for c in everywhere}
    assert "transfer target" in dict(skipped)["synth-tissue-shifted"]
    assert build_cells(["cam"], ["synth-tissue-shifted"], settings)[0]
