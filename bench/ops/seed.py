"""Batched pseudo-label seeder (F-CAM / NEGEV / TCAM / PixelCAM seeds), on the CAMs' device.

One call handles the whole batch ``cams [B, H, W]`` (values in [0, 1]; NaN is read as 0 and
values are clamped), with no Python loop over images:

1. **Otsu ROI.** Each map is quantised to uint8 as ``floor(255 * cam)`` (what ``astype(uint8)``
   of ``cam * 255`` gives) and a 256-bin histogram is built per map. The threshold ``t`` is the
   first one maximising the between-class variance ``w0 w1 (mu0 - mu1)^2`` of the split
   ``{q <= t} | {q > t}`` (only splits with both classes non-empty count). ROI = ``q > t``. A
   map with a single occupied bin (e.g. constant) has no valid split: ``t = 255``, empty ROI.
2. **Erosion** (``erode_size`` k > 1, odd): the ROI is eroded with a k x k square; pixels
   outside the image count as ROI (the border does not erode). An ROI that erodes away
   leaves that image without foreground seeds (its background seeds are still drawn).
3. **Foreground seeds** (``n_fg`` per image, without replacement, fewer if the ROI is
   smaller), drawn from the (eroded) ROI:
   ``"uniform"``: uniformly; ``"top"``: among the ``top_fraction`` (ceil) highest-valued ROI
   pixels, with probability proportional to the CAM value (TCAM); ``"proportional"``: over
   the ROI with probability proportional to the CAM (NEGEV).
4. **Background seeds** (``n_bg``): uniformly among the pixels whose CAM value is at most the
   ``ceil(bg_fraction * H * W)``-th smallest value of the map.
5. **Dilation** of both seed sets by a 3x3 square (``dilate=True``); a pixel in both sets
   becomes ignore.

Output ``labels [B, H, W]``: 1 = foreground, 0 = background, :data:`IGNORE` (255) elsewhere.
Sampling without replacement uses random keys (``log(u) / w``, u uniform, the k largest win),
so the result is a deterministic function of the generator state; pass a ``torch.Generator``
on the CAMs' device. Dilation paints the 3x3 neighbourhoods of the drawn indices directly
(no dense pooling); erosion is separable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.dataset.protocol import IGNORE

__all__ = ["IGNORE", "FG_MODES", "SeedConfig", "SeedInfo", "quantize", "otsu_threshold", "make_seeds"]

FG_MODES = ("uniform", "top", "proportional")


@dataclass
class SeedConfig:
    n_fg: int = 1
    n_bg: int = 1
    fg_mode: str = "uniform"
    top_fraction: float = 0.6
    bg_fraction: float = 0.1
    erode_size: int = 0
    dilate: bool = True

    def __post_init__(self):
        if self.fg_mode not in FG_MODES:
            raise ValueError(f"SeedConfig: fg_mode must be one of {FG_MODES}, got {self.fg_mode!r}")
        if self.n_fg < 0 or self.n_bg < 0:
            raise ValueError(f"SeedConfig: n_fg and n_bg must be >= 0, got {self.n_fg} and {self.n_bg}")
        if not 0.0 < self.top_fraction <= 1.0:
            raise ValueError(f"SeedConfig: top_fraction must be in (0, 1], got {self.top_fraction}")
        if not 0.0 < self.bg_fraction <= 1.0:
            raise ValueError(f"SeedConfig: bg_fraction must be in (0, 1], got {self.bg_fraction}")
        if self.erode_size < 0 or (self.erode_size > 1 and self.erode_size % 2 == 0):
            raise ValueError(f"SeedConfig: erode_size must be 0, 1 or an odd size, got {self.erode_size}")


@dataclass
class SeedInfo:
    threshold: Tensor  # [B] int64 Otsu threshold on the uint8 scale (ROI = q > threshold)
    roi: Tensor  # [B, H, W] bool, after erosion
    fg_index: Tensor  # [B, n_fg] flat pixel indices of the drawn foreground seeds
    fg_valid: Tensor  # [B, n_fg] bool (False where the ROI had too few pixels)
    bg_index: Tensor  # [B, n_bg]
    bg_valid: Tensor  # [B, n_bg]


def _check_cams(cams: Tensor) -> None:
    if cams.dim() != 3:
        raise ValueError(f"make_seeds: cams must be [B, H, W], got shape {tuple(cams.shape)}")
    if not cams.is_floating_point():
        raise ValueError(f"make_seeds: cams must be a floating-point tensor, got {cams.dtype}")


def quantize(cams: Tensor) -> Tensor:
    """``floor(255 * clamp(cam, 0, 1))`` as int64 (NaN -> 0)."""
    return (torch.nan_to_num(cams, nan=0.0).clamp(0, 1) * 255).floor().long()


def otsu_threshold(cams: Tensor) -> Tensor:
    """Per-map Otsu threshold ``[B]`` (int64 in [0, 255]) of the uint8-quantised maps."""
    _check_cams(cams)
    return _otsu_from_levels(quantize(cams).flatten(1))


def _otsu_from_levels(q: Tensor) -> Tensor:
    B, N = q.shape
    hist = torch.zeros(B, 256, dtype=torch.float64, device=q.device)
    hist.scatter_add_(1, q, torch.ones_like(q, dtype=torch.float64))
    levels = torch.arange(256, dtype=torch.float64, device=q.device)
    c0 = hist.cumsum(1)
    mu = (hist * levels).cumsum(1) / N
    w0 = c0 / N
    mu_t = mu[:, -1:]
    valid = (c0 > 0) & (c0 < N)
    den = torch.where(valid, w0 * (1 - w0), torch.ones_like(w0))
    sigma = torch.where(valid, (mu_t * w0 - mu) ** 2 / den, torch.full_like(w0, -1.0))
    t = sigma.argmax(1)  # first maximum
    return torch.where(valid.any(1), t, torch.full_like(t, 255))


def _draw(weights: Tensor, k: int, generator: Optional[torch.Generator], uniform: bool = False) -> tuple[Tensor, Tensor]:
    """k indices per row without replacement, P proportional to weights (>= 0).

    Keys ``log(u) / w`` with u uniform in (0, 1] (the k largest win: Efraimidis-Spirakis);
    for 0/1 weights (``uniform``) the key is u itself, the same order without the log."""
    B, N = weights.shape
    k = min(k, N)
    if k == 0:
        empty = torch.zeros(B, 0, dtype=torch.int64, device=weights.device)
        return empty, empty.bool()
    u = torch.empty(B, N, dtype=torch.float32, device=weights.device).uniform_(generator=generator)
    u = 1.0 - u  # (0, 1]
    w = weights.float()
    if uniform:
        key = torch.where(w > 0, u, torch.full_like(u, -math.inf))
    else:
        key = torch.where(w > 0, u.log_() / w.clamp_min(torch.finfo(torch.float32).tiny), torch.full_like(u, -math.inf))
    vals, idx = key.topk(k, dim=1)
    return idx, vals > -math.inf


def _paint(idx: Tensor, ok: Tensor, H: int, W: int, dilate: bool) -> Tensor:
    """Boolean [B, H, W] mask of the drawn pixels, each grown to its 3x3 neighbourhood when
    ``dilate`` (clipped at the border). Writes only True values (order-independent)."""
    B = idx.shape[0]
    N = H * W
    if dilate and idx.shape[1] > 0:
        y, x = (idx // W)[..., None], (idx % W)[..., None]
        d = torch.tensor([-1, 0, 1], device=idx.device)
        ny = (y + d.repeat_interleave(3)).view(B, -1, 9)
        nx = (x + d.repeat(3)).view(B, -1, 9)
        ok = ok[..., None] & (ny >= 0) & (ny < H) & (nx >= 0) & (nx < W)
        idx = ny * W + nx
    target = torch.where(ok, idx, torch.full_like(idx, N)).reshape(B, -1)  # spare column N
    mask = torch.zeros(B, N + 1, dtype=torch.bool, device=idx.device)
    mask.scatter_(1, target, True)
    return mask[:, :N].view(B, H, W)


def _erode(roi: Tensor, k: int) -> Tensor:
    """k x k erosion, separable, pixels outside the image counting as ROI."""
    B, H, W = roi.shape
    p = k // 2
    x = F.pad(roi.to(torch.uint8), (p, p, p, p), value=1)
    rows = x[:, 0:H].clone()
    for i in range(1, k):
        rows &= x[:, i : i + H]
    out = rows[:, :, 0:W].clone()
    for j in range(1, k):
        out &= rows[:, :, j : j + W]
    return out.bool()


def make_seeds(
    cams: Tensor,
    cfg: SeedConfig = SeedConfig(),
    generator: Optional[torch.Generator] = None,
    *,
    dtype: torch.dtype = torch.int64,
    return_info: bool = False,
):
    """Seed labels ``[B, H, W]`` (1 fg, 0 bg, 255 ignore) of ``dtype`` (int64 or uint8).

    With ``return_info=True`` returns ``(labels, SeedInfo)``. See the module docstring.
    """
    _check_cams(cams)
    if dtype not in (torch.int64, torch.uint8):
        raise ValueError(f"make_seeds: dtype must be torch.int64 or torch.uint8, got {dtype}")
    B, H, W = cams.shape
    N = H * W
    flat = torch.nan_to_num(cams, nan=0.0).clamp(0, 1).reshape(B, N)
    q = (flat * 255).floor().long()
    t = _otsu_from_levels(q)
    roi_flat = q > t[:, None]
    if cfg.erode_size > 1:
        roi_flat = _erode(roi_flat.view(B, H, W), cfg.erode_size).view(B, N)

    if cfg.fg_mode == "uniform":
        w_fg = roi_flat
    elif cfg.fg_mode == "proportional":
        w_fg = flat * roi_flat
    else:  # "top": ceil(top_fraction * |ROI|) highest values, weighted by value
        m = roi_flat.sum(1)
        kk = torch.ceil(cfg.top_fraction * m.double()).long().clamp(min=1, max=N)
        ranked = torch.where(roi_flat, flat, torch.full_like(flat, -math.inf)).sort(1, descending=True).values
        thr = ranked.gather(1, (kk - 1)[:, None])
        w_fg = flat * (roi_flat & (flat >= thr))
    fg_idx, fg_ok = _draw(w_fg, cfg.n_fg, generator, uniform=cfg.fg_mode == "uniform")

    k_bg = min(N, max(1, math.ceil(cfg.bg_fraction * N)))
    bg_thr = flat.kthvalue(k_bg, dim=1, keepdim=True).values
    bg_idx, bg_ok = _draw(flat <= bg_thr, cfg.n_bg, generator, uniform=True)

    fg = _paint(fg_idx, fg_ok, H, W, cfg.dilate)
    bg = _paint(bg_idx, bg_ok, H, W, cfg.dilate)
    labels = torch.full((B, H, W), IGNORE, dtype=dtype, device=cams.device)
    labels.masked_fill_(fg & ~bg, 1)
    labels.masked_fill_(bg & ~fg, 0)
    roi = roi_flat.view(B, H, W)
    if return_info:
        return labels, SeedInfo(t, roi, fg_idx, fg_ok, bg_idx, bg_ok)
    return labels
