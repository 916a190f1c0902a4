"""Max-Min uncertainty and Min-Max entropy: the shared localizer pieces on hand-made inputs, each
method's loss terms (values at their extremes, direction of their gradients), ablation switches,
and a fit/localize smoke through a fake ctx."""
from __future__ import annotations

import math
import sys
from types import SimpleNamespace

import pytest
import torch

from bench.config import make_budget
from bench.models import build_classifier
from bench.models.wildcat import (ClassMapHead, LocalizerClassifier, apply_mask, foreground_map, soft_mask,
                                    wildcat_pool)
from bench.registry import METHODS, REPO_ROOT, load_plugin_file


def method_cls(name):
    load_plugin_file(REPO_ROOT / "methods" / f"{name}.py")
    return METHODS[name]


def plugin(name):
    return sys.modules[method_cls(name).__module__]


def entropy(logits):
    p = logits.softmax(1)
    return -(p * p.log()).sum(1).mean()


# --- shared localizer pieces ----------------------------------------------------------------

def test_wildcat_pool_averages_the_top_and_bottom_fractions():
    maps = torch.arange(1.0, 9.0).view(1, 1, 2, 4)  # values 1..8
    assert wildcat_pool(maps, kmax=0.25).item() == pytest.approx(7.5)  # top 2 of 8
    assert wildcat_pool(maps, kmax=1.0).item() == pytest.approx(4.5)  # GAP
    assert wildcat_pool(maps, kmax=0.25, kmin=0.25, alpha=0.5).item() == pytest.approx(7.5 + 0.5 * 1.5)
    assert wildcat_pool(maps, kmax=0.01).item() == pytest.approx(8.0)  # at least one value
    with pytest.raises(ValueError, match="kmax"):
        wildcat_pool(maps, kmax=0.0)


def test_foreground_map_weights_class_maps_by_the_posterior():
    maps = torch.stack([torch.zeros(2, 2), torch.ones(2, 2)])[None]  # class 0: 0, class 1: 1
    confident_1 = torch.tensor([[-20.0, 20.0]])
    assert torch.allclose(foreground_map(confident_1, maps), torch.ones(1, 2, 2), atol=1e-6)
    assert torch.allclose(foreground_map(torch.zeros(1, 2), maps), torch.full((1, 2, 2), 0.5))


def test_soft_mask_is_a_smooth_threshold_at_sigma():
    ramp = torch.linspace(0, 1, 11).view(1, 1, 11).expand(1, 11, 11).contiguous()
    mask = soft_mask(ramp, (11, 11), w=50.0, sigma=0.3)
    assert mask.shape == (1, 1, 11, 11)
    row = mask[0, 0, 0]
    assert (row[:3] < 0.05).all() and (row[4:] > 0.95).all() and row[3] == pytest.approx(0.5, abs=1e-5)
    assert (row.diff() >= 0).all()
    # per-image normalisation: scaling one image's map does not change its mask
    assert torch.allclose(soft_mask(5 * ramp + 2, (11, 11), 50.0, 0.3), mask, atol=1e-6)


def test_apply_mask_splits_the_image_into_foreground_and_background():
    images = torch.rand(2, 3, 4, 4)
    fill = torch.full((1, 3, 1, 1), 0.5)
    mask = torch.zeros(2, 1, 4, 4)
    mask[:, :, :2] = 1
    fg, bg = apply_mask(images, mask, fill)
    assert torch.equal(fg[:, :, :2], images[:, :, :2]) and (fg[:, :, 2:] == 0.5).all()
    assert torch.equal(bg[:, :, 2:], images[:, :, 2:]) and (bg[:, :, :2] == 0.5).all()
    with pytest.raises(ValueError, match="does not fit"):
        apply_mask(images, mask[:, :, :2], fill)


def test_localizer_classifier_outputs():
    torch.manual_seed(0)
    model = LocalizerClassifier(build_classifier("small-cnn", 3), 3, scale=0.5)
    out = model(torch.rand(2, 3, 32, 32))
    assert out.mask.shape == (2, 1, 32, 32) and out.loc_logits.shape == (2, 3)
    assert out.fg_logits.shape == (2, 3) and out.bg_logits.shape == (2, 3)
    assert model(torch.rand(2, 3, 32, 32), with_background=False).bg_logits is None
    assert isinstance(model.loc_head, ClassMapHead)


# --- Max-Min uncertainty --------------------------------------------------------------------

