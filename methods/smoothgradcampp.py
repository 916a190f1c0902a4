from dataclasses import dataclass

import torch

from bench.cams import activations_and_grads, gradcampp_weights, weighted_sum
from bench.method import PostHocCAM, register_method


@dataclass(frozen=True)
class SmoothGradCAMppConfig:
    n_samples: int = 25  # noisy copies of each image
    noise_level: float = 0.15  # noise std as a fraction of each image's value range (SmoothGrad's 10-20%)


@register_method
class SmoothGradCAMpp(PostHocCAM):
    """Smooth Grad-CAM++ (Omeiza et al., arXiv 1908.01224, 2019): Grad-CAM++ on SmoothGrad-averaged derivatives.

    The first, second and third derivatives are averaged over `n_samples` copies of the
    image with Gaussian noise (std = noise_level * (max - min) of the image, as in SmoothGrad,
    Smilkov et al. 2017); the activations are those of the clean image."""

    name = "smoothgradcampp"
    requires_grad = True
    Config = SmoothGradCAMppConfig

    def cams(self, model, images, labels):
        acts, _, logits = activations_and_grads(model, images, labels)
        flat = images.flatten(1)
        sigma = (self.cfg.noise_level * (flat.max(1).values - flat.min(1).values)).view(-1, 1, 1, 1)
        g1 = g2 = g3 = 0
        for _ in range(self.cfg.n_samples):  # each sample is one batched forward/backward
            noisy = images + sigma * torch.randn_like(images)
            _, g, _ = activations_and_grads(model, noisy, labels)
            g1, g2, g3 = g1 + g, g2 + g**2, g3 + g**3
        n = max(1, self.cfg.n_samples)
        return weighted_sum(gradcampp_weights(acts, g1 / n, g2 / n, g3 / n), acts), logits
