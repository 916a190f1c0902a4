"""Training schedules: the `paper` budget resolved per dataset and backbone from the papers'
published runs, the step decay of `bench.method.training.train`, and the configuration hashes the
committed results depend on."""
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

from bench.config import PaperSchedule, make_budget, TrainSchedule, config_hash, get_budget, resolve_budget
from bench.method import Localization, Method
from bench.registry import REPO_ROOT, get_dataset, get_method
from bench.runner import RunContext, cell_config, run_cell
from bench.method.training import train
from bench.settings import RunSettings

SYNTHETIC = ("synth-objects", "synth-tissue", "synth-video")


def _settings(budget, backbone: str = "small-cnn") -> RunSettings:
    return RunSettings(budget=budget, data_root=Path("."), results_dir=Path("."), cache_dir=Path("."), backbone=backbone)


def cam_cell_hash(budget: str, dataset: str, backbone: str = "small-cnn") -> str:
    cam = get_method("cam")
    return config_hash(cell_config(cam, cam.Config(), get_dataset(dataset)(), 0, _settings(get_budget(budget), backbone)))


# The CAM cell hashes of the committed leaderboard (recomputed whenever a change of what a cell
# depends on reruns it from scratch; the leaderboard's README header dates that run): the
# committed results are only valid while these stay.
MAIN_HASHES = {
    ("smoke", "synth-objects"): "86bcb4a5acb23190", ("smoke", "synth-tissue"): "e6b7ce302c638d5a",
    ("smoke", "synth-video"): "ff964482643b96ee", ("quick", "synth-objects"): "dec7074ad212b1d5",
    ("quick", "synth-tissue"): "467fc7f441ef5ca8", ("quick", "synth-video"): "38e4c7d0eac856d2",
    ("paper", "synth-objects"): "59ce60a1676ca18f", ("paper", "synth-tissue"): "993d4617774343f9",
    ("paper", "synth-video"): "c948705c6beef591",
}


@pytest.mark.parametrize("budget,dataset", sorted(MAIN_HASHES))
def test_cell_hashes_are_those_of_main(budget, dataset):
    assert cam_cell_hash(budget, dataset) == MAIN_HASHES[budget, dataset]


def test_every_committed_result_keeps_its_hash():
    entries = sorted((REPO_ROOT / "leaderboard" / "results").glob("*/*/seed*.json"))
    assert entries
    for path in entries:
        r = json.loads(path.read_text())
        method = get_method(r["method"])
        config = cell_config(method, method.Config(), get_dataset(r["dataset"])(), r["seed"],
                             _settings(get_budget(r["budget"]), r["backbone"]))
        assert config_hash(config) == r["config_hash"], path


def test_generic_stage1_cache_keys_are_those_of_main():
    # the stage-1 cache key of a quick cosine run, pinned: a change of it retrains every cached classifier
    ctx = RunContext(settings=_settings(get_budget("quick"), backbone="resnet50"), budget=get_budget("quick"), seed=0,
                     dataset=get_dataset("synth-objects")(), splits=None)
    assert config_hash(ctx.stage1_key()) == "42e51e99ca9d6b00"


@pytest.mark.parametrize("budget", ["smoke", "quick"])
@pytest.mark.parametrize("dataset", ["cub", "glas", "ytov1", "synth-objects"])
def test_generic_budgets_ignore_published_schedules(budget, dataset):
    assert resolve_budget(get_budget(budget), get_dataset(dataset)(), "resnet50") is get_budget(budget)


@pytest.mark.parametrize("dataset", SYNTHETIC + ("ilsvrc", "camelyon16", "ytov22"))
def test_paper_budget_without_published_schedule_is_the_generic_one(dataset):
    paper = get_budget("paper")
    assert resolve_budget(paper, get_dataset(dataset)(), "resnet50") == paper
    assert paper.stage1_schedule() == TrainSchedule(epochs=50, lr=0.01, weight_decay=1e-4)  # cosine
    assert paper.method_schedule() == TrainSchedule(epochs=20, lr=0.01, weight_decay=1e-4)


