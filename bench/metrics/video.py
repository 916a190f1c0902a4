"""CorLoc (docs/protocol.md, "Metrics"): the fraction of annotated frames whose box, taken from the largest
region of the thresholded score map (MaxBoxAcc's box, `bench.ops.region_boxes` V1), has
IoU >= 0.5 with a ground-truth box, maximised over the CAM threshold tau.

Two variants, named distinctly in the results:

- ``CorLoc``: one tau for all frames (TCAM's evaluator);
- ``CorLoc-classmean``: tau chosen per class, then the mean over classes (CoLo-CAM's
  evaluator; classes without annotated frames are left out of the mean).

With subsets (e.g. slow / fast motion) ``CorLoc-<subset>`` is the accuracy on that subset's
frames at the tau of ``CorLoc`` (so the subsets are read at the same operating point as the
whole set, not each at its own best threshold); ``best_tau`` is that tau.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from bench.metrics.common import check_scoremaps, quantize, taus
from bench.ops.region_boxes import LEVELS, pack_boxes, region_boxes

__all__ = ["CorLocEvaluator", "IOU"]

IOU = 0.5


class CorLocEvaluator:
    def __init__(self, num_classes: int, subsets: Sequence[str] = (), cam_curve_interval: float = 0.001):
        if num_classes < 1:
            raise ValueError(f"CorLocEvaluator: num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.subsets = tuple(subsets)
        self.taus = taus(cam_curve_interval)
        self.levels = torch.from_numpy((self.taus * 255).astype(np.int64))  # int(tau * 255) like the reference
        self.reset()

    def reset(self) -> None:
        self.correct = torch.zeros(self.num_classes, LEVELS, dtype=torch.int64)  # per class and level
        self.count = torch.zeros(self.num_classes, dtype=torch.int64)
        self.subset_correct = torch.zeros(len(self.subsets), LEVELS, dtype=torch.int64)
        self.subset_count = torch.zeros(len(self.subsets), dtype=torch.int64)

    def accumulate(self, scoremaps: torch.Tensor, gt_boxes: Sequence[torch.Tensor], labels: torch.Tensor,
                   subsets: torch.Tensor | None = None) -> None:
        """scoremaps [B, H, W] in [0, 1] (normalised), gt_boxes a list of [M_i >= 1, 4] boxes
        (inclusive pixels of the score map), labels [B] class ids, subsets [B] indices into
        `self.subsets` (-1: in none)."""
        s = check_scoremaps(scoremaps, "CorLocEvaluator")
        B, H, W = s.shape
        if not isinstance(gt_boxes, (list, tuple)) or len(gt_boxes) != B:
            raise ValueError(f"CorLocEvaluator: gt_boxes must be a list of {B} box tensors")
        for i, b in enumerate(gt_boxes):
            if b.dim() != 2 or b.shape[1] != 4 or b.shape[0] == 0:
                raise ValueError(f"CorLocEvaluator: gt_boxes[{i}] must be [M >= 1, 4], got {tuple(b.shape)} "
                                 f"(frames without boxes are skipped by the loader)")
            if (b[:, :2] < 0).any() or (b[:, 2] > W - 1).any() or (b[:, 3] > H - 1).any() or \
                    (b[:, 0] > b[:, 2]).any() or (b[:, 1] > b[:, 3]).any():
                raise ValueError(f"CorLocEvaluator: gt_boxes[{i}] is not a box inside the {H}x{W} map: {b.tolist()}")
        labels = torch.as_tensor(labels).cpu().long().view(-1)
        if labels.numel() != B or (labels < 0).any() or (labels >= self.num_classes).any():
            raise ValueError(f"CorLocEvaluator: labels must be [{B}] class ids in [0, {self.num_classes}), "
                             f"got {labels.tolist()}")
        if B == 0:
            return
        flat, offsets = pack_boxes(list(gt_boxes))
        v1, _ = region_boxes(quantize(s), flat, offsets, [IOU], largest=True)
        ok = v1[:, 0].long()  # [B, LEVELS]
        self.correct.index_add_(0, labels, ok)
        self.count += torch.bincount(labels, minlength=self.num_classes)
        if self.subsets and subsets is not None:
            subsets = torch.as_tensor(subsets).cpu().long().view(-1)
            if subsets.numel() != B or (subsets >= len(self.subsets)).any():
                raise ValueError(f"CorLocEvaluator: subsets must be [{B}] indices below {len(self.subsets)} (or -1)")
            keep = subsets >= 0
            self.subset_correct.index_add_(0, subsets[keep], ok[keep])
            self.subset_count += torch.bincount(subsets[keep], minlength=len(self.subsets))

    def curves(self) -> dict:
        """CorLoc (%) against tau: pooled over frames, and per class (NaN without frames)."""
        total = int(self.count.sum())
        if total == 0:
            raise RuntimeError("CorLocEvaluator: nothing accumulated")
        pooled = self.correct.sum(0)[self.levels].double() * 100.0 / total
        per_class = self.correct[:, self.levels].double() * 100.0 / self.count[:, None].double()
        return {"taus": self.taus.copy(), "CorLoc": pooled.numpy(), "per_class": per_class.numpy()}

    def compute(self) -> dict:
        c = self.curves()
        best = int(np.argmax(c["CorLoc"]))  # first maximum
        present = self.count > 0
        res = {"CorLoc": float(c["CorLoc"][best]), "best_tau": float(self.taus[best]),
               "CorLoc-classmean": float(np.nanmax(c["per_class"][present.numpy()], axis=1).mean()),
               "annotated_frames": int(self.count.sum())}
        level = int(self.levels[best])
        for k, name in enumerate(self.subsets):
            n = int(self.subset_count[k])
            if n:
                res[f"CorLoc-{name}"] = float(self.subset_correct[k, level]) * 100.0 / n
        return res
