"""Each WSOL baseline's own mechanism, and a one-step fit/localize smoke through a fake ctx."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bench.config import make_budget
from bench.models import build_classifier
from bench.registry import METHODS, REPO_ROOT, load_plugin_file

BASELINES = ("has", "adl", "acol", "spg", "cutmix")


def method_cls(name):
    load_plugin_file(REPO_ROOT / "methods" / f"{name}.py")
    return METHODS[name]


def make(name, **cfg):
    cls = method_cls(name)
    return cls(cls.Config(**cfg))


def tiny_ctx(num_classes=3):
    def new_classifier():
        return build_classifier("small-cnn", num_classes=num_classes)

    return SimpleNamespace(classifier=lambda checkpoint="last": new_classifier(), new_classifier=new_classifier,
                           selector=lambda method: None, device=torch.device("cpu"),
                           seed=0, budget=make_budget("tiny", stage1_epochs=1, method_epochs=1, batch_size=4, lr=0.01))


def tiny_dataset(n=4, size=32, num_classes=3):
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(3, size, size, generator=g), "label": i % num_classes, "index": i} for i in range(n)]


def no_hooks(model):
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks, m


# --- Hide-and-Seek -----------------------------------------------------------------------

def test_has_hides_half_of_the_patches_in_training_only():
    torch.manual_seed(0)
    has = make("has", grid_size=4, hide_prob=0.5)
    model = build_classifier("small-cnn", num_classes=3).eval()
    seen = []
    model.backbone.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].clone()))
    images = torch.full((32, 3, 32, 32), 2.0)  # out of [0,1]: hidden pixels are recognisable
    labels = torch.zeros(32, dtype=torch.long)
    has.model = model
    has.localize(images, labels)
    assert torch.equal(seen[-1], (images - model.mean) / model.std)  # eval input untouched
    has.training_loss(model, images, labels)
    raw = seen[-1] * model.std + model.mean
    hidden = (raw - 2.0).abs() > 1e-4  # [B,3,H,W]
    assert torch.equal(hidden[:, 0], hidden[:, 1])
    torch.testing.assert_close(raw[hidden], model.mean.expand_as(raw)[hidden])
    # 32 images x 64 patches of 4x4 pixels: each patch hidden whole or not at all
    cells = hidden[:, 0].float().view(32, 8, 4, 8, 4).mean(dim=(2, 4))
    assert ((cells == 0) | (cells == 1)).all()
    assert abs(cells.mean().item() - 0.5) < 0.05


def test_has_grid_size_is_the_patch_side_in_pixels():
    """wsolevaluation's has_grid_size: 4-pixel patches by default (not 4 patches per side)."""
    assert make("has").cfg.grid_size == 4
    torch.manual_seed(0)
    has = make("has")
    images = torch.full((16, 3, 38, 38), 2.0)
    hidden = (has.hide(images, torch.zeros(1, 3, 1, 1)) == 0)[:, 0]
    # 4x4 cells from the top-left corner (the last row/column 2 pixels wide), each whole
    core = hidden[:, :36, :36].float().view(16, 9, 4, 9, 4).mean(dim=(2, 4))
    assert ((core == 0) | (core == 1)).all()
    assert 0.4 < core.mean().item() < 0.6
    edge = hidden[:, :36, 36:].float().view(16, 9, 4, 2).mean(dim=(2, 3))
    assert ((edge == 0) | (edge == 1)).all()
    assert torch.equal(make("has", grid_size=0).hide(images, torch.zeros(1, 3, 1, 1)), images)


# --- ADL -----------------------------------------------------------------------------------

def test_adl_drop_mask_zeroes_exactly_the_pixels_above_gamma_max():
    adl = make("adl", drop_rate=1.0, gamma=0.8)
    feats = torch.rand(2, 4, 5, 5) + 0.1
    out = adl.adl(feats)
    att = feats.mean(1, keepdim=True)
    dropped = att >= 0.8 * att.amax(dim=(2, 3), keepdim=True)
    assert dropped.any() and (~dropped).any()
    assert torch.equal(out, feats * (~dropped))
    # the reference drops attention >= gamma * max (wsolevaluation wsol/method/adl.py)
    exact = torch.tensor([1.0, 0.5, 0.25, 0.5]).view(1, 1, 2, 2).expand(1, 2, 2, 2)
    half = make("adl", drop_rate=1.0, gamma=0.5).adl(exact)
    assert torch.equal(half[0, 0], torch.tensor([[0.0, 0.0], [0.25, 0.0]]))
    importance = make("adl", drop_rate=0.0).adl(feats)
    torch.testing.assert_close(importance, feats * torch.sigmoid(att))


