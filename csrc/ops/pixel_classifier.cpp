// Schemas of the PixelCAM pixel classifier: a K-class linear classifier applied to every pixel
// of encoder features [B, C, h, w] (weight [K, C], bias [K]; same float dtype, same device).
//
//   pixel_classifier_probs(features, weight, bias, fg_class) -> probs
//       Inference: softmax over K of (weight @ f(p) + bias) for every pixel, the features read
//       once. fg_class < 0: probs [B, K, h, w]; fg_class in [0, K): that class only, [B, h, w].
//       No autograd (use the composite in bench/ops/pixel_classifier.py to train densely).
//
//   pixel_seed_ce(features, weight, bias, labels, ignore_index) -> (loss, n_seeds)
//       Partial cross-entropy over the seed pixels only: labels [B, h, w] int64, a pixel is a
//       seed when its label != ignore_index (then it must lie in [0, K)). loss is the mean over
//       the seeds (0 when there are none), n_seeds the int64 count (both 0-dim). The dense
//       logits are never formed: only the seeds' feature vectors are read.
//
//   pixel_seed_ce_backward(grad_loss, features, weight, bias, labels, n_seeds, ignore_index)
//       -> (grad_features, grad_weight, grad_bias); grad_features is zero off the seeds.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(wsolbench, m) {
  m.def("pixel_classifier_probs(Tensor features, Tensor weight, Tensor bias, int fg_class) -> Tensor");
  m.def(
      "pixel_seed_ce(Tensor features, Tensor weight, Tensor bias, Tensor labels, "
      "int ignore_index) -> (Tensor, Tensor)");
  m.def(
      "pixel_seed_ce_backward(Tensor grad_loss, Tensor features, Tensor weight, Tensor bias, "
      "Tensor labels, Tensor n_seeds, int ignore_index) -> (Tensor, Tensor, Tensor)");
}
