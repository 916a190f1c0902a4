"""Identities of the post-hoc CAM family on a small random classifier (float64)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bench.models import WSOLNet, build_classifier
from bench.registry import REPO_ROOT, METHODS, load_plugin_file

POSTHOC = ("gradcam", "gradcampp", "smoothgradcampp", "xgradcam", "layercam", "scorecam", "sscam", "iscam")


def method_cls(name):
    load_plugin_file(REPO_ROOT / "methods" / f"{name}.py")
    return METHODS[name]


def method(name, cfg=None):
    cls = method_cls(name)
    return cls(cfg if cfg is not None else cls.Config())


def small_model(seed=0, positive_weights=False):
    torch.manual_seed(seed)
    model = build_classifier("small-cnn", num_classes=3).double()
    with torch.no_grad():  # random BN statistics so the eval-mode network is not trivial
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        if positive_weights:
            model.classifier.weight.abs_()
    return model.eval()


def inputs(b=2, size=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g, dtype=torch.float64), torch.tensor([0, 2, 1, 0][:b])


def fitted(name, model, cfg=None):
    m = method(name, cfg)
    m.fit(None, None, SimpleNamespace(classifier=lambda checkpoint="last": model))
    return m


def fc_cam(model, images, labels):
    with torch.no_grad():
        out = model(images)
        return model.cam(out.features, labels)


def assert_positive_multiple(a, b):
    """a = c_i * b per image, c_i > 0."""
    for x, y in zip(a, b):
        assert y.abs().max() > 0
        c = (x * y).sum() / (y * y).sum()
        assert c > 0
        torch.testing.assert_close(x, c * y, rtol=1e-9, atol=1e-12)


def test_gradcam_is_relu_cam_over_hw():
    model = small_model()
    images, labels = inputs()
    loc = fitted("gradcam", model).localize(images, labels)
    cam = fc_cam(model, images, labels)
    h, w = cam.shape[-2:]
    torch.testing.assert_close(loc.cams, torch.relu(cam) / (h * w), rtol=1e-10, atol=1e-14)
    assert_positive_multiple(loc.cams, torch.relu(cam))
    torch.testing.assert_close(loc.logits, model(images).logits.detach())


def test_xgradcam_equals_gradcam_on_gap_linear_head():
    model = small_model()
    images, labels = inputs()
    x = fitted("xgradcam", model).localize(images, labels).cams
    g = fitted("gradcam", model).localize(images, labels).cams
    assert_positive_multiple(x, g)


def test_layercam_with_positive_weights_is_the_unpooled_gradcam_map():
    model = small_model(positive_weights=True)
    images, labels = inputs()
    layer = fitted("layercam", model).localize(images, labels).cams
    cam = fc_cam(model, images, labels)
    assert (cam >= 0).all()
    h, w = cam.shape[-2:]
    torch.testing.assert_close(layer, cam / (h * w), rtol=1e-10, atol=1e-14)
    assert_positive_multiple(layer, fitted("gradcam", model).localize(images, labels).cams)


def test_gradcampp_matches_its_closed_form_on_gap_linear_head():
    # d y/dA_k = g_k = w_ck/(hw) at every pixel, so alpha_k = 1 / (2 + g_k sum_ij A_k) and
    # w_k = hw ReLU(g_k) alpha_k; cam = ReLU(sum_k w_k A_k).
    model = small_model()
    images, labels = inputs()
    pp = fitted("gradcampp", model).localize(images, labels).cams
    with torch.no_grad():
        feats = model.features(images)
        h, w = feats.shape[-2:]
        g = model.class_weights(labels) / (h * w)
        alpha = 1 / (2 + g * feats.sum(dim=(2, 3)))
        weights = h * w * torch.relu(g) * alpha
        expected = torch.relu(torch.einsum("bk,bkhw->bhw", weights, feats))
    torch.testing.assert_close(pp, expected, rtol=1e-9, atol=1e-14)


class OneChannel(nn.Module):
    """A backbone with one feature channel (ReLU of a 1x1 conv on a pooled image)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.AvgPool2d(4), nn.Conv2d(3, 1, 1), nn.ReLU())
        self.out_channels = 1

    @property
    def cam_layer(self):
        return self.conv

    def forward(self, x):
        return self.conv(x)


def test_scorecam_on_one_channel_returns_the_channel():
    torch.manual_seed(0)
    model = WSOLNet(OneChannel(), num_classes=3).double().eval()
    with torch.no_grad():  # a channel that is positive and not constant on every image
        model.backbone.conv[1].weight.uniform_(-1, 1)
        model.backbone.conv[1].weight[0, 0] = 2.0
        model.backbone.conv[1].bias.fill_(0.1)
    images, labels = inputs(b=3)
    loc = fitted("scorecam", model).localize(images, labels)
    with torch.no_grad():
        channel = model.features(images)[:, 0]
    assert (channel.amax(dim=(1, 2)) > channel.amin(dim=(1, 2))).all()
    torch.testing.assert_close(loc.cams, channel)


