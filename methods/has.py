from dataclasses import dataclass

import torch

from bench.method import TrainedCAM, register_method


@dataclass(frozen=True)
class HaSConfig:
    # the side of each hidden patch in pixels and the probability of hiding it: wsolevaluation's
    # config.py has_grid_size 4, has_drop_rate 0.5 (wsol/method/has.py steps its loops by
    # grid_size pixels). The HaS paper's ImageNet runs used 16-56 px patches (HaS-32: 32).
    grid_size: int = 4
    hide_prob: float = 0.5

    def __post_init__(self):
        if self.grid_size < 0:
            raise ValueError(f"HaSConfig: grid_size must be >= 0 (0: no hiding), got {self.grid_size}")


@register_method
class HideAndSeek(TrainedCAM):
    """Hide-and-Seek (Singh & Lee, ICCV 2017): train on images with random grid patches hidden, then fc-CAM.

    Each training image is cut into grid_size x grid_size-pixel patches from its top-left
    corner (the last row/column may be narrower), each hidden with probability hide_prob
    (redrawn per image and batch) and filled with the model's input normalisation mean (0
    after normalisation, as the reference zeroes the normalised image). grid_size 0: no
    hiding. Test images are never hidden."""

    name = "has"
    Config = HaSConfig

    def hide(self, images: torch.Tensor, fill) -> torch.Tensor:
        g = self.cfg.grid_size
        if g == 0:
            return images
        b, _, h, w = images.shape
        cells = (torch.rand(b, 1, -(-h // g), -(-w // g), device=images.device) < self.cfg.hide_prob)
        hidden = cells.to(images.dtype).repeat_interleave(g, 2).repeat_interleave(g, 3)[:, :, :h, :w]
        return images * (1 - hidden) + fill * hidden

    def training_loss(self, model, images, labels):
        fill = getattr(model, "mean", None)
        if fill is None:
            fill = images.mean(dim=(0, 2, 3), keepdim=True)
        return super().training_loss(model, self.hide(images, fill.to(images.dtype)), labels)
