from dataclasses import dataclass

from bench.cams.gradients import score_cam
from bench.method import PostHocCAM, register_method


@dataclass(frozen=True)
class ISCAMConfig:
    # torchcam 0.5.0's ISCAM default (torchcam/methods/activation.py, ISCAM.__init__): num_samples=10
    n_samples: int = 10
    mask_batch: int = 32  # masked images per forward pass (memory/speed only)

    def __post_init__(self):
        if self.n_samples < 1:
            raise ValueError(f"ISCAMConfig: n_samples must be >= 1, got {self.n_samples}")


@register_method
class ISCAM(PostHocCAM):
    """IS-CAM (Naidu et al., arXiv 2010.03023, 2020): Score-CAM with the channel scores integrated over mask scales.

    As Score-CAM, but the masked (normalised) image is scaled by c_i = sum_{j<=i} j/N for
    i = 1..N (N = n_samples; torchcam's ISCAM: 0.1, 0.3, ..., 5.5 for N = 10); the scores
    (logit minus the unmasked image's) are averaged over the N steps before the softmax
    over channels; cam = ReLU(sum_k w_k A_k)."""

    name = "iscam"
    Config = ISCAMConfig
    # 10 passes of every channel's masked image: ~10x Score-CAM, about an hour per dataset's three
    # seeds on the CPU budgets; run it by name (--methods iscam)
    in_grid = False
    test_settings = {"n_samples": "2"}

    def cams(self, model, images, labels):
        n = self.cfg.n_samples
        coeffs = [sum(j / n for j in range(1, i + 2)) for i in range(n)]

        def scaled(mask, sample):
            return coeffs[sample] * mask

        return score_cam(model, images, labels, self.cfg.mask_batch, n, scaled)