def peaked_model(seed=0):
    """small_model with a large random head, so that the logits spread over tens of units: with
    near-uniform logits, probability and logit weighting give nearly the same map."""
    model = small_model(seed)
    with torch.no_grad():
        model.classifier.weight.normal_(0, 30, generator=torch.Generator().manual_seed(seed))
    return model


def hand_scorecam(model, images, labels, perturbs=(None,)):
    """Score-CAM written out channel by channel (the paper's Algorithm 1 with torchcam's mask
    convention): w = softmax_k mean_s [logit_c(masked by perturb_s(M_k)) - logit_c(x)]."""
    import torch.nn.functional as F

    with torch.no_grad():
        acts = model.features(images)
        logits = model(images).logits
        cams = []
        for i in range(images.shape[0]):
            c = int(labels[i])
            scores = []
            for a in acts[i]:
                low = (a - a.min()) / ((a - a.min()).max() + 1e-8)
                m = F.interpolate(low[None, None], size=images.shape[-2:], mode="bilinear", align_corners=False)[0]
                total = 0.0
                for p in perturbs:
                    mk = m if p is None else p(m)
                    masked = model.mean[0] + (images[i] - model.mean[0]) * mk
                    total = total + model(masked[None]).logits[0, c] - logits[i, c]
                scores.append(total / len(perturbs))
            w = torch.stack(scores).softmax(0)
            cams.append(torch.relu(torch.einsum("k,khw->hw", w, acts[i])))
    return torch.stack(cams)


def test_scorecam_weights_are_the_channel_softmax_of_masked_logits():
    model = peaked_model()
    images, labels = inputs(b=2, size=16)
    with torch.no_grad():
        assert (model(images).logits.std(1) > 5).all()  # peaked: the test discriminates
    loc = fitted("scorecam", model).localize(images, labels)
    torch.testing.assert_close(loc.cams, hand_scorecam(model, images, labels), rtol=1e-7, atol=1e-10)


def test_iscam_integrates_the_masked_scores_over_scaled_masks():
    model = peaked_model()
    images, labels = inputs(b=2, size=16)
    n = 4
    coeffs = [sum(j / n for j in range(1, i + 2)) for i in range(n)]  # 0.25, 0.75, 1.5, 2.5
    perturbs = [lambda m, c=c: c * m for c in coeffs]
    loc = fitted("iscam", model, method_cls("iscam").Config(n_samples=n)).localize(images, labels)
    torch.testing.assert_close(loc.cams, hand_scorecam(model, images, labels, perturbs), rtol=1e-7, atol=1e-10)
    one = fitted("iscam", model, method_cls("iscam").Config(n_samples=1)).localize(images, labels).cams
    torch.testing.assert_close(one, fitted("scorecam", model).localize(images, labels).cams)


def test_sscam_without_noise_is_scorecam_and_noise_changes_the_weights():
    model = peaked_model()
    images, labels = inputs(b=2, size=16)
    plain = fitted("scorecam", model).localize(images, labels).cams
    quiet = fitted("sscam", model, method_cls("sscam").Config(n_samples=3, noise_std=0.0)).localize(images, labels)
    torch.testing.assert_close(quiet.cams, plain)
    torch.manual_seed(0)
    noisy = fitted("sscam", model, method_cls("sscam").Config(n_samples=2)).localize(images, labels).cams
    assert not torch.allclose(noisy, plain)
    assert method_cls("sscam").Config().n_samples == 35 and method_cls("sscam").Config().noise_std == 2.0
    assert method_cls("iscam").Config().n_samples == 10


def test_scorecam_mask_batches_do_not_change_the_result():
    model = small_model()
    images, labels = inputs(b=2, size=8)
    a = fitted("scorecam", model, method_cls("scorecam").Config(mask_batch=7)).localize(images, labels).cams
    b = fitted("scorecam", model, method_cls("scorecam").Config(mask_batch=1000)).localize(images, labels).cams
    torch.testing.assert_close(a, b)


def no_hooks(model):
    for m in model.modules():
        assert not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks, m


