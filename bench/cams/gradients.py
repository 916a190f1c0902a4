"""Activations of the CAM layer and gradients of the class score with respect to them.

Backbone independent: the layer is `model.cam_layer`, never a name. One forward hook reads
its output (removed on exit, also on error); the gradients come from `torch.autograd.grad`
on that tensor, so no backward hook is ever registered and parameters' `.grad` stay untouched.
Autograd records only from the CAM layer on: the layers below it cannot change a gradient
with respect to its output. Everything stays batched on the model's device.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


@contextlib.contextmanager
def capture_activations(model, grad_from_here: bool = False):
    """Yield a dict whose "activations" entry is the output of `model.cam_layer` in the
    forward passes run inside the block (the last one wins). `grad_from_here`: the block runs
    without autograd and the hook turns it on at the CAM layer, whose output becomes a leaf,
    so only the head is recorded (the caller restores the grad mode: `torch.no_grad()`)."""
    store: dict[str, torch.Tensor] = {}

    def hook(module, inputs, output):
        if not isinstance(output, torch.Tensor):
            raise TypeError(f"cam_layer {type(module).__name__} returned {type(output).__name__}, expected a tensor")
        if grad_from_here:
            torch.set_grad_enabled(True)
        if torch.is_grad_enabled() and not output.requires_grad:
            # frozen layers (or no autograd below): make the output a leaf of the graph so the gradients exist
            output = output.detach().requires_grad_(True)
            store["activations"] = output
            return output
        store["activations"] = output
        return None

    handle = model.cam_layer.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def class_scores(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The score (pre-softmax logit) of each image's class: [B]."""
    return logits.gather(1, labels.view(-1, 1).long()).squeeze(1)


def activations_and_grads(model, images: torch.Tensor, labels: torch.Tensor):
    """(activations [B,K,h,w], d score_label / d activations [B,K,h,w], logits [B,C]).

    The scores of the batch are summed before differentiating: with the model in eval mode
    every image's score depends on its own activations only, so each image gets its own
    gradient in one backward pass."""
    with torch.no_grad():  # exits to the caller's grad mode, whatever the hook set
        with capture_activations(model, grad_from_here=True) as store:
            logits = model(images).logits
        if "activations" not in store:
            raise RuntimeError("model.cam_layer was not called in the forward pass")
        acts = store["activations"]
        (grads,) = torch.autograd.grad(class_scores(logits, labels).sum(), acts)
    return acts.detach(), grads.detach(), logits.detach()


@contextlib.contextmanager
def autocast_trunk(model, device_type: str, dtype: torch.dtype | None):
    """Inside the block, every forward pass of `model` runs the layers up to `model.cam_layer`
    under autocast to `dtype` (bfloat16: tensor cores on a GPU), and the CAM layer's output is
    cast back to float32 with autocast off from there on: activations, gradients, head, logits
    and maps stay float32. `dtype=None`: nothing changes. Both hooks are removed on exit."""
    if dtype is None:
        yield
        return

    def trunk(module, args):  # each forward (a method may run several in one block) starts in `dtype`
        torch.set_autocast_enabled(device_type, True)

    def head(module, inputs, output):
        torch.set_autocast_enabled(device_type, False)
        return output.float()

    with torch.autocast(device_type, dtype=dtype):  # restores the caller's autocast state on exit
        handles = [model.register_forward_pre_hook(trunk),
                   model.cam_layer.register_forward_hook(head, prepend=True)]  # before capture_activations' hook
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()


def weighted_sum(weights: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
    """ReLU(sum_k weights_k A_k): weights [B,K] (per channel) or [B,K,h,w] (per pixel)."""
    if weights.dim() == 2:
        cam = torch.einsum("bk,bkhw->bhw", weights, acts)
    else:
        cam = (weights * acts).sum(1)
    return torch.relu(cam)


def gradcampp_weights(acts, g1, g2, g3):
    """Grad-CAM++ channel weights from the first three derivatives of exp(score) (divided by
    exp(score), a positive per-image factor that cancels in alpha and only scales the map):
    alpha = g^2 / (2 g^2 + sum_ij A g^3), w_k = sum_ij alpha ReLU(g)."""
    denom = 2 * g2 + (acts.sum(dim=(2, 3), keepdim=True) * g3)
    alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
    return (alpha * torch.relu(g1)).sum(dim=(2, 3))


def score_masks(acts: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Score-CAM's masks before upsampling: each channel of [B,K,h,w] min-max normalised at the
    feature resolution, (A - min) / (max(A - min) + eps), as torchcam's ScoreCAM does (a
    constant channel gives an all-zero mask, which still gets a score)."""
    flat = acts.flatten(2)
    shifted = flat - flat.amin(-1, keepdim=True)
    return (shifted / (shifted.amax(-1, keepdim=True) + eps)).view_as(acts)


def score_weights(model, images: torch.Tensor, labels: torch.Tensor, acts: torch.Tensor, logits: torch.Tensor,
                  mask_batch: int = 32, n_samples: int = 1, perturb=None) -> torch.Tensor:
    """Channel weights of the Score-CAM family, [B,K]: the softmax over channels of
    mean_s [y_c(x * M_k^s) - y_c(x)], y_c the class logit, M_k = bilinear upsampling of
    `score_masks(acts)` to the image, M_k^s = perturb(M_k, s) (identity when None).

    The mask multiplies the NORMALISED image, as torchcam and the Score-CAM code do with
    models that take normalised tensors (hidden pixels become the mean colour): ours take
    [0,1] images, so the masked image is mean + (x - mean) * M. Masked images go through
    the model `mask_batch` at a time; the loop runs sample-major, then mask chunks, which
    draws SS-CAM's noise in torchcam's order."""
    b, k, h, w = acts.shape
    masks = score_masks(acts).reshape(b * k, 1, h, w)
    owner = torch.arange(b, device=acts.device).repeat_interleave(k)
    baseline = class_scores(logits, labels).to(acts.dtype)
    fill = model.mean.to(images.dtype)
    total = torch.zeros(b * k, device=acts.device, dtype=acts.dtype)
    step = max(1, mask_batch)
    for s in range(n_samples):
        for start in range(0, b * k, step):
            idx = slice(start, min(start + step, b * k))
            m = F.interpolate(masks[idx], size=images.shape[-2:], mode="bilinear", align_corners=False)
            if perturb is not None:
                m = perturb(m, s)
            who = owner[idx]
            out = model(fill + (images[who] - fill) * m.to(images.dtype)).logits
            total[idx] += class_scores(out, labels[who]).to(acts.dtype) - baseline[who]
    return (total / n_samples).view(b, k).softmax(1)


def score_cam(model, images, labels, mask_batch: int = 32, n_samples: int = 1, perturb=None):
    """(ReLU(sum_k w_k A_k) with the raw activations and `score_weights`, logits): no autograd."""
    with torch.no_grad():
        with capture_activations(model) as store:
            logits = model(images).logits
        if "activations" not in store:
            raise RuntimeError("model.cam_layer was not called in the forward pass")
        acts = store["activations"]
        weights = score_weights(model, images, labels, acts, logits, mask_batch, n_samples, perturb)
        return weighted_sum(weights.to(acts.dtype), acts), logits