# (dataset, backbone) -> the stage-1 (CAM) and method (decoder) runs the `paper` budget trains.
PUBLISHED = {
    # sbelharbi/fcam-wsol README.md: CAM and F-CAM on CUB, ResNet50
    ("cub", "resnet50"): (TrainSchedule(50, 0.0017, 1e-4, step_every=15, gamma=0.1),
                          TrainSchedule(50, 0.01, 1e-4, step_every=1000, gamma=0.1)),
    # the same length and decay, the budget's learning rate (VGG16's was not found)
    ("cub", "vgg16"): (TrainSchedule(50, 0.01, 1e-4, step_every=15, gamma=0.1),
                       TrainSchedule(50, 0.01, 1e-4, step_every=1000, gamma=0.1)),
    # clovaai/wsolevaluation README.md: CAM on OpenImages, VGG16; decoder settings not found
    ("openimages", "vgg16"): (TrainSchedule(10, 0.00227913316, 5e-4, step_every=3, gamma=0.1),
                              TrainSchedule(20, 0.01, 1e-4)),
    ("openimages", "resnet50"): (TrainSchedule(10, 0.01, 1e-4, step_every=3, gamma=0.1),
                                 TrainSchedule(20, 0.01, 1e-4)),
    # sbelharbi/negev README.md: CAM and NEGEV on GlaS, ResNet50
    ("glas", "resnet50"): (TrainSchedule(1000, 0.003, 1e-4, step_every=250, gamma=0.1),
                           TrainSchedule(1000, 0.1, 1e-4, step_every=250, gamma=0.1)),
    # sbelharbi/tcam-wsol-video README.md: CAM and TCAM on YTOv1, ResNet50
    ("ytov1", "resnet50"): (TrainSchedule(100, 0.001, 1e-4, step_every=15, gamma=0.9),
                            TrainSchedule(100, 0.01, 1e-4, step_every=15, gamma=0.9)),
}


@pytest.mark.parametrize("dataset,backbone", sorted(PUBLISHED))
def test_paper_budget_carries_the_published_numbers(dataset, backbone):
    budget = resolve_budget(get_budget("paper"), get_dataset(dataset)(), backbone)
    stage1, method = PUBLISHED[dataset, backbone]
    assert budget.stage1_schedule() == stage1
    assert budget.method_schedule() == method
    assert budget.stage1.epochs == stage1.epochs and budget.method.epochs == method.epochs
    # the rest of the paper budget stays: batch 32, 224 crops from 256, mixed precision
    assert (budget.batch_size, budget.input_size, budget.crop_from, budget.mixed_precision) == (32, 224, 256, True)
    assert resolve_budget(budget, get_dataset(dataset)(), backbone) == budget  # resolving twice changes nothing


def test_method_rates_come_from_the_method_config_first():
    budget = resolve_budget(get_budget("paper"), get_dataset("glas")(), "resnet50")
    assert budget.method_schedule(lr=0.02).lr == 0.02  # e.g. `--set fcam.lr=0.02`
    assert budget.method_schedule(lr=None).lr == 0.1  # NEGEV's published decoder rate
    assert budget.lr == 0.01  # the base rate of the localizer / PixelCAM fine-tuning fractions


def test_paper_cells_hash_their_resolved_schedule(monkeypatch):
    by_backbone = {bb: cam_cell_hash("paper", "cub", bb) for bb in ("resnet50", "vgg16", "small-cnn")}
    assert len(set(by_backbone.values())) == 3
    assert cam_cell_hash("paper", "cub", "small-cnn") != cam_cell_hash("quick", "cub", "small-cnn")
    cub = get_dataset("cub")
    before = cam_cell_hash("paper", "cub", "resnet50")
    monkeypatch.setattr(cub, "paper_stage1", replace(cub.paper_stage1, gamma=0.5))
    assert cam_cell_hash("paper", "cub", "resnet50") != before
    monkeypatch.setattr(cub, "paper_stage1", replace(cub.paper_stage1, gamma=0.1, lr={"resnet50": 0.002}))
    assert cam_cell_hash("paper", "cub", "resnet50") != before


def test_stage1_cache_key_follows_the_step_decay():
    def key(budget):
        ctx = RunContext(settings=_settings(budget, backbone="resnet50"), budget=budget, seed=0,
                         dataset=get_dataset("cub")(), splits=None)
        return config_hash(ctx.stage1_key())

    paper = resolve_budget(get_budget("paper"), get_dataset("cub")(), "resnet50")
    assert key(paper) != key(replace(paper, stage1=replace(paper.stage1, step_every=10))) \
        != key(replace(paper, stage1=replace(paper.stage1, gamma=0.5)))


