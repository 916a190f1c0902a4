from dataclasses import dataclass

import torch

from bench.method import Localization, Method, register_method


@dataclass(frozen=True)
class CenterConfig:
    sigma: float = 0.25  # standard deviation of the Gaussian, as a fraction of the image side


@register_method
class CenterGaussian(Method):
    """Sanity baseline: the same centred Gaussian map for every image (no learning)."""

    name = "center"
    Config = CenterConfig

    def localize(self, images, labels):
        b, _, h, w = images.shape
        ys = torch.linspace(-0.5, 0.5, h, device=images.device).view(h, 1)
        xs = torch.linspace(-0.5, 0.5, w, device=images.device).view(1, w)
        gaussian = torch.exp(-(xs**2 + ys**2) / (2 * self.cfg.sigma**2))
        return Localization(gaussian.expand(b, h, w).contiguous())
