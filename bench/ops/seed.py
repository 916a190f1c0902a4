"""Batched pseudo-label seeder (F-CAM / NEGEV / TCAM / CoLo-CAM / PixelCAM seeds), on the CAMs' device.

One call handles the whole batch ``cams [B, H, W]`` (values in [0, 1]; NaN is read as 0 and
values are clamped), with no Python loop over images. A map with one value everywhere
(min == max) gets no seed at all (the authors' seeders skip such maps).

1. **ROI** (``roi``): ``"otsu"``: each map is quantised to uint8 as ``floor(255 * cam)``
   (what ``astype(uint8)`` of ``cam * 255`` gives), the Otsu threshold ``t`` is the first
   maximiser of the between-class variance of the split ``{q <= t} | {q > t}``, clamped to
   [1, 254] as in fcam-wsol's seeder, and ROI = ``q > t``; ``"largest"``: the largest
   4-connected component of that ROI (CoLo-CAM's ``roi_largest``); ``"none"``: the whole image
   (NEGEV's / PixelCAM's probability seeders).
2. **Erosion** (``erode_size`` k > 1, odd): the ROI is eroded once with a k x k square; pixels
   outside the image count as ROI (the border does not erode). With ``erode_revert`` an ROI
   that erodes away is restored (fcam-wsol), else that image gets no foreground seed.
3. **Foreground seeds** (``n_fg`` per image, without replacement, fewer if the pool is
   smaller): ``"uniform"``: uniformly over the ROI; ``"top"``: among the
   ``floor(top_fraction * |ROI|)`` highest-valued ROI pixels (ties by pixel index), with
   probability proportional to the value (TCAM / CoLo-CAM ``seed_weighted``);
   ``"proportional"``: over the ROI with probability proportional to ``cam + 1e-6``.
4. **Background seeds** (``n_bg``): the pool is exactly the ``int(bg_fraction * H * W)``
   lowest-valued pixels (at least one; ties by pixel index); ``bg_mode`` ``"uniform"`` draws
   uniformly from it, ``"complement"`` with weights ``1 - p``, ``p`` the map normalised to sum
   1 (``(cam + 1e-6) / sum``: the NEGEV / PixelCAM probability seeders).
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

__all__ = ["IGNORE", "FG_MODES", "ROI_MODES", "BG_MODES", "SeedConfig", "SeedInfo", "quantize", "otsu_threshold",
           "largest_component", "make_seeds"]

FG_MODES = ("uniform", "top", "proportional")
ROI_MODES = ("otsu", "largest", "none")
BG_MODES = ("uniform", "complement")
_EPS = 1e-6  # added to the CAM before proportional draws (the authors' samplers)


@dataclass(frozen=True)
class SeedConfig:
    """How seeds are drawn from a normalised CAM (see the module docstring)."""

    n_fg: int = 1  # foreground pixels per image (before dilation)
    n_bg: int = 1
    roi: str = "otsu"  # otsu | largest | none: where foreground seeds may be drawn
    fg_mode: str = "uniform"  # uniform | top | proportional
    top_fraction: float = 0.6  # "top": the pool is the floor(top_fraction |ROI|) highest ROI pixels
    erode_size: int = 0  # k x k erosion of the ROI before foreground draws (0 = none)
    erode_revert: bool = True  # an ROI that erodes away is restored
    bg_fraction: float = 0.1  # background pool: exactly int(bg_fraction H W) lowest pixels
    bg_mode: str = "uniform"  # uniform | complement (weights 1 - normalised CAM)
    dilate: bool = True  # 3x3 dilation of both seed sets

    def __post_init__(self):
        for name, value, allowed in (("fg_mode", self.fg_mode, FG_MODES), ("roi", self.roi, ROI_MODES),
                                     ("bg_mode", self.bg_mode, BG_MODES)):
            if value not in allowed:
                raise ValueError(f"SeedConfig: {name} must be one of {allowed}, got {value!r}")
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
    threshold: Tensor  # [B] int64 Otsu threshold on the uint8 scale (ROI = q > threshold), clamped to [1, 254]
    roi: Tensor  # [B, H, W] bool, after erosion
    fg_index: Tensor  # [B, n_fg] flat pixel indices of the drawn foreground seeds
    fg_valid: Tensor  # [B, n_fg] bool (False where the pool had too few pixels, or the map is constant)
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


def _rank(values: Tensor, descending: bool) -> Tensor:
    """Each pixel's rank [B, N] in its row's stable sort (ties keep pixel order)."""
    order = torch.sort(values, dim=1, descending=descending, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(values.shape[1], device=values.device).expand_as(order))
    return ranks


def largest_component(mask: Tensor) -> Tensor:
    """The largest 4-connected component of each boolean map [B, H, W] (ties: the component
    holding the highest pixel index), by max-label propagation."""
    B, H, W = mask.shape
    if not bool(mask.any()):
        return mask
    ids = torch.arange(1, H * W + 1, device=mask.device).view(1, H, W).expand(B, H, W)
    lab = torch.where(mask, ids, torch.zeros_like(ids))
    while True:
        prev = lab
        for _ in range(8):  # a few steps between convergence checks (each check syncs)
            p = F.pad(lab, (1, 1, 1, 1))
            nb = torch.maximum(torch.maximum(p[:, :-2, 1:-1], p[:, 2:, 1:-1]), torch.maximum(p[:, 1:-1, :-2], p[:, 1:-1, 2:]))
            lab = torch.where(mask, torch.maximum(lab, nb), lab)
        if torch.equal(lab, prev):
            break
    counts = torch.zeros(B, H * W + 1, device=mask.device, dtype=torch.int64)
    counts.scatter_add_(1, lab.reshape(B, -1), torch.ones(B, H * W, device=mask.device, dtype=torch.int64))
    counts[:, 0] = 0
    best = counts.flip(1).argmax(1)
    best = H * W - best  # the highest label among the largest
    return mask & (lab == best[:, None, None])


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
    varied = flat.amax(1) > flat.amin(1)  # a constant map gets no seed
    q = (flat * 255).floor().long()
    t = _otsu_from_levels(q).clamp(1, 254)
    if cfg.roi == "none":
        roi_flat = torch.ones_like(flat, dtype=torch.bool)
    else:
        roi_flat = q > t[:, None]
        if cfg.roi == "largest":
            roi_flat = largest_component(roi_flat.view(B, H, W)).view(B, N)
    if cfg.erode_size > 1:
        eroded = _erode(roi_flat.view(B, H, W), cfg.erode_size).view(B, N)
        roi_flat = torch.where(eroded.any(1, keepdim=True), eroded, roi_flat) if cfg.erode_revert else eroded
    roi_flat = roi_flat & varied[:, None]

    if cfg.fg_mode == "uniform":
        w_fg = roi_flat
    elif cfg.fg_mode == "proportional":
        w_fg = (flat + _EPS) * roi_flat
    else:  # "top": the floor(top_fraction * |ROI|) highest ROI values, weighted by value
        kk = torch.floor(cfg.top_fraction * roi_flat.sum(1).double()).long()
        ranked = torch.where(roi_flat, flat, torch.full_like(flat, -1.0))
        pool = _rank(ranked, descending=True) < kk[:, None]
        w_fg = (flat + 1e-8) * (pool & roi_flat)
    fg_idx, fg_ok = _draw(w_fg, cfg.n_fg, generator, uniform=cfg.fg_mode == "uniform")

    k_bg = min(N, max(1, int(cfg.bg_fraction * N)))
    bg_pool = (_rank(flat, descending=False) < k_bg) & varied[:, None]
    if cfg.bg_mode == "uniform":
        bg_idx, bg_ok = _draw(bg_pool, cfg.n_bg, generator, uniform=True)
    else:
        p = (flat + _EPS) / (flat + _EPS).sum(1, keepdim=True)
        bg_idx, bg_ok = _draw((1 - p) * bg_pool, cfg.n_bg, generator)

    fg = _paint(fg_idx, fg_ok, H, W, cfg.dilate)
    bg = _paint(bg_idx, bg_ok, H, W, cfg.dilate)
    labels = torch.full((B, H, W), IGNORE, dtype=dtype, device=cams.device)
    labels.masked_fill_(fg & ~bg, 1)
    labels.masked_fill_(bg & ~fg, 0)
    roi = roi_flat.view(B, H, W)
    if return_info:
        return labels, SeedInfo(t, roi, fg_idx, fg_ok, bg_idx, bg_ok)
    return labels
