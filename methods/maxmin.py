from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.method import LocalizerConfig, LocalizerMethod, register_method
from bench.losses.log_barrier import LogBarrierSchedule, size_constraint


def kl_to_uniform(logits: torch.Tensor, reverse: bool = False) -> torch.Tensor:
    """Mean over the batch of the KL divergence between the softmax of `logits` [B,C] and the
    uniform distribution u: KL(u || p) = -log C - mean_c log p_c (the released code's direction,
    its "KLUniformLoss", up to the constant and the log base), or KL(p || u) = log C - H(p) with
    `reverse`. Both are 0 exactly at p = u and grow as p becomes confident."""
    if logits.dim() != 2:
        raise ValueError(f"kl_to_uniform: logits must be [B,C], got {list(logits.shape)}")
    log_p = logits.log_softmax(1)
    log_c = torch.log(torch.tensor(float(logits.shape[1]), dtype=log_p.dtype, device=log_p.device))
    if reverse:
        return (log_p.exp() * (log_p + log_c)).sum(1).mean()
    return (-log_c - log_p.mean(1)).mean()


@dataclass(frozen=True)
class MaxMinConfig(LocalizerConfig):
    # The released GlaS configuration of Belharbi et al. (IEEE TMI 2022): WILDCAT head with 5
    # modalities, kmax 0.3, kmin 0, alpha 0.6; mask sigmoid(5 (M - 0.15)); classifier input
    # scaled by 0.8; background weight lambda 1e-7; log-barrier t from 5, x1.01 per epoch, <= 10.
    modalities: int = 5
    kmax: float = 0.3
    kmin: float = 0.0
    alpha: float = 0.6
    mask_w: float = 5.0
    mask_sigma: float = 0.15
    scale: float = 0.8
    loc_weight: float = 1.0  # CE of the localizer head's own class scores (0: off)
    fg_weight: float = 1.0  # CE of the classifier on the foreground image x+
    kl_weight: float = 1e-7  # KL of the background prediction to uniform (0: off)
    kl_reverse: bool = False  # False: KL(u || p), the released code's; True: KL(p || u)
    # The released loss sums the two regions' barriers per image; `size_constraint` averages
    # them, hence 2 for the same weight. 0 switches the size constraint off.
    size_weight: float = 2.0
    t0: float = 5.0
    t_factor: float = 1.01
    t_max: float = 10.0


@register_method
class MaxMin(LocalizerMethod):
    """Max-Min uncertainty (Belharbi et al., IEEE TMI 2022): localizer + classifier on one encoder.

    The classifier must be confident (cross-entropy) on the image the mask keeps and uncertain
    (KL of its prediction to the uniform distribution) on what the mask removes; an extended
    log-barrier keeps either region from vanishing; the localizer head's own class scores get a
    cross-entropy too. Output: the soft mask, and the logits of the masked image."""

    name = "maxmin"
    Config = MaxMinConfig

    @property
    def with_background(self) -> bool:  # the x- pass is needed by the KL term only
        return bool(self.cfg.kl_weight)

    def start_epoch(self, epoch: int) -> None:
        c = self.cfg
        self.t = LogBarrierSchedule(c.t0, c.t_factor, c.t_max).t_at(epoch)

    def losses(self, out, labels):
        c = self.cfg
        terms = {"loc_ce": c.loc_weight * F.cross_entropy(out.loc_logits, labels),
                 "fg_ce": c.fg_weight * F.cross_entropy(out.fg_logits, labels)}
        if c.kl_weight:
            terms["bg_kl"] = c.kl_weight * kl_to_uniform(out.bg_logits, c.kl_reverse)
        if c.size_weight:
            terms["size"] = c.size_weight * size_constraint(torch.cat([1 - out.mask, out.mask], 1), self.t)
        return terms
