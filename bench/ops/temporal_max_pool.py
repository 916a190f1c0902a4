"""CAM-TMP: temporal max-pooling of per-frame CAMs inside a shot (TCAM).

For frame t of clip b the window is the frames at most `n` before t (direction "before"),
after t ("after") or on both sides ("both"), plus t itself, clipped at the first frame whose
shot id differs from t's: a shot boundary is never crossed, even when the same shot id shows
up again later in the clip.

Re-weighting (``reweight_h=h``): each frame s is first mapped to
``r_s = exp(h * cam_s) / max_q exp(h * cam_s(q)) = exp(h * (cam_s - max_q cam_s(q)))``, the
max being taken over the pixels of that frame's *own* map (per map, not over the window), so
every reweighted map lies in (0, 1] with its peak at 1. The pooled value of a pixel is the
largest (reweighted) value over the window; its ``winner`` is that frame's index in [0, T)
(int32; the earliest frame on ties). With ``normalize=True`` each pooled map is then min-max
normalised to [0, 1]; a constant map becomes all zeros (as the WSOL evaluator does).

Edge inputs, the same for the compiled op and the reference: ``cams`` must be finite and
``reweight_h`` finite (a NaN never wins a comparison and an infinite value turns the
re-weighting into NaN, so the winner would depend on how the maximum is searched): both raise
``ValueError``. Maps with no pixel (``H * W == 0``) give empty outputs of the same shape.

Gradients flow to ``cams`` only: through the winning frame of each pixel, and through the
argmax/argmin pixels of the per-map max (re-weighting) and the per-map min/max
(normalisation), first pixel on ties.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from bench._ext import has_op

__all__ = ["DIRECTIONS", "temporal_max_pool", "temporal_max_pool_reference"]

DIRECTIONS = {"before": 0, "after": 1, "both": 2}
_OP = "temporal_max_pool"


def _direction_code(direction: str) -> int:
    if direction not in DIRECTIONS:
        raise ValueError(f"temporal_max_pool: direction must be one of {sorted(DIRECTIONS)}, got {direction!r}")
    return DIRECTIONS[direction]


def _default_shots(cams: Tensor, shot_ids: Optional[Tensor]) -> Tensor:
    if shot_ids is None:
        return torch.zeros(cams.shape[:2], dtype=torch.int64, device=cams.device)
    return shot_ids


def temporal_max_pool(
    cams: Tensor,
    shot_ids: Optional[Tensor] = None,
    n: int = 1,
    direction: str = "before",
    reweight_h: Optional[float] = None,
    normalize: bool = False,
) -> tuple[Tensor, Tensor]:
    """Pool CAMs ``[B, T, H, W]`` (float32/float64) over time within shots.

    ``shot_ids``: ``[B, T]`` int64 shot id of every frame (None: one shot per clip).
    Returns ``(pooled [B, T, H, W] same dtype, winner [B, T, H, W] int32)``. Differentiable
    with respect to ``cams``. See the module docstring for the exact definition.
    """
    code = _direction_code(direction)
    shot_ids = _default_shots(cams, shot_ids)
    reweight = reweight_h is not None
    h = float(reweight_h) if reweight else 0.0
    if has_op(_OP):
        return torch.ops.wsolbench.temporal_max_pool(cams, shot_ids, int(n), code, reweight, h, bool(normalize))
    return temporal_max_pool_reference(cams, shot_ids, n, direction, reweight_h, normalize)


def temporal_max_pool_reference(
    cams: Tensor,
    shot_ids: Optional[Tensor] = None,
    n: int = 1,
    direction: str = "before",
    reweight_h: Optional[float] = None,
    normalize: bool = False,
) -> tuple[Tensor, Tensor]:
    """Pure-torch CAM-TMP, same definition and tie rules as the op (test oracle, fallback)."""
    code = _direction_code(direction)
    if cams.dim() != 4:
        raise RuntimeError(f"temporal_max_pool: cams must be [B, T, H, W], got shape {tuple(cams.shape)}")
    if n < 0:
        raise RuntimeError(f"temporal_max_pool: window n must be >= 0, got {n}")
    if reweight_h is not None and not math.isfinite(reweight_h):
        raise ValueError(f"temporal_max_pool: reweight_h must be finite, got {reweight_h}")
    shot_ids = _default_shots(cams, shot_ids)
    if cams.numel() == 0:
        return torch.empty_like(cams), torch.empty(cams.shape, dtype=torch.int32, device=cams.device)
    if not bool(torch.isfinite(cams).all()):
        raise ValueError("temporal_max_pool: cams must be finite (they hold NaN or infinite values)")
    B, T = cams.shape[:2]
    vals = cams
    if reweight_h is not None:
        peak = cams.flatten(2).amax(-1)[:, :, None, None]
        vals = torch.exp(reweight_h * (cams - peak))
    t = torch.arange(T, device=cams.device)
    lo_d = -n if code != 1 else 0
    hi_d = n if code != 0 else 0
    # Contiguous same-shot validity of every offset d, grown outwards from d = 0.
    valid = {0: torch.ones(B, T, dtype=torch.bool, device=cams.device)}
    for step in (-1, 1):
        bound = lo_d if step < 0 else hi_d
        prev = valid[0]
        for d in range(step, bound + step, step) if bound != 0 else []:
            idx = t + d
            inside = (idx >= 0) & (idx < T)
            src = shot_ids[:, idx.clamp(0, T - 1)]
            prev = prev & inside[None, :] & (src == shot_ids)
            valid[d] = prev
    best = torch.full_like(vals, float("-inf"))
    winner = torch.zeros(cams.shape, dtype=torch.int32, device=cams.device)
    for d in range(lo_d, hi_d + 1):  # increasing frame order: strict '>' keeps the earliest
        idx = (t + d).clamp(0, T - 1)
        cand = vals[:, idx]
        take = valid[d][:, :, None, None] & (cand > best)
        best = torch.where(take, cand, best)
        winner = torch.where(take, idx.to(torch.int32)[None, :, None, None], winner)
    if normalize:
        lo = best.amin(dim=(2, 3), keepdim=True)
        hi = best.amax(dim=(2, 3), keepdim=True)
        span = hi - lo
        pos = span > 0
        best = torch.where(pos, (best - lo) / torch.where(pos, span, torch.ones_like(span)), torch.zeros_like(best))
    return best, winner


if has_op(_OP):

    @torch.library.register_fake("wsolbench::temporal_max_pool")
    def _fake(cams, shot_ids, n, direction, reweight, h, normalize):
        torch._check(cams.dim() == 4, lambda: "temporal_max_pool: cams must be [B, T, H, W]")
        return torch.empty_like(cams), torch.empty_like(cams, dtype=torch.int32)

    @torch.library.register_fake("wsolbench::temporal_max_pool_backward")
    def _fake_backward(grad_out, cams, winner, n, direction, reweight, h, normalize):
        return torch.empty_like(cams)

    def _setup_context(ctx, inputs, output):
        cams, _shots, n, direction, reweight, h, normalize = inputs
        ctx.save_for_backward(cams, output[1])
        ctx.params = (n, direction, reweight, h, normalize)

    def _backward(ctx, grad_out, _grad_winner):
        cams, winner = ctx.saved_tensors
        grad = None
        if ctx.needs_input_grad[0]:
            grad = torch.ops.wsolbench.temporal_max_pool_backward(grad_out.contiguous(), cams, winner, *ctx.params)
        return grad, None, None, None, None, None, None

    torch.library.register_autograd("wsolbench::temporal_max_pool", _backward, setup_context=_setup_context)
