// Schema of wsolbench::region_boxes: box-localisation correctness of uint8 score maps at every
// one of the 256 threshold levels, for the largest-contour box (V1, "MaxBoxAcc") and for all
// contour boxes (V2, "MaxBoxAccV2"). See bench/ops/region_boxes.py for the semantics.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(wsolbench, m) {
  // q:           uint8 [B, H, W]   quantised score maps (uint8(s * 255))
  // gt_boxes:    float64 [N, 4]    (x0, y0, x1, y1) inclusive, all images concatenated
  // gt_offsets:  int64 [B + 1]     boxes of image b are gt_boxes[gt_offsets[b]:gt_offsets[b+1]]
  // iou_thresholds: the deltas
  // returns (v1, v2): bool [B, len(iou_thresholds), 256]; [b, t, k] says whether image b is
  // correctly localised at IoU >= delta_t when the foreground is q > k.
  m.def(
      "region_boxes(Tensor q, Tensor gt_boxes, Tensor gt_offsets, float[] iou_thresholds, "
      "bool largest=True) -> (Tensor, Tensor)");
}
