from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.method import LocalizerConfig, LocalizerMethod, register_method


def relevant_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The term that makes the conditional entropy low on the relevant region: the cross-entropy
    of the prediction with the image label (0 for a confident right answer, log C for a uniform
    one, large for a confident wrong one), which bounds the prediction's entropy from above."""
    return F.cross_entropy(logits, labels)


def irrelevant_entropy(logits: torch.Tensor) -> torch.Tensor:
    """The term that makes the conditional entropy high on the irrelevant region: the
    cross-entropy between the uniform distribution and the prediction, -mean_c log p_c. Its
    minimum, log C, is reached exactly at the uniform prediction (maximal entropy); it grows
    without bound as the prediction becomes confident in any class."""
    if logits.dim() != 2:
        raise ValueError(f"irrelevant_entropy: logits must be [B,C], got {list(logits.shape)}")
    return -logits.log_softmax(1).mean(1).mean()


@dataclass(frozen=True)
class MinMaxEntConfig(LocalizerConfig):
    # The released GlaS configuration of Belharbi et al. ("Min-max entropy for weakly supervised
    # pointwise localization", 2019; sbelharbi/wsol-min-max-entropy-interpretability,
    # config_yaml/glas-no-erasing.yaml): two WILDCAT heads (localizer `headseg`, classifier
    # `cl32`) with 5 modalities, kmax = kmin = 0.09, alpha 0, dropout 0.75; mask
    # sigmoid(8 (M - 0.5)), detached (deepmil/models.py, segment); classifier input scaled by
    # 0.5; the three terms weighted 1; no recursive erasing (nbr_times_erase 0).
    modalities: int = 5
    kmax: float = 0.09
    kmin: float = 0.09
    alpha: float = 0.0
    mask_w: float = 8.0
    mask_sigma: float = 0.5
    scale: float = 0.5
    dropout: float = 0.75
    classifier: str = "wildcat"
    # the released code detaches the mask: x+ / x- train the encoder and the classifier head,
    # not the localizer head (False: the mask is differentiable, our former setting)
    detach_mask: bool = True
    loc_weight: float = 1.0  # CE of the localizer head's own class scores (0: off)
    relevant_weight: float = 1.0  # low entropy on the relevant region x+
    irrelevant_weight: float = 1.0  # high entropy on the irrelevant region x- (0: off)


@register_method
class MinMaxEntropy(LocalizerMethod):
    """Min-Max entropy (Belharbi et al., 2019): localizer + classifier on one encoder.

    The localizer splits the image into a relevant region, where the classifier's conditional
    entropy must be low, and an irrelevant one, where it must be high. The mask is detached as
    in the released code (`detach_mask`). Recursive erasing (the paper's optional extension,
    off in the no-erasing configuration that these defaults follow) is not implemented.
    Output: the soft mask, and the logits of the masked image."""

    name = "minmaxent"
    Config = MinMaxEntConfig

    def model_options(self, ctx) -> dict:
        return {"detach_mask": self.cfg.detach_mask}

    @property
    def with_background(self) -> bool:  # the x- pass is needed by the irrelevant term only
        return bool(self.cfg.irrelevant_weight)

    def losses(self, out, labels):
        c = self.cfg
        terms = {"loc_ce": c.loc_weight * F.cross_entropy(out.loc_logits, labels),
                 "relevant": c.relevant_weight * relevant_entropy(out.fg_logits, labels)}
        if c.irrelevant_weight:
            terms["irrelevant"] = c.irrelevant_weight * irrelevant_entropy(out.bg_logits)
        return terms
