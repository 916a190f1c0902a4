from dataclasses import dataclass

from bench.cams.gradients import score_cam
from bench.method import PostHocCAM, register_method


@dataclass(frozen=True)
class ScoreCAMConfig:
    mask_batch: int = 32  # masked images per forward pass (memory/speed only; torchcam's batch_size 32)


@register_method
class ScoreCAM(PostHocCAM):
    """Score-CAM (Wang et al., CVPR-W 2020): channels weighted by the class score of the image masked by them.

    Each activation map A_k, min-max normalised at the feature resolution and upsampled
    (bilinear) to the image, is a mask M_k; the image's class LOGIT with the normalised image
    multiplied by M_k, minus the logit of the unmasked image (the paper's baseline term), gives
    the channel's score; w = softmax over channels of the scores (the paper's Algorithm 1,
    torchcam's ScoreCAM); cam = ReLU(sum_k w_k A_k). No gradients; the B*K masked images go
    through the model `mask_batch` at a time (`bench.cams.gradients.score_weights`)."""

    name = "scorecam"
    Config = ScoreCAMConfig

    def cams(self, model, images, labels):
        return score_cam(model, images, labels, self.cfg.mask_batch)
