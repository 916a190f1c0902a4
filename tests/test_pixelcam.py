"""PixelCAM's mechanism: the pixel classifier learns only at seed pixels, the seeds come from the
configured seeder, fully negative images get none; a fit/localize smoke through a fake ctx."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

from bench.config import make_budget
from bench.method import Localization
from bench.models import build_classifier
from bench.method import build_cam_seeder
from bench.ops.seed import IGNORE, SeedConfig
from bench.registry import METHODS, REPO_ROOT, load_plugin_file


def method_cls(name):
    load_plugin_file(REPO_ROOT / "methods" / f"{name}.py")
    return METHODS[name]


def make(**cfg):
    """PixelCAM with `cfg` set; keys of `SeedConfig` go into its nested `seed`."""
    cls = method_cls("pixelcam")
    seed_keys = {f.name for f in dataclasses.fields(SeedConfig)}
    seed = dataclasses.replace(cls.Config().seed, **{k: v for k, v in cfg.items() if k in seed_keys})
    return cls(cls.Config(seed=seed, **{k: v for k, v in cfg.items() if k not in seed_keys}))


class FixedSeeder:
    """A stand-in seeder whose CAM is a bright square in the top-left corner of every image."""

    def localize(self, images, labels):
        cams = torch.zeros(images.shape[0], 8, 8)
        cams[:, :3, :3] = 1.0
        return Localization(cams)


def plain_dataset(negative_class=None):
    return SimpleNamespace(localization_classes=lambda labels: labels, negative_class=negative_class)


def prepared(method, negative_class=None):
    method.dataset = plain_dataset(negative_class)
    method.seeder = FixedSeeder()
    method.generator = torch.Generator().manual_seed(0)
    return method.attach_head(build_classifier("small-cnn", num_classes=3))


def test_the_pixel_loss_reads_the_features_only_at_seed_pixels():
    torch.manual_seed(0)
    # seeds on the feature grid (the fused op), no dropout: the two passes below differ only by the edit
    pixelcam = make(n_fg=2, n_bg=2, full_resolution_seeds=False, spatial_dropout=0.0)
    model = prepared(pixelcam).train()
    images, labels = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])

    seeds = {}
    real_seeds = pixelcam.seeds

    def same_seeds(images, labels, grid):  # the same draw for both passes
        if "s" not in seeds:
            seeds["s"] = real_seeds(images, labels, grid)
        return seeds["s"]

    pixelcam.seeds = same_seeds
    model.eval()  # BatchNorm in eval: the two passes differ only by the edit below
    base = pixelcam.training_loss(model, images, labels)
    off_seed = seeds["s"] == IGNORE
    assert off_seed.any() and (~off_seed).any()

    def edit(module, inputs, output):  # change every feature vector off the seeds
        return torch.where(off_seed[:, None], output + 3.0 * torch.randn_like(output), output)

    handle = model.backbone.register_forward_hook(edit)
    edited = pixelcam.training_loss(model, images, labels)
    handle.remove()
    assert torch.allclose(edited["pixel_ce"], base["pixel_ce"], atol=1e-6)
    assert not torch.allclose(edited["cls_ce"], base["cls_ce"])  # the image loss does see them

    features = model(images).features.detach().requires_grad_(True)
    head = model.pixel_head
    from bench.ops.pixel_classifier import pixel_seed_ce
    pixel_seed_ce(features, head.weight, head.bias, seeds["s"]).backward()
    assert features.grad[off_seed[:, None].expand_as(features)].abs().max() == 0
    assert features.grad.abs().sum() > 0


def test_seeds_follow_the_seeder_cam_on_the_feature_grid():
    pixelcam = make(n_fg=3, n_bg=3, bg_fraction=0.5, roi="otsu", fg_mode="uniform", bg_mode="uniform", dilate=True)
    prepared(pixelcam)
    seeds = pixelcam.seeds(torch.rand(2, 3, 32, 32), torch.tensor([0, 1]), (8, 8))
    assert seeds.shape == (2, 8, 8)
    fg = seeds == 1
    assert fg.any()
    # foreground seeds lie in the bright square (grown by the 3x3 dilation at most)
    assert not fg[:, 4:, :].any() and not fg[:, :, 4:].any()
    # background seeds are drawn outside it: even dilated they cannot reach its centre
    assert (seeds[:, 1, 1] != 0).all() and (seeds == 0).any()


def test_fully_negative_images_get_no_seeds_unless_asked():
    images, labels = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    pixelcam = make()
    prepared(pixelcam, negative_class=0)
    seeds = pixelcam.seeds(images, labels, (8, 8))
    assert (seeds[0] == IGNORE).all() and (seeds[1] != IGNORE).any()
    pixelcam = make(seeds_on_negative_images=True)
    prepared(pixelcam, negative_class=0)
    assert (pixelcam.seeds(images, labels, (8, 8))[0] != IGNORE).any()


def test_the_seeder_is_configurable_and_must_be_post_hoc():
    ctx = tiny_ctx()
    assert make().cfg.seed_cam == "layercam"  # the authors store their stage-1 LayerCAMs
    seeder = build_cam_seeder(make(seed_cam="gradcam").cfg.seed_cam, "pixelcam", [], [], ctx)
    assert type(seeder).name == "gradcam"
    method_cls("has")
    with pytest.raises(ValueError, match="not a post-hoc CAM method"):
        build_cam_seeder(make(seed_cam="has").cfg.seed_cam, "pixelcam", [], [], ctx)
    with pytest.raises(ValueError, match="fg_mode"):
        make(fg_mode="nope")


def tiny_ctx(num_classes=3):
    def new_classifier():
        torch.manual_seed(0)
        return build_classifier("small-cnn", num_classes=num_classes)

    return SimpleNamespace(classifier=lambda checkpoint="last": new_classifier(), new_classifier=new_classifier,
                           selector=lambda method: None, device=torch.device("cpu"),
                           seed=0, num_classes=num_classes, dataset=plain_dataset(),
                           budget=make_budget("tiny", stage1_epochs=1, method_epochs=1, batch_size=4, lr=0.01))


def test_fit_then_localize_gives_a_foreground_probability_map_and_logits():
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.rand(3, 32, 32, generator=g), "label": i % 3, "index": i} for i in range(8)]
    pixelcam = make()
    pixelcam.fit(data, data, tiny_ctx())
    loc = pixelcam.localize(torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))
    assert loc.cams.shape == (2, 8, 8) and loc.logits.shape == (2, 3)
    assert loc.cams.min() >= 0 and loc.cams.max() <= 1
