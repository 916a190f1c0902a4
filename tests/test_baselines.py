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
    has = make("has", grid_size=8, hide_prob=0.5)
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


# --- ADL -----------------------------------------------------------------------------------

def test_adl_drop_mask_zeroes_exactly_the_pixels_above_gamma_max():
    adl = make("adl", drop_rate=1.0, gamma=0.8)
    feats = torch.rand(2, 4, 5, 5) + 0.1
    out = adl.adl(feats)
    att = feats.mean(1, keepdim=True)
    dropped = att > 0.8 * att.amax(dim=(2, 3), keepdim=True)
    assert dropped.any() and (~dropped).any()
    assert torch.equal(out, feats * (~dropped))
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


# --- ACoL ----------------------------------------------------------------------------------

def test_acol_second_branch_sees_features_with_the_first_branch_peak_erased():
    torch.manual_seed(0)
    acol = make("acol", erase_threshold=0.6)
    model = acol.build_model(tiny_ctx()).eval()
    images, labels = torch.rand(3, 3, 16, 16), torch.tensor([0, 1, 2])
    seen = []
    model.acol_branch.register_forward_pre_hook(lambda m, inp: seen.append(inp[0]))
    terms = acol.training_loss(model, images, labels)
    assert set(terms) == {"ce_a", "ce_b"}
    with torch.no_grad():
        feats = model(images).features
        cam = model.cam(feats, labels)
        lo, hi = cam.amin(dim=(1, 2), keepdim=True), cam.amax(dim=(1, 2), keepdim=True)
        erased = (cam - lo) / (hi - lo) > 0.6
    assert erased.any(dim=(1, 2)).all() and (~erased).any()
    got = seen[-1].detach()
    assert (got.permute(0, 2, 3, 1)[erased] == 0).all()
    torch.testing.assert_close(got.permute(0, 2, 3, 1)[~erased], feats.permute(0, 2, 3, 1)[~erased])
    cams, _ = acol.cams(model, images, labels)
    assert (cams <= 1).all() and (cams >= 0).all() and torch.allclose(cams.amax(dim=(1, 2)), torch.ones(3))


# --- SPG -----------------------------------------------------------------------------------

def test_spg_seeds_ignore_the_uncertain_band():
    spg = make("spg", fg_threshold=0.7, bg_threshold=0.1)
    cam = torch.tensor([[[0.0, 0.05, 0.3, 0.5], [0.69, 0.71, 0.9, 1.0]]]) * 4 - 1  # min-max gives back the values
    target, valid = spg.seeds(cam)
    assert valid.tolist() == [[[True, True, False, False], [False, True, True, True]]]
    assert target[valid].tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]
    logits = torch.randn(1, 2, 4, requires_grad=True)
    spg.guidance_loss(logits, target, valid).backward()
    assert (logits.grad[~valid] == 0).all() and (logits.grad[valid] != 0).all()


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
