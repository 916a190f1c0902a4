import contextlib
import types
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.models.pooling import PRMHead, find_peaks
from bench.method import PooledMapsCAM, register_method


@dataclass(frozen=True)
class PRMConfig:
    # peaks: local maxima in a 3x3 window kept when >= the map's median (the reference's
    # `peak_stimulation(win_size=3, peak_filter=median_filter)`; the survey's `prm_ks` 3)
    window: int = 3
    median_filter: bool = True
    # the map: True, peak backpropagation to the input (the paper's peak response map); False,
    # the class response map itself (what the survey's code evaluates)
    peak_backprop: bool = True

    def __post_init__(self):
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"prm: window must be odd and >= 1, got {self.window}")


class _ExcitationConv(torch.autograd.Function):
    """A convolution whose backward is PRM's top-down probabilistic walk (excitation backprop):
    the signal reaching an output is shared among the inputs in proportion to x' W+ (x' the input
    shifted to be >= 0, W+ the positive weights), P_in = x' * W+^T (P_out / (W+ x')). The forward
    value is the ordinary convolution's."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight)
        ctx.conv = (stride, padding, dilation, groups)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conv
        # per image (the reference shifts by the batch minimum): one image's map does not depend
        # on the others in its batch
        shifted = x - x.flatten(1).amin(1).view(-1, 1, 1, 1)
        pos = weight.clamp_min(0)
        norm = F.conv2d(shifted, pos, None, stride, padding, dilation, groups)
        ratio = torch.where(norm > 1e-10, grad / norm.clamp_min(1e-10), torch.zeros_like(grad))
        back = torch.nn.grad.conv2d_input(x.shape, pos, ratio, stride, padding, dilation, groups)
        return shifted * back, None, None, None, None, None, None


def _excitation_forward(self, x):
    return _ExcitationConv.apply(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


@contextlib.contextmanager
def excitation_convs(model: nn.Module):
    """While active, every Conv2d of `model` back-propagates by `_ExcitationConv` (the reference
    patches the convolutions only; batch norms, ReLUs and poolings keep their gradients)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for m in convs:
        m.forward = types.MethodType(_excitation_forward, m)
    try:
        yield model
    finally:
        for m in convs:
            del m.forward


@register_method
class PRM(PooledMapsCAM):
    """Peak Response Maps (Zhou et al., CVPR 2018): class response maps from a 1x1 conv; in
    training the class score is the mean of the map at its peaks (peak stimulation: gradients
    reach the peaks only). Map: the class's peaks back-propagated to the input image through the
    excitation-backprop convolutions, summed over colour channels, negative part dropped; all the
    peaks of the ground-truth class in one backward pass (their peak response maps summed)."""

    name = "prm"
    Config = PRMConfig

    def make_head(self, in_channels, num_classes):
        return PRMHead(in_channels, num_classes, self.cfg.window, self.cfg.median_filter)

    def cams(self, model, images, labels):
        if not self.cfg.peak_backprop:
            return super().cams(model, images, labels)
        with torch.enable_grad(), excitation_convs(model):
            # the gradient is taken at the normalised input, the image the reference's network reads
            x = ((images - model.mean) / model.std).detach().requires_grad_(True)
            scores, maps = model.pool_head(model.backbone(x))
            crm = maps[torch.arange(len(labels), device=maps.device), labels]  # [B,h,w]
            peaks = find_peaks(crm.detach()[:, None], self.cfg.window, self.cfg.median_filter)[:, 0]
            (grad,) = torch.autograd.grad((crm * peaks).sum(), x)
        return grad.sum(1).clamp_min(0), scores.detach()
