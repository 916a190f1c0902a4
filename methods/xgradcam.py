import torch

from bench.cams import activations_and_grads, weighted_sum
from bench.method import PostHocCAM, register_method


@register_method
class XGradCAM(PostHocCAM):
    """XGrad-CAM (Fu et al., BMVC 2020): gradients averaged with the channel's own normalised activations as weights.

    w_k = sum_ij (A_k(ij) / sum_ij A_k) d y_c / d A_k(ij); cam = ReLU(sum_k w_k A_k)."""

    name = "xgradcam"
    requires_grad = True

    def cams(self, model, images, labels):
        acts, grads, logits = activations_and_grads(model, images, labels)
        total = acts.sum(dim=(2, 3), keepdim=True)
        share = acts / torch.where(total != 0, total, torch.ones_like(total))
        return weighted_sum((share * grads).sum(dim=(2, 3)), acts), logits
