"""The transfer track (bench/transfer, adaptations/): cells end to end on the embedded pair,
the source-free guarantees (no source data, no target labels during adaptation), the
shifted generator, and the mechanism of every adaptation."""
import dataclasses
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from bench.config import BUDGETS
from bench.data import synthetic as syn
from bench.transfer import (TRANSFER_PAIRS, Adaptation, LabelAccessError, ReadGuard, SourceAccessError, SourceOnly,
                            UnlabelledView, adapt_loop, all_adaptations, get_adaptation, run_target_supervised,
                            run_transfer_cell, transfer_result_path)
from bench.transfer.entries import check_transfer_entries
from bench.transfer.features import keep_nearest, spherical_kmeans, topk_similar
from tests.harness import small_dataset, smoke_settings

SMOKE = BUDGETS["smoke"]
CPU = torch.device("cpu")
SOURCE, TARGET = "synth-tissue", "synth-tissue-shifted"
METHODS = ("shot", "nrc", "sfde", "cdcl", "adadsa", "sfda-dep")


@pytest.fixture(scope="module")
def pair(shared_dirs):
    source, target = small_dataset(SOURCE), small_dataset(TARGET)
    source.prepare(shared_dirs["data"])
    target.prepare(shared_dirs["data"])
    return source, target


def _settings(dirs, results, cache=None):
    return smoke_settings({"data": dirs["data"], "cache": cache or dirs["cache"]}, results or Path("unused"))


def _run(cls, pair, dirs, results, cache=None, **kw):
    """One transfer cell at the smoke budget; written under `results` (None: not written)."""
    source, target = pair
    return run_transfer_cell(cls, source, target, 0, _settings(dirs, results, cache), write=results is not None, **kw)


def _module(name):
    return sys.modules[get_adaptation(name).__module__]


# ------------------------------------------------------------------ the track
def test_declared_pairs_and_adaptations():
    assert (SOURCE, TARGET) in TRANSFER_PAIRS and ("glas", "camelyon16") in TRANSFER_PAIRS
    assert ("camelyon16", "glas") in TRANSFER_PAIRS
    assert set(METHODS) <= set(all_adaptations())


@pytest.mark.parametrize("name", ("source-only",) + METHODS)
def test_transfer_cell_runs_end_to_end_on_the_embedded_pair(name, pair, shared_dirs, tmp_path):
    cls = SourceOnly if name == "source-only" else get_adaptation(name)
    record = _run(cls, pair, shared_dirs, tmp_path)
    assert record["status"] == "ok", record.get("traceback")
    assert record["source"] == SOURCE and record["target"] == TARGET and record["method"] == name
    for metric in ("PxAP", "Top-1 Cls"):
        assert math.isfinite(record["metrics"][metric]) and 0 <= record["metrics"][metric] <= 100
    path = transfer_result_path(tmp_path, SOURCE, TARGET, name, 0)
    assert json.loads(path.read_text())["checksum"] == record["checksum"]
    assert check_transfer_entries(tmp_path) == []
    # a finished cell with the same configuration is resumed, not rerun
    assert _run(cls, pair, shared_dirs, tmp_path) == record


def test_a_pair_runs_in_worker_processes_with_the_metrics_of_one_process(pair, shared_dirs, tmp_path, capsys):
    from bench.cli import main
    from tests.conftest import SMALL_DATASETS

    sets = [x for name in (SOURCE, TARGET) for k, v in SMALL_DATASETS[name].items()
            for x in ("--set", f"{name}.{k}={v}")]

    def run(results, jobs):
        args = ["run", "--transfer", f"{SOURCE}:{TARGET}", "--adaptations", "shot", "--seeds", "0,1", "--budget",
                "smoke", "--data-root", str(shared_dirs["data"]), "--cache-dir", str(tmp_path / "cache"),
                "--results", str(results), "--jobs", str(jobs), *sets]
        assert main(args) == 0
        return {(r, s): json.loads(transfer_result_path(results, SOURCE, TARGET, r, s).read_text())
                for r in ("target-supervised", "source-only", "shot") for s in (0, 1)}

    pooled = run(tmp_path / "pooled", 2)
    assert "6 cells ok, 0 failed" in capsys.readouterr().out
    alone = run(tmp_path / "alone", 1)
    assert {k: e["metrics"] for k, e in pooled.items()} == {k: e["metrics"] for k, e in alone.items()}
    # one torch thread per cell by default, in a worker or in this process: the metrics do not depend on --jobs
    assert all("1 threads" in e["device"] for e in [*pooled.values(), *alone.values()])
    assert run(tmp_path / "pooled", 2) == pooled  # resumed: the same entries, nothing rerun
    assert "6 cells ok, 0 failed" in capsys.readouterr().out


