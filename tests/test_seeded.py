"""F-CAM / NEGEV: the decoder on a frozen encoder, the seed losses, NEGEV's negative evidence."""
import dataclasses
from types import SimpleNamespace

import pytest
import torch

from bench.method.seeded import DecoderNet
from bench.losses.partial_ce import negative_evidence_loss, partial_cross_entropy
from bench.models import build_classifier
from bench.ops.seed import IGNORE, SeedConfig
from bench.registry import get_method


@pytest.mark.parametrize("backbone,side", [("small-cnn", 32), ("resnet50", 64), ("vgg16", 64), ("inceptionv3", 96)])
def test_decoder_output_matches_the_input_for_every_backbone(backbone, side):
    torch.manual_seed(0)
    net = DecoderNet(build_classifier(backbone, 3), (16, 8, 8, 4, 4), side)
    assert net.tap.skip_channels, "no skip feature found"  # every backbone has finer maps than its CAM features
    logits, features, cls_logits = net(torch.rand(2, 3, side, side))
    assert logits.shape == (2, 2, side, side) and cls_logits.shape == (2, 3)
    assert not features.requires_grad  # the encoder is frozen
    logits.sum().backward()
    assert all(p.grad is None for p in net.classifier.parameters())
    assert any(p.grad is not None for p in net.decoder.parameters())


def _stage_shapes(net, side):
    shapes = []
    handles = [stage.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[1:])))
               for stage in net.decoder.stages]
    with torch.no_grad():
        net(torch.rand(1, 3, side, side))
    for h in handles:
        h.remove()
    return shapes


def test_decoder_stages_sit_at_the_papers_resolutions_on_resnet50():
    # the smp-style U-Net of the F-CAM code on the stride-8 ResNet50: 256 and 128 at 1/8, 64 at
    # 1/4 (+ layer1), 32 at 1/2 (+ stem), 16 at the input's resolution
    torch.manual_seed(0)
    net = DecoderNet(build_classifier("resnet50", 3), (256, 128, 64, 32, 16), 64)
    assert _stage_shapes(net, 64) == [(256, 8, 8), (128, 8, 8), (64, 16, 16), (32, 32, 32), (16, 64, 64)]
    # the first two stages concatenate layer3 (1024) and layer2 (512), the outputs at 1/8 (smp U-Net)
    assert net.tap.feature_skip_channels == [1024, 512]
    assert [stage[0].in_channels for stage in net.decoder.stages] == [2048 + 1024, 256 + 512, 128 + 256, 64 + 64, 32]
    assert net.decoder.head.kernel_size == (3, 3)
    cheap = DecoderNet(build_classifier("resnet50", 3), (256, 128, 64, 32, 16), 64, feature_skips="reduce")
    assert [stage[0].in_channels for stage in cheap.decoder.stages] == [256, 256, 128 + 256, 64 + 64, 32]
    assert _stage_shapes(cheap, 64) == _stage_shapes(net, 64)


def test_decoder_with_fewer_widths_than_levels_uses_the_finest():
    torch.manual_seed(0)
    net = DecoderNet(build_classifier("resnet50", 3), (32, 16), 64)
    assert _stage_shapes(net, 64) == [(32, 32, 32), (16, 64, 64)]  # the 1/4 level (layer1) goes unused
    logits, _, _ = net(torch.rand(2, 3, 64, 64))
    assert logits.shape == (2, 2, 64, 64)


def test_train_mode_keeps_the_classifier_in_eval():
    net = DecoderNet(build_classifier("small-cnn", 3), (8, 4), 32)
    net.train()
    assert net.decoder.training and not net.classifier.training


def test_partial_ce_reads_only_labelled_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 2, 8, 8, requires_grad=True)
    seeds = torch.full((2, 8, 8), IGNORE)
    seeds[0, 1, 1], seeds[1, 5, 5] = 1, 0
    loss = partial_cross_entropy(logits, seeds)
    loss.backward()
    grad = logits.grad.abs().sum(1)
    assert grad[0, 1, 1] > 0 and grad[1, 5, 5] > 0
    assert grad.sum() == grad[0, 1, 1] + grad[1, 5, 5]
    empty = partial_cross_entropy(logits, torch.full((2, 8, 8), IGNORE))
    assert empty.item() == 0.0  # no seed: 0, not NaN


def test_negative_evidence_is_zero_without_negatives_and_pushes_negatives_to_background():
    logits = torch.zeros(2, 2, 4, 4)
    logits[:, 1] = 2.0  # both images look foreground
    logits.requires_grad_(True)
    none = negative_evidence_loss(logits, torch.tensor([False, False]))
    assert none.item() == 0.0
    loss = negative_evidence_loss(logits, torch.tensor([True, False]))
    loss.backward()
    assert loss.item() > 0
    assert (logits.grad[0, 1] > 0).all()  # gradient descent lowers the negative image's foreground logit
    assert (logits.grad[1] == 0).all()  # the positive image is untouched


