from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.transfer import Adaptation, adapt_loop, register_adaptation
from bench.transfer.features import DEFAULT_CHUNK, collect, pooled, topk_similar


@dataclass(frozen=True)
class NRCConfig:
    k: int = 2  # nearest neighbours of an image
    kk: int = 2  # nearest neighbours of each of those (the expanded neighbourhood)
    r: float = 0.1  # affinity of a non-reciprocal neighbour and of every expanded neighbour
    neighbour_weight: float = 1.0
    expanded_weight: float = 1.0
    div_weight: float = 1.0  # sum_c p̄_c log p̄_c over the batch
    eps: float = 1e-3
    chunk: int = DEFAULT_CHUNK  # rows per neighbour-search chunk (memory, bench/transfer/features.py)


@register_adaptation
class NRC(Adaptation):
    """NRC (Yang et al., NeurIPS 2021): a bank of the target images' normalised features and
    predictions; every image is pulled toward the predictions of its k nearest neighbours
    (weight 1 when the neighbour has the image among its own kk nearest, reciprocal; r
    otherwise) and, with weight r, of their neighbours; plus a diversity term. The whole
    model adapts; the bank entries of a batch are refreshed at every step."""

    name = "nrc"
    Config = NRCConfig

    @staticmethod
    def neighbours(feats: torch.Tensor, bank: torch.Tensor, index: torch.Tensor, k: int, kk: int, r: float,
                   chunk: int = DEFAULT_CHUNK):
        """For the batch's normalised features (rows `index` of the bank): (near [B,k] bank rows
        of the nearest neighbours, self excluded; their weights [B,k]: 1 if reciprocal else r;
        near_near [B,k,kk], the neighbours' own nearest, self excluded)."""
        near = topk_similar(feats, bank, k + 1, chunk)[:, 1:]
        b = near.shape[0]
        near_near = topk_similar(bank[near.flatten()], bank, kk + 1, chunk)[:, 1:].view(b, k, kk)
        reciprocal = (near_near == index.view(b, 1, 1)).any(-1)
        weights = torch.where(reciprocal, torch.ones_like(near, dtype=feats.dtype),
                              torch.full_like(near, r, dtype=feats.dtype))
        return near, weights, near_near

    def adapt(self, model, target_train, ctx):
        cfg = self.cfg
        feats, scores = collect(model, ctx.loader(target_train, shuffle=False), len(target_train), ctx.device)
        bank = F.normalize(feats, dim=1)
        del feats

        def step(model, images, index, progress):
            f, logits = pooled(model, images)
            probs = logits.softmax(1)
            with torch.no_grad():
                fn = F.normalize(f.detach().float(), dim=1)
                bank[index] = fn
                scores[index] = probs.detach().float()
                near, w, near_near = self.neighbours(fn, bank, index, cfg.k, cfg.kk, cfg.r, cfg.chunk)
                s_near = scores[near]  # [B,k,C]
                s_far = scores[near_near.flatten(1)]  # [B,k*kk,C]
            neighbour = -(w * (s_near * probs[:, None]).sum(-1)).sum(1).mean()
            expanded = -(cfg.r * (s_far * probs[:, None]).sum(-1)).sum(1).mean()
            mean = probs.mean(0)
            div = (mean * torch.log(mean + cfg.eps)).sum()
            return {"neighbour": cfg.neighbour_weight * neighbour, "expanded": cfg.expanded_weight * expanded,
                    "div": cfg.div_weight * div}

        adapt_loop(model, target_train, ctx, step, desc=f"nrc {ctx.source}->{ctx.target}")
        return model
