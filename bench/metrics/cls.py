"""Top-1 classification accuracy (streaming)."""
from __future__ import annotations

import torch


class Top1Cls:
    def __init__(self):
        self.correct = 0
        self.count = 0

    @staticmethod
    def correct_mask(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Bool [B]: top-1 prediction equals the label."""
        if logits.dim() != 2 or labels.dim() != 1 or logits.shape[0] != labels.shape[0]:
            raise ValueError(f"Top1Cls: logits [B, C] and labels [B] expected, got "
                             f"{tuple(logits.shape)} and {tuple(labels.shape)}")
        return logits.argmax(1).cpu() == labels.cpu().long()

    def accumulate(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ok = self.correct_mask(logits, labels)
        self.correct += int(ok.sum())
        self.count += int(ok.numel())
        return ok

    def compute(self) -> dict:
        if self.count == 0:
            raise RuntimeError("Top1Cls: nothing accumulated")
        return {"Top-1 Cls": 100.0 * self.correct / self.count}
