from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.losses.log_barrier import LogBarrierSchedule, log_barrier, size_constraint
from bench.method import LocalizerConfig, LocalizerMethod, register_method


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
    # The released configuration of Belharbi et al. (IEEE TMI 2022;
    # sbelharbi/deep-wsl-histo-min-max-uncertainty README, glas.yaml): two WILDCAT heads
    # (localizer `mask_head`, classifier `cl32`) with 5 modalities, kmax 0.3, kmin 0, alpha 0.6,
    # dropout 0.1; mask sigmoid(5 (M - sigma)), sigma 0.15 + 0.001 per epoch up to 0.2 (main.py);
    # classifier input scaled by 0.8; background weight lambda 1e-7; log-barrier t from 5,
    # x1.01 per epoch, <= 10.
    modalities: int = 5
    kmax: float = 0.3
    kmin: float = 0.0
    alpha: float = 0.6
    mask_w: float = 5.0
    mask_sigma: float = 0.15  # sigma at epoch 0
    sigma_step: float = 0.001  # added after every epoch (0: fixed sigma)
    sigma_max: float = 0.2
    scale: float = 0.8
    dropout: float = 0.1
    classifier: str = "wildcat"
    # "glas": the GlaS loss below; "camelyon16": the released Camelyon16 loss (deepmil/criteria.py,
    # f_camelyon16): camelyon_loc_weight x CE(localizer scores) + BCE(sigmoid(M+), 0) over the
    # pixels of normal images + a foreground-only size barrier on tumour images, with the mask
    # sigmoid(w M+) (no min-max, no sigma); "auto": camelyon16 on a dataset with a negative
    # class (fully negative images), glas otherwise
    loss_variant: str = "auto"
    camelyon_loc_weight: float = 10.0
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

    def __post_init__(self):
        super().__post_init__()
        if self.loss_variant not in ("auto", "glas", "camelyon16"):
            raise ValueError(f"MaxMinConfig: loss_variant must be auto, glas or camelyon16, got {self.loss_variant!r}")


@register_method
class MaxMin(LocalizerMethod):
    """Max-Min uncertainty (Belharbi et al., IEEE TMI 2022): localizer + classifier on one encoder.

    The classifier must be confident (cross-entropy) on the image the mask keeps and uncertain
    (KL of its prediction to the uniform distribution) on what the mask removes; an extended
    log-barrier keeps either region from vanishing; the localizer head's own class scores get a
    cross-entropy too. Output: the soft mask, and the logits of the masked image."""

    name = "maxmin"
    Config = MaxMinConfig
    dataset = None

    @property
    def variant(self) -> str:
        if self.cfg.loss_variant != "auto":
            return self.cfg.loss_variant
        negative = getattr(self.dataset, "negative_class", None)
        return "camelyon16" if negative is not None else "glas"

    @property
    def with_background(self) -> bool:  # the x- pass is needed by the KL term only
        return bool(self.cfg.kl_weight) and self.variant == "glas"

    def model_options(self, ctx) -> dict:
        return {"normalise_mask": self.variant == "glas"}

    @property
    def logits_from_localizer(self) -> bool:  # the Camelyon16 loss trains no classifier on x+
        return self.variant == "camelyon16"

    def sigma_at(self, epoch: int) -> float:
        c = self.cfg
        if self.variant == "camelyon16":
            return 0.0
        return min(c.sigma_max, c.mask_sigma + c.sigma_step * epoch) if c.sigma_step else c.mask_sigma

    def start_epoch(self, epoch: int) -> None:
        c = self.cfg
        self.t = LogBarrierSchedule(c.t0, c.t_factor, c.t_max).t_at(epoch)
        if getattr(self, "model", None) is not None:
            self.model.sigma = self.sigma_at(epoch)

    def losses(self, out, labels):
        c = self.cfg
        if self.variant == "camelyon16":
            return self.camelyon16_losses(out, labels)
        terms = {"loc_ce": c.loc_weight * F.cross_entropy(out.loc_logits, labels),
                 "fg_ce": c.fg_weight * F.cross_entropy(out.fg_logits, labels)}
        if c.kl_weight:
            terms["bg_kl"] = c.kl_weight * kl_to_uniform(out.bg_logits, c.kl_reverse)
        if c.size_weight:
            terms["size"] = c.size_weight * size_constraint(torch.cat([1 - out.mask, out.mask], 1), self.t)
        return terms

    def camelyon16_losses(self, out, labels):
        c = self.cfg
        normal = labels == self.dataset.negative_class
        up = F.interpolate(out.fg_map[:, None], size=out.mask.shape[-2:], mode="bilinear", align_corners=False)
        per_image = F.binary_cross_entropy_with_logits(up, torch.zeros_like(up), reduction="none").mean(dim=(1, 2, 3))
        weight = normal.to(per_image.dtype)
        terms = {"loc_ce": c.camelyon_loc_weight * F.cross_entropy(out.loc_logits, labels),
                 "normal_bce": (per_image * weight).sum() / weight.sum().clamp(min=1)}
        if c.size_weight:
            tumour = (~normal).to(per_image.dtype)
            fg = log_barrier(-out.mask.sum(dim=(1, 2, 3)), self.t)
            terms["size"] = (fg * tumour).sum() / tumour.sum().clamp(min=1)
        return terms
