"""Mask metrics: PxAP (pixel average precision), and Dice / mIoU at a CAM threshold, following
docs/protocol.md ("Metrics") and the reference evaluator.

Histogram convention (the reference's): bin edges are `np.arange(0, 1, interval)` followed by
1.0, 2.0, 3.0, bins are half-open `[e_i, e_{i+1})` (numpy.histogram; the last bin [2, 3] is
closed but unreachable), so a score of exactly 1.0 falls in bin [1, 2). The reverse cumulative
sum of the foreground histogram at bin i is then the number of foreground pixels with
`score >= e_i`: at threshold tau a pixel is predicted foreground when `score >= tau` (this is
also the convention used for Dice and mIoU here). Scores are histogrammed as float32 with the
float64 edges rounded up to float32, which bins every float32 score exactly as numpy does with
the float64 edges. Precision 0/0 (no pixel predicted) is taken as 0: it only happens where
recall does not change, so it contributes nothing to the AP (the plain division would give NaN).
Ignore pixels (mask value 255) are left out of every count.
"""
from __future__ import annotations

import numpy as np
import torch

from bench._ext import has_op
from bench.dataset.protocol import IGNORE
from bench.metrics.common import check_scoremaps, taus



def _float32_edges(edges: np.ndarray) -> torch.Tensor:
    """Smallest float32 >= each float64 edge: `x >= e` iff `x >= f` for every float32 x."""
    f = edges.astype(np.float32)
    low = f.astype(np.float64) < edges
    f[low] = np.nextafter(f[low], np.float32(np.inf))
    return torch.from_numpy(f)


def _div(a: np.ndarray, b: np.ndarray, empty: float) -> np.ndarray:
    out = np.full(np.broadcast(a, b).shape, empty, dtype=np.float64)
    np.divide(a, b, out=out, where=b != 0)
    return out


def mask_histogram_reference(scores: torch.Tensor, mask: torch.Tensor, edges32: torch.Tensor) -> torch.Tensor:
    """int64 [2, E-1] histograms (row 0 background, row 1 foreground) of float32 `scores` over
    the half-open bins of `edges32`; mask values other than 0/1 are ignored. Pure torch."""
    nb = edges32.numel() - 1
    bins = (torch.bucketize(scores, edges32, right=True) - 1).clamp_(0, nb - 1)
    keys = torch.where(mask > 1, 2 * nb, bins + nb * mask.long())
    return torch.bincount(keys, minlength=2 * nb + 1)[: 2 * nb].reshape(2, nb)


if has_op("mask_histogram"):
    @torch.library.register_fake("wsolbench::mask_histogram")
    def _fake(scores, mask, edges, uniform_step):
        return scores.new_empty((2, edges.shape[0] - 1), dtype=torch.int64)


def mask_histogram(scores: torch.Tensor, mask: torch.Tensor, edges32: torch.Tensor, step: float) -> torch.Tensor:
    """`wsolbench::mask_histogram` when compiled (OpenMP), else the pure-torch reference."""
    if has_op("mask_histogram"):
        return torch.ops.wsolbench.mask_histogram(scores.contiguous(), mask.contiguous(), edges32, float(step))
    return mask_histogram_reference(scores, mask, edges32)


