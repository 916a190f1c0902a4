from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.method import TrainedCAM, register_method


@dataclass(frozen=True)
class CutMixConfig:
    # Beta(alpha, alpha) of the mixing ratio and the probability of mixing a batch: the paper's
    # ImageNet setting (alpha 1, every batch), also Choe et al.'s (CVPR 2020) defaults
    alpha: float = 1.0
    prob: float = 1.0


@register_method
class CutMix(TrainedCAM):
    """CutMix (Yun et al., ICCV 2019): paste a box from another image, mix the labels by area, then fc-CAM.

    Per batch (with probability prob): lambda ~ Beta(alpha, alpha), a box of area
    (1 - lambda) HW at a uniform centre (clipped to the image) is copied from a permuted
    batch; lambda is recomputed from the clipped area; the loss is
    lambda CE(y) + (1 - lambda) CE(y_perm)."""

    name = "cutmix"
    Config = CutMixConfig

    def mix(self, images: torch.Tensor, labels: torch.Tensor):
        """(mixed images, labels, pasted labels, lambda = fraction of each image kept)."""
        if float(torch.rand(())) >= self.cfg.prob:
            return images, labels, labels, 1.0
        b, _, h, w = images.shape
        lam = float(torch.distributions.Beta(self.cfg.alpha, self.cfg.alpha).sample())
        perm = torch.randperm(b, device=images.device)
        ratio = (1.0 - lam) ** 0.5
        ch, cw = int(h * ratio), int(w * ratio)
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, h)
        x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, w)
        mixed = images.clone()
        mixed[:, :, y1:y2, x1:x2] = images[perm, :, y1:y2, x1:x2]
        lam = 1.0 - (y2 - y1) * (x2 - x1) / (h * w)
        return mixed, labels, labels[perm], lam

    def training_loss(self, model, images, labels):
        mixed, ya, yb, lam = self.mix(images, labels)
        logits = model(mixed).logits
        return lam * F.cross_entropy(logits, ya) + (1.0 - lam) * F.cross_entropy(logits, yb)
