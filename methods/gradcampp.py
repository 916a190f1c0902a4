from bench.cams import activations_and_grads, gradcampp_weights, weighted_sum
from bench.method import PostHocCAM, register_method


@register_method
class GradCAMpp(PostHocCAM):
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018): pixel-weighted positive gradients per channel.

    With the exponential of the class score, the higher derivatives are powers of the first."""

    name = "gradcampp"
    requires_grad = True

    def cams(self, model, images, labels):
        acts, grads, logits = activations_and_grads(model, images, labels)
        return weighted_sum(gradcampp_weights(acts, grads, grads**2, grads**3), acts), logits
