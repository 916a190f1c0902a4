from dataclasses import dataclass

import torch

from bench.method import TrainedCAM, cam_layer_transform, register_method


@dataclass(frozen=True)
class ADLConfig:
    # probability of the drop mask (else the importance map) and the drop threshold gamma as a
    # fraction of the attention maximum: 0.75 / 0.9, the defaults of Choe et al. (CVPR 2020)
    # (the ADL paper tunes gamma per backbone, 0.8-0.9)
    drop_rate: float = 0.75
    gamma: float = 0.9


@register_method
class ADL(TrainedCAM):
    """Attention-based Dropout Layer (Choe & Shim, CVPR 2019): drop the most-attended region while training, then fc-CAM.

    Applied on the output of `model.cam_layer` during training only (identity in eval).
    Self-attention = channel mean; with probability drop_rate (one draw per forward pass)
    the features are multiplied by the drop mask (0 where attention > gamma * its per-image
    maximum, 1 elsewhere), otherwise by the importance map sigmoid(attention).
    Simplified: one ADL at the CAM layer (the paper inserts several in the backbone)."""

    name = "adl"
    Config = ADLConfig

    def adl(self, features: torch.Tensor) -> torch.Tensor:
        attention = features.mean(dim=1, keepdim=True)
        if float(torch.rand(())) < self.cfg.drop_rate:
            peak = attention.flatten(1).max(1).values.view(-1, 1, 1, 1)
            return features * (attention <= self.cfg.gamma * peak).to(features.dtype)
        return features * torch.sigmoid(attention)

    def training_context(self, model):
        return cam_layer_transform(model, self.adl)
