"""Box-localisation correctness at every uint8 threshold level: `wsolbench::region_boxes`.

Given quantised score maps ``q = uint8(s * 255)`` (``s`` min-max normalised, as the reference
evaluator quantises them) and ground-truth boxes, the op answers, for every level ``k`` in
0..255 (foreground = ``q > k``) and every IoU threshold ``delta``, whether the best IoU between
the predicted boxes and the ground-truth boxes is ``>= delta``, for two box sets:

* V1 ("MaxBoxAcc"): the box of the contour of largest ``cv2.contourArea`` among the contours
  ``cv2.findContours(..., RETR_TREE, ...)`` returns. Ties go to the contour cv2 lists first,
  which for top-level regions is the one whose first pixel (raster order) comes LAST.
* V2 ("MaxBoxAccV2"): the boxes of all those contours: the outer border of every 8-connected
  foreground region and the border of every hole (4-connected background region not reaching
  the image border). A hole's box is its bounding box grown by one pixel on every side.

A contour's box is ``cv2.boundingRect`` followed by the reference's ``x1 = x + w`` clipped to
``W - 1`` (same for y): ``[xmin, ymin, min(xmax + 1, W - 1), min(ymax + 1, H - 1)]``. With no
foreground pixel the box is ``[0, 0, 0, 0]``; maps without any pixel (H or W zero) are refused
with a ValueError. IoU is inclusive (``w = x1 - x0 + 1``).

Outputs: two bool tensors ``[B, len(iou_thresholds), 256]`` (V1, V2).

`region_boxes` dispatches to the compiled op when it is built (`bench._ext.has_op`), else to
`region_boxes_reference`, a per-level loop with scikit-image labelling (slow, exact).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from bench._ext import has_op

LEVELS = 256

__all__ = ["region_boxes", "region_boxes_reference", "pack_boxes", "contour_area", "LEVELS"]


def pack_boxes(gt_boxes: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A list of [M_i, 4] boxes -> (float64 [sum M_i, 4], int64 offsets [B + 1])."""
    counts = [int(b.shape[0]) for b in gt_boxes]
    offsets = torch.zeros(len(counts) + 1, dtype=torch.int64)
    if counts:
        offsets[1:] = torch.tensor(counts, dtype=torch.int64).cumsum(0)
    flat = (torch.cat([b.reshape(-1, 4).to(torch.float64).cpu() for b in gt_boxes])
            if counts else torch.zeros(0, 4, dtype=torch.float64))
    return flat.contiguous(), offsets


def _check_not_empty(q: torch.Tensor) -> None:
    """An empty map (H or W zero) has no pixel to threshold, so no box, not even the
    no-foreground [0, 0, 0, 0]: refused (the compiled op raises the same ValueError)."""
    if q.shape[0] > 0 and (q.shape[1] == 0 or q.shape[2] == 0):
        raise ValueError(f"region_boxes: score maps must have at least one pixel, got H x W = "
                         f"{q.shape[1]} x {q.shape[2]}")


