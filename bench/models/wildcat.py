"""The localizer + classifier pair of Max-Min uncertainty and Min-Max entropy (Belharbi et al.).

Both methods share one encoder (the backbone of a `WSOLNet`) between two uses:

1. **Localizer**: a class-map head on the encoder's CAM features (`ClassMapHead`: a 1x1 conv to
   `num_classes x modalities` maps, averaged per class, then WILDCAT pooling to class scores).
   The class-agnostic foreground map is the class maps weighted by the localizer's own class
   posterior, ``M+ = sum_c softmax(scores)_c * map_c`` (`foreground_map`). Upsampled to the
   image, min-max normalised and squashed by ``sigmoid(w (M+ - sigma))`` (`soft_mask`) it is a
   nearly binary mask that stays differentiable.
2. **Classifier**: the same encoder and a second WILDCAT class-map head (the papers' `cl32`;
   or, with classifier="linear", the `WSOLNet` GAP + linear head) read the image with the mask applied, ``x+ = mask * x`` and ``x- = (1 - mask) * x``, optionally
   down-scaled first (`scale`, the papers' 0.8 / 0.5 to save compute).

`LocalizerClassifier` wires these; the losses (what each method asks of x+ and x-) live in the
method files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.models import WSOLNet


def wildcat_pool(maps: torch.Tensor, kmax: float, kmin: float = 0.0, alpha: float = 0.0,
                 dropout: float = 0.0, training: bool = False) -> torch.Tensor:
    """WILDCAT spatial pooling (Durand et al., CVPR 2017) of maps [B,C,h,w] to scores [B,C]:
    the mean of the ceil(kmax * h*w) highest values plus `alpha` times the mean of the
    ceil(kmin * h*w) lowest (kmin = 0: no low term). kmax/kmin are fractions in [0, 1].
    `dropout` (training only): inverted dropout on the selected values before averaging, as
    the Belharbi et al. code does on its sorted activations (deepmil/decision_pooling.py)."""
    if maps.dim() != 4:
        raise ValueError(f"wildcat_pool: maps must be [B,C,h,w], got {list(maps.shape)}")
    if not 0.0 < kmax <= 1.0 or not 0.0 <= kmin <= 1.0:
        raise ValueError(f"wildcat_pool: need 0 < kmax <= 1 and 0 <= kmin <= 1, got kmax={kmax}, kmin={kmin}")
    flat = maps.flatten(2)
    n = flat.shape[-1]
    k_hi = max(1, math.ceil(kmax * n))
    scores = F.dropout(flat.topk(k_hi, dim=-1).values, dropout, training).mean(-1)
    if kmin > 0 and alpha != 0:
        k_lo = max(1, math.ceil(kmin * n))
        low = F.dropout(flat.topk(k_lo, dim=-1, largest=False).values, dropout, training)
        scores = scores + alpha * low.mean(-1)
    return scores


class ClassMapHead(nn.Module):
    """1x1 conv to `modalities` maps per class, averaged per class, WILDCAT-pooled to scores."""

    def __init__(self, in_channels: int, num_classes: int, modalities: int = 5, kmax: float = 0.3,
                 kmin: float = 0.0, alpha: float = 0.6, dropout: float = 0.0):
        super().__init__()
        if modalities < 1:
            raise ValueError(f"ClassMapHead: modalities must be >= 1, got {modalities}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ClassMapHead: dropout must be in [0, 1), got {dropout}")
        self.num_classes, self.modalities = num_classes, modalities
        self.kmax, self.kmin, self.alpha, self.dropout = kmax, kmin, alpha, dropout
        self.conv = nn.Conv2d(in_channels, num_classes * modalities, kernel_size=1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = features.shape
        maps = self.conv(features).view(b, self.num_classes, self.modalities, h, w).mean(2)
        return wildcat_pool(maps, self.kmax, self.kmin, self.alpha, self.dropout, self.training), maps


def foreground_map(scores: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Class-agnostic foreground map [B,h,w]: the class maps weighted by softmax(scores)."""
    return torch.einsum("bc,bchw->bhw", scores.softmax(1), maps)


def soft_mask(fg_map: torch.Tensor, size: tuple[int, int], w: float, sigma: float, eps: float = 1e-8,
              normalise: bool = True) -> torch.Tensor:
    """[B,h,w] -> [B,1,H,W] in (0,1): bilinear upsampling, per-image min-max normalisation (the
    papers normalise over the whole batch; per image keeps one image's mask independent of the
    others in its batch), then sigmoid(w * (m - sigma)), a differentiable near-threshold at sigma.
    normalise=False skips the min-max (Max-Min's Camelyon16 mask, sigmoid(w * map))."""
    m = F.interpolate(fg_map[:, None], size=size, mode="bilinear", align_corners=False)
    if not normalise:
        return torch.sigmoid(w * (m - sigma))
    lo = m.amin(dim=(2, 3), keepdim=True)
    hi = m.amax(dim=(2, 3), keepdim=True)
    m = (m - lo) / (hi - lo).clamp_min(eps)
    return torch.sigmoid(w * (m - sigma))