def test_a_transfer_cell_whose_worker_died_is_recorded_as_failed_and_runs_again(pair, shared_dirs, tmp_path):
    from bench.transfer.track import TransferCell
    from tests.conftest import SMALL_DATASETS

    settings = _settings(shared_dirs, tmp_path)
    overrides = {name: dict(SMALL_DATASETS[name]) for name in (SOURCE, TARGET)}
    for row in ("shot", "target-supervised"):
        cell = TransferCell(SOURCE, TARGET, row, 0, overrides)
        entry = cell.record_failure(settings, "WorkerDied: the worker process running this cell died")
        assert entry["status"] == "failed" and entry["error"].startswith("WorkerDied")
        assert json.loads(transfer_result_path(tmp_path, SOURCE, TARGET, row, 0).read_text()) == entry
        assert cell.finished(settings) is None  # a failed entry is not finished: the next run reruns it
        assert cell.run(settings)["status"] == "ok" and cell.finished(settings) is not None
    assert check_transfer_entries(tmp_path) == []


def test_shot_adapts_the_encoder_and_the_upper_reference_is_sealed(pair, shared_dirs, tmp_path):
    shot = get_adaptation("shot")

    class Probe(shot):  # records the adapted weights against the source's
        def adapt(self, model, target_train, ctx):
            before = [p.detach().clone() for p in model.backbone.parameters()]
            head = model.classifier.weight.detach().clone()
            model = super().adapt(model, target_train, ctx)
            Probe.changed = any(not torch.equal(a, b) for a, b in zip(before, model.backbone.parameters()))
            Probe.head_kept = torch.equal(head, model.classifier.weight)
            return model

    assert _run(Probe, pair, shared_dirs, None)["status"] == "ok"
    assert Probe.changed and Probe.head_kept  # SHOT adapts the encoder, the hypothesis stays
    source, target = pair
    upper = run_target_supervised(source, target, 0, _settings(shared_dirs, tmp_path))
    assert upper["status"] == "ok" and upper["method"] == "target-supervised"
    assert (tmp_path / "transfer" / f"{SOURCE}__{TARGET}" / "target-supervised" / "seed0.json").is_file()
    assert check_transfer_entries(tmp_path) == []
    path = tmp_path / "transfer" / f"{SOURCE}__{TARGET}" / "target-supervised" / "seed0.json"
    edited = json.loads(path.read_text())
    edited["metrics"]["PxAP"] += 1.0
    path.write_text(json.dumps(edited))
    assert [p.reason for p in check_transfer_entries(tmp_path)] == [
        "checksum does not match the content (edited after the runner wrote it)"]


class _Recorder(torch.utils.data.Dataset):
    """A split that logs every read with the phase the test is in."""

    def __init__(self, split, log, phase):
        self.split, self.log, self.phase = split, log, phase

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        self.log.append(self.phase[0])
        return self.split[i]

    def __getattr__(self, name):
        if name.startswith("__") or name in ("split", "log", "phase"):
            raise AttributeError(name)
        return getattr(self.split, name)


def test_adaptation_never_reads_source_training_data(pair, shared_dirs, tmp_path, monkeypatch):
    source, target = pair
    log, phase = [], ["before"]
    original = type(source).splits

    def recorded(self, data_root, budget):
        splits = original(self, data_root, budget)
        splits.train = _Recorder(splits.train, log, phase)
        return splits

    monkeypatch.setattr(type(source), "splits", recorded)
    base = get_adaptation("nrc")

    class Spy(base):
        def adapt(self, model, target_train, ctx):
            phase[0] = "adapt"
            try:
                return super().adapt(model, target_train, ctx)
            finally:
                phase[0] = "after"

    # a private cache: the source model is trained here, so the source split is read before
    record = _run(Spy, pair, shared_dirs, None, cache=tmp_path / "cache")
    assert record["status"] == "ok", record.get("traceback")
    assert "before" in log and "adapt" not in log and phase[0] == "after"
    assert record["source_reads_before_adaptation"] > 0 and record["target_train_reads"] > 0


