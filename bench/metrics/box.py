"""Box metrics: MaxBoxAcc (largest contour, IoU 0.5), MaxBoxAccV2 (all contours, mean over
IoU thresholds), Top-1 Loc, following docs/protocol.md ("Metrics") and the reference evaluator.

Per image the op `bench.ops.region_boxes` gives correctness at each of the 256 uint8 levels;
the evaluator keeps per-level counts only. A CAM threshold tau maps to level
`int(tau * 255)` (foreground: `uint8(s * 255) > level`), exactly like the reference's
`cv2.threshold(..., int(tau * max(q)), ...)` with max(q) = 255 for a normalised map. (For a map
whose maximum is not 1 the reference thresholds relative to its own maximum; this evaluator
requires normalised maps and always uses 255; an all-zero map has no foreground either way.)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from bench.metrics.common import check_scoremaps, quantize, taus
from bench.ops.region_boxes import LEVELS, pack_boxes, region_boxes


class BoxEvaluator:
    def __init__(self, iou_thresholds: Sequence[float] = (0.3, 0.5, 0.7),
                 cam_curve_interval: float = 0.001):
        ious = [float(t) for t in iou_thresholds]
        if not ious or any(not (0.0 < t <= 1.0) for t in ious) or len(set(ious)) != len(ious):
            raise ValueError(f"BoxEvaluator: iou_thresholds must be distinct values in (0, 1], got {iou_thresholds}")
        self.iou_thresholds = tuple(ious)
        # MaxBoxAcc and Top-1 Loc are at IoU 0.5 whatever the V2 thresholds are.
        self._deltas = list(self.iou_thresholds) + ([0.5] if 0.5 not in ious else [])
        self._i50 = self._deltas.index(0.5)
        self.cam_curve_interval = float(cam_curve_interval)
        self.taus = taus(self.cam_curve_interval)
        self.levels = (self.taus * 255).astype(np.int64)  # int(tau * 255), float64 like the reference
        self.reset()

    def reset(self) -> None:
        n = len(self._deltas)
        self.count = 0
        self.v1 = torch.zeros(n, LEVELS, dtype=torch.int64)   # largest contour, per delta
        self.v2 = torch.zeros(n, LEVELS, dtype=torch.int64)   # all contours, per delta
        self.top1loc = torch.zeros(LEVELS, dtype=torch.int64)  # V1 @ 0.5 and class correct
        self._with_cls: bool | None = None

    def _check_boxes(self, gt_boxes, B: int, H: int, W: int) -> list[torch.Tensor]:
        if not isinstance(gt_boxes, (list, tuple)):
            raise TypeError(f"BoxEvaluator: gt_boxes must be a list of Tensor[M_i, 4], got {type(gt_boxes).__name__}")
        if len(gt_boxes) != B:
            raise ValueError(f"BoxEvaluator: {len(gt_boxes)} box tensors for {B} score maps")
        out = []
        for i, b in enumerate(gt_boxes):
            if not isinstance(b, torch.Tensor):
                raise TypeError(f"BoxEvaluator: gt_boxes[{i}] must be a Tensor, got {type(b).__name__}")
            if b.dtype == torch.bool or b.is_complex():
                raise TypeError(f"BoxEvaluator: gt_boxes[{i}] has dtype {b.dtype}")
            if b.dim() != 2 or b.shape[1] != 4 or b.shape[0] == 0:
                raise ValueError(f"BoxEvaluator: gt_boxes[{i}] must be [M >= 1, 4], got {tuple(b.shape)}")
            d = b.detach().to("cpu", torch.float64)
            if not torch.isfinite(d).all():
                raise ValueError(f"BoxEvaluator: gt_boxes[{i}] is not finite")
            if (d[:, 0] > d[:, 2]).any() or (d[:, 1] > d[:, 3]).any():
                raise ValueError(f"BoxEvaluator: gt_boxes[{i}] needs x0 <= x1 and y0 <= y1: {d.tolist()}")
            if (d[:, :2] < 0).any() or (d[:, 2] > W - 1).any() or (d[:, 3] > H - 1).any():
                raise ValueError(f"BoxEvaluator: gt_boxes[{i}] outside the {H}x{W} score map "
                                 f"(inclusive pixel coordinates): {d.tolist()}")
            out.append(d)
        return out

    def accumulate(self, scoremaps: torch.Tensor, gt_boxes: Sequence[torch.Tensor],
                   cls_correct: torch.Tensor | None = None) -> None:
        s = check_scoremaps(scoremaps, "BoxEvaluator")
        B, H, W = s.shape
        boxes = self._check_boxes(gt_boxes, B, H, W)
        with_cls = cls_correct is not None
        if self._with_cls is not None and with_cls != self._with_cls:
            raise ValueError("BoxEvaluator: cls_correct must be given for every batch or for none")
        if with_cls:
            if not isinstance(cls_correct, torch.Tensor) or cls_correct.dtype != torch.bool:
                raise TypeError(f"BoxEvaluator: cls_correct must be a bool Tensor [B], got "
                                f"{getattr(cls_correct, 'dtype', type(cls_correct))}")
            if tuple(cls_correct.shape) != (B,):
                raise ValueError(f"BoxEvaluator: cls_correct must be [{B}], got {tuple(cls_correct.shape)}")
        self._with_cls = with_cls
        if B == 0:
            return
        flat, offsets = pack_boxes(boxes)
        v1, v2 = region_boxes(quantize(s), flat, offsets, self._deltas, largest=True)
        self.v1 += v1.sum(0)
        self.v2 += v2.sum(0)
        if with_cls:
            self.top1loc += (v1[:, self._i50] & cls_correct.cpu()[:, None]).sum(0)
        self.count += B

    def curves(self) -> dict:
        """Box accuracy (%) against tau: {"taus", "MaxBoxAcc@<d>" (largest contour) and
        "MaxBoxAccV2@<d>" (all contours) for every delta, "Top-1 Loc" if class given}."""
        if self.count == 0:
            raise RuntimeError("BoxEvaluator: nothing accumulated")
        lv = torch.from_numpy(self.levels)
        out = {"taus": self.taus.copy()}
        for i, d in enumerate(self._deltas):
            tag = f"{round(d * 100)}"
            out[f"MaxBoxAcc@{tag}"] = (self.v1[i, lv].double() * 100.0 / self.count).numpy()
            out[f"MaxBoxAccV2@{tag}"] = (self.v2[i, lv].double() * 100.0 / self.count).numpy()
        if self._with_cls:
            out["Top-1 Loc"] = (self.top1loc[lv].double() * 100.0 / self.count).numpy()
        return out

    def compute(self) -> dict:
        c = self.curves()
        acc50 = c["MaxBoxAcc@50"]
        best = int(np.argmax(acc50))  # first maximum, like np.argmax in the reference
        res = {"MaxBoxAcc": float(acc50[best]), "best_tau": float(self.taus[best])}
        v2 = {}
        for d in self.iou_thresholds:
            v2[d] = float(c[f"MaxBoxAccV2@{round(d * 100)}"].max())
            res[f"MaxBoxAccV2@{round(d * 100)}"] = v2[d]
        res["MaxBoxAccV2"] = float(np.mean(list(v2.values())))
        if self._with_cls:
            res["Top-1 Loc"] = float(c["Top-1 Loc"].max())
        return res
