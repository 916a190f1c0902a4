"""Spatial pooling heads of the survey's bottom-up methods (Rony, Belharbi et al., MELBA 2023).

Each head maps CAM features [B,D,h,w] to (class scores [B,C], class maps [B,C,h,w]); the map
of a class is its localization. Heads: global max (`MaxPoolHead`), log-sum-exp (`LSEHead`),
peak stimulation (`PRMHead`, Zhou et al., CVPR 2018), attention-based deep MIL (`MILHead`,
Ilse et al., ICML 2018). WILDCAT is `bench.models.wildcat.ClassMapHead` (one implementation
shared with Max-Min / Min-Max entropy).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def lse_pool(maps: torch.Tensor, r: float) -> torch.Tensor:
    """Log-sum-exp pooling [B,C,h,w] -> [B,C]: (1/r) log(mean exp(r s)) (the mean, not the sum,
    inside the log, as Pinheiro & Collobert, CVPR 2015). Between the mean (r -> 0) and the max
    (r -> inf); computed with logsumexp so large r does not overflow."""
    if r <= 0:
        raise ValueError(f"lse_pool: r must be > 0, got {r}")
    flat = maps.flatten(2)
    return (torch.logsumexp(r * flat, dim=-1) - math.log(flat.shape[-1])) / r


def find_peaks(maps: torch.Tensor, window: int = 3, median_filter: bool = True) -> torch.Tensor:
    """Peaks of class response maps [B,C,h,w] (boolean, same shape): positions that are the
    maximum of the `window` x `window` neighbourhood around them (borders padded with -inf; of
    equal values, the first in the window wins, as max pooling's index picks it) and, with
    `median_filter`, at least the map's median (PRM's peak filter)."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"find_peaks: window must be odd and >= 1, got {window}")
    b, c, h, w = maps.shape
    pad = window // 2
    padded = F.pad(maps, (pad, pad, pad, pad), value=float("-inf"))
    _, index = F.max_pool2d(padded, window, stride=1, return_indices=True)
    own = torch.arange((h + 2 * pad) * (w + 2 * pad), device=maps.device).view(1, 1, h + 2 * pad, w + 2 * pad)
    peaks = index == own[..., pad:pad + h, pad:pad + w]
    if median_filter:
        median = maps.flatten(2).median(dim=-1).values.view(b, c, 1, 1)
        peaks = peaks & (maps >= median)
    return peaks


def peak_pool(maps: torch.Tensor, peaks: torch.Tensor) -> torch.Tensor:
    """Peak stimulation: the mean of the map values at its peaks [B,C] (gradient only at peaks)."""
    weight = peaks.to(maps.dtype)
    return (maps * weight).flatten(2).sum(-1) / weight.flatten(2).sum(-1).clamp_min(1.0)


class _ConvMaps(nn.Module):
    """A 1x1 conv to one map per class (the survey's heads), pooled by `pool`."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, kernel_size=1)

    def pool(self, maps: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps = self.conv(features)
        return self.pool(maps), maps


class MaxPoolHead(_ConvMaps):
    """Global max pooling of the class maps (Oquab et al., CVPR 2015)."""

    def pool(self, maps):
        return maps.flatten(2).amax(-1)


class LSEHead(_ConvMaps):
    """Log-sum-exp pooling of the class maps with sharpness r."""

    def __init__(self, in_channels: int, num_classes: int, r: float):
        super().__init__(in_channels, num_classes)
        if r <= 0:
            raise ValueError(f"LSEHead: r must be > 0, got {r}")
        self.r = r

    def pool(self, maps):
        return lse_pool(maps, self.r)


class PRMHead(_ConvMaps):
    """Peak stimulation: the class score is the mean response at the class map's peaks."""

    def __init__(self, in_channels: int, num_classes: int, window: int = 3, median_filter: bool = True):
        super().__init__(in_channels, num_classes)
        self.window, self.median_filter = window, median_filter

    def pool(self, maps):
        with torch.no_grad():
            peaks = find_peaks(maps, self.window, self.median_filter)
        return peak_pool(maps, peaks)


class MILHead(nn.Module):
    """Attention-based deep MIL pooling (Ilse et al., ICML 2018) over the feature-map positions,
    one attention branch per class as in the survey's multi-class version: a_c = softmax over
    positions of w_c^T (tanh(V h) [* sigmoid(U h) when `gated`]); the class's bag embedding
    z_c = sum_p a_c(p) h_p goes through its own linear scorer. Maps: the attention a_c."""

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 128, gated: bool = False):
        super().__init__()
        self.num_classes, self.gated = num_classes, gated
        self.V = nn.Conv2d(in_channels, hidden, kernel_size=1)
        self.U = nn.Conv2d(in_channels, hidden, kernel_size=1) if gated else None
        self.w = nn.Conv2d(hidden, num_classes, kernel_size=1)
        # one linear scorer per class on its own embedding: [C, D] weights and [C] biases
        self.score_weight = nn.Parameter(torch.empty(num_classes, in_channels))
        self.score_bias = nn.Parameter(torch.zeros(num_classes))
        nn.init.kaiming_uniform_(self.score_weight, a=math.sqrt(5))

    def attention(self, features: torch.Tensor) -> torch.Tensor:
        """[B,D,h,w] -> attention [B,C,h,w], each class's map summing to 1 over positions."""
        hidden = torch.tanh(self.V(features))
        if self.U is not None:
            hidden = hidden * torch.sigmoid(self.U(features))
        logits = self.w(hidden)
        return logits.flatten(2).softmax(-1).view_as(logits)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attn = self.attention(features)
        bags = torch.einsum("bcp,bdp->bcd", attn.flatten(2), features.flatten(2))  # [B,C,D]
        scores = (bags * self.score_weight).sum(-1) + self.score_bias
        return scores, attn
