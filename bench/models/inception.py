"""InceptionV3, WSOL variant (docs/protocol.md, "Backbones"), simplified: CAM features 1024 x H/8 x W/8.

Kept from torchvision's `inception_v3` with the same parameter names (so its checkpoint loads
strictly once `fc.*` and `AuxLogits.*` are dropped): the stem Conv2d_1a_3x3 .. Conv2d_4a_3x3,
Mixed_5b/5c/5d (Inception-A), Mixed_6a (the grid reduction) and Mixed_6b..6e (Inception-C);
every conv is a `BasicConv2d` (`conv` without bias + `bn`, eps 0.001).

What differs from torchvision, in the spirit of the WSOL variants (the large-feature-map CAM
network of Choe et al. 2020 and its SPG/ADL ancestors; not checked layer by layer against
their code): Mixed_6a has stride 1 (padding 1) instead of 2;
Mixed_7a/7b/7c are not used (their keys in a checkpoint are dropped too); a new
`Conv2d_6a_3x3` (BasicConv2d 768 -> 1024, 3x3) gives the CAM features. Simplification: the stem
convolutions and its two max-pools are padded ("same") so that the map is exactly H/8 x W/8
for any input (torchvision's unpadded stem gives 35x35 at 299 px and a smaller-than-H/8 map;
the reference WSOL code pads some of them, with ceil-mode pools); padding changes no
parameter shape."""
from __future__ import annotations

import torch
from torch import nn

from bench.models import register_backbone
from bench.models.layout import TorchvisionLayout


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.avg_pool2d(x, 3, stride=1, padding=1)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg_pool(x))], 1)


class InceptionB(nn.Module):
    """Grid reduction (Mixed_6a); `stride=1, padding=1` in the WSOL variant."""

    def __init__(self, cin: int, stride: int = 2, padding: int = 0):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=stride, padding=padding)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=stride, padding=padding)
        self.pool = nn.MaxPool2d(3, stride=stride, padding=padding)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.pool(x)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool(x))], 1)


class InceptionV3WSOL(TorchvisionLayout):
    dropped_prefixes = ("fc.", "AuxLogits.", "Mixed_7a.", "Mixed_7b.", "Mixed_7c.")
    new_prefixes = ("Conv2d_6a_3x3.",)

    def __init__(self, head_channels: int = 1024):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2, padding=1)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3, padding=1)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, padding=1)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288, stride=1, padding=1)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Conv2d_6a_3x3 = BasicConv2d(768, head_channels, 3, padding=1)
        self.out_channels = head_channels
        self.stride = 8
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.1, a=-2, b=2)

    @property
    def cam_layer(self) -> nn.Module:
        return self.Conv2d_6a_3x3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool1(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))))
        x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e):
            x = block(x)
        return self.Conv2d_6a_3x3(x)


register_backbone("inceptionv3")(InceptionV3WSOL)
