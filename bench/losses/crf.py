"""Dense CRF losses (Tang et al., "On Regularized Losses for Weakly-supervised CNN
Segmentation", ECCV 2018) on the permutohedral lattice op `bench.ops.lattice_filter`.

    loss = -weight / B * sum_b sum_k S_bk^T W_b S_bk

with W_b the Gaussian affinity over (x/sigma_xy, y/sigma_xy, r/sigma_rgb, g/sigma_rgb, b/sigma_rgb)
of image b, applied by the lattice (Kraehenbuehl's: not normalised, see the op's docstring), and
S_bk the probability map of class k. The constant term of the relaxation (sum_k 1^T W S_k) is
dropped, as in the papers.

Normalisation: docs/protocol.md ("Dense CRF loss") writes "/ N". In the seeds' reference implementation N is the
*batch size* (the number of images), not the number of pixels, so the loss is a per-image sum
over pixels averaged over the batch; we follow that (hence the tiny default weight 2e-9).

Gradient: the seeds back-propagate -2 W S, which assumes W symmetric. The lattice is only nearly
symmetric; our gradient is the exact -(W + W^T) S * weight / B. Both the energy and its gradient
come from one call of the op with `symmetric=True` in the forward (S^T W S = S^T (W + W^T) S / 2),
kept for the backward: one lattice per forward and backward, not one each.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.ops.lattice_filter import lattice_filter_op

__all__ = ["crf_loss", "crf_features", "lattice_energy", "multiframe_color_crf_loss", "pad_shots"]


class _LatticeEnergy(torch.autograd.Function):
    """sum_b sum_k v_bk . (W_b v_bk) = 1/2 sum v . ((W + W^T) v), and its gradient (W + W^T) v,
    from one symmetric filtering in the forward (no lattice work in the backward)."""

    @staticmethod
    def forward(ctx, features, values, valid):
        with torch.no_grad():
            sym = lattice_filter_op(features, values, valid, False, False, True)
        ctx.save_for_backward(sym)
        return 0.5 * (values * sym).sum((1, 2))  # per image [B]

    @staticmethod
    @torch.autograd.function.once_differentiable  # sym is saved as a constant: no second derivative
    def backward(ctx, grad):
        (sym,) = ctx.saved_tensors
        return None, grad.view(-1, 1, 1) * sym, None


def lattice_energy(features: Tensor, values: Tensor, valid: Optional[Tensor] = None,
                   per_image: bool = False) -> Tensor:
    """sum over images and channels of v . (W v) for features [B, d, N], values [B, K, N]
    (`per_image`: each image's sum, [B]): differentiable wrt `values` (exactly: (W + W^T) v),
    features constant."""
    energy = _LatticeEnergy.apply(features, values.contiguous(), valid)
    return energy if per_image else energy.sum()


def crf_features(images: Tensor, sigma_rgb: float, sigma_xy: float, dtype: torch.dtype) -> Tensor:
    """[B, 3, H, W] 0-255 images -> [B, 5, H*W] features (x, y, r, g, b scaled)."""
    B, _, H, W = images.shape
    ys = torch.arange(H, device=images.device, dtype=dtype).view(1, 1, H, 1).expand(B, 1, H, W)
    xs = torch.arange(W, device=images.device, dtype=dtype).view(1, 1, 1, W).expand(B, 1, H, W)
    feat = torch.cat([xs / sigma_xy, ys / sigma_xy, images.to(dtype) / sigma_rgb], dim=1)
    return feat.reshape(B, 5, H * W)


def crf_loss(
    images: Tensor,
    probs: Tensor,
    sigma_rgb: float = 15.0,
    sigma_xy: float = 100.0,
    scale_factor: Optional[float] = None,
    roi: Optional[Tensor] = None,
    weight: float = 2e-9,
) -> Tensor:
    """Dense CRF loss of probability maps `probs` [B, K, H, W] given images [B, 3, H, W] (0-255).

    `scale_factor` (e.g. 0.5) down-scales the images (nearest), `probs` (bilinear) and the ROI
    (nearest) and multiplies sigma_xy alike. `roi` [B, H, W] (0/1) masks S on both sides of
    S^T W S. Differentiable wrt `probs`; the images are constants.
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"crf_loss: images must be [B, 3, H, W], got {tuple(images.shape)}")
    if probs.dim() != 4 or probs.shape[0] != images.shape[0] or probs.shape[2:] != images.shape[2:]:
        raise ValueError(f"crf_loss: probs must be [B, K, H, W] matching images {tuple(images.shape)}, "
                         f"got {tuple(probs.shape)}")
    if roi is not None and (roi.dim() != 3 or roi.shape[0] != images.shape[0] or roi.shape[1:] != images.shape[2:]):
        raise ValueError(f"crf_loss: roi must be [B, H, W], got {tuple(roi.shape)}")
    if scale_factor is not None and scale_factor != 1.0:
        images = F.interpolate(images.to(probs.dtype), scale_factor=scale_factor, mode="nearest")
        probs = F.interpolate(probs, scale_factor=scale_factor, mode="bilinear", align_corners=False)
        if roi is not None:
            roi = F.interpolate(roi[:, None].to(probs.dtype), scale_factor=scale_factor, mode="nearest")[:, 0]
        sigma_xy = sigma_xy * scale_factor
    B, K, H, W = probs.shape
    feat = crf_features(images.detach(), sigma_rgb, sigma_xy, probs.dtype)
    seg = probs.reshape(B, K, H * W)
    if roi is not None:
        seg = seg * roi.reshape(B, 1, H * W).to(probs.dtype)
    return -weight * lattice_energy(feat, seg) / B


