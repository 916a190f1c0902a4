"""Shared pieces of the evaluators: score-map normalisation, threshold grid, input checks."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def taus(cam_curve_interval: float) -> np.ndarray:
    """The CAM threshold grid, `np.arange(0, 1, interval)` in float64 like the reference."""
    if not (0.0 < cam_curve_interval < 1.0):
        raise ValueError(f"cam_curve_interval must be in (0, 1), got {cam_curve_interval}")
    return np.arange(0, 1, cam_curve_interval)


def normalize_scoremaps(cams: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize CAMs [B, h, w] to `size` = (H, W) (bicubic, align_corners=False) and min-max
    normalise each to [0, 1] in float32; a constant map or one containing NaN becomes zeros.

    The reference evaluator resizes with cv2.INTER_CUBIC: the same Keys kernel (a = -0.75),
    pixel-centre alignment and replicated border as torch's bicubic mode.
    The normalisation is the reference's: `(x - min) / max(x - min)` in float32."""
    if not isinstance(cams, torch.Tensor) or cams.dim() != 3:
        raise ValueError(f"normalize_scoremaps: cams must be a Tensor [B, h, w], got "
                         f"{getattr(cams, 'shape', type(cams))}")
    if not cams.is_floating_point():
        raise TypeError(f"normalize_scoremaps: cams must be floating point, got {cams.dtype}")
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"normalize_scoremaps: size must be (H, W) > 0, got {size}")
    x = cams.detach().float()
    if tuple(x.shape[1:]) != tuple(size):
        x = F.interpolate(x[:, None], size=tuple(int(s) for s in size), mode="bicubic",
                          align_corners=False)[:, 0]
    flat = x.reshape(x.shape[0], -1)
    bad = torch.isnan(flat).any(1)
    flat = torch.nan_to_num(flat, nan=0.0)
    lo = flat.min(1, keepdim=True).values if flat.shape[1] else flat.new_zeros(flat.shape[0], 1)
    shifted = flat - lo
    hi = shifted.max(1, keepdim=True).values if flat.shape[1] else flat.new_zeros(flat.shape[0], 1)
    bad = bad | (hi[:, 0] <= 0) | ~torch.isfinite(hi[:, 0])
    out = shifted / torch.where(bad[:, None], torch.ones_like(hi), hi)
    out[bad] = 0.0
    return out.reshape(x.shape).contiguous()


def check_scoremaps(scoremaps: torch.Tensor, who: str) -> torch.Tensor:
    if not isinstance(scoremaps, torch.Tensor):
        raise TypeError(f"{who}: scoremaps must be a torch.Tensor, got {type(scoremaps).__name__}")
    if scoremaps.dim() != 3:
        raise ValueError(f"{who}: scoremaps must be [B, H, W], got shape {tuple(scoremaps.shape)}")
    if scoremaps.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise TypeError(f"{who}: scoremaps must be floating point, got {scoremaps.dtype}")
    if scoremaps.shape[1] == 0 or scoremaps.shape[2] == 0:
        raise ValueError(f"{who}: empty score maps {tuple(scoremaps.shape)}")
    s = scoremaps.detach().to("cpu", torch.float32)
    if torch.isnan(s).any():
        raise ValueError(f"{who}: scoremaps contain NaN (normalise with normalize_scoremaps first)")
    if s.numel() and (s.min() < 0 or s.max() > 1):
        raise ValueError(f"{who}: scoremaps must lie in [0, 1] (got [{s.min().item():.4g}, "
                         f"{s.max().item():.4g}]); normalise with normalize_scoremaps first")
    return s.contiguous()


def quantize(s: torch.Tensor) -> torch.Tensor:
    """The reference's uint8 quantisation: truncate float32(s * 255)."""
    return (s.float() * 255).to(torch.uint8)
