"""Our CAM family against torchcam 0.5.0 (frgfm/torch-cam) on one of our backbones with peaked
class scores, maps compared after per-image min-max normalisation at the feature resolution.

torchcam is installed with `pip install --no-deps torchcam==0.5.0` (scripts/setup.sh): its
declared dependencies would pull torchvision. Grad-CAM++ and Smooth Grad-CAM++ are compared with
independent implementations of the papers' formulas instead: in torchcam 0.5.0 Grad-CAM++'s
alpha division acts on a copy (its weights are sum g^2 ReLU(g)), and its Smooth Grad-CAM++ keeps
the last noisy sample's gradient and activations (docs/fidelity.md, gradcampp / smoothgradcampp).
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bench.models import build_classifier
from bench.registry import METHODS, REPO_ROOT, load_plugin_file

methods_tc = pytest.importorskip("torchcam.methods", reason="torchcam (pip install --no-deps torchcam==0.5.0) is not installed")

TOL = 1e-4


def ours(name, model, images, labels, **cfg):
    load_plugin_file(REPO_ROOT / "methods" / f"{name}.py")
    cls = METHODS[name]
    m = cls(cls.Config(**cfg))
    m.fit(None, None, SimpleNamespace(classifier=lambda checkpoint="last": model))
    return m.localize(images, labels).cams


def peaked_model(seed=0):
    """small-cnn with random BN statistics and a large random head: logits spread over tens of
    units (a random head gives near-uniform scores, which hide weighting bugs)."""
    torch.manual_seed(seed)
    model = build_classifier("small-cnn", num_classes=4).double()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        model.classifier.weight.normal_(0, 30)
    return model.eval()


class NormalisedInput(nn.Module):
    """The view of our model that torchvision models offer: it takes the normalised tensor, so
    torchcam's Score-CAM family masks the normalised image (as with torchvision models)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, z):
        return self.net(z * self.net.std + self.net.mean).logits


def batch(seed=1, b=3, size=32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, size, size, generator=g, dtype=torch.float64), torch.tensor([0, 2, 3][:b])


def norm(maps):
    flat = maps.flatten(1)
    lo, hi = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return ((flat - lo) / (hi - lo)).view_as(maps)


def theirs(extractor_name, model, images, labels, **kw):
    wrapped = NormalisedInput(model).eval()
    z = (images - model.mean) / model.std
    cls = getattr(methods_tc, extractor_name)
    if extractor_name == "CAM":
        kw["fc_layer"] = model.classifier
    with cls(wrapped, target_layer=model.cam_layer, **kw) as ex:
        if extractor_name in ("GradCAM", "XGradCAM", "LayerCAM"):
            scores = wrapped(z.clone().requires_grad_(True))
            maps = ex(class_idx=labels.tolist(), scores=scores, normalized=False)
        else:
            with torch.no_grad():
                wrapped(z)
            maps = ex(class_idx=labels.tolist(), normalized=False)
    return maps[0].detach()


def test_the_model_is_peaked():
    model = peaked_model()
    images, _ = batch()
    with torch.no_grad():
        probs = model(images).logits.softmax(1)
    assert (probs.max(1).values > 0.99).all()


@pytest.mark.parametrize("ours_name, theirs_name, kw", [
    ("cam", "CAM", {}), ("gradcam", "GradCAM", {}), ("xgradcam", "XGradCAM", {}), ("layercam", "LayerCAM", {}),
    ("scorecam", "ScoreCAM", {}), ("iscam", "ISCAM", {}),
])
def test_maps_equal_torchcam(ours_name, theirs_name, kw):
    model = peaked_model()
    images, labels = batch()
    a = ours(ours_name, model, images, labels)
    b = theirs(theirs_name, model, images, labels, **kw)
    assert a.shape == b.shape
    torch.testing.assert_close(norm(a), norm(b), rtol=0, atol=TOL)


def test_sscam_equals_torchcam_with_the_same_noise():
    # both draw N(0, std^2) mask noise from the global CPU generator, one draw of every mask per
    # sample, masks in image order: the same seed gives the same noise
    model = peaked_model()
    images, labels = batch(b=2)
    torch.manual_seed(123)
    a = ours("sscam", model, images, labels, n_samples=3)
    torch.manual_seed(123)
    b = theirs("SSCAM", model, images, labels, num_samples=3)
    torch.testing.assert_close(norm(a), norm(b), rtol=0, atol=TOL)


