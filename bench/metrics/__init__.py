"""WSOL evaluation metrics (docs/protocol.md, "Metrics"): box accuracies (MaxBoxAcc, MaxBoxAccV2, Top-1 Loc)
and mask metrics (PxAP, Dice, mIoU). Evaluators stream: `accumulate` per batch keeps only
counts/histograms, `compute` turns them into percentages.

Public API::

    normalize_scoremaps(cams: Tensor[B, h, w], size: tuple[int, int]) -> Tensor[B, H, W] float32
    BoxEvaluator(iou_thresholds=(0.3, 0.5, 0.7), cam_curve_interval=0.001)
        .accumulate(scoremaps [B, H, W] in [0, 1], gt_boxes: list[Tensor[M_i, 4]],
                    cls_correct: Tensor[B] bool | None = None)
        .compute() -> {"MaxBoxAcc", "MaxBoxAccV2", "MaxBoxAccV2@30", "MaxBoxAccV2@50",
                       "MaxBoxAccV2@70", "best_tau", ["Top-1 Loc"]}
        .curves() -> {"taus", "MaxBoxAcc@<d>", "MaxBoxAccV2@<d>", ["Top-1 Loc"]}
        .reset()
    MaskEvaluator(cam_curve_interval=0.001)
        .accumulate(scoremaps [B, H, W] in [0, 1], masks uint8 [B, H, W] (0 bg, 1 fg, 255 ignore))
        .compute(tau: float | None = None) -> {"PxAP", "best_tau", "tau", "Dice-fg", "Dice-bg", "mIoU"}
        .curves() -> {"thresholds", "precision", "recall"}
        .reset()
    CorLocEvaluator(num_classes, subsets=(), cam_curve_interval=0.001)   (video, bench/metrics/video.py)
        .accumulate(scoremaps [B, H, W] in [0, 1], gt_boxes: list[Tensor[M_i, 4]], labels [B], subsets [B] | None)
        .compute() -> {"CorLoc", "CorLoc-classmean", "best_tau", "annotated_frames", ["CorLoc-<subset>"]}
    Top1Cls().accumulate(logits [B, C], labels [B]) -> bool [B]; .compute() -> {"Top-1 Cls"}

Ground truth (the loaders, bench/dataset/metadata.py; docs/protocol.md, "Ground truth at 224")
is identical to the reference's, pixel for pixel: boxes resized as `int(x * 224 / w)` in
float64 with image_sizes.txt's size (its `resize_bbox`); masks read as OpenCV's grey bytes,
resized from the mask file's own size with OpenCV's INTER_NEAREST index rule, any non-zero byte
foreground, instances ORed, ignore = ignore region minus foreground (its `get_mask`). Why: the
metrics below are exact, so a one-pixel ground-truth difference would be the only source of
disagreement; tests/test_loader_parity.py checks the loaders and the metrics end to end against
OpenCV on files written to disk.

Where this differs from the reference evaluator (wsolevaluation), by design or by necessity:

* Resizing: torch bicubic (align_corners=False), the kernel of the reference's
  cv2.INTER_CUBIC (a = -0.75, pixel centres, replicated border); float rounding may differ.
* Score maps are cast to float32 before quantisation (`uint8(s * 255)`, truncating) and before
  the PxAP histogram, as the reference's float32 maps are.
* Box threshold level is `int(tau * 255)`; the reference uses `int(tau * max(q))`, identical
  for min-max normalised maps (max q = 255) and for all-zero maps (no foreground either way).
* Boxes (V1 and V2) reproduce cv2.findContours(RETR_TREE) + boundingRect + contourArea +
  Python's max() exactly, ties included (tests compare with cv2 level by level on random
  maps; no disagreement found). See bench/ops/region_boxes.py for how.
* PxAP: precision 0/0 (nothing predicted) is 0 instead of NaN; it only occurs where recall
  does not change, so the AP is the reference's (nansum) value.
* Dice / mIoU (histology extras): predicted foreground is `score >= tau` (the PxAP histogram's
  convention), pooled over all non-ignored pixels; a given tau is snapped to the nearest grid
  value (returned as "tau"); a class absent from both prediction and ground truth scores 100.
"""
from bench.metrics.box import BoxEvaluator
from bench.metrics.cls import Top1Cls
from bench.metrics.common import normalize_scoremaps, taus
from bench.metrics.mask import MaskEvaluator
from bench.metrics.video import CorLocEvaluator

__all__ = ["BoxEvaluator", "CorLocEvaluator", "MaskEvaluator", "Top1Cls", "normalize_scoremaps", "taus"]