@pytest.mark.parametrize("name", POSTHOC)
def test_maps_are_nonnegative_finite_and_leave_no_hooks(name):
    model = small_model()
    images, labels = inputs(b=2, size=16)
    cfg = method_cls(name).Config(n_samples=2) if name in ("smoothgradcampp", "sscam", "iscam") else None
    m = fitted(name, model, cfg)
    loc = m.localize(images, labels)
    assert loc.cams.shape == (2, 4, 4) and loc.logits.shape == (2, 3)
    assert torch.isfinite(loc.cams).all() and (loc.cams >= 0).all()
    assert not loc.cams.requires_grad
    no_hooks(model)
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(RuntimeError):
        m.localize(images, torch.tensor([0, 7]))  # a label out of range
    no_hooks(model)

    def failing_head(features):  # fails while the cam_layer hook is registered
        raise RuntimeError("head failed")

    model.head = failing_head
    with pytest.raises(RuntimeError, match="head failed"):
        m.localize(images, labels)
    no_hooks(model)


def test_smoothgradcampp_without_noise_is_gradcampp():
    model = small_model()
    images, labels = inputs()
    cfg = method_cls("smoothgradcampp").Config(n_samples=3, noise_level=0.0)
    smooth = fitted("smoothgradcampp", model, cfg).localize(images, labels).cams
    plain = fitted("gradcampp", model).localize(images, labels).cams
    torch.testing.assert_close(smooth, plain, rtol=1e-9, atol=1e-14)


def test_gradients_record_only_the_head_and_keep_the_grad_mode():
    """activations_and_grads records autograd from the CAM layer on (the trunk cannot change a
    gradient with respect to its output), and leaves the caller's grad mode as it found it."""
    from bench.cams import activations_and_grads

    model = small_model()
    images, labels = inputs(b=2, size=16)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        for mode in (True, False):
            with torch.set_grad_enabled(mode):
                acts, grads, _ = activations_and_grads(model, images, labels)
                assert torch.is_grad_enabled() is mode
    # the head (spatial mean, linear, gather) saves a handful of tensors; the trunk's convolutions,
    # batch norms and ReLUs would save dozens
    assert 0 < len(saved) <= 8, saved
    # and the gradient is the same as with the whole network recorded
    with torch.enable_grad():
        full_acts = {}
        handle = model.cam_layer.register_forward_hook(lambda m, i, o: full_acts.setdefault("a", o))
        try:
            logits = model(images).logits
        finally:
            handle.remove()
        (full,) = torch.autograd.grad(logits.gather(1, labels.view(-1, 1)).sum(), full_acts["a"])
    torch.testing.assert_close(grads, full, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ("cam", "gradcam", "gradcampp", "scorecam"))
def test_bfloat16_trunk_keeps_maps_float32_and_close(name):
    """`autocast_trunk` (what PostHocCAM.localize uses on CUDA), exercised on CPU: the layers below
    the CAM layer run in bfloat16, everything from the CAM layer on in float32; the maps stay
    close to the float32 ones and no hook or autocast state is left behind."""
    from bench.cams import autocast_trunk

    model = small_model().float()
    images, labels = inputs(b=4, size=32)
    images = images.float()
    m = fitted(name, model)
    with torch.set_grad_enabled(m.requires_grad):
        exact, exact_logits = m.cams(model, images, labels)
        with autocast_trunk(model, "cpu", torch.bfloat16):
            fast, fast_logits = m.cams(model, images, labels)
    assert not torch.is_autocast_enabled("cpu")
    no_hooks(model)
    assert fast.dtype == fast_logits.dtype == torch.float32
    assert not torch.equal(fast, exact), "the trunk did not run in bfloat16"
    for a, b in zip(fast, exact):
        r = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]
        assert r > 0.99, (name, float(r))
    torch.testing.assert_close(fast_logits, exact_logits, rtol=0.05, atol=0.05)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ("gradcam", "smoothgradcampp", "scorecam"))
def test_cuda_default_bfloat16_trunk_matches_float32(name):
    """On CUDA, PostHocCAM.localize runs the trunk in bfloat16 (channels-last weights) by default;
    its maps match the float32 ones closely and come out float32."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_classifier("resnet50", num_classes=5).to(device).eval()
    images = torch.rand(4, 3, 128, 128, device=device)
    labels = torch.tensor([0, 1, 2, 3], device=device)
    cfg = None
    if name == "smoothgradcampp":
        cfg = method_cls(name).Config(n_samples=4)
    if name == "scorecam":
        cfg = method_cls(name).Config(mask_batch=256)
    fast = fitted(name, model, cfg)
    exact = fitted(name, model, cfg)
    exact.cuda_trunk_dtype = None
    torch.manual_seed(1)
    a = fast.localize(images, labels)
    torch.manual_seed(1)
    b = exact.localize(images, labels)
    assert a.cams.dtype == a.logits.dtype == torch.float32
    no_hooks(model)
    for x, y in zip(a.cams, b.cams):
        r = torch.corrcoef(torch.stack([x.flatten(), y.flatten()]))[0, 1]
        assert r > 0.98, (name, float(r))
