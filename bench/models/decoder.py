"""U-Net decoder on a frozen CAM encoder (F-CAM, NEGEV, TCAM, CoLo-CAM).

`EncoderTap` finds the encoder's skip features without knowing layer names: one probe forward
with a hook on every module (nn.Sequential containers expanded) records each output's spatial
size; for every resolution finer than the CAM features, the last module producing it is tapped
(e.g. ResNet50: the stem's ReLU at 1/2, layer1 at 1/4; the features come from layer4 at 1/8).
At the features' own resolution the tap also keeps, deepest first, the last output of each
other channel width (ResNet50: layer3's 1024, then layer2's 512): the skips the papers' U-Net
concatenates in its first stages. Only those modules keep a hook afterwards.

`UNetDecoder` places its stages at the resolutions of the papers' U-Net (the smp-style decoder
of the F-CAM / TCAM / CoLo-CAM code): the last stage at the input's resolution, each earlier
stage one level coarser (a level: a skip's resolution), and the first stages, once the levels
run out, at the features' resolution. On the stride-8 ResNet50 with widths (256, 128, 64, 32,
16): 256 and 128 at 1/8, 64 at 1/4 (+ layer1), 32 at 1/2 (+ stem), 16 at 1/1."""
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
        # at the features' resolution: the last module of each other width, deepest first
        same, widths_seen = [], {feats.shape[1]}
        for mod, size, channels in reversed(seen):
            if size == feat_size and channels not in widths_seen:
                widths_seen.add(channels)
                same.append((mod, channels))
        self.feature_skip_channels = [c for _, c in same]
        self.modules = [m for m, _ in same] + [last_at[s][0] for s in finer]
        self.skip_channels = [last_at[s][1] for s in finer]
        self.feature_channels = feats.shape[1]
        # the decoder's levels finer than the features, coarse -> fine: one per skip, plus the
        # input's own resolution when no skip has it (ResNet50's finest skip is at 1/2)
        self.level_skip_channels = list(self.skip_channels)
        if not finer or finer[-1][0] < probe_size:
            self.level_skip_channels.append(0)
        self._outputs: dict[int, torch.Tensor] = {}
        self._handles = [m.register_forward_hook(self._store(i)) for i, m in enumerate(self.modules)]

    def _store(self, i: int):
        def hook(_m, _inp, out):
            self._outputs[i] = out
        return hook

    def __call__(self, model: WSOLNet, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(CAM features [B,C,h,w], skips) of one forward of `model`'s backbone: the skips at the
        features' resolution (`feature_skip_channels`, deepest first), then the finer ones,
        coarse -> fine."""
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
    """One stage per width: resize to the stage's level, concatenate that level's skip, two 3x3
    conv-BN-ReLU; a head gives `classes` maps at the input's size.

    Levels: `level_skip_channels` lists the levels finer than the features, coarse -> fine, with
    each one's skip channels (0: the input's resolution, no skip). The last stages take the
    levels, finest last; stages before them stay at the features' resolution. With fewer widths
    than levels the coarsest levels go unused.

    `feature_skips="concat"` (the smp U-Net of the F-CAM / TCAM / CoLo-CAM code): the stages at
    the features' resolution concatenate the encoder's outputs there (`feature_skip_channels`,
    deepest first: ResNet50's layer3, then layer2), resizing is nearest-neighbour and the head a
    3x3 convolution. `"reduce"`: a 1x1 reduction of the features to the first width replaces
    those skips (a fraction of the cost), bilinear resizing, a 1x1 head."""

    def __init__(self, feature_channels: int, level_skip_channels: list[int], widths: tuple[int, ...],
                 classes: int = 2, feature_skip_channels: list[int] = (), feature_skips: str = "concat"):
        super().__init__()
        if not widths:
            raise ValueError("UNetDecoder: widths must not be empty")
        if feature_skips not in ("concat", "reduce"):
            raise ValueError(f"UNetDecoder: feature_skips must be 'concat' or 'reduce', got {feature_skips!r}")
        levels = list(level_skip_channels)[-len(widths):]
        # stage i -> index into `levels` (None: at the features' resolution)
        self.stage_levels = [None] * (len(widths) - len(levels)) + list(range(len(levels)))
        self.level_has_skip = [c > 0 for c in levels]
        self.n_feature_skips = len(feature_skip_channels)  # every one is passed in; the first `used` are read
        self.first_skip = len(level_skip_channels) - len(levels)  # skips of unused coarse levels are dropped
        self.concat = feature_skips == "concat"
        self.mode = "nearest" if self.concat else "bilinear"
        used = list(feature_skip_channels)[: len(widths) - len(levels)] if self.concat else []
        self.feature_skips_used = len(used)
        if self.concat:
            self.reduce = nn.Identity()
            cin = feature_channels
        else:
            self.reduce = nn.Sequential(nn.Conv2d(feature_channels, widths[0], 1, bias=False),
                                        nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
            cin = widths[0]
        stages = []
        for i, (width, level) in enumerate(zip(widths, self.stage_levels)):
            extra = levels[level] if level is not None else (used[i] if i < len(used) else 0)
            stages.append(_block(cin + extra, width))
            cin = width
        self.stages = nn.ModuleList(stages)
        self.head = nn.Conv2d(cin, classes, 3, padding=1) if self.concat else nn.Conv2d(cin, classes, 1)

    def forward(self, features: torch.Tensor, skips: list[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        feature_skips = skips[: self.n_feature_skips]
        skips = iter(skips[self.n_feature_skips + self.first_skip:])
        out_size = tuple(out_size)
        x = self.reduce(features)
        for i, (stage, level) in enumerate(zip(self.stages, self.stage_levels)):
            if level is not None:
                if self.level_has_skip[level]:
                    skip = next(skips)
                    x = torch.cat([_resize(x, skip.shape[-2:], self.mode), skip.to(x.dtype)], dim=1)
                else:
                    x = _resize(x, out_size, self.mode)
            elif i < self.feature_skips_used:
                x = torch.cat([x, feature_skips[i].to(x.dtype)], dim=1)
            x = stage(x)
        return _resize(self.head(x), out_size, "bilinear")


def _resize(x: torch.Tensor, size, mode: str = "bilinear") -> torch.Tensor:
    size = tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
