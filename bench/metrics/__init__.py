"""WSOL evaluation metrics (PROTOCOL.md §2): box accuracies (MaxBoxAcc, MaxBoxAccV2, Top-1 Loc)
and mask metrics (PxAP, Dice, mIoU). Evaluators stream: `accumulate` per batch keeps only
counts/histograms, `compute` turns them into percentages."""
from bench.metrics.box import BoxEvaluator
from bench.metrics.common import normalize_scoremaps, taus
from bench.metrics.mask import MaskEvaluator
from bench.metrics.cls import Top1Cls

__all__ = ["BoxEvaluator", "MaskEvaluator", "Top1Cls", "normalize_scoremaps", "taus"]
