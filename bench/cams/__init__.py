"""CAM extraction only (the method families that use it are in `bench.method`).

- `gradients`: activations of `model.cam_layer` and the gradients of the ground-truth class
  score with respect to them (gradient CAMs: GradCAM, GradCAM++, XGradCAM, LayerCAM, ...);
- `temporal`: per-frame CAMs of a video split and CAM-TMP over them;
- `normalize`: the one min-max normaliser of maps.
"""
from bench.cams.gradients import (activations_and_grads, autocast_trunk, capture_activations, class_scores,
                                  gradcampp_weights, weighted_sum)
from bench.cams.normalize import minmax
from bench.cams.temporal import frame_cams, shot_pooled_cams

__all__ = ["activations_and_grads", "autocast_trunk", "capture_activations", "class_scores", "gradcampp_weights",
           "weighted_sum", "minmax", "frame_cams", "shot_pooled_cams"]