def pad_shots(frames: Tensor, lengths: Union[Tensor, Sequence[int]]) -> tuple[Tensor, Tensor]:
    """Flat frames [F, ...] of consecutive shots with `lengths` [S] (sum F) -> padded
    [S, n_max, ...] and a bool mask [S, n_max] of real frames. No Python loop over shots."""
    lengths = torch.as_tensor(lengths, device=frames.device, dtype=torch.long)
    S = lengths.numel()
    n_max = int(lengths.max()) if S > 0 else 0
    shot = torch.repeat_interleave(torch.arange(S, device=frames.device), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    pos = torch.arange(frames.shape[0], device=frames.device) - starts[shot]
    padded = frames.new_zeros((S, n_max) + tuple(frames.shape[1:]))
    padded[shot, pos] = frames
    mask = torch.zeros(S, n_max, dtype=torch.bool, device=frames.device)
    mask[shot, pos] = True
    return padded, mask


def multiframe_color_crf_loss(
    frames: Tensor,
    probs: Tensor,
    lengths: Optional[Union[Tensor, Sequence[int]]] = None,
    sigma_rgb: float = 15.0,
    weight: float = 2e-9,
    roi: Optional[Tensor] = None,
    reduction: str = "mean",
) -> Tensor:
    """Colour-only CRF across the frames of each shot (CoLo-CAM): one lattice per shot over all
    pixels of its frames, features (r, g, b) / sigma_rgb, no (x, y).

    Either frames [S, n, 3, H, W], probs [S, n, K, H, W] (optionally with `lengths` [S], the
    number of real frames of each shot; the rest is padding), or flat frames [F, 3, H, W],
    probs [F, K, H, W] with `lengths` (frames per shot, consecutive, summing to F). Shots of
    different lengths are batched with a validity mask: no Python loop over shots.
    `roi` (optional) is [S, n, H, W] or [F, H, W] like the frames.
    Returns -weight / S * sum_s sum_k S_sk^T W_s S_sk (`reduction="none"`: each shot's
    -weight * sum_k S_sk^T W_s S_sk, [S], for per-shot normalisation as in CoLo-CAM).
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"multiframe_color_crf_loss: reduction must be 'mean' or 'none', got {reduction!r}")
    if frames.dim() == 4:
        if lengths is None:
            raise ValueError("multiframe_color_crf_loss: flat frames [F, 3, H, W] need `lengths`")
        if probs.dim() != 4 or probs.shape[0] != frames.shape[0] or probs.shape[2:] != frames.shape[2:]:
            raise ValueError(f"multiframe_color_crf_loss: probs must be [F, K, H, W] matching frames "
                             f"{tuple(frames.shape)}, got {tuple(probs.shape)}")
        if int(torch.as_tensor(lengths).sum()) != frames.shape[0]:
            raise ValueError("multiframe_color_crf_loss: `lengths` must sum to the number of frames")
        frames, mask = pad_shots(frames, lengths)
        probs, _ = pad_shots(probs, lengths)
        if roi is not None:
            roi, _ = pad_shots(roi, lengths)
    elif frames.dim() == 5:
        if probs.dim() != 5 or probs.shape[:2] != frames.shape[:2] or probs.shape[3:] != frames.shape[3:]:
            raise ValueError(f"multiframe_color_crf_loss: probs must be [S, n, K, H, W] matching frames "
                             f"{tuple(frames.shape)}, got {tuple(probs.shape)}")
        S, n = frames.shape[:2]
        if lengths is None:
            mask = torch.ones(S, n, dtype=torch.bool, device=frames.device)
        else:
            lengths = torch.as_tensor(lengths, device=frames.device, dtype=torch.long)
            mask = torch.arange(n, device=frames.device).view(1, n) < lengths.view(S, 1)
    else:
        raise ValueError(f"multiframe_color_crf_loss: frames must be [S, n, 3, H, W] or [F, 3, H, W], "
                         f"got {tuple(frames.shape)}")
    if frames.shape[2] != 3:
        raise ValueError(f"multiframe_color_crf_loss: frames need 3 colour channels, got {frames.shape[2]}")
    S, n, _, H, W = frames.shape
    K = probs.shape[2]
    dtype = probs.dtype
    # [S, n, C, H, W] -> [S, C, n*H*W]
    feat = (frames.detach().to(dtype) / sigma_rgb).permute(0, 2, 1, 3, 4).reshape(S, 3, n * H * W)
    seg = probs.permute(0, 2, 1, 3, 4).reshape(S, K, n * H * W)
    valid = mask.view(S, n, 1).expand(S, n, H * W).reshape(S, n * H * W)
    seg = seg * valid.view(S, 1, -1).to(dtype)
    if roi is not None:
        seg = seg * roi.reshape(S, 1, n * H * W).to(dtype)
    energy = lattice_energy(feat.contiguous(), seg, valid, per_image=True)
    return -weight * energy if reduction == "none" else -weight * energy.sum() / S