def test_scorecam_probability_weighting_would_fail_the_comparison():
    """The comparison discriminates: Score-CAM weighted by class probabilities (then a channel
    softmax, our former convention) is far from torchcam's on this model."""
    model = peaked_model()
    images, labels = batch()
    ref = norm(theirs("ScoreCAM", model, images, labels))
    with torch.no_grad():
        acts = model.features(images)
        flat = acts.flatten(2) - acts.flatten(2).amin(-1, keepdim=True)
        low = (flat / (flat.amax(-1, keepdim=True) + 1e-8)).view_as(acts)
        up = torch.nn.functional.interpolate(low, size=images.shape[-2:], mode="bilinear", align_corners=False)
        probs = torch.stack([model(model.mean + (images - model.mean) * up[:, k:k + 1]).logits.softmax(1)
                             .gather(1, labels.view(-1, 1))[:, 0] for k in range(acts.shape[1])], 1)
        old = torch.relu(torch.einsum("bk,bkhw->bhw", probs.softmax(1), acts))
    assert (norm(old) - ref).abs().max() > 10 * TOL


def grads_full_model(model, images, labels):
    """Activations and d logit_c / d A through the whole network, per image (no shared code)."""
    store = {}
    handle = model.cam_layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        out = []
        for x, c in zip(images, labels):
            logits = model(x[None]).logits
            (g,) = torch.autograd.grad(logits[0, int(c)], store["a"])
            out.append((store["a"][0].detach(), g[0]))
    finally:
        handle.remove()
    return out


def gradcampp_paper(a, g1, g2, g3):
    """Chattopadhyay et al., eq. 19 with the exponential score: alpha = g^2 / (2 g^2 + sum_ab A_ab g^3),
    0 where the denominator is 0; w = sum_ij alpha ReLU(g); map = ReLU(sum_k w_k A_k) (written
    independently of bench.cams, in the form of pytorch-grad-cam's GradCAMPlusPlus without its eps)."""
    sum_a = a.sum(dim=(1, 2), keepdim=True)
    denom = 2 * g2 + sum_a * g3
    alpha = torch.zeros_like(g2)
    nz = denom != 0
    alpha[nz] = g2[nz] / denom[nz]
    w = (alpha * torch.relu(g1)).sum(dim=(1, 2))
    return torch.relu((w[:, None, None] * a).sum(0))


def test_gradcampp_equals_the_paper_formula():
    model = peaked_model()
    images, labels = batch()
    a = ours("gradcampp", model, images, labels)
    ref = torch.stack([gradcampp_paper(act, g, g**2, g**3) for act, g in grads_full_model(model, images, labels)])
    torch.testing.assert_close(norm(a), norm(ref), rtol=0, atol=TOL)


def test_smoothgradcampp_equals_the_paper_formula():
    """Omeiza et al.: the Grad-CAM++ weights with the 1st/2nd/3rd derivatives each averaged over
    noisy copies (noise std = noise_level x the image's value range, drawn like ours:
    one randn of the whole batch per sample), on the clean image's activations."""
    model = peaked_model()
    images, labels = batch()
    n, level = 3, 0.15
    torch.manual_seed(7)
    a = ours("smoothgradcampp", model, images, labels, n_samples=n, noise_level=level)
    torch.manual_seed(7)
    flat = images.flatten(1)
    sigma = (level * (flat.max(1).values - flat.min(1).values)).view(-1, 1, 1, 1)
    noisy = [images + sigma * torch.randn_like(images) for _ in range(n)]
    clean = grads_full_model(model, images, labels)
    per_sample = [grads_full_model(model, x, labels) for x in noisy]
    ref = []
    for i, (act, _) in enumerate(clean):
        gs = [s[i][1] for s in per_sample]
        g1, g2, g3 = (sum(g**p for g in gs) / n for p in (1, 2, 3))
        ref.append(gradcampp_paper(act, g1, g2, g3))
    torch.testing.assert_close(norm(a), norm(torch.stack(ref)), rtol=0, atol=TOL)
