from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.cams import minmax
from bench.method import TrainedCAM, register_method


@dataclass(frozen=True)
class SPGConfig:
    # delta_h / delta_l on the classifier's own normalised CAM: above delta_h a foreground seed,
    # below delta_l a background seed. 0.7 / 0.01 are the thresholds that Choe et al. (CVPR 2020)
    # apply to the classifier's attention map in their SPG re-implementation.
    fg_threshold: float = 0.7
    bg_threshold: float = 0.01
    aux_weight: float = 1.0  # weight of the pixel-level guidance loss


@register_method
class SPG(TrainedCAM):
    """SPG (Zhang et al., ECCV 2018): self-produced guidance from the model's own CAM, simplified.

    Simplified version: the classifier's own fc-CAM of the ground-truth class (detached,
    min-max normalised) is thresholded into confident foreground (> fg_threshold) and
    background (< bg_threshold) seeds; the uncertain middle band is ignored. A 1x1-conv
    pixel head (`model.spg_head`) on the CAM features is trained on the seeds with binary
    cross-entropy, added to the classification loss; the shared features thus learn the
    object extent. The paper's stacked guidance branches on several layers are not built."""

    name = "spg"
    Config = SPGConfig

    def build_model(self, ctx):
        model = ctx.new_classifier()
        head = model.classifier
        model.spg_head = nn.Conv2d(head.in_features, 1, 1).to(head.weight.device, head.weight.dtype)
        return model

    def seeds(self, cam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(target [B,h,w] with 1 on foreground seeds and 0 elsewhere, valid [B,h,w] bool: the seeds)."""
        norm = minmax(cam.detach())
        fg = norm > self.cfg.fg_threshold
        bg = norm < self.cfg.bg_threshold
        return fg.to(cam.dtype), fg | bg

    def guidance_loss(self, pixel_logits, target, valid):
        loss = F.binary_cross_entropy_with_logits(pixel_logits, target, reduction="none")
        return (loss * valid.to(loss.dtype)).sum() / valid.sum().clamp_min(1)

    def training_loss(self, model, images, labels):
        out = model(images)
        target, valid = self.seeds(model.cam(out.features, labels))
        aux = self.guidance_loss(model.spg_head(out.features)[:, 0], target, valid)
        return {"ce": F.cross_entropy(out.logits, labels), "guidance": self.cfg.aux_weight * aux}
