"""CAM extraction shared by the CAM-family methods.

- `gradients`: activations of `model.cam_layer` and the gradients of the ground-truth class
  score with respect to them (gradient CAMs: GradCAM, GradCAM++, XGradCAM, LayerCAM, ...).
- `trained`: the base of the WSOL baselines that train their own classifier, then read a CAM.
"""
from bench.cams.gradients import (activations_and_grads, autocast_trunk, capture_activations, class_scores,
                                  gradcampp_weights, weighted_sum)
from bench.cams.trained import TrainedCAM, cam_layer_transform, normalize_maps

__all__ = ["activations_and_grads", "autocast_trunk", "capture_activations", "class_scores", "gradcampp_weights", "weighted_sum", "TrainedCAM", "cam_layer_transform", "normalize_maps"]