def test_source_split_is_sealed_once_the_source_model_exists():
    guard = ReadGuard([{"image": torch.zeros(3, 2, 2), "label": 0, "index": 0}], "src train")
    assert guard[0]["label"] == 0 and guard.reads == 1
    guard.seal()
    with pytest.raises(SourceAccessError, match="src train was read during adaptation"):
        guard[0]


def test_target_labels_are_unreachable_during_adaptation(pair, shared_dirs):
    class Peek(Adaptation):
        name = "peek"

        def adapt(self, model, target_train, ctx):
            batch = next(iter(ctx.loader(target_train, shuffle=False)))
            assert set(batch) == {"image", "index"}
            item = target_train[0]
            for key in ("label", "mask", "boxes"):
                with pytest.raises(LabelAccessError):
                    item[key]
                with pytest.raises(LabelAccessError):
                    item.get(key)
            for attr in ("labels", "records", "with_masks"):
                with pytest.raises(LabelAccessError):
                    getattr(target_train, attr)
            Peek.checked = True
            return model

    assert _run(Peek, pair, shared_dirs, None)["status"] == "ok" and Peek.checked

    class Cheat(Adaptation):
        name = "cheat"

        def adapt(self, model, target_train, ctx):
            target_train[0]["label"]

    # reading a label is a bug of the adaptation: raised, never recorded as a result
    with pytest.raises(LabelAccessError):
        _run(Cheat, pair, shared_dirs, None)


# ------------------------------------------------------------------ the shifted generator
def _files(root: Path):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_shifted_generator_is_deterministic_and_differs_from_the_source(tmp_path):
    shifted = syn.SynthTissueShiftedConfig(n_train=5, n_val=1, n_test=3, image_size=48)
    syn.prepare(TARGET, tmp_path / "a", shifted)
    syn.prepare(TARGET, tmp_path / "b", shifted)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert a == b and any(k.endswith(".png") for k in a)
    source = syn.SynthTissueConfig(n_train=5, n_val=1, n_test=3, image_size=48)
    syn.prepare(SOURCE, tmp_path / "a", source)
    # class balance: 70 % normal in the shifted domain, even in the source
    labels = (tmp_path / "a" / "metadata" / TARGET / "train" / "class_labels.txt").read_text().split()
    assert [l.split(",")[1] for l in labels].count("0") == 7 and len(labels) == 10

    def mean_rgb(name):
        ims = [np.asarray(Image.open(p), dtype=np.float64) for p in (tmp_path / "a" / name / "train").rglob("*.png")
               if not p.name.endswith("_mask.png")]
        return np.mean([im.reshape(-1, 3).mean(0) for im in ims], axis=0)

    src, tgt = mean_rgb(SOURCE), mean_rgb(TARGET)
    assert np.abs(src - tgt).max() > 5  # the stain shift moves the mean colour
    # the source's defaults stay what they were (the added knobs are identity at default)
    assert syn.config_dict(SOURCE, source) == syn.config_dict(SOURCE, dataclasses.replace(
        source, stain_gain=(1.0, 1.0, 1.0), blur=0.0))
    assert "stain_gain" not in syn.config_dict(SOURCE, source)["config"]


# ------------------------------------------------------------------ mechanisms
def test_shot_information_maximisation_on_hand_logits():
    shot = get_adaptation("shot")
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # softmax (.5,.5) and (.75,.25)
    ent, div = shot.im_loss(logits, eps=0.0)
    h = lambda p: -sum(x * math.log(x) for x in p)
    assert ent.item() == pytest.approx((h([0.5, 0.5]) + h([0.75, 0.25])) / 2, abs=1e-6)
    assert div.item() == pytest.approx(-h([0.625, 0.375]), abs=1e-6)
    # a confident, diverse batch has a lower IM loss than an unsure one
    sharp = torch.tensor([[9.0, 0.0], [0.0, 9.0]])
    assert sum(shot.im_loss(sharp, 0.0)) < sum(shot.im_loss(torch.zeros(2, 2), 0.0)) + 1e-6


