from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.transfer import Adaptation, adapt_loop, freeze_hypothesis, register_adaptation
from bench.transfer.features import collect, cosine_distance, entropy, pooled


@dataclass(frozen=True)
class SHOTConfig:
    ent_weight: float = 1.0  # L_ent: mean per-image prediction entropy
    div_weight: float = 1.0  # L_div: minus the entropy of the batch's mean prediction
    pseudo_weight: float = 0.3  # beta: cross-entropy on the clustering pseudo-labels
    cluster_rounds: int = 2  # centroid / assignment rounds of the pseudo-labelling
    pseudo_every: int = 1  # epochs between pseudo-label updates
    eps: float = 1e-5


@register_adaptation
class SHOT(Adaptation):
    """SHOT (Liang et al., ICML 2020): the source classifier head (the hypothesis) is frozen and
    the encoder is trained with information maximisation (confident and diverse predictions)
    plus a cross-entropy on pseudo-labels from a prediction-weighted nearest-centroid
    clustering of the target features, refreshed every epoch."""

    name = "shot"
    Config = SHOTConfig

    @staticmethod
    def im_loss(logits: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_ent, L_div): mean entropy of the rows' softmax, and sum_c p̄_c log p̄_c (minus the
        entropy of the mean prediction, minimal when the batch uses all classes evenly)."""
        probs = logits.softmax(1)
        mean = probs.mean(0)
        return entropy(probs, eps).mean(), (mean * torch.log(mean + eps)).sum()

    @staticmethod
    def pseudo_labels(feats: torch.Tensor, probs: torch.Tensor, rounds: int = 2) -> torch.Tensor:
        """Centroids weighted by the predictions, then `rounds` of nearest-centroid (cosine)
        assignment and hard-assignment centroids; the labels of the last round."""
        k = probs.shape[1]
        assign = probs
        labels = probs.argmax(1)
        for _ in range(rounds):
            centers = assign.T @ feats / (assign.sum(0)[:, None] + 1e-8)
            labels = cosine_distance(feats, centers).argmin(1)
            assign = F.one_hot(labels, k).float()
        return labels

    def adapt(self, model, target_train, ctx):
        cfg = self.cfg
        freeze_hypothesis(model)
        eval_loader = ctx.loader(target_train, shuffle=False)
        labels = {}

        def refresh(epoch):
            if epoch % cfg.pseudo_every == 0:
                feats, probs = collect(model, eval_loader, len(target_train), ctx.device)
                labels["y"] = self.pseudo_labels(feats, probs, cfg.cluster_rounds)

        def step(model, images, index, progress):
            _, logits = pooled(model, images)
            ent, div = self.im_loss(logits, cfg.eps)
            ce = F.cross_entropy(logits, labels["y"][index])
            return {"ent": cfg.ent_weight * ent, "div": cfg.div_weight * div, "pseudo": cfg.pseudo_weight * ce}

        adapt_loop(model, target_train, ctx, step, before_epoch=refresh, desc=f"shot {ctx.source}->{ctx.target}")
        return model
