import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bench.transfer import Adaptation, adapt_loop, register_adaptation
from bench.transfer.features import entropy, pooled

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class AdaDSAConfig:
    a: float = 10.0  # steepness of the source -> adapted ramp of the pseudo-labelling mix
    pseudo_weight: float = 0.3  # cross-entropy on the mixed pseudo-labels
    ent_weight: float = 0.3  # mean prediction entropy


class FusedBatchNorm(nn.Module):
    """A BatchNorm whose statistics mix the source's and the target's by one learnable
    alpha in [0, 1] (clamped; initialised at 1, the target's):
        mu = alpha mu_t + (1 - alpha) mu_s
        var = alpha (var_t + (mu_t - mu)^2) + (1 - alpha) (var_s + (mu_s - mu)^2)
    (the variance of the two-component mixture). The affine weight and bias are the source
    BatchNorm's, frozen; alpha is the only parameter that trains."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, t_mean: torch.Tensor, t_var: torch.Tensor):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, device=t_mean.device))
        self.register_buffer("s_mean", bn.running_mean.detach().clone())
        self.register_buffer("s_var", bn.running_var.detach().clone())
        self.register_buffer("t_mean", t_mean.detach().clone())
        self.register_buffer("t_var", t_var.detach().clone())
        self.weight = None if bn.weight is None else nn.Parameter(bn.weight.detach().clone(), requires_grad=False)
        self.bias = None if bn.bias is None else nn.Parameter(bn.bias.detach().clone(), requires_grad=False)
        self.eps = bn.eps

    def stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.alpha.clamp(0.0, 1.0)
        mean = a * self.t_mean + (1 - a) * self.s_mean
        var = a * (self.t_var + (self.t_mean - mean) ** 2) + (1 - a) * (self.s_var + (self.s_mean - mean) ** 2)
        return mean, var

    def forward(self, x):
        # written out: F.batch_norm takes no gradient through its statistics (alpha's path)
        mean, var = self.stats()
        shape = (1, -1) + (1,) * (x.dim() - 2)
        scale = torch.rsqrt(var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self.bias
        return x * scale.view(shape) + shift.view(shape)


@torch.no_grad()
def target_bn_statistics(model, loader, device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per BatchNorm (by module name): the mean and variance of its input over the whole
    target training set (cumulative averages of the batch statistics, the weights frozen)."""
    probe = copy.deepcopy(model).eval()
    bns = {name: m for name, m in probe.named_modules() if isinstance(m, _BN)}
    for m in bns.values():
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts alike
        m.train()
    for batch in loader:
        probe(batch["image"].to(device))
    return {name: (m.running_mean.clone(), m.running_var.clone()) for name, m in bns.items()}


def fuse(model, stats) -> nn.Module:
    """Replace every BatchNorm of `model` (in place) by a `FusedBatchNorm`; freeze everything
    but the alphas."""
    for p in model.parameters():
        p.requires_grad_(False)
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, _BN):
                setattr(module, child_name, FusedBatchNorm(child, *stats[full]))
    return model


@register_adaptation
class AdaDSA(Adaptation):
    """AdaDSA (IEEE TNSRE 2022, "Unsupervised Domain Adaptation by Statistics Alignment for Deep
    Sleep Staging Networks"): every BatchNorm mixes the source statistics with
    the target training set's (estimated once) by a learnable alpha; only the alphas train,
    on cross-entropy with pseudo-labels from a mix of the source model's and the adapted
    model's predictions, (1 - lambda) p_src + lambda p_adapted with lambda = 2 / (1 + e^(-a p))
    - 1 ramping from 0 to 1 over training progress p, plus an entropy term."""

    name = "adadsa"
    Config = AdaDSAConfig

    @classmethod
    def skip(cls, model):
        if not any(isinstance(m, _BN) for m in model.modules()):
            return "the source model has no BatchNorm layer (AdaDSA adapts BatchNorm statistics)"
        return None

    @staticmethod
    def ramp(progress: float, a: float) -> float:
        return min(max(2.0 / (1.0 + math.exp(-a * progress)) - 1.0, 0.0), 1.0)

    def adapt(self, model, target_train, ctx):
        cfg = self.cfg
        source = copy.deepcopy(model).eval()
        for p in source.parameters():
            p.requires_grad_(False)
        stats = target_bn_statistics(model, ctx.loader(target_train, shuffle=False), ctx.device)
        model = fuse(model, stats)
        alphas = [m.alpha for m in model.modules() if isinstance(m, FusedBatchNorm)]

        def step(model, images, index, progress):
            lam = self.ramp(progress, cfg.a)
            _, logits = pooled(model, images)
            with torch.no_grad():
                _, src_logits = pooled(source, images)
                mixed = (1 - lam) * src_logits.softmax(1) + lam * logits.detach().softmax(1)
                pseudo = mixed.argmax(1)
            return {"pseudo": cfg.pseudo_weight * F.cross_entropy(logits, pseudo),
                    "ent": cfg.ent_weight * entropy(logits.softmax(1)).mean()}

        adapt_loop(model, target_train, ctx, step, params=alphas, desc=f"adadsa {ctx.source}->{ctx.target}")
        return model
