from dataclasses import dataclass

import torch

from bench.cams.gradients import score_cam
from bench.method import PostHocCAM, register_method


@dataclass(frozen=True)
class SSCAMConfig:
    # torchcam 0.5.0's SSCAM defaults (torchcam/methods/activation.py, SSCAM.__init__):
    # num_samples=35, std=2.0 (noise std in mask units: the masks lie in [0, 1])
    n_samples: int = 35
    noise_std: float = 2.0
    mask_batch: int = 32  # masked images per forward pass (memory/speed only)

    def __post_init__(self):
        if self.n_samples < 1:
            raise ValueError(f"SSCAMConfig: n_samples must be >= 1, got {self.n_samples}")
        if self.noise_std < 0:
            raise ValueError(f"SSCAMConfig: noise_std must be >= 0, got {self.noise_std}")


@register_method
class SSCAM(PostHocCAM):
    """SS-CAM (Wang et al., arXiv 2006.14255, 2020): Score-CAM with the channel scores smoothed over noisy masks.

    As Score-CAM, but each upsampled mask M_k gets Gaussian noise N(0, noise_std^2) added (per
    pixel, redrawn for each of the n_samples passes, no clipping: torchcam's SSCAM); the scores
    (logit of the masked image minus the unmasked image's) are averaged over the samples before
    the softmax over channels; cam = ReLU(sum_k w_k A_k)."""

    name = "sscam"
    Config = SSCAMConfig
    # 35 noisy passes of every channel's masked image: ~35x Score-CAM, hours per cell on the CPU
    # budgets; run it by name (--methods sscam)
    in_grid = False
    test_settings = {"n_samples": "2"}

    def cams(self, model, images, labels):
        std = self.cfg.noise_std

        def noisy(mask, sample):
            # drawn in float32 on the global CPU generator, like torchcam's Normal(0, std).sample:
            # the same seed gives the same noise
            return mask + (std * torch.randn(mask.shape)).to(mask.device, mask.dtype)

        return score_cam(model, images, labels, self.cfg.mask_batch, self.cfg.n_samples, noisy)
