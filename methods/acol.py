from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.cams import minmax
from bench.method import TrainedCAM, register_method
from bench.method.trained import width_for


@dataclass(frozen=True)
class ACoLConfig:
    # the paper's delta: erase where the min-max normalised branch-A map is >= it; 0.7 is
    # wsolevaluation's config.py acol_threshold
    erase_threshold: float = 0.7
    # channels of the branches' two 3x3 convs: wsolevaluation's 1024 (wsol/method/acol.py); None:
    # 1024 scaled by the backbone's decoder_width_scale (1 on the papers' backbones)
    width: int | None = None


class ClassMapBranch(nn.Sequential):
    """An ACoL classifier branch (wsolevaluation's classifier_A / classifier_B): 3x3 conv to
    `width` + ReLU, 3x3 conv + ReLU, 1x1 conv to class maps; logits = their spatial mean."""

    def __init__(self, cin: int, width: int, num_classes: int):
        super().__init__(nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(width, num_classes, 1))


@register_method
class ACoL(TrainedCAM):
    """ACoL (Zhang et al., CVPR 2018): adversarial complementary learning with two classifier branches.

    Two class-map branches (`ClassMapBranch`) on the backbone's features replace the GAP+linear
    head: A on the features, B on the features with A's high region erased (A's class map of
    the ground-truth class, min-max normalised, detached; zero where >= erase_threshold), so B
    must find the complementary parts. Loss CE(A) + CE(B); logits are A's. The erasing is on at
    test too (as in wsolevaluation): the CAM is the pixelwise max of A's map and B's map on the
    erased features, each min-max normalised."""

    name = "acol"
    Config = ACoLConfig

    def build_model(self, ctx):
        model = ctx.new_classifier()
        head = model.classifier
        width = width_for(model, self.cfg.width, 1024)
        for branch in ("acol_a", "acol_b"):
            setattr(model, branch, ClassMapBranch(head.in_features, width, head.out_features)
                    .to(head.weight.device, head.weight.dtype))
        return model

    def erase(self, features: torch.Tensor, class_map: torch.Tensor) -> torch.Tensor:
        keep = minmax(class_map.detach()) < self.cfg.erase_threshold
        return features * keep.unsqueeze(1).to(features.dtype)

    def branches(self, model, images, labels):
        """(class maps of A, class maps of B on the erased features), each [B,C,h,w]."""
        features = model.features(images)
        maps_a = model.acol_a(features)
        pick = labels.view(-1, 1, 1, 1).expand(-1, 1, *maps_a.shape[-2:])
        maps_b = model.acol_b(self.erase(features, maps_a.gather(1, pick)[:, 0]))
        return maps_a, maps_b

    def training_loss(self, model, images, labels):
        maps_a, maps_b = self.branches(model, images, labels)
        return {"ce_a": F.cross_entropy(maps_a.mean(dim=(2, 3)), labels),
                "ce_b": F.cross_entropy(maps_b.mean(dim=(2, 3)), labels)}

    def cams(self, model, images, labels):
        maps_a, maps_b = self.branches(model, images, labels)
        pick = labels.view(-1, 1, 1, 1).expand(-1, 1, *maps_a.shape[-2:])
        a, b = (minmax(m.gather(1, pick)[:, 0]) for m in (maps_a, maps_b))
        return torch.maximum(a, b), maps_a.mean(dim=(2, 3))