def region_boxes(q: torch.Tensor, gt_boxes: torch.Tensor, gt_offsets: torch.Tensor,
                 iou_thresholds: Sequence[float], largest: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """See the module docstring. ``largest=False`` skips V1 (returned all False except at
    levels without foreground), which saves the contour tracing."""
    if q.dtype != torch.uint8 or q.dim() != 3:
        raise TypeError(f"region_boxes: q must be uint8 [B, H, W], got {q.dtype} {tuple(q.shape)}")
    _check_not_empty(q)
    gt_boxes = gt_boxes.to(torch.float64).cpu().contiguous()
    gt_offsets = gt_offsets.to(torch.int64).cpu().contiguous()
    ious = [float(t) for t in iou_thresholds]
    if has_op("region_boxes"):
        return torch.ops.wsolbench.region_boxes(q.cpu().contiguous(), gt_boxes, gt_offsets, ious, largest)
    return region_boxes_reference(q, gt_boxes, gt_offsets, ious, largest)


if has_op("region_boxes"):
    @torch.library.register_fake("wsolbench::region_boxes")
    def _fake(q, gt_boxes, gt_offsets, iou_thresholds, largest=True):
        shape = (q.shape[0], len(iou_thresholds), LEVELS)
        return q.new_empty(shape, dtype=torch.bool), q.new_empty(shape, dtype=torch.bool)


# ----------------------------------------------------------------------------- reference

# Chain-code directions in OpenCV's numbering: 0 = +x, then counter-clockwise on screen.
_DX = (1, 1, 0, -1, -1, -1, 0, 1)
_DY = (0, -1, -1, -1, 0, 1, 1, 1)


def contour_area(fg: np.ndarray, x0: int, y0: int) -> float:
    """cv2.contourArea of the outer border of the 8-connected region of the bool map ``fg``
    whose first pixel in raster order is (x0, y0): Suzuki-Abe border following through the
    border pixel centres, then the shoelace formula."""
    H, W = fg.shape

    def inside(x, y):
        return 0 <= x < W and 0 <= y < H and bool(fg[y, x])

    s = 4
    for _ in range(8):
        s = (s - 1) % 8
        if inside(x0 + _DX[s], y0 + _DY[s]):
            break
    else:
        return 0.0
    x1, y1 = x0 + _DX[s], y0 + _DY[s]
    x3, y3 = x0, y0
    twice = 0
    while True:
        for i in range(1, 9):
            d = (s + i) % 8
            if inside(x3 + _DX[d], y3 + _DY[d]):
                s = d
                break
        x4, y4 = x3 + _DX[s], y3 + _DY[s]
        twice += x3 * y4 - x4 * y3
        if (x4, y4) == (x0, y0) and (x3, y3) == (x1, y1):
            break
        x3, y3 = x4, y4
        s = (s + 4) % 8
    return abs(twice) / 2.0


def _iou(box, gt: np.ndarray) -> np.ndarray:
    ix0 = np.maximum(box[0], gt[:, 0])
    iy0 = np.maximum(box[1], gt[:, 1])
    ix1 = np.minimum(box[2], gt[:, 2])
    iy1 = np.minimum(box[3], gt[:, 3])
    inter = np.maximum(0.0, ix1 - ix0 + 1.0) * np.maximum(0.0, iy1 - iy0 + 1.0)
    area_a = (box[2] - box[0] + 1.0) * (box[3] - box[1] + 1.0)
    area_b = (gt[:, 2] - gt[:, 0] + 1.0) * (gt[:, 3] - gt[:, 1] + 1.0)
    return inter / (area_a + area_b - inter)


def level_boxes(fg: np.ndarray, largest: bool = True):
    """Boxes of one binary map, per the module docstring: returns (v1_box, v2_boxes)."""
    from skimage.measure import label, regionprops

    H, W = fg.shape
    if not fg.any():
        return (0, 0, 0, 0), [(0, 0, 0, 0)]
    boxes, v1, best = [], None, None
    for region in regionprops(label(fg, connectivity=2)):
        r0, c0, r1, c1 = region.bbox  # exclusive max
        box = (c0, r0, min(c1, W - 1), min(r1, H - 1))
        boxes.append(box)
        if largest:
            coords = region.coords  # sorted in raster order
            fy, fx = int(coords[0][0]), int(coords[0][1])
            key = (contour_area(fg, fx, fy), fy * W + fx)
            if best is None or key > best:
                best, v1 = key, box
    padded = np.pad(~fg, 1, constant_values=True)
    bg = label(padded, connectivity=1)
    outside = bg[0, 0]
    for region in regionprops(bg):
        if region.label == outside:
            continue
        r0, c0, r1, c1 = region.bbox  # in padded coords: pixel (r, c) is (r - 1, c - 1)
        boxes.append((c0 - 2, r0 - 2, min(c1, W - 1), min(r1, H - 1)))
    return v1, boxes


def region_boxes_reference(q: torch.Tensor, gt_boxes: torch.Tensor, gt_offsets: torch.Tensor,
                           iou_thresholds: Sequence[float], largest: bool = True
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure numpy/scikit-image version of `region_boxes`: one labelling per level (slow)."""
    _check_not_empty(q)
    qn = q.cpu().numpy()
    gt = gt_boxes.to(torch.float64).cpu().numpy()
    off = gt_offsets.cpu().numpy()
    B = qn.shape[0]
    T = len(iou_thresholds)
    v1 = np.zeros((B, T, LEVELS), dtype=bool)
    v2 = np.zeros((B, T, LEVELS), dtype=bool)
    for b in range(B):
        g = gt[off[b]:off[b + 1]]
        for k in range(LEVELS):
            box1, boxes = level_boxes(qn[b] > k, largest)
            s2 = max(_iou(bx, g).max(initial=-1.0) for bx in boxes)
            s1 = _iou(box1, g).max(initial=-1.0) if box1 is not None else -1.0
            for t, delta in enumerate(iou_thresholds):
                v2[b, t, k] = s2 >= delta
                v1[b, t, k] = s1 >= delta
    return torch.from_numpy(v1), torch.from_numpy(v2)
