"""Extended log-barrier (Kervadec et al., 2019) and the size constraint built on it.

For a constraint z <= 0 and a temperature t > 0:

    psi_t(z) = -(1/t) log(-z)                         if z <= -1/t^2
             = t z - (1/t) log(1/t^2) + 1/t           otherwise

Both branches and their first derivatives agree at z = -1/t^2, so the loss is C^1 and, unlike a
plain log-barrier, defined (linear) for infeasible z > 0. t grows during training (the schedule
below), which tightens the barrier toward the hard constraint."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def log_barrier(z: torch.Tensor, t: float) -> torch.Tensor:
    """psi_t(z) elementwise."""
    if t <= 0:
        raise ValueError(f"log_barrier: t must be positive, got {t}")
    junction = -1.0 / t**2
    inside = z <= junction
    # clamp so that the unused branch never produces log of a non-positive number (NaN gradients)
    barrier = -torch.log(torch.clamp(-z, min=-junction)) / t
    linear = t * z - math.log(1.0 / t**2) / t + 1.0 / t
    return torch.where(inside, barrier, linear)


@dataclass(frozen=True)
class LogBarrierSchedule:
    """t starts at t0 and is multiplied by `factor` after every epoch, up to t_max (the papers' 1, 1.01, 10)."""

    t0: float = 1.0
    factor: float = 1.01
    t_max: float = 10.0

    def t_at(self, epoch: int) -> float:
        return min(self.t0 * self.factor**epoch, self.t_max)


def size_constraint(probs: torch.Tensor, t: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Size constraint of F-CAM / NEGEV: for each image and each region r in {background, foreground}
    (channels 0 and 1 of `probs` [B,2,H,W]), psi_t(-sum_p S_r(p)), which keeps either region from
    vanishing. `mask` [B] (bool) selects the images it applies to (e.g. NEGEV skips fully negative
    images); the mean is over the selected images and both regions, 0 when none is selected."""
    if probs.dim() != 4 or probs.shape[1] != 2:
        raise ValueError(f"size_constraint: probs must be [B,2,H,W], got {list(probs.shape)}")
    z = -probs.sum(dim=(2, 3))  # [B, 2]
    per_image = log_barrier(z, t).mean(dim=1)
    if mask is None:
        return per_image.mean()
    weight = mask.to(per_image.dtype)  # weighted, not indexed: no host synchronisation per step
    return (per_image * weight).sum() / weight.sum().clamp(min=1)
