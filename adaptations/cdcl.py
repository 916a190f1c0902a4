from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.transfer import Adaptation, adapt_loop, freeze_hypothesis, register_adaptation
from bench.transfer.features import anchor_clustering, pooled


@dataclass(frozen=True)
class CDCLConfig:
    tau: float = 0.05  # temperature of the contrast
    weight: float = 0.01  # weight of the contrastive loss
    keep_fraction: float = 1.0  # per pseudo-class, the fraction nearest to its centre trained on
    min_per_class: int = 5  # a pseudo-class with fewer kept images is left out


@register_adaptation
class CDCL(Adaptation):
    """CDCL, source-free form (Wang et al., IEEE TMM, arXiv 2106.05528): the frozen classifier's weights are
    the source class prototypes; target pseudo-labels come from spherical k-means started at
    them; the encoder is trained with an InfoNCE contrast pulling each target feature to its
    pseudo-class prototype and away from the others."""

    name = "cdcl"
    Config = CDCLConfig

    @staticmethod
    def contrast(feats: torch.Tensor, prototypes: torch.Tensor, labels: torch.Tensor, tau: float) -> torch.Tensor:
        """Mean over rows of -log softmax(cos(f, w_c) / tau)[label]."""
        logits = F.normalize(feats, dim=1) @ F.normalize(prototypes, dim=1).T / tau
        return F.cross_entropy(logits, labels)

    def adapt(self, model, target_train, ctx):
        cfg = self.cfg
        freeze_hypothesis(model)
        eval_loader = ctx.loader(target_train, shuffle=False)
        state = {}

        def refresh(epoch):
            _, labels, kept = anchor_clustering(model, eval_loader, len(target_train), ctx.device,
                                                cfg.keep_fraction, cfg.min_per_class)
            state["labels"], state["kept"] = labels, kept

        def step(model, images, index, progress):
            kept = state["kept"][index]
            if not kept.any():
                return torch.zeros((), device=images.device)
            feats, _ = pooled(model, images[kept])
            prototypes = model.classifier.weight.detach()
            return cfg.weight * self.contrast(feats, prototypes, state["labels"][index][kept], cfg.tau)

        adapt_loop(model, target_train, ctx, step, before_epoch=refresh, desc=f"cdcl {ctx.source}->{ctx.target}")
        return model
