"""PixelCAM's pixel classifier: a K-class linear classifier over encoder pixel features.

features ``[B, C, h, w]`` (float32/float64), weight ``[K, C]``, bias ``[K]``.

* :func:`pixel_classifier_probs` (inference): softmax over the K classes of
  ``weight @ f(p) + bias`` at every pixel, fused, reading the features once. Returns
  ``[B, K, h, w]``, or ``[B, h, w]`` for one class when ``fg_class`` is given. Not
  differentiable (train with :func:`pixel_seed_ce`).
* :func:`pixel_seed_ce` (training): partial cross-entropy at the seed pixels only. ``labels``
  ``[B, h, w]`` (int64, or uint8 as the seeder returns them): a pixel is a seed when its label
  differs from ``ignore_index`` (default 255, the seeder's ignore value), and then it must lie
  in ``[0, K)``. The loss is the mean over the seeds, **0 (not NaN) when there is no seed**.
  Gradients flow to features (zero off the seeds), weight and bias; the dense logits are never
  formed.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from bench._ext import has_op
from bench.dataset.protocol import IGNORE

__all__ = [
    "IGNORE_INDEX",
    "pixel_classifier_probs",
    "pixel_classifier_probs_reference",
    "pixel_seed_ce",
    "pixel_seed_ce_reference",
    "pixel_seed_ce_dense",
]

IGNORE_INDEX = IGNORE  # the protocol's ignore label


def pixel_classifier_probs(features: Tensor, weight: Tensor, bias: Tensor, fg_class: Optional[int] = None) -> Tensor:
    """Per-pixel class probabilities ``[B, K, h, w]`` (or ``[B, h, w]`` of ``fg_class``)."""
    fg = -1 if fg_class is None else int(fg_class)
    if fg_class is not None and fg < 0:
        raise ValueError(f"pixel_classifier_probs: fg_class must be >= 0 or None, got {fg_class}")
    if has_op("pixel_classifier_probs"):
        return torch.ops.wsolbench.pixel_classifier_probs(features, weight, bias, fg)
    return pixel_classifier_probs_reference(features, weight, bias, fg_class)


def pixel_classifier_probs_reference(
    features: Tensor, weight: Tensor, bias: Tensor, fg_class: Optional[int] = None
) -> Tensor:
    logits = torch.einsum("bchw,kc->bkhw", features, weight) + bias[None, :, None, None]
    probs = logits.softmax(dim=1)
    return probs if fg_class is None else probs[:, fg_class]


def _labels(labels: Tensor) -> Tensor:
    return labels.long() if labels.dtype == torch.uint8 else labels


def pixel_seed_ce(
    features: Tensor, weight: Tensor, bias: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """Mean cross-entropy of the linear pixel classifier over the seed pixels (0-dim)."""
    labels = _labels(labels)
    if has_op("pixel_seed_ce"):
        return torch.ops.wsolbench.pixel_seed_ce(features, weight, bias, labels, int(ignore_index))[0]
    return pixel_seed_ce_reference(features, weight, bias, labels, ignore_index)


def pixel_seed_ce_reference(
    features: Tensor, weight: Tensor, bias: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """Gather the seeds' feature vectors, classify them, mean cross-entropy (test oracle)."""
    labels = _labels(labels)
    mask = labels != ignore_index
    feats = features.permute(0, 2, 3, 1)[mask]  # [S, C]
    logits = feats @ weight.t() + bias
    total = F.cross_entropy(logits, labels[mask], reduction="sum")
    return total / mask.sum().clamp_min(1).to(total.dtype)


def pixel_seed_ce_dense(
    features: Tensor, weight: Tensor, bias: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """The composite PyTorch way: 1x1 conv over the dense map, then masked cross-entropy."""
    labels = _labels(labels)
    logits = F.conv2d(features, weight[:, :, None, None], bias)
    total = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    return total / (labels != ignore_index).sum().clamp_min(1).to(total.dtype)


if has_op("pixel_seed_ce"):

    @torch.library.register_fake("wsolbench::pixel_classifier_probs")
    def _fake_probs(features, weight, bias, fg_class):
        B, _, h, w = features.shape
        if fg_class >= 0:
            return features.new_empty((B, h, w))
        return features.new_empty((B, weight.shape[0], h, w))

    @torch.library.register_fake("wsolbench::pixel_seed_ce")
    def _fake_ce(features, weight, bias, labels, ignore_index):
        return features.new_empty(()), features.new_empty((), dtype=torch.int64)

    @torch.library.register_fake("wsolbench::pixel_seed_ce_backward")
    def _fake_ce_backward(grad_loss, features, weight, bias, labels, n_seeds, ignore_index):
        return torch.empty_like(features), torch.empty_like(weight), torch.empty_like(bias)

    def _setup_context(ctx, inputs, output):
        features, weight, bias, labels, ignore_index = inputs
        ctx.save_for_backward(features, weight, bias, labels, output[1])
        ctx.ignore_index = ignore_index

    def _backward(ctx, grad_loss, _grad_count):
        features, weight, bias, labels, n_seeds = ctx.saved_tensors
        if not any(ctx.needs_input_grad[:3]):
            return None, None, None, None, None
        gf, gw, gb = torch.ops.wsolbench.pixel_seed_ce_backward(
            grad_loss, features, weight, bias, labels, n_seeds, ctx.ignore_index
        )
        need = ctx.needs_input_grad
        return (gf if need[0] else None, gw if need[1] else None, gb if need[2] else None, None, None)

    torch.library.register_autograd("wsolbench::pixel_seed_ce", _backward, setup_context=_setup_context)
