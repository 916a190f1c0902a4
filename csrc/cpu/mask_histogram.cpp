// CPU kernel of wsolbench::mask_histogram: per-thread histograms, merged at the end. The bin of a
// score is guessed from the uniform step and corrected against the exact edges, so the binning
// is exactly numpy.histogram's (half-open bins) whatever the rounding of the guess.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace wsolbench {
namespace {

at::Tensor mask_histogram_cpu(const at::Tensor& scores, const at::Tensor& mask, const at::Tensor& edges,
                              double uniform_step) {
  TORCH_CHECK(scores.scalar_type() == at::kFloat && scores.dim() == 1, "mask_histogram: scores must be float32 [N]");
  TORCH_CHECK(mask.scalar_type() == at::kByte && mask.dim() == 1 && mask.size(0) == scores.size(0),
              "mask_histogram: mask must be uint8 [N]");
  TORCH_CHECK(edges.scalar_type() == at::kFloat && edges.dim() == 1 && edges.size(0) >= 2,
              "mask_histogram: edges must be float32 [E >= 2]");
  TORCH_CHECK(uniform_step > 0, "mask_histogram: uniform_step must be > 0");
  const auto s = scores.contiguous();
  const auto mk = mask.contiguous();
  const auto e = edges.contiguous();
  const int64_t n = s.size(0);
  const int nb = e.size(0) - 1;
  const float* sp = s.data_ptr<float>();
  const uint8_t* mp = mk.data_ptr<uint8_t>();
  const float* ep = e.data_ptr<float>();
  const float inv = float(1.0 / uniform_step);
  const int nthreads = at::get_num_threads();
  std::vector<int64_t> hist(size_t(nthreads) * 2 * nb, 0);
  at::parallel_for(0, n, 1 << 16, [&](int64_t b0, int64_t b1) {
    int64_t* h = hist.data() + size_t(at::get_thread_num()) * 2 * nb;
    for (int64_t i = b0; i < b1; ++i) {
      const uint8_t m = mp[i];
      if (m > 1) continue;
      const float x = sp[i];
      int k = int(std::min(std::max(x * inv, 0.0f), float(nb - 1)));
      while (k > 0 && x < ep[k]) --k;
      while (k < nb - 1 && x >= ep[k + 1]) ++k;
      h[m * nb + k] += 1;
    }
  });
  auto out = at::zeros({2, nb}, s.options().dtype(at::kLong));
  int64_t* op = out.data_ptr<int64_t>();
  for (int t = 0; t < nthreads; ++t)
    for (int j = 0; j < 2 * nb; ++j) op[j] += hist[size_t(t) * 2 * nb + j];
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(wsolbench, CPU, m) { m.impl("mask_histogram", &mask_histogram_cpu); }

}  // namespace wsolbench
