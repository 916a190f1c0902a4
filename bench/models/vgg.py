"""VGG16, WSOL variant (docs/protocol.md, "Backbones"; the CAM VGG of Choe et al. 2020): the 13 convolutions of
VGG16 without batch norm, the last two max-pools (after conv4_3 and conv5_3) removed, then a
new `conv6` (3x3, 512 -> 1024, ReLU) whose output are the CAM features: 1024 x H/8 x W/8.

Parameter names follow torchvision's `vgg16` state dict (`features.<index>.weight/bias` at
indices 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28): removed pools stay in `features` as
parameter-free `nn.Identity` so the indices do not shift. `classifier.*` is dropped from a
checkpoint; `conv6` is new and keeps its initialisation when the checkpoint lacks it.
`VGG16WSOL(kept_pools=4)` is the 14x14 (stride-16) variant, only the last pool removed."""
from __future__ import annotations

import torch
from torch import nn

from bench.models import register_backbone
from bench.models.layout import TorchvisionLayout

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16WSOL(TorchvisionLayout):
    dropped_prefixes = ("classifier.",)
    new_prefixes = ("conv6.",)

    def __init__(self, kept_pools: int = 3, head_channels: int = 1024):
        super().__init__()
        layers: list[nn.Module] = []
        cin, pools = 3, 0
        for v in VGG16:
            if v == "M":
                pools += 1
                layers.append(nn.MaxPool2d(2, 2) if pools <= kept_pools else nn.Identity())
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                cin = v
        self.features = nn.Sequential(*layers)
        self.conv6 = nn.Sequential(nn.Conv2d(cin, head_channels, 3, padding=1), nn.ReLU(inplace=True))
        self.out_channels = head_channels
        self.stride = 2 ** kept_pools
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    @property
    def cam_layer(self) -> nn.Module:
        return self.conv6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv6(self.features(x))


register_backbone("vgg16")(VGG16WSOL)