def _method(name, **cfg):
    """The method with `cfg` set; keys of `SeedConfig` go into its nested `seed`."""
    cls = get_method(name)
    seed_keys = {f.name for f in dataclasses.fields(SeedConfig)}
    seed = dataclasses.replace(cls.Config().seed, **{k: v for k, v in cfg.items() if k in seed_keys})
    method = cls(cls.Config(seed=seed, **{k: v for k, v in cfg.items() if k not in seed_keys}))
    method.dataset = SimpleNamespace(negative_class=0, localization_classes=lambda labels: torch.ones_like(labels))
    method.generator = torch.Generator().manual_seed(0)
    method.t = 1.0
    return method


def test_negev_negative_term_only_on_negative_images_and_seeds_skip_them():
    method = _method("negev")
    labels = torch.tensor([0, 1])  # image 0 is negative (class 0 = normal)
    cams = torch.rand(2, 16, 16)
    seeds = method.seed_maps(cams, None, labels)
    assert (seeds[0] == IGNORE).all() and (seeds[1] != IGNORE).any()
    assert method.size_mask(labels).tolist() == [False, True]
    images = torch.rand(2, 3, 16, 16)
    logits = torch.zeros(2, 2, 16, 16)
    logits[:, 1] = 1.0
    logits.requires_grad_(True)
    terms = method.loss_terms(logits, seeds, images, labels)
    terms["negative"].backward()
    assert (logits.grad[0, 1] > 0).all() and (logits.grad[1] == 0).all()
    positives_only = method.loss_terms(logits.detach(), seeds, images, torch.tensor([1, 1]))
    assert positives_only["negative"].item() == 0.0


@pytest.mark.parametrize("switch,term", [("crf_weight", "crf"), ("size_weight", "size"), ("seed_weight", "seeds")])
def test_ablation_switch_removes_its_term(switch, term):
    images, labels = torch.rand(2, 3, 16, 16), torch.tensor([1, 1])
    logits = torch.randn(2, 2, 16, 16)
    seeds = _method("fcam").seed_maps(torch.rand(2, 16, 16), images, labels)
    assert term in _method("fcam").loss_terms(logits, seeds, images, labels)
    assert term not in _method("fcam", **{switch: 0.0}).loss_terms(logits, seeds, images, labels)
    negev = _method("negev", negative_weight=0.0).loss_terms(logits, seeds, images, labels)
    assert "negative" not in negev


def test_fcam_seeds_come_from_the_frozen_classifier_cam():
    torch.manual_seed(0)
    method = _method("fcam", erode_size=0, n_fg=3, n_bg=3)
    net = DecoderNet(build_classifier("small-cnn", 2), (8, 4), 32)
    method.seeder = get_method("cam")()
    method.seeder.model = net.classifier
    images, labels = torch.rand(2, 3, 32, 32), torch.tensor([1, 0])
    _, features, _ = net(images)
    cams = method.cam_maps(net, features, images, labels)
    # the localization class (1 for both images here, as on a dataset with a negative class);
    # the authors' CAM seeds: no ReLU, min-max at the CAM's resolution, then bilinear upsampling
    cam = net.classifier.cam(features, torch.tensor([1, 1]))
    assert (cam < 0).any()  # else the test could not tell a ReLU
    lo, hi = cam.amin(dim=(1, 2), keepdim=True), cam.amax(dim=(1, 2), keepdim=True)
    cam = torch.nn.functional.interpolate(((cam - lo) / (hi - lo))[:, None], size=(32, 32), mode="bilinear",
                                          align_corners=False)[:, 0]
    torch.testing.assert_close(cams, cam)
    seeds = method.seed_maps(cams, images, labels)
    q = (cams * 255).floor()
    assert (seeds == 1).any() and (seeds == 0).any()
    for b in range(2):  # foreground seeds sit above, background seeds below the image's median CAM value
        median = q[b].median()
        assert (q[b][seeds[b] == 1] > median).float().mean() > 0.5
        assert (q[b][seeds[b] == 0] < median).float().mean() > 0.5


def test_crf_weight_keeps_the_papers_value_at_224_and_grows_with_fewer_pixel_pairs():
    full = _method("fcam", crf_scale=1.0)
    assert full.crf_grid_weight((224, 224)) == pytest.approx(2e-9)
    assert full.crf_grid_weight((112, 112)) == pytest.approx(2e-9 * 16)  # 4x fewer pixels, 16x fewer pairs
    assert _method("fcam").cfg.crf_scale == 1.0  # fcam-wsol README: --crf_scale 1.0
    half = _method("fcam", crf_scale=0.5)  # a 224 input runs the CRF on 112x112
    assert half.crf_grid_weight((224, 224)) == pytest.approx(2e-9 * 16)
    assert _method("fcam", crf_reference_side=None).crf_grid_weight((96, 96)) == 2e-9
