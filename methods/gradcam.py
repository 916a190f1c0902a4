from bench.cams import activations_and_grads, weighted_sum
from bench.method import PostHocCAM, register_method


@register_method
class GradCAM(PostHocCAM):
    """Grad-CAM (Selvaraju et al., ICCV 2017): channels weighted by their spatially averaged gradients.

    cam = ReLU(sum_k mean_ij(d y_c / d A_k(ij)) A_k)."""

    name = "gradcam"
    requires_grad = True

    def cams(self, model, images, labels):
        acts, grads, logits = activations_and_grads(model, images, labels)
        return weighted_sum(grads.mean(dim=(2, 3)), acts), logits
