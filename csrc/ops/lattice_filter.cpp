// Schema of the permutohedral-lattice Gaussian filter (Adams et al. 2010, in the form used by
// Kraehenbuehl's dense CRF): out = alpha * S^T B_d ... B_0 S values, per image.
//
//   features [B, d, N]  per-point positions (already divided by the standard deviations), 1 <= d <= 8
//   values   [B, K, N]  the K channels filtered in one pass over one lattice per image
//   valid    [B, N]     optional mask: invalid points neither splat nor receive (output 0)
//   normalize           divide by the filtered ones (W 1) instead of returning W values
//   transpose           apply W^T (blur directions in reverse order); with normalize it applies
//                       W^T diag(1 / W 1), the exact adjoint of the normalized filter
//   symmetric           apply W + W^T: one lattice, one splat, both blur orders, one slice (the
//                       gradient of the CRF energy v.Wv; not with normalize; transpose is moot)
//
// lattice_filter_phases (CPU only, for profiling): the same filtering, and the milliseconds
// spent in each phase (range, embed, insert, compact, neighbours, splat, blur, slice) summed
// over the images of the batch. The plain op reads no clock.
//
// Features are constants: no gradient flows to them. The gradient wrt values is the same op
// with `transpose` flipped, or itself when symmetric (registered in bench/ops/lattice_filter.py).
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(wsolbench, m) {
  m.def(
      "lattice_filter(Tensor features, Tensor values, Tensor? valid=None, bool normalize=False, "
      "bool transpose=False, bool symmetric=False) -> Tensor");
  m.def(
      "lattice_filter_phases(Tensor features, Tensor values, Tensor? valid=None, bool normalize=False, "
      "bool transpose=False, bool symmetric=False) -> (Tensor, Tensor)");
}
