"""Model selection on the validation split (docs/protocol.md, "Model selection")."""
from dataclasses import replace

import pytest
import torch
from torch import nn

from bench.config import BUDGETS, make_budget
from bench.dataset import make_loader
from bench.entries import _selection_problems
from bench.leaderboard import render_markdown
from bench.method import Localization, Method, TrainedCAM, train
from bench.method.training import Selector
from bench.runner import RunContext
from tests.harness import SMOKE, run_small_cell, small_dataset, smoke_settings

CPU = torch.device("cpu")
TINY = make_budget("tiny", stage1_epochs=4, method_epochs=4, batch_size=4, lr=0.1)


def toy_images(n=8, size=16, classes=2):
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(3, size, size, generator=g), "label": i % classes, "index": i} for i in range(n)]


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3, 2)

    def forward(self, images):
        return self.fc(images.mean((2, 3)))


def ce(model, images, labels):
    return nn.functional.cross_entropy(model(images), labels)


def scripted(values, model, seen):
    """A score() returning values[k] at the k-th validation; records the model's weights then."""
    def score():
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        torch.rand(3)  # validation may draw random numbers: train must not see it
        return {"MaxBoxAccV2": values[len(seen) - 1]}
    return score


def test_selector_keeps_the_first_epoch_with_the_best_scripted_value_and_restores_it():
    model, seen = Linear(), []
    # validations before training and after each of the 4 epochs; 60 twice: the earliest wins
    values = [10.0, 30.0, 60.0, 40.0, 60.0]
    selector = Selector(scripted(values, model, seen), {"best-loc": "MaxBoxAccV2"})
    train(model, model.parameters(), toy_images(), TINY, CPU, TINY.stage1_schedule(), 0, loss_fn=ce,
          selector=selector)
    assert len(seen) == 5
    assert selector.best["best-loc"] == (2, 60.0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, seen[2][k])
    assert not torch.equal(seen[2]["fc.weight"], seen[4]["fc.weight"])  # the last epoch differs
    for k, v in selector.states["last"].items():  # and is kept too
        assert torch.equal(v, seen[4][k])
    summary = selector.summary()
    assert (summary["criterion"], summary["metric"], summary["epoch"], summary["epochs"]) == \
        ("best-loc", "MaxBoxAccV2", 2, 4)
    assert [h[0] for h in summary["history"]] == [0, 1, 2, 3, 4]


def test_validating_every_k_epochs_and_after_the_last():
    model, seen = Linear(), []
    selector = Selector(scripted([1.0, 2.0, 0.0], model, seen), {"best-loc": "MaxBoxAccV2"}, every=3)
    train(model, model.parameters(), toy_images(), TINY, CPU, TINY.stage1_schedule(), 0, loss_fn=ce,
          selector=selector)
    assert [h[0] for h in selector.history] == [0, 3, 4]
    assert selector.best["best-loc"] == (3, 2.0)


def test_validation_leaves_the_training_run_unchanged():
    """A validated run whose best epoch is the last ends in the same weights as a run without
    validation (the validation pass draws random numbers and switches the model to eval)."""
    plain = Linear()
    train(plain, plain.parameters(), toy_images(), TINY, CPU, TINY.stage1_schedule(), 0, loss_fn=ce)
    validated, seen = Linear(), []
    selector = Selector(scripted([1.0, 2.0, 3.0, 4.0, 5.0], validated, seen), {"best-loc": "MaxBoxAccV2"})
    train(validated, validated.parameters(), toy_images(), TINY, CPU, TINY.stage1_schedule(), 0, loss_fn=ce,
          selector=selector)
    assert selector.best["best-loc"][0] == 4
    for k, v in plain.state_dict().items():
        assert torch.equal(v, validated.state_dict()[k])