@pytest.mark.parametrize("reverse", [False, True])
def test_background_kl_is_zero_at_uniform_and_pushes_a_confident_prediction_toward_it(reverse):
    kl = plugin("maxmin").kl_to_uniform
    assert kl(torch.zeros(3, 4), reverse).item() == pytest.approx(0.0, abs=1e-7)
    assert kl(torch.full((3, 4), 7.0), reverse).item() == pytest.approx(0.0, abs=1e-6)  # any constant logits
    confident = torch.tensor([[6.0, 0.0, 0.0, 0.0], [0.0, 0.0, -3.0, 4.0]], requires_grad=True)
    value = kl(confident, reverse)
    assert value.item() > 0.5
    value.backward()
    assert confident.grad[0, 0] > 0 and confident.grad[1, 3] > 0  # gradient descent lowers the winner
    stepped = (confident - 0.5 * confident.grad).detach()
    assert kl(stepped, reverse) < value and entropy(stepped) > entropy(confident.detach())
    # KL(u||p) = -log C - mean log p; KL(p||u) = log C - H(p)
    p = confident.detach().softmax(1)
    expected = (-math.log(4) - p.log().mean(1)).mean() if not reverse else (math.log(4) + (p * p.log()).sum(1)).mean()
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def fake_output(b=2, c=3, hw=8, mask_value=0.5):
    return SimpleNamespace(mask=torch.full((b, 1, hw, hw), mask_value), loc_logits=torch.zeros(b, c),
                           fg_logits=torch.zeros(b, c), bg_logits=torch.zeros(b, c))


def test_maxmin_terms_ablation_switches_and_barrier_schedule():
    cls = method_cls("maxmin")
    method = cls()
    method.start_epoch(0)
    assert method.t == 5.0
    method.start_epoch(1)
    assert method.t == pytest.approx(5.05)
    method.start_epoch(1000)
    assert method.t == 10.0
    labels = torch.tensor([0, 1])
    terms = method.losses(fake_output(), labels)
    assert set(terms) == {"loc_ce", "fg_ce", "bg_kl", "size"}
    assert terms["fg_ce"].item() == pytest.approx(math.log(3))
    off = cls(cls.Config(kl_weight=0.0, size_weight=0.0))
    off.start_epoch(0)
    assert set(off.losses(fake_output(), labels)) == {"loc_ce", "fg_ce"}
    # the size constraint penalises a vanishing foreground more than a balanced mask
    method.start_epoch(0)
    balanced = method.losses(fake_output(mask_value=0.5), labels)["size"]
    empty = method.losses(fake_output(mask_value=1e-4), labels)["size"]
    assert empty > balanced


# --- Min-Max entropy ------------------------------------------------------------------------

def test_min_max_entropy_terms_have_the_right_extremes_and_directions():
    mod = plugin("minmaxent")
    c = 4
    uniform = torch.zeros(2, c)
    right = torch.tensor([[9.0, 0, 0, 0], [0, 9.0, 0, 0]])
    wrong = torch.tensor([[0, 9.0, 0, 0], [9.0, 0, 0, 0]])
    labels = torch.tensor([0, 1])
    # relevant region: low for a confident right answer, log C when uniform, high when wrong
    assert mod.relevant_entropy(right, labels).item() < 0.01
    assert mod.relevant_entropy(uniform, labels).item() == pytest.approx(math.log(c))
    assert mod.relevant_entropy(wrong, labels).item() > 8
    # irrelevant region: its minimum, log C, at the uniform prediction (maximal entropy)
    assert mod.irrelevant_entropy(uniform).item() == pytest.approx(math.log(c))
    for logits in (right, wrong, torch.randn(5, c)):
        assert mod.irrelevant_entropy(logits).item() > math.log(c)
    # a gradient step on the irrelevant term raises the entropy; on the relevant one it lowers it
    x = torch.tensor([[2.0, 0.5, 0.0, -1.0]], requires_grad=True)
    mod.irrelevant_entropy(x).backward()
    assert entropy((x - 0.5 * x.grad).detach()) > entropy(x.detach())
    x.grad = None
    mod.relevant_entropy(x, torch.tensor([0])).backward()
    assert entropy((x - 0.5 * x.grad).detach()) < entropy(x.detach())


def test_minmaxent_terms_and_ablation():
    cls = method_cls("minmaxent")
    labels = torch.tensor([0, 1])
    assert set(cls().losses(fake_output(), labels)) == {"loc_ce", "relevant", "irrelevant"}
    assert set(cls(cls.Config(irrelevant_weight=0.0)).losses(fake_output(), labels)) == {"loc_ce", "relevant"}


# --- fit / localize smoke -------------------------------------------------------------------

def tiny_ctx(num_classes=3):
    def new_classifier():
        torch.manual_seed(0)
        return build_classifier("small-cnn", num_classes=num_classes)

    return SimpleNamespace(classifier=lambda checkpoint="last": new_classifier(), new_classifier=new_classifier,
                           selector=lambda method: None, device=torch.device("cpu"),
                           seed=0, num_classes=num_classes,
                           budget=make_budget("tiny", stage1_epochs=1, method_epochs=2, batch_size=4, lr=0.01))


@pytest.mark.parametrize("name", ["maxmin", "minmaxent"])
def test_fit_logs_every_term_per_epoch_and_localize_gives_a_mask(name, caplog):
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.rand(3, 32, 32, generator=g), "label": i % 3, "index": i} for i in range(8)]
    method = method_cls(name)()
    with caplog.at_level("INFO", logger="bench.method.localizer"):
        method.fit(data, data, tiny_ctx())
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{name} epoch")]
    assert len(lines) == 2 and "loc_ce=" in lines[0]
    loc = method.localize(torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))
    assert loc.cams.shape == (2, 32, 32) and loc.logits.shape == (2, 3)
    assert loc.cams.min() >= 0 and loc.cams.max() <= 1


