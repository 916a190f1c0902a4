// Schema of wsolbench::mask_histogram: histograms of foreground and background pixel scores for
// PxAP (see bench/metrics/mask.py for the bin convention).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(wsolbench, m) {
  // scores: float32 [N] in [0, 1]; mask: uint8 [N] (0 bg, 1 fg, 255 ignored);
  // edges: float32 [E] increasing, edges[0] <= every score < edges[E-1];
  // uniform_step: edges[i] ~ i * uniform_step for i < E - 3 (a hint, the result is exact).
  // returns int64 [2, E - 1]: row 0 background, row 1 foreground; bins [edges[i], edges[i+1]).
  m.def("mask_histogram(Tensor scores, Tensor mask, Tensor edges, float uniform_step) -> Tensor");
}