def test_selector_errors_name_the_problem():
    with pytest.raises(ValueError, match="criteria"):
        Selector(lambda: {}, {"best": "PxAP"})
    with pytest.raises(ValueError, match="every"):
        Selector(lambda: {}, {"best-loc": "PxAP"}, every=0)
    model = Linear()
    selector = Selector(lambda: {"PxAP": 1.0}, {"best-cls": "Top-1 Cls"})
    with pytest.raises(KeyError, match="Top-1 Cls"):
        selector.validate(model, 0)
    with pytest.raises(ValueError, match="val_every"):
        make_budget("b", 1, 1, 4, 0.1, val_every=0)
    with pytest.raises(ValueError, match="selection"):
        make_budget("b", 1, 1, 4, 0.1, val_every=1, selection="best")


def test_budget_criterion_and_the_smoke_budget_never_validates():
    assert BUDGETS["smoke"].val_every is None
    assert BUDGETS["smoke"].criterion("best-loc") == "last"
    assert BUDGETS["quick"].val_every is not None and BUDGETS["quick"].criterion("best-loc") == "best-loc"
    assert BUDGETS["quick"].criterion("last") == "last"
    assert replace(BUDGETS["quick"], selection="last").criterion("best-cls") == "last"


# --- a toy method run through the runner ---------------------------------------------------------

TOP1_SCRIPT = [0.25, 0.5, 1.0, 0.75, 1.0]  # validation Top-1 after 0..4 epochs: best after 2