def test_shot_pseudo_labels_follow_the_feature_clusters():
    shot = get_adaptation("shot")
    feats = torch.tensor([[1.0, 0.1], [1.0, -0.1], [0.9, 0.0], [0.1, 1.0], [-0.1, 1.0]])
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7], [0.2, 0.8]])  # image 2 mislabelled
    assert shot.pseudo_labels(feats, probs, rounds=2).tolist() == [0, 0, 0, 1, 1]


def test_nrc_reciprocal_neighbour_weights():
    nrc = get_adaptation("nrc")
    # 0 and 1 are each other's nearest; 2's nearest is 1, but 1's nearest is 0: not reciprocal
    pts = torch.tensor([[1.0, 0.0], [0.98, 0.2], [0.8, 0.6], [0.0, 1.0]])
    bank = F.normalize(pts, dim=1)
    index = torch.tensor([0, 2])
    near, w, near_near = nrc.neighbours(bank[index], bank, index, k=1, kk=1, r=0.1)
    assert near.tolist() == [[1], [1]]
    assert w.tolist() == [[1.0], [pytest.approx(0.1)]]
    assert near_near.tolist() == [[[0]], [[0]]]


def test_nrc_loss_pulls_toward_neighbour_predictions():
    # the neighbour term is minus the weighted dot product: aligned predictions score lower
    p = torch.tensor([[0.9, 0.1]])
    s = torch.tensor([[[0.9, 0.1]], [[0.1, 0.9]]])
    agree, disagree = -(s[0] * p[:, None]).sum(-1).sum(), -(s[1] * p[:, None]).sum(-1).sum()
    assert agree < disagree


def test_spherical_kmeans_matches_clusters_to_the_anchors():
    torch.manual_seed(0)
    a = torch.randn(20, 4) * 0.1 + torch.tensor([3.0, 0, 0, 0])
    b = torch.randn(20, 4) * 0.1 + torch.tensor([0, 3.0, 0, 0])
    feats = torch.cat([a, b])
    anchors = torch.tensor([[0.2, 1.0, 0, 0], [1.0, 0.3, 0.0, 0]])  # class 0 ~ cluster b
    labels, dist = spherical_kmeans(feats, anchors)
    assert labels[:20].eq(1).all() and labels[20:].eq(0).all()
    assert dist.argmin(1).tolist() == labels.tolist()
    kept = keep_nearest(labels, dist, 0.5, min_per_class=5)
    assert kept.sum() == 20 and kept[:20].sum() == 10


def test_chunked_neighbour_search_equals_the_full_one():
    torch.manual_seed(0)
    bank = F.normalize(torch.randn(300, 8), dim=1)
    q = bank[:50]
    assert torch.equal(topk_similar(q, bank, 4, chunk=7), (q @ bank.T).topk(4, dim=1).indices)


def test_sfde_surrogate_and_cdd():
    sfde = get_adaptation("sfde")
    torch.manual_seed(0)
    feats = torch.cat([torch.randn(30, 3) * 0.2 + torch.tensor([2.0, 0, 0]),
                       torch.randn(30, 3) * 0.2 + torch.tensor([0, 2.0, 0])])
    labels = torch.tensor([0] * 30 + [1] * 30)
    anchors = torch.tensor([[1.0, 0.2, 0.0], [0.0, 1.0, 0.5]])
    sampler = sfde.surrogate(feats, labels, torch.ones(60, dtype=torch.bool), anchors)
    for c in (0, 1):
        mean = sampler[c].mean
        assert F.cosine_similarity(mean, anchors[c], dim=0) == pytest.approx(1.0, abs=1e-5)
        assert mean.norm() == pytest.approx(feats[labels == c].mean(0).norm().item(), rel=1e-5)
        assert torch.allclose(sampler[c].stddev, feats[labels == c].std(0), atol=1e-6)
    # class-aligned source and target: low CDD; classes swapped: high
    src = torch.cat([feats[:30] + 0.01, feats[30:] + 0.01])
    aligned = sfde.cdd([src], [feats], [30, 30], [30, 30], (5,), (2.0,))
    swapped = sfde.cdd([torch.cat([feats[30:], feats[:30]])], [feats], [30, 30], [30, 30], (5,), (2.0,))
    assert aligned < 0 < swapped


