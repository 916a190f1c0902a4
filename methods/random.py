from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.method import Localization, Method, register_method


@dataclass(frozen=True)
class RandomConfig:
    grid: int = 7  # random values on a grid x grid lattice, upsampled bilinearly (blob-like maps)


@register_method
class RandomMap(Method):
    """Sanity baseline: smooth random maps, drawn from a generator seeded by the cell's seed."""

    name = "random"
    Config = RandomConfig

    def fit(self, train, val, ctx):
        self.generator = torch.Generator().manual_seed(ctx.seed)

    def localize(self, images, labels):
        b, _, h, w = images.shape
        coarse = torch.rand(b, 1, self.cfg.grid, self.cfg.grid, generator=self.generator)
        maps = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        return Localization(maps.to(images.device))