class MaskEvaluator:
    def __init__(self, cam_curve_interval: float = 0.001):
        self.cam_curve_interval = float(cam_curve_interval)
        self.taus = taus(self.cam_curve_interval)
        self.edges = np.append(self.taus, [1.0, 2.0, 3.0])
        self._edges32 = _float32_edges(self.edges)
        self.nbins = len(self.edges) - 1
        self.reset()

    def reset(self) -> None:
        self.hist_fg = torch.zeros(self.nbins, dtype=torch.int64)
        self.hist_bg = torch.zeros(self.nbins, dtype=torch.int64)

    def accumulate(self, scoremaps: torch.Tensor, masks: torch.Tensor) -> None:
        s = check_scoremaps(scoremaps, "MaskEvaluator")
        if not isinstance(masks, torch.Tensor):
            raise TypeError(f"MaskEvaluator: masks must be a torch.Tensor, got {type(masks).__name__}")
        if masks.dtype != torch.uint8:
            raise TypeError(f"MaskEvaluator: masks must be uint8 (0 bg, 1 fg, 255 ignore), got {masks.dtype}")
        if tuple(masks.shape) != tuple(s.shape):
            raise ValueError(f"MaskEvaluator: masks {tuple(masks.shape)} do not match scoremaps {tuple(s.shape)}")
        m = masks.detach().cpu().reshape(-1)
        valid = (m == 0) | (m == 1) | (m == IGNORE)
        if not bool(valid.all()):
            bad = torch.unique(m[~valid])[:5].tolist()
            raise ValueError(f"MaskEvaluator: mask values must be 0, 1 or 255, found {bad}")
        h = mask_histogram(s.reshape(-1), m, self._edges32, self.cam_curve_interval)
        self.hist_bg += h[0]
        self.hist_fg += h[1]

    def _counts(self):
        fg = self.hist_fg.numpy().astype(np.float64)
        bg = self.hist_bg.numpy().astype(np.float64)
        n_fg, n_bg = fg.sum(), bg.sum()
        if n_fg + n_bg == 0:
            raise RuntimeError("MaskEvaluator: nothing accumulated (or every pixel ignored)")
        tp = np.cumsum(fg[::-1])[::-1]  # tp[i] = foreground pixels with score >= edge i
        fp = np.cumsum(bg[::-1])[::-1]
        return tp, fp, n_fg - tp, n_bg - fp, n_fg

    def curves(self) -> dict:
        """Precision / recall over the thresholds in the reference's (descending) order."""
        tp, fp, fn, tn, n_fg = self._counts()
        tp, fp, fn = tp[::-1], fp[::-1], fn[::-1]
        return {"thresholds": self.edges[:-1][::-1].copy(),
                "precision": _div(tp, tp + fp, 0.0), "recall": _div(tp, tp + fn, 0.0)}

    def _seg(self, i):
        """Dice / IoU (%) at threshold index/indices i (predicted foreground: score >= tau)."""
        tp, fp, fn, tn, _ = self._counts()
        tp, fp, fn, tn = tp[i], fp[i], fn[i], tn[i]
        # 0/0 (no such pixel on either side) counts as perfect agreement.
        iou_fg = _div(tp, tp + fp + fn, 1.0)
        iou_bg = _div(tn, tn + fn + fp, 1.0)
        dice_fg = _div(2 * tp, 2 * tp + fp + fn, 1.0)
        dice_bg = _div(2 * tn, 2 * tn + fn + fp, 1.0)
        return 100 * dice_fg, 100 * dice_bg, 100 * (iou_fg + iou_bg) / 2

    def compute(self, tau: float | None = None) -> dict:
        """PxAP, best_tau (maximising mIoU over the grid) and Dice-fg, Dice-bg, mIoU at `tau`
        (default best_tau). A given tau is snapped to the nearest grid value (key "tau")."""
        tp, fp, fn, tn, n_fg = self._counts()
        if n_fg <= 0:
            raise RuntimeError("MaskEvaluator: no foreground pixel in the accumulated masks; PxAP is undefined")
        c = self.curves()
        pxap = float((c["precision"][1:] * np.diff(c["recall"])).sum() * 100)
        _, _, miou = self._seg(np.arange(len(self.taus)))
        best = int(np.argmax(miou))
        if tau is None:
            i = best
        else:
            tau = float(tau)
            if not (0.0 <= tau <= 1.0) or np.isnan(tau):
                raise ValueError(f"MaskEvaluator.compute: tau must be in [0, 1], got {tau}")
            i = int(np.argmin(np.abs(self.taus - tau)))
        dfg, dbg, mi = self._seg(i)
        return {"PxAP": pxap, "best_tau": float(self.taus[best]), "tau": float(self.taus[i]),
                "Dice-fg": float(dfg), "Dice-bg": float(dbg), "mIoU": float(mi)}