class Scripted(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.register_buffer("epoch", torch.zeros((), dtype=torch.long))


class ScriptedTop1(Method):
    """Its validation Top-1 follows TOP1_SCRIPT epoch by epoch; its maps mark the epoch."""

    name = "scripted-top1"
    selection = "best-cls"

    def fit(self, train_set, val, ctx):
        self.model = Scripted()
        self.fit_calls = 0

        def bump(epoch, terms):
            self.model.epoch += 1

        def loss(model, images, labels):
            return (model.w - 1) ** 2 + 0 * images.sum()

        self.fitting = True
        train(self.model, self.model.parameters(), train_set, ctx.budget, ctx.device, ctx.budget.method_schedule(),
              ctx.seed, loss_fn=loss, on_epoch_end=bump, selector=ctx.selector(self))
        self.fitting = False

    def localize(self, images, labels):
        self.fit_calls += self.fitting
        b, side = images.shape[0], images.shape[-1]
        epoch = int(self.model.epoch)
        maps = torch.zeros(b, side, side)
        maps[:, 0, epoch] = 1.0  # a different map after each epoch
        right = round(TOP1_SCRIPT[epoch] * b)
        predicted = torch.where(torch.arange(b) < right, labels, (labels + 1) % 4)
        return Localization(maps, nn.functional.one_hot(predicted, 4).float())


def test_a_method_keeps_its_best_validation_epoch_and_the_entry_records_it(shared_dirs, tmp_path):
    dataset = small_dataset("synth-objects")
    dataset.prepare(shared_dirs["data"])
    budget = replace(SMOKE, method=replace(SMOKE.method, epochs=4), val_every=1, max_eval_images=8, batch_size=8)
    settings = smoke_settings(shared_dirs, tmp_path, budget=budget)
    splits = dataset.splits(settings.data_root, budget)
    ctx = RunContext(settings=settings, budget=budget, seed=0, dataset=dataset, splits=splits)
    method = ScriptedTop1()
    method.fit(splits.train, splits.val, ctx)
    assert method.fit_calls == 5  # one validation batch before training and after each epoch
    assert int(method.model.epoch) == 2
    images = next(iter(make_loader(splits.val, 8, shuffle=False)))["image"]
    maps = method.localize(images, torch.zeros(len(images), dtype=torch.long)).cams
    assert maps[:, 0, 2].eq(1).all() and maps.sum() == len(images)  # the maps of epoch 2
    record = ctx.selection_record()
    assert record["method"]["criterion"] == "best-cls" and record["method"]["metric"] == "Top-1 Cls"
    assert (record["method"]["epoch"], record["method"]["epochs"], record["method"]["value"]) == (2, 4, 100.0)
    assert _selection_problems(record) == []


def test_the_entry_and_the_leaderboard_show_the_kept_checkpoint(shared_dirs, tmp_path, monkeypatch):
    budget = replace(SMOKE, method=replace(SMOKE.method, epochs=4), val_every=1, max_eval_images=8, batch_size=8)
    monkeypatch.setitem(BUDGETS, "smoke", budget)
    import tests.harness as harness
    monkeypatch.setattr(harness, "SMOKE", budget)
    entry = run_small_cell(None, "synth-objects", 0, shared_dirs, tmp_path, method_cls=ScriptedTop1,
                           val_metrics=True)
    assert entry["status"] == "ok", entry.get("error")
    sel = entry["selection"]["method"]
    assert (sel["criterion"], sel["epoch"], sel["epochs"]) == ("best-cls", 2, 4)
    assert entry["val_metrics"]["Top-1 Cls"] == 100.0  # evaluated at the kept epoch
    table = render_markdown([entry])
    assert "checkpoint" in table and "best-cls 2/4" in table
    assert _selection_problems({"method": {"criterion": "best"}}) != []
    assert _selection_problems({"method": {"criterion": "best-loc", "epoch": "2"}}) != []


def test_the_smoke_budget_keeps_the_last_epoch_without_validating(shared_dirs, tmp_path):
    dataset = small_dataset("synth-objects")
    dataset.prepare(shared_dirs["data"])
    budget = replace(SMOKE, method=replace(SMOKE.method, epochs=4))
    settings = smoke_settings(shared_dirs, tmp_path, budget=budget)
    splits = dataset.splits(settings.data_root, budget)
    ctx = RunContext(settings=settings, budget=budget, seed=0, dataset=dataset, splits=splits)
    method = ScriptedTop1()
    method.fit(splits.train, splits.val, ctx)
    assert method.fit_calls == 0 and int(method.model.epoch) == 4
    assert ctx.selection_record() == {"method": {"criterion": "last"}}


class PlainCAM(TrainedCAM):
    name = "plain-trained-cam"


def test_stage1_caches_three_checkpoints_and_last_is_the_unvalidated_run(shared_dirs, tmp_path):
    dataset = small_dataset("synth-objects")
    dataset.prepare(shared_dirs["data"])
    budgets = {"plain": replace(SMOKE, stage1=replace(SMOKE.stage1, epochs=3)), "validated": replace(SMOKE, stage1=replace(SMOKE.stage1, epochs=3), val_every=1)}
    ctxs = {}
    for name, budget in budgets.items():
        settings = smoke_settings(shared_dirs, tmp_path, budget=budget, cache_dir=tmp_path / name)
        splits = dataset.splits(settings.data_root, budget)
        ctxs[name] = RunContext(settings=settings, budget=budget, seed=0, dataset=dataset, splits=splits)
    plain = ctxs["plain"].classifier("best-loc")  # a budget that never validates reads "last"
    assert ctxs["plain"].selection["stage1"] == {"last": {"criterion": "last", "epoch": 3, "epochs": 3}}
    validated = ctxs["validated"]
    best = validated.classifier("best-loc")
    paths = {c: validated.stage1_path(c)[0] for c in ("last", "best-loc", "best-cls")}
    assert all(p.is_file() for p in paths.values()) and len(set(paths.values())) == 3
    # the last checkpoint's key (and file name) is the same with or without validation
    assert paths["last"].name == ctxs["plain"].stage1_path("last")[0].name
    last = torch.load(paths["last"], weights_only=True)["state_dict"]
    for k, v in plain.state_dict().items():
        assert torch.equal(v, last[k])
    kept = validated.selection["stage1"]["best-loc"]
    assert kept["criterion"] == "best-loc" and kept["metric"] == "MaxBoxAccV2" and 0 <= kept["epoch"] <= 3
    values = dict((e, v["MaxBoxAccV2"]) for e, v in kept["history"])
    assert kept["value"] == max(values.values()) and values[kept["epoch"]] == kept["value"]
    assert min(e for e, v in values.items() if v == kept["value"]) == kept["epoch"]
    saved = torch.load(paths["best-loc"], weights_only=True)
    assert saved["key"]["checkpoint"] == "best-loc" and saved["key"]["val_every"] == 1
    for k, v in best.state_dict().items():
        assert torch.equal(v, saved["state_dict"][k])
    assert validated.selection_record()["stage1"]["best-loc"]["epoch"] == kept["epoch"]


def test_trained_cams_keep_the_last_epoch_by_default(shared_dirs, tmp_path):
    dataset = small_dataset("synth-objects")
    dataset.prepare(shared_dirs["data"])
    budget = replace(SMOKE, val_every=1)
    settings = smoke_settings(shared_dirs, tmp_path, budget=budget)
    ctx = RunContext(settings=settings, budget=budget, seed=0, dataset=dataset,
                     splits=dataset.splits(settings.data_root, budget))
    assert ctx.selector(PlainCAM()) is None
    assert ctx.selection_record() == {"method": {"criterion": "last"}}
    forced = replace(budget, selection="best-loc")
    ctx = replace(ctx, budget=forced, selection={})
    selector = ctx.selector(PlainCAM())
    assert selector.metrics == {"best-loc": "MaxBoxAccV2"} and selector.every == 1


@pytest.mark.parametrize("method, criterion, stage1", [("fcam", "best-loc", "best-loc"), ("maxmin", "best-cls", "last")])
def test_method_families_validate_with_their_authors_default(shared_dirs, tmp_path, monkeypatch, method, criterion,
                                                             stage1):
    budget = replace(SMOKE, method=replace(SMOKE.method, epochs=2), val_every=1)
    import tests.harness as harness
    monkeypatch.setattr(harness, "SMOKE", budget)
    entry = run_small_cell(method, "synth-objects", 0, {**shared_dirs, "cache": tmp_path / "cache"}, tmp_path)
    assert entry["status"] == "ok", entry.get("error")
    sel = entry["selection"]
    assert sel["method"]["criterion"] == criterion and sel["method"]["epochs"] == 2
    assert [h[0] for h in sel["method"]["history"]] == [0, 1, 2]
    assert list(sel["stage1"]) == [stage1]
    assert _selection_problems(sel) == []


@pytest.mark.parametrize("method, dataset, encoder", [
    ("fcam", "synth-objects", "best-loc"),   # cp_best for everything
    ("negev", "synth-tissue", "best-cls"),   # negev_ptretrained_cl_cp / _loc_cp
    ("tcam", "synth-video", "best-cls"),     # tcam_pretrained_cl_ch_pt / _seeder_ch_pt
    ("colocam", "synth-video", "best-cls"),  # colocam_pretrained_cl_ch_pt / _seeder_ch_pt
    ("pixelcam", "synth-tissue", "best-cls"),  # README: init from cp_best_classification
])
def test_encoder_and_seeds_read_their_authors_stage1_checkpoints(shared_dirs, tmp_path, monkeypatch, method,
                                                                  dataset, encoder):
    """The trained network starts from (or freezes) the stage-1 checkpoint its authors load
    for the encoder and class scores; the seeds' CAMs always come from best-localization."""
    from bench.registry import get_method

    budget = replace(SMOKE, method=replace(SMOKE.method, epochs=1), val_every=1)
    import tests.harness as harness
    monkeypatch.setattr(harness, "SMOKE", budget)
    read, seen = {}, {}
    original = RunContext.classifier

    def recording(self, checkpoint="last"):
        model = original(self, checkpoint)
        read[id(model)] = checkpoint
        return model

    monkeypatch.setattr(RunContext, "classifier", recording)

    class Probe(get_method(method)):
        name = f"probe-{method}"

        def fit(self, train_set, val, ctx):
            super().fit(train_set, val, ctx)
            trained = self.net.classifier if hasattr(self, "net") else self.model
            seen.update(encoder=read.get(id(trained)), seeds=read.get(id(self.seeder.model)))

    entry = run_small_cell(method, dataset, 0, {**shared_dirs, "cache": tmp_path / "cache"}, tmp_path, Probe)
    assert entry["status"] == "ok", entry.get("error")
    assert seen == {"encoder": encoder, "seeds": "best-loc"}
    assert set(entry["selection"]["stage1"]) == {encoder, "best-loc"}
    assert entry["selection"]["method"]["criterion"] == "best-loc"
    assert _selection_problems(entry["selection"]) == []
