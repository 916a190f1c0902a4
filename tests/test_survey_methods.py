"""The mechanisms of the survey's methods: pooling heads (max, LSE, WILDCAT, deep MIL, PRM),
TS-CAM's semantic-aware map on a vision transformer, and the pixel-supervised references."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bench.config import BUDGETS, apply_overrides
from bench.dataset import IGNORE
from bench.models import BACKBONES, WSOLNet, load_backbone_weights
from bench.models.wildcat import ClassMapHead
from bench.models.pooling import LSEHead, MaxPoolHead, MILHead, find_peaks, lse_pool, peak_pool
from bench.models.vit import TSCAMNet, VisionTransformer, is_vit
from bench.registry import all_methods, get_dataset, get_method
from bench.method.supervised import LocalizationTargets, few_shot_records, pixel_loss, train_split_records
from tests.conftest import SMALL_DATASETS
from tests.harness import SMOKE, small_dataset

SURVEY = ("maxpool", "lse", "wildcat", "deepmil", "prm", "tscam", "fullsup", "fewshot")


# ----------------------------------------------------------------------------- pooling
def test_lse_lies_between_mean_and_max_and_tends_to_both_ends():
    torch.manual_seed(0)
    maps = torch.randn(2, 3, 5, 4)
    mean, peak = maps.mean(dim=(2, 3)), maps.amax(dim=(2, 3))
    values = [lse_pool(maps, r) for r in (0.5, 2.0, 10.0, 50.0)]
    for v in values:
        assert torch.all(v >= mean - 1e-6) and torch.all(v <= peak + 1e-6)
    for a, b in zip(values, values[1:]):  # increasing in r
        assert torch.all(b >= a - 1e-6)
    torch.testing.assert_close(lse_pool(maps.double(), 1e-5), mean.double(), atol=1e-4, rtol=0)  # float64: no cancellation
    # r large: within log(n)/r of the max, and no overflow (exp(1e4 * s) would be inf)
    big = lse_pool(maps * 100, 1e4)
    assert torch.isfinite(big).all()
    assert torch.all((maps * 100).amax(dim=(2, 3)) - big <= math.log(20) / 1e4 + 1e-3)
    with pytest.raises(ValueError, match="r must be > 0"):
        lse_pool(maps, 0.0)


def test_lse_and_max_heads_pool_their_own_class_maps():
    torch.manual_seed(0)
    feats = torch.randn(2, 6, 4, 4)
    for head, pool in ((MaxPoolHead(6, 3), lambda m: m.flatten(2).amax(-1)),
                       (LSEHead(6, 3, r=10.0), lambda m: lse_pool(m, 10.0))):
        scores, maps = head(feats)
        assert maps.shape == (2, 3, 4, 4)
        torch.testing.assert_close(maps, head.conv(feats))
        torch.testing.assert_close(scores, pool(maps))


def test_wildcat_kmax_kmin_on_a_hand_made_map():
    # one class, two modalities whose average is the map 1..16 (4x4); kmax 0.5 -> the 8 highest
    # (9..16, mean 12.5), kmin 0.1 -> ceil(1.6) = 2 lowest (1, 2, mean 1.5), alpha 0.6
    target = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    feats = torch.cat([target + 3, target - 3], 1)  # two input channels
    head = ClassMapHead(2, 1, modalities=2, kmax=0.5, kmin=0.1, alpha=0.6)
    with torch.no_grad():
        head.conv.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        head.conv.bias.zero_()
    scores, maps = head(feats)
    torch.testing.assert_close(maps, target)  # class-wise average of the modalities
    torch.testing.assert_close(scores, torch.tensor([[12.5 + 0.6 * 1.5]]))
    # the method builds that head with the survey's defaults
    wc = get_method("wildcat")()
    built = wc.make_head(8, 3)
    assert isinstance(built, ClassMapHead)
    assert (built.modalities, built.kmax, built.kmin, built.alpha) == (5, 0.5, 0.1, 0.6)


def test_mil_attention_sums_to_one_and_scores_the_weighted_bag():
    torch.manual_seed(0)
    feats = torch.randn(2, 5, 3, 4)
    for gated in (False, True):
        head = MILHead(5, 3, hidden=7, gated=gated)
        assert (head.U is not None) == gated
        scores, attn = head(feats)
        assert attn.shape == (2, 3, 3, 4) and torch.all(attn >= 0)
        torch.testing.assert_close(attn.flatten(2).sum(-1), torch.ones(2, 3))
        bags = torch.einsum("bchw,bdhw->bcd", attn, feats)
        torch.testing.assert_close(scores, (bags * head.score_weight).sum(-1) + head.score_bias)
    assert get_method("deepmil").Config().gated is False


def _hand_map() -> torch.Tensor:
    # a background decreasing in raster order (no ties; its window maxima are the windows' first
    # elements, so it holds no peak) with five positive values
    m = -torch.arange(25.0).view(1, 1, 5, 5) / 100
    for (y, x), v in {(0, 0): 5.0, (1, 3): 4.0, (3, 1): 3.0, (4, 1): 2.0, (3, 4): 1.0}.items():
        m[0, 0, y, x] = v
    return m


def _positions(peaks: torch.Tensor) -> set:
    return {tuple(p) for p in torch.nonzero(peaks[0, 0]).tolist()}


def test_prm_peaks_are_local_maxima_of_the_window_on_a_hand_map():
    m = _hand_map()
    # 3x3: 2.0 sits next to 3.0; 1.0 has no larger value within one pixel
    assert _positions(find_peaks(m, 3)) == {(0, 0), (1, 3), (3, 1), (3, 4)}
    # 5x5: 3.0 and 1.0 see 4.0 two pixels away; 4.0 does not see 5.0 (three columns away)
    assert _positions(find_peaks(m, 5)) == {(0, 0), (1, 3)}
    # window 1: every position is its own maximum, the median filter keeps the upper half
    median = m.flatten().median()
    assert torch.equal(find_peaks(m, 1), m >= median)
    assert find_peaks(m, 1, median_filter=False).all()
    with pytest.raises(ValueError, match="odd"):
        find_peaks(m, 2)


def test_prm_peaks_match_a_brute_force_search_with_ties():
    torch.manual_seed(0)
    maps = torch.randint(0, 4, (2, 3, 6, 7)).float()  # many ties
    for window in (3, 5):
        got = find_peaks(maps, window, median_filter=True)
        r = window // 2
        for b in range(2):
            for c in range(3):
                m = maps[b, c]
                median = m.flatten().median()
                for y in range(6):
                    for x in range(7):
                        ys, xs = range(max(0, y - r), min(6, y + r + 1)), range(max(0, x - r), min(7, x + r + 1))
                        window_values = [(m[i, j].item(), i, j) for i in ys for j in xs]
                        best = max(v for v, _, _ in window_values)
                        first = min((i, j) for v, i, j in window_values if v == best)  # raster order
                        expected = first == (y, x) and m[y, x] >= median
                        assert bool(got[b, c, y, x]) == expected, (window, b, c, y, x)


def test_prm_peak_pool_is_the_mean_of_peaks_with_gradient_at_peaks_only():
    m = torch.zeros(1, 1, 4, 4, requires_grad=True)
    with torch.no_grad():
        m[0, 0, 0, 0], m[0, 0, 3, 3], m[0, 0, 1, 2] = 6.0, 2.0, 1.0
    peaks = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    peaks[0, 0, 0, 0] = peaks[0, 0, 3, 3] = True
    score = peak_pool(m, peaks)
    torch.testing.assert_close(score, torch.tensor([[4.0]]))
    score.sum().backward()
    assert torch.equal(m.grad != 0, peaks) and torch.allclose(m.grad[peaks], torch.tensor(0.5))


def test_prm_excitation_backprop_conserves_the_signal():
    """With inputs >= 0, positive weights and no bias, the top-down walk distributes each output's
    signal over its inputs: the total arriving at the input equals the total sent down."""
    prm = _plugin_module("prm")
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.uniform_(0.1, 1.0)
    x = torch.rand(1, 2, 6, 6) + 0.5
    x[0, :, 0, 0] = 0.0  # the minimum: the shift leaves the input as it is
    x.requires_grad_(True)
    with prm.excitation_convs(conv):
        y = conv(x)
        seed = torch.zeros_like(y)
        seed[0, 1, 2, 3], seed[0, 0, 4, 4] = 1.0, 2.0
        (grad,) = torch.autograd.grad(y, x, seed)
    torch.testing.assert_close(y, nn.functional.conv2d(x, conv.weight, None, padding=1))  # same forward
    assert torch.all(grad >= 0)
    torch.testing.assert_close(grad.sum(), torch.tensor(3.0))
    assert "forward" not in vars(conv)  # the patch is undone


def test_prm_map_is_the_peak_backprop_to_the_image():
    torch.manual_seed(0)
    method = get_method("prm")()
    model = WSOLNet(BACKBONES["small-cnn"](), 3)
    model.pool_head = method.make_head(model.backbone.out_channels, 3)
    model.eval()
    images = torch.rand(2, 3, 32, 32)
    cams, scores = method.cams(model, images, torch.tensor([0, 2]))
    assert cams.shape == (2, 32, 32) and torch.all(cams >= 0) and cams.flatten(1).amax(1).min() > 0
    assert not any(p.grad is not None for p in model.parameters())  # no parameter gradient left behind
    plain, _ = get_method("prm")(get_method("prm").Config(peak_backprop=False)).cams(model, images, torch.tensor([0, 2]))
    assert plain.shape == (2, 8, 8)  # the class response map at the features' resolution


# ----------------------------------------------------------------------------- TS-CAM
def _explicit_vit(vit: VisionTransformer, x: torch.Tensor):
    """A plain re-computation of the ViT: per-block attention of the class token to the patches,
    averaged over heads; returns (patch map, list of [B,N-1] attention rows)."""
    p = vit.patch_embed.proj(x)
    b, d, h, w = p.shape
    t = torch.cat([vit.cls_token.expand(b, -1, -1), p.flatten(2).transpose(1, 2)], 1) + vit.pos_embed
    rows = []
    for blk in vit.blocks:
        y = blk.norm1(t)
        heads = blk.attn.heads
        qkv = blk.attn.qkv(y).view(b, -1, 3, heads, d // heads)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
        a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), -1)
        rows.append(a.mean(1)[:, 0, 1:])
        t = t + blk.attn.proj((a @ v).transpose(1, 2).reshape(b, -1, d))
        t = t + blk.mlp(blk.norm2(t))
    return vit.norm(t)[:, 1:].transpose(1, 2).reshape(b, d, h, w), rows


def test_tscam_map_is_attention_times_semantic_map():
    torch.manual_seed(0)
    vit = VisionTransformer(patch=8, dim=12, depth=2, heads=3, image_size=32)
    net = TSCAMNet(vit, num_classes=3).eval()
    images = torch.rand(2, 3, 32, 32)
    labels = torch.tensor([1, 2])
    with torch.no_grad():
        cams, logits = net.cam(images, labels)
        feats, rows = _explicit_vit(vit, (images - net.mean) / net.std)
        semantic = net.head(feats)
    attention = sum(rows).view(2, 4, 4)  # summed over the layers
    expected = attention * semantic[torch.arange(2), labels]
    torch.testing.assert_close(cams, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(logits, semantic.mean(dim=(2, 3)), atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # the fused attention (training path) computes the same scores
        torch.testing.assert_close(net(images).logits, logits, atol=1e-5, rtol=1e-4)
    assert torch.all(attention >= 0)


def test_vit_backbones_fit_the_backbone_interface():
    assert is_vit("small-vit") and is_vit("deit-small") and not is_vit("small-cnn")
    torch.manual_seed(0)
    small = BACKBONES["small-vit"]()
    assert (small.patch, small.out_channels, len(small.blocks), small.blocks[0].attn.heads) == (8, 96, 4, 3)
    seen = []
    handle = small.cam_layer.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        out = small(torch.rand(2, 3, 64, 64))
        other = small(torch.rand(1, 3, 96, 96))  # its own size; 64 px: the position embedding is resized
    handle.remove()
    assert out.shape == (2, 96, 8, 8) and other.shape == (1, 96, 12, 12) and torch.equal(seen[0], out)
    net = WSOLNet(small, 4)  # every CAM method reads it like a CNN
    assert net(torch.rand(1, 3, 64, 64)).logits.shape == (1, 4)
    deit = BACKBONES["deit-small"]()
    assert (deit.patch, deit.out_channels, len(deit.blocks), deit.blocks[0].attn.heads) == (16, 384, 12, 6)
    assert deit.pos_embed.shape == (1, 1 + 14 * 14, 384) and small.pos_embed.shape == (1, 1 + 12 * 12, 96)


def test_vit_loads_a_deit_checkpoint_without_its_heads(tmp_path):
    torch.manual_seed(0)
    src = BACKBONES["small-vit"]()
    state = dict(src.state_dict())
    path = tmp_path / "deit.pt"
    torch.save({"model": {**state, "head.weight": torch.zeros(10, 96), "head.bias": torch.zeros(10),
                          "dist_token": torch.zeros(1, 1, 96)}}, path)
    fresh = BACKBONES["small-vit"]()
    load_backbone_weights(fresh, path)
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in state.items())


def test_tscam_picks_a_transformer_for_each_run_backbone():
    m = get_method("tscam")()
    assert m.vit_name(SimpleNamespace(backbone="small-cnn")) == "small-vit"
    assert m.vit_name(SimpleNamespace(backbone="resnet50")) == "deit-small"
    assert m.vit_name(SimpleNamespace(backbone="small-vit")) == "small-vit"
    fixed = get_method("tscam")(get_method("tscam").Config(backbone="deit-small"))
    assert fixed.vit_name(SimpleNamespace(backbone="small-cnn")) == "deit-small"


# -------------------------------------------------------------------- pixel supervision
def _splits(name: str, dirs, **overrides):
    """A small embedded dataset and its splits at the quick budget (no subsets); with
    `overrides`, generated under its own data root."""
    cls = get_dataset(name)
    ds = cls(apply_overrides(cls.Config(), {**SMALL_DATASETS[name], **overrides}, name))
    root = dirs["data"] / f"{name}-{'-'.join(overrides.values())}" if overrides else dirs["data"]
    ds.prepare(root)
    return ds, ds.splits(root, BUDGETS["quick"])


def test_supervision_attribute_sets_the_references_apart():
    methods = all_methods()
    assert methods["fullsup"].supervision == "full" and methods["fewshot"].supervision == "few-shot"
    for name in SURVEY[:6]:
        assert getattr(methods[name], "supervision", "weak") == "weak"


@pytest.mark.parametrize("name", ["synth-tissue", "synth-objects"])
def test_fullsup_trains_on_the_training_split_labels(name, shared_dirs):
    ds, splits = _splits(name, shared_dirs)
    ctx = SimpleNamespace(dataset=ds, settings=SimpleNamespace(data_root=shared_dirs["data"]))
    records, length = get_method("fullsup")().supervised_records(splits.train, splits.val, ctx)
    assert length is None
    assert [r.path for r in records] == [r.path for r in splits.train.records]
    assert all(r.path.startswith("train/") for r in records)  # never the test split's labels
    if ds.annotation == "mask":
        assert all(bool(r.masks) == (r.label == 1) for r in records)  # tumour images carry masks
    else:
        assert all(len(r.boxes) == 1 for r in records)
    data = LocalizationTargets(splits.train.root, records, ds.annotation, splits.train.input_size, flip=False)
    item = data[len(data) - 1]
    target = item["mask"]
    assert target.shape == item["image"].shape[-2:] and target.dtype == torch.uint8
    if ds.annotation == "box":  # the box filled as a mask, in the input frame
        rec = records[-1]
        (x0, y0, x1, y1), = rec.boxes
        s = splits.train.input_size / rec.size[0]
        ys, xs = torch.nonzero(target, as_tuple=True)
        assert abs(xs.min().item() - x0 * s) <= 1 and abs(ys.max().item() - y1 * s) <= 1
        assert target.sum() == (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)  # a full rectangle
    else:
        assert set(target.unique().tolist()) <= {0, 1} and target.sum() > 0


def test_fullsup_names_the_missing_training_labels(shared_dirs, tmp_path):
    ds, splits = _splits("synth-tissue", shared_dirs)
    loc = ds.meta_dir(shared_dirs["data"], "train") / ds.loc_file
    saved = loc.read_text()
    loc.unlink()
    try:
        with pytest.raises(FileNotFoundError, match="no localization labels"):
            train_split_records(splits.train, SimpleNamespace(dataset=ds, settings=SimpleNamespace(data_root=shared_dirs["data"])))
    finally:
        loc.write_text(saved)


def test_fewshot_takes_exactly_n_validation_images_per_class(shared_dirs):
    ds, splits = _splits("synth-objects", shared_dirs, n_val="3")
    assert len(splits.val.records) == 3 * ds.num_classes
    method = get_method("fewshot")(get_method("fewshot").Config(shots=2))
    records, length = method.supervised_records(splits.train, splits.val, SimpleNamespace(dataset=ds))
    counts = {}
    for r in records:
        counts[r.label] = counts.get(r.label, 0) + 1
        assert r.path.startswith("val/") and r.boxes  # train-fullsup images, box-labelled
    assert counts == {c: 2 for c in range(ds.num_classes)}
    assert length == len(splits.train)  # an epoch: as many draws as the weak training split
    # the paper's counts and the synthetic default
    default = get_method("fewshot")()
    assert [default.shots_for(SimpleNamespace(name=n)) for n in ("ilsvrc", "cub", "openimages", "synth-objects")] \
        == [10, 5, 5, 5]
    assert len(few_shot_records(splits.val.records, 5)) == len(splits.val.records)  # fewer: all of them


def test_pixel_targets_flip_with_the_image_and_ignore_is_left_out():
    logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
    target = torch.tensor([[[1, IGNORE], [0, 0]]], dtype=torch.uint8)
    loss = pixel_loss(logits, target)
    torch.testing.assert_close(loss, torch.tensor(math.log(2.0)))
    loss.backward()
    assert logits.grad[0, 0, 0, 1] == 0  # the ignored pixel gets no gradient


def test_localization_targets_flip_image_and_target_together(shared_dirs):
    import random

    ds, splits = _splits("synth-objects", shared_dirs)
    rec = splits.train.records[:1]
    plain = LocalizationTargets(splits.train.root, rec, "box", 32, flip=False)[0]
    flipping = LocalizationTargets(splits.train.root, rec, "box", 32, flip=True)
    random.seed(0)
    seen = set()
    for _ in range(20):
        item = flipping[0]
        flipped = torch.equal(item["image"], plain["image"].flip(-1)) and not torch.equal(item["image"], plain["image"])
        assert torch.equal(item["mask"], plain["mask"].flip(-1) if flipped else plain["mask"])
        seen.add(flipped)
    assert seen == {True, False}


def _plugin_module(name: str):
    import sys

    get_method(name)
    return sys.modules[f"wsolbench_plugins.methods.{name}"]


def test_smoke_budget_is_what_the_plugin_test_runs():  # the generic test covers these pairs
    assert SMOKE.name == "smoke"
    for name in SURVEY:
        cls = get_method(name)
        assert cls.skip(small_dataset("synth-objects")) is None and cls.skip(small_dataset("synth-tissue")) is None
        assert cls.skip(small_dataset("synth-video")) is not None
