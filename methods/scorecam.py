from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.cams import capture_activations, class_scores
from bench.method import PostHocCAM, register_method


@dataclass(frozen=True)
class ScoreCAMConfig:
    mask_batch: int = 32  # masked images per forward pass (memory/speed only, not a paper setting)
    # normalise the channel scores with a softmax over channels (the paper's Algorithm 1; it also
    # makes the paper's baseline-image term f(X_b) irrelevant, a softmax being shift invariant);
    # False weighs the maps by the raw class probabilities
    channel_softmax: bool = True


@register_method
class ScoreCAM(PostHocCAM):
    """Score-CAM (Wang et al., CVPR-W 2020): channels weighted by the class score of the image masked by them.

    Each activation map A_k is upsampled to the input size and min-max normalised to a mask
    M_k; its weight is the class probability of image * M_k, softmax-normalised over channels
    (config `channel_softmax`);
    cam = ReLU(sum_k w_k A_k). The B*K masked images go through the model in batches of
    `mask_batch`, without gradients."""

    name = "scorecam"
    Config = ScoreCAMConfig

    def cams(self, model, images, labels):
        with torch.no_grad():
            with capture_activations(model) as store:
                logits = model(images).logits
            acts = store["activations"]
            b, k, h, w = acts.shape
            scores = torch.empty(b * k, device=acts.device, dtype=logits.dtype)
            flat_acts = acts.reshape(b * k, 1, h, w)
            step = max(1, self.cfg.mask_batch)
            for start in range(0, b * k, step):
                idx = torch.arange(start, min(start + step, b * k), device=acts.device)
                masks = F.interpolate(flat_acts[idx], size=images.shape[-2:], mode="bilinear", align_corners=False)
                lo = masks.amin(dim=(2, 3), keepdim=True)
                hi = masks.amax(dim=(2, 3), keepdim=True)
                masks = torch.where(hi > lo, (masks - lo) / (hi - lo).clamp_min(1e-12), torch.zeros_like(masks))
                owner = idx // k
                probs = model(images[owner] * masks).logits.softmax(1)
                scores[idx] = class_scores(probs, labels[owner]).to(scores.dtype)
            weights = scores.view(b, k)
            if self.cfg.channel_softmax:
                weights = weights.softmax(1)
            cam = torch.relu(torch.einsum("bk,bkhw->bhw", weights.to(acts.dtype), acts))
        return cam, logits