def apply_mask(images: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x+, x-): the image where the mask is on (resp. off), `fill` elsewhere. With the network's
    input mean as fill, the hidden pixels are zero after normalisation, as in the papers (which
    multiply the normalised image by the mask)."""
    if mask.shape[-2:] != images.shape[-2:] or mask.shape[1] != 1:
        raise ValueError(f"apply_mask: mask {list(mask.shape)} does not fit images {list(images.shape)}")
    fg = fill + (images - fill) * mask
    bg = fill + (images - fill) * (1 - mask)
    return fg, bg


@dataclass
class LocalizerOutput:
    mask: torch.Tensor  # [B,1,H,W] soft foreground mask (detached when the model detaches it)
    loc_logits: torch.Tensor  # [B,C] the localizer head's own class scores
    fg_logits: torch.Tensor  # [B,C] classifier on the foreground image x+
    bg_logits: torch.Tensor | None  # [B,C] classifier on the background image x- (None if not asked)
    fg_map: torch.Tensor | None = None  # [B,h,w] the raw foreground map M+ (feature resolution)


class LocalizerClassifier(nn.Module):
    """A `WSOLNet` (shared encoder + classification head) plus a localizer head (see module doc)."""

    def __init__(self, net: WSOLNet, num_classes: int, *, modalities: int = 5, kmax: float = 0.3,
                 kmin: float = 0.0, alpha: float = 0.6, w: float = 5.0, sigma: float = 0.15, scale: float = 1.0,
                 dropout: float = 0.0, classifier: str = "linear", detach_mask: bool = False,
                 normalise_mask: bool = True):
        super().__init__()
        if not 0.0 < scale <= 1.0:
            raise ValueError(f"LocalizerClassifier: scale must be in (0, 1], got {scale}")
        if classifier not in ("linear", "wildcat"):
            raise ValueError(f"LocalizerClassifier: classifier must be 'linear' or 'wildcat', got {classifier!r}")
        self.net = net
        self.loc_head = ClassMapHead(net.backbone.out_channels, num_classes, modalities, kmax, kmin, alpha, dropout)
        # "wildcat": the papers' second WILDCAT head (same hyper-parameters) classifies x+ / x-;
        # "linear": the WSOLNet's own GAP + linear head
        self.cls_head = (ClassMapHead(net.backbone.out_channels, num_classes, modalities, kmax, kmin, alpha, dropout)
                         if classifier == "wildcat" else None)
        self.w, self.sigma, self.scale = w, sigma, scale  # sigma may follow a schedule (set between epochs)
        self.detach_mask, self.normalise_mask = detach_mask, normalise_mask

    def fg_map(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class-agnostic foreground map M+ [B,h,w], localizer class scores [B,C])."""
        scores, maps = self.loc_head(self.net.features(images))
        return foreground_map(scores, maps), scores

    def localize(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(soft mask [B,1,H,W], localizer class scores [B,C])."""
        fg, scores = self.fg_map(images)
        return self.mask_of(fg, tuple(images.shape[-2:])), scores

    def mask_of(self, fg: torch.Tensor, size) -> torch.Tensor:
        return soft_mask(fg, size, self.w, self.sigma, normalise=self.normalise_mask)

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        if self.scale < 1.0:
            h, w = images.shape[-2:]
            size = (max(1, round(h * self.scale)), max(1, round(w * self.scale)))
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        if self.cls_head is None:
            return self.net(images).logits
        return self.cls_head(self.net.features(images))[0]

    def forward(self, images: torch.Tensor, with_background: bool = True) -> LocalizerOutput:
        fg_map, loc_logits = self.fg_map(images)
        mask = self.mask_of(fg_map, tuple(images.shape[-2:]))
        if self.detach_mask:  # Min-Max entropy's code: the x+/x- terms do not reach the localizer
            mask = mask.detach()
        fill = self.net.mean.to(images.dtype)
        fg, bg = apply_mask(images, mask, fill)
        if with_background:
            # one encoder pass over both halves: BatchNorm sees x+ and x- together, as one batch
            logits = self.classify(torch.cat([fg, bg]))
            fg_logits, bg_logits = logits.chunk(2)
        else:
            fg_logits, bg_logits = self.classify(fg), None
        return LocalizerOutput(mask, loc_logits, fg_logits, bg_logits, fg_map)
