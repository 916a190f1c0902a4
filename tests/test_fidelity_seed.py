"""The seed-paper methods follow the authors' released code: each test pins one choice listed in
docs/fidelity.md (the seed sections) and fails on the behaviour it replaced."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from bench.config import PAPER_BUDGET, apply_overrides, config_hash, method_config, paper_preset, split_setting
from bench.method import Localization
from bench.models import build_classifier
from bench.ops.seed import IGNORE, SeedConfig, largest_component, make_seeds
from bench.registry import get_method


def _cfg(name):
    return get_method(name).Config()


# ---- config layout and --set -------------------------------------------------------------

def test_dotted_set_keys_reach_the_nested_seed_config():
    assert split_setting("fcam.seed.fg_mode=top") == ("fcam", "seed.fg_mode", "top")
    cfg = apply_overrides(_cfg("fcam"), {"seed.fg_mode": "top", "seed.n_fg": "3", "size_weight": "0.5"}, "fcam")
    assert (cfg.seed.fg_mode, cfg.seed.n_fg, cfg.size_weight) == ("top", 3, 0.5)
    assert cfg.seed.erode_size == 11  # the rest of the group untouched
    with pytest.raises(ValueError, match="fcam.seed has no setting 'bogus'.*n_fg"):
        apply_overrides(_cfg("fcam"), {"seed.bogus": "1"}, "fcam")
    with pytest.raises(ValueError, match="group of settings"):
        apply_overrides(_cfg("fcam"), {"seed": "1"}, "fcam")
    with pytest.raises(ValueError, match="not a group"):
        apply_overrides(_cfg("fcam"), {"crf_weight.x": "1"}, "fcam")
    assert config_hash(cfg) != config_hash(_cfg("fcam"))


def test_every_seeded_method_holds_one_seed_config():
    for name in ("fcam", "negev", "tcam", "colocam", "pixelcam"):
        cfg = _cfg(name)
        assert isinstance(cfg.seed, SeedConfig), name
        for flat in ("n_fg", "n_bg", "fg_mode", "bg_fraction", "erode_size"):
            assert not hasattr(cfg, flat), (name, flat)


def test_paper_presets_apply_only_under_the_paper_budget_and_user_settings_win():
    colocam = get_method("colocam")
    assert paper_preset(colocam, "ytov1", "quick") == {}
    assert paper_preset(colocam, "synth-video", PAPER_BUDGET) == {}
    cfg = method_config(colocam, "ytov1", PAPER_BUDGET, {})
    assert (cfg.schedule.epochs, cfg.schedule.step_every, cfg.schedule.gamma) == (10, 5, 0.9)  # colo-cam README
    assert method_config(colocam, "ytov1", "quick", {}).schedule.epochs is None
    assert method_config(colocam, "ytov1", PAPER_BUDGET, {"schedule.epochs": "3"}).schedule.epochs == 3
    pixelcam = method_config(get_method("pixelcam"), "glas", PAPER_BUDGET, {})
    assert pixelcam.schedule.step_every == 5  # PixelCAM README: --opt__step_size 5


def test_the_cell_records_its_paper_preset():
    from bench.config import get_budget
    from bench.grid import Cell
    from bench.runner import cell_config
    from tests.harness import smoke_settings

    settings = smoke_settings({"data": "unused", "cache": "unused"}, budget=get_budget(PAPER_BUDGET), backbone="resnet50")
    mcls, mcfg, dataset = Cell("colocam", "ytov1", 0).build(PAPER_BUDGET)
    assert mcfg.schedule.epochs == 10
    config = cell_config(mcls, mcfg, dataset, 0, settings)
    assert config["paper_preset"]["schedule.epochs"] == "10" and config["method_config"]["schedule"]["epochs"] == 10
    _, quick_cfg, _ = Cell("colocam", "ytov1", 0).build("quick")
    assert quick_cfg.schedule.epochs is None
    assert "paper_preset" not in cell_config(mcls, quick_cfg, dataset, 0, settings.replace(budget=get_budget("quick")))


# ---- seeding ------------------------------------------------------------------------------

def test_background_pool_is_exactly_the_lowest_fraction_ties_by_index():
    # 100 pixels, 60 of them tie at 0: fcam-wsol's pool is exactly int(0.1 * HW) = 10 pixels (the first
    # ten zeros in sort order), not every pixel tied with the 10th value
    cams = torch.zeros(1, 10, 10)
    cams[0, 6:] = torch.linspace(0.2, 1.0, 40).view(4, 10)
    cfg = SeedConfig(n_fg=0, n_bg=100, bg_fraction=0.1, dilate=False)
    labels = make_seeds(cams, cfg, torch.Generator().manual_seed(0))
    bg = (labels[0] == 0).flatten().nonzero().flatten()
    assert bg.tolist() == list(range(10))


def test_top_pool_is_floor_of_the_fraction_of_the_roi():
    cams = torch.zeros(1, 1, 20)
    cams[0, 0, 10:] = torch.linspace(0.5, 1.0, 10)  # ROI: the 10 bright pixels (Otsu)
    cfg = SeedConfig(n_fg=20, n_bg=0, fg_mode="top", top_fraction=0.55, dilate=False)
    labels = make_seeds(cams, cfg, torch.Generator().manual_seed(0))
    fg = (labels[0, 0] == 1).nonzero().flatten().tolist()
    assert fg == list(range(15, 20))  # int(0.55 * 10) = 5 highest (ceil would give 6)


def test_probability_seeder_draws_over_the_whole_image():
    # NEGEV's `probability_seeder`: fg anywhere with P ~ cam + 1e-6 (no Otsu ROI), bg anywhere with 1 - p
    torch.manual_seed(0)
    cams = torch.rand(1, 16, 16) * 0.2
    cams[0, :4, :4] = 1.0
    cfg = _cfg("negev").seed
    assert (cfg.n_fg, cfg.n_bg, cfg.roi, cfg.fg_mode, cfg.bg_mode, cfg.bg_fraction, cfg.dilate) == (
        10, 10, "none", "proportional", "complement", 1.0, False)
    hits = torch.zeros(16, 16)
    bg_hits = torch.zeros(16, 16)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        labels = make_seeds(cams, cfg, g)[0]
        assert int((labels == 1).sum()) + int((labels == 0).sum()) <= 20 and int((labels != IGNORE).sum()) >= 10
        hits += labels == 1
        bg_hits += labels == 0
    assert hits[4:, 4:].sum() > 0  # outside the Otsu ROI too
    assert bg_hits[:4, :4].sum() > 0  # background may land on the object (nearly uniform weights)


def test_largest_component_keeps_one_blob():
    m = torch.zeros(2, 8, 8, dtype=torch.bool)
    m[0, :2, :2] = True  # 4 px
    m[0, 4:7, 4:7] = True  # 9 px
    m[1, 0, :] = True  # a line of 8 ...
    m[1, 2, 0] = True  # ... and a lone pixel (diagonal neighbours are not connected)
    out = largest_component(m)
    assert out[0].sum() == 9 and out[0, 5, 5] and not out[0, 0, 0]
    assert out[1].sum() == 8 and not out[1, 2, 0]
    cams = torch.zeros(1, 8, 8)
    cams[0, :2, :2] = 1.0
    cams[0, 4:7, 4:7] = 1.0
    labels = make_seeds(cams, SeedConfig(n_fg=50, n_bg=0, roi="largest", dilate=False),
                        torch.Generator().manual_seed(0))
    assert (labels[0, :2, :2] != 1).all() and (labels[0, 4:7, 4:7] == 1).all()


def test_method_seed_defaults_are_the_authors():
    fcam = _cfg("fcam")
    assert (fcam.seed.erode_size, fcam.seed.erode_revert, fcam.seed.bg_fraction) == (11, True, 0.1)
    assert (fcam.size_weight, fcam.crf_weight, fcam.crf_scale, fcam.seed_cam) == (0.1, 2e-9, 1.0, "cam")
    negev = _cfg("negev")
    assert (negev.crf_weight, negev.size_weight) == (0.0, 0.0)  # negev README: --crf_ng False --max_sizepos_ng False
    tcam = _cfg("tcam")
    assert (tcam.size_weight, tcam.crf_weight, tcam.crf_scale, tcam.crf_reference_side) == (0.01, 2e-9, 1.0, 224)
    assert (tcam.seed.fg_mode, tcam.seed.top_fraction, tcam.seed.n_fg, tcam.seed.n_bg) == ("top", 0.6, 1, 1)
    colocam = _cfg("colocam")
    assert (colocam.seed.n_fg, colocam.seed.n_bg, colocam.seed.top_fraction, colocam.seed.roi) == (1000, 1000, 0.7,
                                                                                                     "largest")
    assert (colocam.seed_cam, colocam.n_frames, colocam.joint_weight, colocam.joint_scale) == ("layercam", 2, 9.0, 1.0)
    assert (colocam.size_weight, colocam.crf_weight, colocam.crf_scale) == (0.01, 2e-9, 1.0)
    pixelcam = _cfg("pixelcam")
    assert (pixelcam.seed.n_fg, pixelcam.seed.n_bg, pixelcam.seed.roi, pixelcam.seed.bg_fraction,
            pixelcam.seed.dilate) == (5, 5, "none", 0.2, False)
    assert (pixelcam.seed_cam, pixelcam.spatial_dropout, pixelcam.full_resolution_seeds) == ("layercam", 0.1, True)


def test_stored_video_cams_are_not_relued_and_not_renormalised_after_the_max():
    from bench.cams import frame_cams, shot_pooled_cams
    maps = torch.tensor([[[-1.0, 0.0], [1.0, 3.0]], [[0.0, 2.0], [-2.0, 2.0]]])
    frames = [{"image": torch.zeros(3, 2, 2), "label": 0, "index": i} for i in range(2)]
    got = frame_cams(lambda images, labels: maps[: len(images)], frames, 2, torch.device("cpu"))
    torch.testing.assert_close(got[0], (maps[0] + 1) / 4)  # min-max of the raw map (a ReLU would give x / 3)
    half = got * 0.5
    pooled = shot_pooled_cams(half, torch.tensor([0, 0]), 1, "before")
    torch.testing.assert_close(pooled[1], torch.maximum(half[0], half[1]))  # max of the stored maps, as is


# ---- PixelCAM -----------------------------------------------------------------------------

class _Square:
    def localize(self, images, classes):
        cams = torch.zeros(images.shape[0], 8, 8)
        cams[:, :3, :3] = 1.0
        return Localization(cams)


def _pixelcam(**cfg):
    cls = get_method("pixelcam")
    method = cls(dataclasses.replace(cls.Config(), **cfg))
    method.dataset = SimpleNamespace(localization_classes=lambda labels: labels, negative_class=None)
    method.seeder = _Square()
    method.generator = torch.Generator().manual_seed(0)
    model = method.attach_head(build_classifier("small-cnn", num_classes=3))
    return method, model


def test_pixelcam_seeds_at_full_resolution_on_upsampled_pixel_logits():
    torch.manual_seed(0)
    method, model = _pixelcam(spatial_dropout=0.0)
    images, labels = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    drawn = {}
    real = method.seeds

    def keep(images, labels, grid):
        drawn["grid"] = grid
        drawn["s"] = real(images, labels, grid)
        return drawn["s"]

    method.seeds = keep
    model.eval()
    loss = method.training_loss(model, images, labels)["pixel_ce"]
    assert drawn["grid"] == (32, 32)  # the seeds are drawn at the input's size, undilated
    seeds = drawn["s"]
    assert int((seeds != IGNORE).sum()) <= 2 * 10
    features = model(images).features
    head = model.pixel_head
    logits = torch.einsum("kc,bchw->bkhw", head.weight, features) + head.bias.view(1, -1, 1, 1)
    logits = torch.nn.functional.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)
    expected = torch.nn.functional.cross_entropy(logits, seeds, ignore_index=IGNORE)
    torch.testing.assert_close(loss, expected)


def test_pixelcam_spatial_dropout_reaches_the_image_head_only():
    torch.manual_seed(0)
    method, model = _pixelcam(spatial_dropout=0.5)
    images, labels = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    fixed = method.seeds(images, labels, (32, 32))
    method.seeds = lambda *a: fixed
    model.eval()  # BatchNorm fixed: only the dropout is random
    a, b = method.training_loss(model, images, labels), method.training_loss(model, images, labels)
    assert not torch.allclose(a["cls_ce"], b["cls_ce"])
    torch.testing.assert_close(a["pixel_ce"], b["pixel_ce"])
    c = _pixelcam(spatial_dropout=0.0)[0]
    c.seeds = lambda *a: fixed
    x, y = c.training_loss(model, images, labels), c.training_loss(model, images, labels)
    torch.testing.assert_close(x["cls_ce"], y["cls_ce"])
