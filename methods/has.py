from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.method import TrainedCAM, register_method


@dataclass(frozen=True)
class HaSConfig:
    # patches per side of the grid: 7 = 32-px patches on 224-px inputs (the paper's HaS-32)
    grid_size: int = 7
    hide_prob: float = 0.5  # probability of hiding each patch (the paper's 0.5)


@register_method
class HideAndSeek(TrainedCAM):
    """Hide-and-Seek (Singh & Lee, ICCV 2017): train on images with random grid patches hidden, then fc-CAM.

    Each training image is split into grid_size x grid_size patches, each hidden with
    probability hide_prob (redrawn every batch) and filled with the mean pixel value (the
    model's input normalisation mean when it has one, so hidden pixels are 0 after it).
    Test images are never hidden."""

    name = "has"
    Config = HaSConfig

    def hide(self, images: torch.Tensor, fill) -> torch.Tensor:
        b, _, h, w = images.shape
        g = self.cfg.grid_size
        hidden = (torch.rand(b, 1, g, g, device=images.device) < self.cfg.hide_prob).to(images.dtype)
        hidden = F.interpolate(hidden, size=(h, w), mode="nearest")
        return images * (1 - hidden) + fill * hidden

    def training_loss(self, model, images, labels):
        fill = getattr(model, "mean", None)
        if fill is None:
            fill = images.mean(dim=(0, 2, 3), keepdim=True)
        return super().training_loss(model, self.hide(images, fill.to(images.dtype)), labels)