class Points(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return {"image": torch.full((3, 2, 2), float(i)), "label": i % 2, "index": i}


def lrs_of_a_run(schedule: TrainSchedule) -> list[float]:
    """The learning rate of every optimizer step of a run (8 items, batch 4: 2 steps an epoch)."""
    seen: list[float] = []
    hook = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
    try:
        model = torch.nn.Linear(12, 2)
        train(model, model.parameters(), Points(), make_budget("tiny", 1, 1, batch_size=4, lr=0.5), torch.device("cpu"),
              schedule, seed=0, loss_fn=lambda m, x, y: torch.nn.functional.cross_entropy(m(x.flatten(1)), y))
    finally:
        hook.remove()
    return seen


def test_step_schedule_lowers_the_lr_by_gamma_at_epoch_boundaries():
    seen = lrs_of_a_run(TrainSchedule(epochs=7, lr=0.1, weight_decay=0.0, step_every=3, gamma=0.5))
    per_epoch = [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025]
    assert seen == pytest.approx([lr for lr in per_epoch for _ in range(2)], rel=1e-12)


def test_cosine_schedule_is_unchanged():
    seen = lrs_of_a_run(TrainSchedule(epochs=3, lr=0.1, weight_decay=0.0))
    total = 6
    assert seen == pytest.approx([0.05 * (1 + math.cos(math.pi * t / total)) for t in range(total)], rel=1e-9)


def test_schedules_validate():
    with pytest.raises(ValueError, match="step_every"):
        TrainSchedule(epochs=3, lr=0.1, weight_decay=0.0, step_every=0)
    assert PaperSchedule(epochs=3, step_every=1).lr == {}  # no backbone published: the budget's rates


class Probe(Method):
    """Records the budget a cell hands its method; localizes with a flat map."""

    name = "probe"
    seen: list = []

    def fit(self, train_set, val, ctx):
        Probe.seen.append(ctx.budget)

    def localize(self, images, labels):
        return Localization(images.mean(1))


def test_a_paper_cell_trains_and_records_its_resolved_budget(tmp_path):
    from tests.test_real_datasets import write_tree

    write_tree("glas", tmp_path / "data")
    small = replace(get_budget("paper"), input_size=16, crop_from=20, num_workers=0)
    from bench.grid import Cell
    from tests.harness import registered

    with registered(Probe):
        record = run_cell(Cell("probe", "glas", 0), RunSettings(
            budget=small, data_root=tmp_path / "data", results_dir=tmp_path / "results", cache_dir=tmp_path / "cache",
            backbone="resnet50", random_init=True))  # no ImageNet weights here: off the protocol, marked
    assert record["status"] == "ok", record.get("error")
    assert record["random_init"] is True
    budget = Probe.seen[-1]
    assert budget == resolve_budget(small, get_dataset("glas")(), "resnet50")
    assert budget.stage1_schedule() == TrainSchedule(1000, 0.003, 1e-4, step_every=250, gamma=0.1)
    assert record["budget"] == "paper"
    assert record["config"]["budget"]["stage1"]["step_every"] == 250 and record["config"]["budget"]["method"]["lr"] == 0.1


def test_another_architecture_under_the_same_backbone_name_changes_the_hashes(monkeypatch):
    # shared code is not hashed, but the backbone's architecture is: entries and cached
    # classifiers of an earlier small-cnn are never resumed or loaded by a changed one
    from bench.models import BACKBONES, SmallCNN, backbone_fingerprint

    before = cam_cell_hash("quick", "synth-tissue")
    assert backbone_fingerprint("small-cnn") != backbone_fingerprint("resnet50")
    monkeypatch.setitem(BACKBONES._table, "small-cnn", lambda: SmallCNN(widths=(16, 32, 64, 96)))
    backbone_fingerprint.cache_clear()
    try:
        assert cam_cell_hash("quick", "synth-tissue") != before
    finally:
        monkeypatch.undo()
        backbone_fingerprint.cache_clear()
    assert cam_cell_hash("quick", "synth-tissue") == before
