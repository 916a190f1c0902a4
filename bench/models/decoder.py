"""U-Net decoder on a frozen CAM encoder (F-CAM, NEGEV, TCAM, CoLo-CAM).

`EncoderTap` finds the encoder's skip features without knowing layer names: one probe forward
with a hook on every module (nn.Sequential containers expanded) records each output's spatial
size; for every resolution finer than the CAM features, the last module producing it is tapped
(e.g. ResNet50: the stem's ReLU at 1/2, layer1 at 1/4; the features come from layer4 at 1/8).
Only those modules keep a hook afterwards."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bench.models import WSOLNet


def _expanded_modules(module: nn.Module):
    for child in module.children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            yield from _expanded_modules(child)
        else:
            yield child


class EncoderTap:
    """Skip features of a WSOLNet's backbone, coarse to fine, captured during its forward."""

    def __init__(self, model: WSOLNet, probe_size: int):
        seen: list[tuple[nn.Module, tuple[int, int], int]] = []

        def record(mod):
            def hook(_m, _inp, out):
                if isinstance(out, torch.Tensor) and out.dim() == 4:
                    seen.append((mod, tuple(out.shape[-2:]), out.shape[1]))
            return hook

        mods = list(_expanded_modules(model.backbone))
        handles = [m.register_forward_hook(record(m)) for m in mods]
        try:
            was_training = model.training
            model.eval()
            param = next(model.parameters())
            with torch.no_grad():
                feats = model.features(torch.zeros(1, 3, probe_size, probe_size, device=param.device))
            model.train(was_training)
        finally:
            for h in handles:
                h.remove()
        feat_size = tuple(feats.shape[-2:])
        last_at: dict[tuple[int, int], tuple[nn.Module, int]] = {}
        for mod, size, channels in seen:
            last_at[size] = (mod, channels)
        finer = sorted((s for s in last_at if s[0] > feat_size[0]), key=lambda s: s[0])  # coarse -> fine
        self.modules = [last_at[s][0] for s in finer]
        self.skip_channels = [last_at[s][1] for s in finer]
        self.feature_channels = feats.shape[1]
        self._outputs: dict[int, torch.Tensor] = {}
        self._handles = [m.register_forward_hook(self._store(i)) for i, m in enumerate(self.modules)]

    def _store(self, i: int):
        def hook(_m, _inp, out):
            self._outputs[i] = out
        return hook

    def __call__(self, model: WSOLNet, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(CAM features [B,C,h,w], skips coarse -> fine) of one forward of `model`'s backbone."""
        self._outputs.clear()
        feats = model.features(images)
        skips = [self._outputs.pop(i) for i in range(len(self.modules))]
        return feats, skips

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNetDecoder(nn.Module):
    """Stages of (upsample, concatenate the next finer skip, two 3x3 conv-BN-ReLU); stages past
    the last skip upsample by 2 up to the output size; a 1x1 head gives `classes` maps, resized
    bilinearly to the input size."""

    def __init__(self, feature_channels: int, skip_channels: list[int], widths: tuple[int, ...], classes: int = 2):
        super().__init__()
        if not widths:
            raise ValueError("UNetDecoder: widths must not be empty")
        skip_channels = list(skip_channels)[:len(widths)]
        self.n_skips = len(skip_channels)
        stages, cin = [], feature_channels
        for i, width in enumerate(widths):
            extra = skip_channels[i] if i < self.n_skips else 0
            stages.append(_block(cin + extra, width))
            cin = width
        self.stages = nn.ModuleList(stages)
        self.head = nn.Conv2d(cin, classes, 1)

    def forward(self, features: torch.Tensor, skips: list[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        x = features
        for i, stage in enumerate(self.stages):
            if i < self.n_skips:
                skip = skips[i]
                x = torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False),
                               skip.to(x.dtype)], dim=1)
            else:
                size = (min(2 * x.shape[-2], out_size[0]), min(2 * x.shape[-1], out_size[1]))
                if size != tuple(x.shape[-2:]):
                    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            x = stage(x)
        return F.interpolate(self.head(x), size=out_size, mode="bilinear", align_corners=False)
