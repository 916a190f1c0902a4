from bench.cams import activations_and_grads, weighted_sum
from bench.method import PostHocCAM, register_method


@register_method
class LayerCAM(PostHocCAM):
    """LayerCAM (Jiang et al., IEEE TIP 2021): every activation weighted by its own positive gradient.

    cam = ReLU(sum_k ReLU(d y_c / d A_k(ij)) A_k(ij)), read at `model.cam_layer`."""

    name = "layercam"
    tasks = ("image", "video")  # video: frame-wise
    requires_grad = True

    def cams(self, model, images, labels):
        acts, grads, logits = activations_and_grads(model, images, labels)
        return weighted_sum(grads.clamp_min(0), acts), logits
