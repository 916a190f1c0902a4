from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.transfer import Adaptation, adapt_loop, register_adaptation
from bench.transfer.features import collect, entropy, pooled


@dataclass(frozen=True)
class SFDADePConfig:
    select_ratio: float = 0.15  # of the images predicted as an over-predicted class, the most uncertain share
    resample_every: int = 2  # epochs between two selections
    forget_weight: float = 1.0  # confidence suppression of the selected images' predicted class
    retain_weight: float = 1.0  # cross-entropy of every other image on its own prediction
    eps: float = 1e-6


@register_adaptation
class SFDADeP(Adaptation):
    """SFDA-DeP (AlexisGuichemerreCode/SFDA-DeP, debiasing predictions): self-training amplifies the bias of the source model
    toward the classes it over-predicts on the target. Every few epochs the target images are
    pseudo-labelled by the current model; for each over-predicted class (a predicted share
    above the uniform 1/C), the most uncertain (highest entropy) of the images predicted as it
    are selected and their confidence in that class is suppressed (-log(1 - p_c), no other
    class enforced); all the other images keep their pseudo-label (cross-entropy). The whole
    model adapts."""

    name = "sfda-dep"
    Config = SFDADePConfig

    @staticmethod
    def select(probs: torch.Tensor, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(pseudo-labels [N], forget [N] bool): per class whose predicted share exceeds 1/C,
        the int(ratio * n_c) highest-entropy of its n_c predicted images."""
        labels = probs.argmax(1)
        n, k = probs.shape
        counts = torch.bincount(labels, minlength=k)
        ent = entropy(probs)
        forget = torch.zeros(n, dtype=torch.bool, device=probs.device)
        for c in (counts.float() / n > 1.0 / k).nonzero().flatten().tolist():
            members = (labels == c).nonzero().flatten()
            take = int(ratio * members.numel())
            if take:
                forget[members[torch.argsort(ent[members], descending=True)[:take]]] = True
        return labels, forget

    @staticmethod
    def forget_loss(logits: torch.Tensor, classes: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
        p = logits.softmax(1).gather(1, classes[:, None]).squeeze(1)
        return -torch.log(1.0 - p + eps).mean()

    def adapt(self, model, target_train, ctx):
        cfg = self.cfg
        eval_loader = ctx.loader(target_train, shuffle=False)
        state = {}

        def refresh(epoch):
            if epoch % cfg.resample_every == 0:
                _, probs = collect(model, eval_loader, len(target_train), ctx.device)
                state["labels"], state["forget"] = self.select(probs, cfg.select_ratio)

        def step(model, images, index, progress):
            _, logits = pooled(model, images)
            labels, forget = state["labels"][index], state["forget"][index]
            terms = {}
            if forget.any():
                terms["forget"] = cfg.forget_weight * self.forget_loss(logits[forget], labels[forget], cfg.eps)
            if (~forget).any():
                terms["retain"] = cfg.retain_weight * F.cross_entropy(logits[~forget], labels[~forget])
            return terms

        adapt_loop(model, target_train, ctx, step, before_epoch=refresh, desc=f"sfda-dep {ctx.source}->{ctx.target}")
        return model
