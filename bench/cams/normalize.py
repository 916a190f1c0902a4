"""The one min-max normaliser of CAMs (seeds, temporal pooling, the baselines' maps)."""
from __future__ import annotations

import torch


def minmax(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map of [..., h, w] to [0, 1] (a constant map becomes zeros)."""
    flat = maps.flatten(-2)
    lo = flat.amin(-1, keepdim=True)
    span = flat.amax(-1, keepdim=True) - lo
    out = torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, torch.ones_like(span)),
                      torch.zeros_like(flat))
    return out.view_as(maps)
