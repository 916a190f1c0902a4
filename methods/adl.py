from dataclasses import dataclass

import torch

from bench.method import TrainedCAM, register_method
from bench.method.trained import backbone_layers, layer_transforms

# Where the ADLs go, per backbone (dotted paths in the backbone), after wsolevaluation's
# wsol/vgg.py (`adl` config), wsol/resnet.py (`_ADL_POSITION`) and wsol/inception.py:
# VGG16: after pool3, after conv4_3 (its ReLU), after conv5_3 (its ReLU; before conv6);
# ResNet50: after layer3 block 0, layer4 block 0 and layer4 block 2;
# InceptionV3: after Mixed_5d, after Mixed_6e and after the head conv before the class scores
# (the reference's SPG_A3_2b; ours is the CAM layer). small-cnn is not a reference backbone:
# by VGG's pattern, before its last stage (after the second downsampling conv) and after its
# last two convs.
ADL_POSITIONS = {
    "VGG16WSOL": ("features.16", "features.22", "features.29"),
    "ResNet50WSOL": ("layer3.0", "layer4.0", "layer4.2"),
    "InceptionV3WSOL": ("Mixed_5d", "Mixed_6e", "Conv2d_6a_3x3"),
    "SmallCNN": ("body.1", "body.2", "body.3"),
}


@dataclass(frozen=True)
class ADLConfig:
    # probability of the drop mask (else the importance map) and the drop threshold gamma as a
    # fraction of the attention maximum: wsolevaluation's config.py adl_drop_rate 0.75,
    # adl_threshold 0.9 (the ADL paper tunes gamma per backbone, 0.8-0.9)
    drop_rate: float = 0.75
    gamma: float = 0.9
    # "reference": the ADL positions of wsolevaluation per backbone (ADL_POSITIONS);
    # "cam_layer": a single ADL on the CAM layer's output (this benchmark's former setting)
    positions: str = "reference"

    def __post_init__(self):
        if self.positions not in ("reference", "cam_layer"):
            raise ValueError(f"ADLConfig: positions must be 'reference' or 'cam_layer', got {self.positions!r}")


@register_method
class ADL(TrainedCAM):
    """Attention-based Dropout Layer (Choe & Shim, CVPR 2019): drop the most-attended region while training, then fc-CAM.

    An ADL after each of the backbone's reference positions (`ADL_POSITIONS`), in training only
    (identity in eval). Self-attention = channel mean; with probability drop_rate (one draw per
    ADL per forward pass, shared by the batch) the features are multiplied by the drop mask
    (0 where attention >= gamma * its per-image maximum, 1 elsewhere), otherwise by the
    importance map sigmoid(attention)."""

    name = "adl"
    Config = ADLConfig

    def adl(self, features: torch.Tensor) -> torch.Tensor:
        attention = features.mean(dim=1, keepdim=True)
        if float(torch.rand(())) < self.cfg.drop_rate:
            peak = attention.flatten(1).max(1).values.view(-1, 1, 1, 1)
            return features * (attention < self.cfg.gamma * peak).to(features.dtype)
        return features * torch.sigmoid(attention)

    def positions(self, model):
        if self.cfg.positions == "cam_layer":
            return [model.cam_layer]
        return backbone_layers(model, ADL_POSITIONS, self.name)

    def training_context(self, model):
        return layer_transforms(self.positions(model), self.adl)
