"""Partial cross-entropy on seed pixels, and NEGEV's negative-evidence loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.ops.seed import IGNORE


def partial_cross_entropy(logits: torch.Tensor, seeds: torch.Tensor, ignore_index: int = IGNORE) -> torch.Tensor:
    """Mean cross-entropy of `logits` [B,K,H,W] over the labelled pixels of `seeds` [B,H,W]
    (class ids, `ignore_index` elsewhere); 0 (with a graph) when no pixel is labelled, where
    F.cross_entropy's mean would be NaN."""
    if logits.dim() != 4 or seeds.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"partial_cross_entropy: logits [B,K,H,W] and seeds [B,H,W] expected, got "
                         f"{list(logits.shape)} and {list(seeds.shape)}")
    total = F.cross_entropy(logits, seeds.long(), ignore_index=ignore_index, reduction="sum")
    count = (seeds != ignore_index).sum()
    return total / count.clamp(min=1)


def negative_evidence_loss(logits: torch.Tensor, negative: torch.Tensor, background: int = 0) -> torch.Tensor:
    """NEGEV: on fully negative images (`negative` [B] bool) every pixel is background, so the
    cross-entropy toward `background` over the whole image; 0 (with a graph) when the batch has
    no negative image."""
    if negative.shape != logits.shape[:1]:
        raise ValueError(f"negative_evidence_loss: negative must be [B]={list(logits.shape[:1])}, "
                         f"got {list(negative.shape)}")
    # weighted, not indexed: no host synchronisation per training step
    target = torch.full((logits.shape[0], *logits.shape[2:]), background, dtype=torch.long, device=logits.device)
    per_image = F.cross_entropy(logits, target, reduction="none").mean(dim=(1, 2))
    weight = negative.to(per_image.dtype)
    return (per_image * weight).sum() / weight.sum().clamp(min=1)