def test_adl_applies_the_drop_mask_with_its_drop_rate_and_is_identity_in_eval():
    torch.manual_seed(0)
    adl = make("adl", drop_rate=0.75, gamma=0.9)
    feats = torch.rand(1, 3, 4, 4) + 0.1  # positive: the importance map never zeroes a pixel
    drops = sum(bool((adl.adl(feats) == 0).any()) for _ in range(2000))
    assert abs(drops / 2000 - 0.75) < 0.04
    torch.manual_seed(0)
    model = build_classifier("small-cnn", num_classes=3)
    images = torch.rand(2, 3, 16, 16)
    always = make("adl", drop_rate=1.0)
    model.eval()
    plain = model(images).features
    with always.training_context(model):
        torch.testing.assert_close(model(images).features, plain)  # eval: identity
        model.train()
        feats = model(images).features
        att = feats.mean(1)
        assert ((feats == 0).all(1) == (att == 0)).all() and (att == 0).any()  # the peak was dropped
    no_hooks(model)


def test_adl_sits_at_the_reference_positions_of_the_backbone():
    model = build_classifier("small-cnn", num_classes=3)
    adl = make("adl")
    with adl.training_context(model):
        hooked = [name for name, m in model.backbone.named_modules() if m._forward_hooks]
    assert hooked == ["body.1", "body.2", "body.3"]
    no_hooks(model)
    with make("adl", positions="cam_layer").training_context(model):
        assert [n for n, m in model.backbone.named_modules() if m._forward_hooks] == ["body.3"]
    resnet = build_classifier("resnet50", num_classes=3)
    with adl.training_context(resnet):
        assert [n for n, m in resnet.backbone.named_modules() if m._forward_hooks] == ["layer3.0", "layer4.0",
                                                                                        "layer4.2"]


# --- ACoL ----------------------------------------------------------------------------------

def test_acol_second_branch_sees_features_with_the_first_branch_peak_erased():
    torch.manual_seed(0)
    acol = make("acol", erase_threshold=0.6)
    model = acol.build_model(tiny_ctx()).eval()
    # wsolevaluation's branch: 3x3 conv to 1024 (scaled by the backbone's width scale), 3x3, 1x1
    convs = [m for m in model.acol_a if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3), (3, 3), (1, 1)] and convs[-1].out_channels == 3
    assert convs[0].out_channels == round(1024 * model.backbone.decoder_width_scale)
    images, labels = torch.rand(3, 3, 16, 16), torch.tensor([0, 1, 2])
    seen = []
    model.acol_b.register_forward_pre_hook(lambda m, inp: seen.append(inp[0]))
    terms = acol.training_loss(model, images, labels)
    assert set(terms) == {"ce_a", "ce_b"}
    with torch.no_grad():
        feats = model.features(images)
        maps = model.acol_a(feats)[torch.arange(3), labels]
        lo, hi = maps.amin(dim=(1, 2), keepdim=True), maps.amax(dim=(1, 2), keepdim=True)
        norm = (maps - lo) / (hi - lo)
        erased = norm >= 0.6
    assert erased.any(dim=(1, 2)).all() and (~erased).any()
    got = seen[-1].detach()
    assert (got.permute(0, 2, 3, 1)[erased] == 0).all()
    torch.testing.assert_close(got.permute(0, 2, 3, 1)[~erased], feats.permute(0, 2, 3, 1)[~erased])
    # at test, branch B reads the ERASED features too (wsolevaluation: erasing is always on)
    cams, logits = acol.cams(model, images, labels)
    with torch.no_grad():
        b = model.acol_b(feats * (~erased).unsqueeze(1))[torch.arange(3), labels]
        bl, bh = b.amin(dim=(1, 2), keepdim=True), b.amax(dim=(1, 2), keepdim=True)
        expected = torch.maximum(norm, (b - bl) / (bh - bl))
    torch.testing.assert_close(cams, expected)
    torch.testing.assert_close(logits, model.acol_a(feats).mean(dim=(2, 3)))
    # the threshold is inclusive: a pixel exactly at it is erased
    flat = torch.tensor([[[0.0, 0.6, 1.0]]])
    assert acol.erase(torch.ones(1, 2, 1, 3), flat)[0, 0].tolist() == [[1.0, 0.0, 0.0]]


# --- SPG -----------------------------------------------------------------------------------

