from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.cams import minmax
from bench.method import TrainedCAM, register_method


@dataclass(frozen=True)
class ACoLConfig:
    # the paper's delta: erase where the min-max normalised branch-A CAM exceeds it; 0.7 is the
    # default of the re-implementation in Choe et al. (CVPR 2020, "Evaluating WSOL right")
    erase_threshold: float = 0.7


class GAPLinear(nn.Linear):
    """A classifier branch on feature maps: global average pooling + linear (a 1x1-conv CAM head)."""

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return super().forward(maps.mean(dim=(2, 3)))

    def cam(self, features, classes):
        return torch.einsum("bc,bchw->bhw", self.weight[classes], features)


@register_method
class ACoL(TrainedCAM):
    """ACoL (Zhang et al., CVPR 2018): adversarial complementary learning with two classifier branches.

    Branch A is the classifier's own head; branch B (`model.acol_branch`) sees the features
    with branch A's high-CAM region (ground-truth class, min-max normalised, > threshold)
    erased, so it must find the complementary object parts. Both branches are trained with
    cross-entropy; the CAM is the pixelwise max of the two branches' normalised maps; the
    logits are branch A's. Simplified: each branch is GAP + linear on the shared features
    (the paper's branches add conv layers)."""

    name = "acol"
    Config = ACoLConfig

    def build_model(self, ctx):
        model = ctx.new_classifier()
        head = model.classifier
        model.acol_branch = GAPLinear(head.in_features, head.out_features).to(head.weight.device, head.weight.dtype)
        return model

    def erase(self, features: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
        keep = minmax(cam.detach()) <= self.cfg.erase_threshold
        return features * keep.unsqueeze(1).to(features.dtype)

    def training_loss(self, model, images, labels):
        out = model(images)
        erased = self.erase(out.features, model.cam(out.features, labels))
        return {"ce_a": F.cross_entropy(out.logits, labels),
                "ce_b": F.cross_entropy(model.acol_branch(erased), labels)}

    def cams(self, model, images, labels):
        out = model(images)
        a = minmax(model.cam(out.features, labels))
        b = minmax(model.acol_branch.cam(out.features, labels))
        return torch.maximum(a, b), out.logits
