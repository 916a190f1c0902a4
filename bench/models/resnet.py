"""ResNet50, WSOL variant (docs/protocol.md, "Backbones"): layer3 and layer4 keep stride 1 (no dilation), so
the CAM features are 2048 x H/8 x W/8 (28x28 at 224). Parameter names follow torchvision's
ResNet-50 state dict (conv1, bn1, layer1..4 of bottlenecks with conv1..3, bn1..3 and
downsample.0/.1), so its checkpoint loads strictly once `fc.*` is dropped. The 3x3 conv of a
bottleneck carries the stride (torchvision's "v1.5")."""
from __future__ import annotations

import torch
from torch import nn

from bench.models import register_backbone
from bench.models.layout import TorchvisionLayout


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + identity)


class ResNet50WSOL(TorchvisionLayout):
    dropped_prefixes = ("fc.",)

    def __init__(self, layers=(3, 4, 6, 3), strides=(1, 2, 1, 1)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = 64
        for i, (blocks, stride, width) in enumerate(zip(layers, strides, (64, 128, 256, 512)), start=1):
            stage = []
            for b in range(blocks):
                stage.append(Bottleneck(cin, width, stride if b == 0 else 1))
                cin = width * Bottleneck.expansion
            setattr(self, f"layer{i}", nn.Sequential(*stage))
        self.out_channels = cin
        self.stride = 4 * strides[0] * strides[1] * strides[2] * strides[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def cam_layer(self) -> nn.Module:
        return self.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


register_backbone("resnet50")(ResNet50WSOL)