# --- fidelity to the released code ----------------------------------------------------------

def test_wildcat_dropout_acts_on_the_pooled_values_in_training_only():
    from bench.models.wildcat import wildcat_pool

    maps = torch.rand(2, 3, 6, 6) + 0.5
    plain = wildcat_pool(maps, 0.3)
    assert torch.equal(wildcat_pool(maps, 0.3, dropout=0.5, training=False), plain)
    torch.manual_seed(0)
    dropped = wildcat_pool(maps, 0.3, dropout=0.5, training=True)
    assert not torch.allclose(dropped, plain)
    torch.manual_seed(0)
    k = math.ceil(0.3 * 36)
    top = maps.flatten(2).topk(k, -1).values
    torch.testing.assert_close(dropped, torch.nn.functional.dropout(top, 0.5, True).mean(-1))


def test_defaults_follow_the_released_configurations():
    mm, me = method_cls("maxmin").Config(), method_cls("minmaxent").Config()
    assert (mm.classifier, mm.dropout, mm.mask_sigma, mm.sigma_step, mm.sigma_max) == ("wildcat", 0.1, 0.15, 0.001, 0.2)
    assert (me.classifier, me.dropout, me.detach_mask) == ("wildcat", 0.75, True)
    model = method_cls("minmaxent")().build_model(tiny_ctx())
    assert model.cls_head is not None and model.cls_head.dropout == 0.75 and model.loc_head.dropout == 0.75


def test_minmaxent_mask_is_detached_so_the_entropy_terms_do_not_train_the_localizer():
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(4, 3, 32, 32, generator=g), torch.tensor([0, 1, 2, 0])
    for detach, reaches in ((True, False), (False, True)):
        cls = method_cls("minmaxent")
        m = cls(cls.Config(detach_mask=detach, dropout=0.0))
        model = m.build_model(tiny_ctx())
        terms = m.losses(model(images), labels)
        (terms["relevant"] + terms["irrelevant"]).backward()
        grad = model.loc_head.conv.weight.grad
        assert (grad is not None and grad.abs().sum() > 0) == reaches, detach


def test_maxmin_sigma_grows_per_epoch_up_to_its_maximum():
    method = method_cls("maxmin")()
    assert [method.sigma_at(e) for e in (0, 10)] == [0.15, pytest.approx(0.16)]
    assert method.sigma_at(1000) == 0.2
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.rand(3, 32, 32, generator=g), "label": i % 3, "index": i} for i in range(8)]
    method.fit(data, data, tiny_ctx())  # 2 epochs: sigma of the last trained epoch, 0.151
    assert method.model.sigma == pytest.approx(0.151)
    assert isinstance(method.model.cls_head, torch.nn.Module) and method.model.cls_head.dropout == 0.1


def test_maxmin_camelyon16_variant_on_a_dataset_with_negative_images():
    cls = method_cls("maxmin")
    method = cls()
    method.dataset = SimpleNamespace(negative_class=0)
    assert method.variant == "camelyon16" and not method.with_background
    method.start_epoch(0)
    b, hw = 4, 8
    fg_map = torch.zeros(b, 4, 4, requires_grad=True)
    out = SimpleNamespace(mask=torch.full((b, 1, hw, hw), 0.5), loc_logits=torch.zeros(b, 2), fg_logits=None,
                          bg_logits=None, fg_map=fg_map)
    labels = torch.tensor([0, 1, 0, 1])
    terms = method.losses(out, labels)
    assert set(terms) == {"loc_ce", "normal_bce", "size"}
    assert terms["loc_ce"].item() == pytest.approx(10 * math.log(2))
    assert terms["normal_bce"].item() == pytest.approx(math.log(2))  # sigmoid(0) vs target 0
    terms["normal_bce"].backward()
    assert (fg_map.grad[labels == 0] > 0).all() and (fg_map.grad[labels == 1] == 0).all()
    glas = cls(cls.Config(loss_variant="glas"))
    glas.dataset = method.dataset
    glas.start_epoch(0)
    assert set(glas.losses(fake_output(), torch.tensor([0, 1]))) == {"loc_ce", "fg_ce", "bg_kl", "size"}
    assert cls().variant == "glas"  # no dataset / no negative class
    # its classification output is the trained localizer's scores (no classifier is trained on x+)
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.rand(3, 32, 32, generator=g), "label": i % 2, "index": i} for i in range(8)]
    ctx = tiny_ctx(num_classes=2)
    ctx.dataset = SimpleNamespace(negative_class=0)
    method = cls()
    method.fit(data, data, ctx)
    images = torch.rand(2, 3, 32, 32)
    loc = method.localize(images, torch.tensor([0, 1]))
    with torch.no_grad():
        torch.testing.assert_close(loc.logits, method.model.localize(images)[1])
        assert not method.model.normalise_mask and method.model.sigma == 0.0