def test_cdcl_contrast_on_hand_features():
    cdcl = get_adaptation("cdcl")
    f = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    value = cdcl.contrast(f, w, torch.tensor([0, 0]), tau=0.5)
    want = (-(F.log_softmax(torch.tensor([2.0, 0.0]), 0)[0]) - F.log_softmax(torch.tensor([0.0, 2.0]), 0)[0]) / 2
    assert value.item() == pytest.approx(want.item(), abs=1e-6)


def test_adadsa_fused_batchnorm_mixes_statistics():
    mod = _module("adadsa")
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3).eval()
    bn.running_mean.copy_(torch.tensor([0.0, 1.0, -1.0]))
    bn.running_var.copy_(torch.tensor([1.0, 2.0, 0.5]))
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)
    t_mean, t_var = torch.tensor([2.0, 0.0, 0.0]), torch.tensor([0.5, 1.0, 3.0])
    fused = mod.FusedBatchNorm(bn, t_mean, t_var)
    x = torch.randn(4, 3, 5, 5)
    target_bn = torch.nn.BatchNorm2d(3).eval()
    target_bn.load_state_dict(bn.state_dict())
    target_bn.running_mean.copy_(t_mean)
    target_bn.running_var.copy_(t_var)
    assert torch.allclose(fused(x), target_bn(x), atol=1e-5)  # alpha = 1: the target's statistics
    fused.alpha.data.fill_(0.0)
    assert torch.allclose(fused(x), bn(x), atol=1e-5)  # alpha = 0: the source's
    fused.alpha.data.fill_(0.5)
    mean, var = fused.stats()
    assert torch.allclose(mean, (t_mean + bn.running_mean) / 2)
    # the variance of an even mixture of the two distributions
    assert torch.allclose(var, 0.5 * (t_var + bn.running_var) + 0.25 * (t_mean - bn.running_mean) ** 2)
    fused(x).sum().backward()
    assert fused.alpha.grad is not None and fused.weight.grad is None
    ramp = get_adaptation("adadsa").ramp
    assert ramp(0.0, 10.0) == 0.0 and ramp(1.0, 10.0) > 0.99 and ramp(0.2, 10.0) < ramp(0.5, 10.0)


def test_adadsa_trains_only_the_alphas():
    mod = _module("adadsa")
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    stats = {"1": (torch.zeros(4), torch.ones(4))}
    fused = mod.fuse(net, stats)
    trainable = [n for n, p in fused.named_parameters() if p.requires_grad]
    assert trainable == ["1.alpha"]
    assert get_adaptation("adadsa").skip(torch.nn.Linear(2, 2)) is not None


def test_sfda_dep_debiasing_selects_and_rebalances():
    dep = get_adaptation("sfda-dep")
    torch.manual_seed(0)
    # 80 images predicted class 0 (over-predicted), 20 class 1; entropy grows with the index
    conf = torch.cat([torch.linspace(0.99, 0.55, 80), torch.linspace(0.99, 0.6, 20)])
    probs = torch.stack([torch.cat([conf[:80], 1 - conf[80:]]), torch.cat([1 - conf[:80], conf[80:]])], 1)
    labels, forget = dep.select(probs, ratio=0.15)
    assert labels[:80].eq(0).all() and labels[80:].eq(1).all()
    assert forget.sum() == 12 and forget[68:80].all() and not forget[80:].any()  # the 12 least confident of 0
    # a few steps of the method's losses on a linear model lower the over-predicted share
    feats = torch.cat([torch.randn(100, 2) * 0.5, torch.ones(100, 1)], 1)
    head = torch.nn.Linear(3, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[0.3, 0.0, 1.0], [-0.3, 0.0, 0.0]]))
        head.bias.zero_()
    share = lambda: (head(feats).argmax(1) == 0).float().mean().item()
    before = share()
    labels, forget = dep.select(head(feats).softmax(1).detach(), ratio=0.15)
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    for _ in range(20):
        logits = head(feats)
        loss = dep.forget_loss(logits[forget], labels[forget]) + F.cross_entropy(logits[~forget], labels[~forget])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert before > 0.5 and share() < before


def test_adapt_loop_needs_trainable_parameters(pair):
    from bench.transfer import AdaptContext

    ctx = AdaptContext(device=CPU, budget=SMOKE, seed=0, num_classes=2, source="a", target="b")
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        adapt_loop(frozen, UnlabelledView([]), ctx, lambda *a: torch.zeros(()))