def test_spg_seeds_ignore_the_uncertain_band_and_fall_back_to_the_peak():
    spg = make("spg", min_fg_pixels=2)
    att = torch.tensor([[[0.0, 0.05, 0.3, 0.5], [0.69, 0.71, 0.9, 1.0]]])
    target, valid = spg.seeds(att, 0.7, 0.1)
    assert valid.tolist() == [[[True, True, False, False], [False, True, True, True]]]
    assert target[valid].tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    # fewer than min_fg_pixels above the high threshold: > 0.7 x max instead (wsol/method/spg.py)
    weak = att * 0.5  # max 0.5: nothing above 0.7, so the seeds are > 0.35
    target, valid = spg.seeds(weak, 0.7, 0.01)
    assert target.tolist() == [[[0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]]]
    assert valid.tolist() == [[[True, False, False, False], [False, True, True, True]]]
    assert make("spg").cfg.thresholds == ((0.7, 0.01), (0.5, 0.05), (0.7, 0.1))
    assert make("spg").cfg.min_fg_pixels == 30
    logits = torch.randn(1, 2, 4, requires_grad=True)
    spg.guidance_loss(logits, att, 0.7, 0.1).backward()
    grad_valid = spg.seeds(att, 0.7, 0.1)[1]
    assert (logits.grad[~grad_valid] == 0).all() and (logits.grad[grad_valid] != 0).all()


def test_spg_has_the_three_guided_branches_and_their_losses():
    torch.manual_seed(0)
    spg = make("spg")
    model = spg.build_model(tiny_ctx())
    assert all(hasattr(model, n) for n in ("spg_b1", "spg_b2", "spg_b_shared", "spg_c"))
    images, labels = torch.rand(2, 3, 16, 16), torch.tensor([0, 1])
    terms = spg.training_loss(model, images, labels)
    assert set(terms) == {"ce", "b2_attention", "b1_b2", "c_fused"}
    sum(terms.values()).backward()
    for name in ("spg_b1", "spg_b2", "spg_b_shared", "spg_c"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in getattr(model, name).parameters()), name
    no_hooks(model)


# --- CutMix --------------------------------------------------------------------------------

def test_cutmix_mixes_labels_by_pasted_area():
    cutmix = make("cutmix", alpha=1.0, prob=1.0)
    b = 6
    images = torch.arange(b, dtype=torch.float).view(b, 1, 1, 1).expand(b, 3, 20, 24).clone()
    labels = torch.arange(b)
    checked = 0
    for seed in range(20):
        torch.manual_seed(seed)
        mixed, ya, yb, lam = cutmix.mix(images, labels)
        assert torch.equal(ya, labels)
        for i in range(b):
            if yb[i] != i:
                pasted = (mixed[i, 0] == yb[i].float()).float().mean().item()
                assert abs(pasted - (1 - lam)) < 1e-6
                assert ((mixed[i, 0] == i) | (mixed[i, 0] == yb[i].float())).all()
                checked += 1
    assert checked > 20
    torch.manual_seed(0)
    model = build_classifier("small-cnn", num_classes=6).eval()
    torch.manual_seed(3)
    loss = cutmix.training_loss(model, images, labels)
    torch.manual_seed(3)
    mixed, ya, yb, lam = cutmix.mix(images, labels)
    logits = model(mixed).logits
    ce = nn.functional.cross_entropy
    torch.testing.assert_close(loss, lam * ce(logits, ya) + (1 - lam) * ce(logits, yb))
    no_mix = make("cutmix", prob=0.0).mix(images, labels)
    assert no_mix[0] is images and no_mix[3] == 1.0


# --- smoke ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BASELINES)
def test_one_step_fit_and_localize(name):
    torch.manual_seed(0)
    method = method_cls(name)()
    data = tiny_dataset()
    method.fit(data, data, tiny_ctx())
    images = torch.stack([d["image"] for d in data])
    labels = torch.tensor([d["label"] for d in data])
    loc = method.localize(images, labels)
    assert loc.cams.shape == (4, 8, 8) and loc.logits.shape == (4, 3)
    assert torch.isfinite(loc.cams).all() and not loc.cams.requires_grad
    assert not method.model.training
    no_hooks(method.model)


# --- trivial baselines ----------------------------------------------------------------------

def test_center_is_one_centred_gaussian_and_random_is_seeded():
    center = make("center")
    maps = center.localize(torch.rand(3, 3, 21, 21), torch.zeros(3, dtype=torch.long)).cams
    assert torch.equal(maps[0], maps[2]) and maps[0].argmax() == 10 * 21 + 10
    torch.testing.assert_close(maps[0, 0, 10], torch.exp(torch.tensor(-0.25 / (2 * 0.25**2))))

    def random_maps(seed):
        m = make("random")
        m.fit(None, None, SimpleNamespace(seed=seed))
        return m.localize(torch.rand(2, 3, 14, 14), torch.zeros(2, dtype=torch.long)).cams

    assert torch.equal(random_maps(0), random_maps(0)) and not torch.equal(random_maps(0), random_maps(1))
