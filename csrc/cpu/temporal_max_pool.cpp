// CPU kernels of temporal_max_pool (schema and semantics: csrc/ops/temporal_max_pool.cpp).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace wsolbench {
namespace {

// Below this many elements the work runs on the calling thread: OpenMP fork/join costs more
// than it saves, and much more when the cores are oversubscribed.
constexpr int64_t kParallelMin = 1 << 16;

void check_args(const at::Tensor& cams, int64_t n, int64_t direction) {
  TORCH_CHECK(cams.dim() == 4, "temporal_max_pool: cams must be [B, T, H, W], got shape ",
              cams.sizes());
  TORCH_CHECK(cams.scalar_type() == at::kFloat || cams.scalar_type() == at::kDouble,
              "temporal_max_pool: cams must be float32 or float64, got ", cams.scalar_type());
  TORCH_CHECK(n >= 0, "temporal_max_pool: window n must be >= 0, got ", n);
  TORCH_CHECK(direction >= 0 && direction <= 2,
              "temporal_max_pool: direction must be 0 (before), 1 (after) or 2 (both), got ",
              direction);
}

// Frames [lo, hi] pooled for frame t of one clip: at most n away, clipped at the first frame
// of another shot.
inline void window(const int64_t* shot, int64_t T, int64_t t, int64_t n, int64_t direction,
                   int64_t& lo, int64_t& hi) {
  lo = t;
  hi = t;
  if (direction != 1) {
    const int64_t stop = t - n < 0 ? 0 : t - n;
    while (lo - 1 >= stop && shot[lo - 1] == shot[t]) --lo;
  }
  if (direction != 0) {
    const int64_t stop = t + n > T - 1 ? T - 1 : t + n;
    while (hi + 1 <= stop && shot[hi + 1] == shot[t]) ++hi;
  }
}

// Per-map max of the input (and its first pixel), needed by the re-weighting.
template <typename scalar_t>
void map_max(const scalar_t* x, int64_t maps, int64_t hw, std::vector<scalar_t>& mx,
             std::vector<int64_t>& arg) {
  mx.assign(maps, scalar_t(0));
  arg.assign(maps, 0);
#pragma omp parallel for schedule(static) if (maps * hw > kParallelMin)
  for (int64_t m = 0; m < maps; ++m) {
    const scalar_t* row = x + m * hw;
    scalar_t best = row[0];
    int64_t bi = 0;
    for (int64_t p = 1; p < hw; ++p) {
      if (row[p] > best) {
        best = row[p];
        bi = p;
      }
    }
    mx[m] = best;
    arg[m] = bi;
  }
}

template <typename scalar_t>
inline scalar_t value_at(const scalar_t* x, const scalar_t* mx, bool reweight, scalar_t h,
                         int64_t frame, int64_t hw, int64_t p) {
  const scalar_t c = x[frame * hw + p];
  return reweight ? std::exp(h * (c - mx[frame])) : c;
}

template <typename scalar_t>
void tmp_forward_kernel(const at::Tensor& cams, const at::Tensor& shots, at::Tensor& out,
                        at::Tensor& winner, int64_t B, int64_t T, int64_t hw, int64_t n,
                        int64_t direction, bool reweight, double h, bool normalize) {
  const scalar_t* x = cams.data_ptr<scalar_t>();
  const int64_t* shot = shots.data_ptr<int64_t>();
  scalar_t* y = out.data_ptr<scalar_t>();
  int32_t* win = winner.data_ptr<int32_t>();
  const scalar_t hh = static_cast<scalar_t>(h);
  std::vector<scalar_t> mx;
  std::vector<int64_t> arg;
  if (reweight) map_max(x, B * T, hw, mx, arg);
  const scalar_t* mxp = reweight ? mx.data() : nullptr;

#pragma omp parallel for schedule(static) if (B * T * hw > kParallelMin)
  for (int64_t m = 0; m < B * T; ++m) {
    const int64_t b = m / T, t = m % T;
    int64_t lo, hi;
    window(shot + b * T, T, t, n, direction, lo, hi);
    const scalar_t* xb = x + b * T * hw;
    const scalar_t* mb = reweight ? mxp + b * T : nullptr;
    scalar_t* yo = y + m * hw;
    int32_t* wo = win + m * hw;
    // Pixel chunks kept in L1: the running max starts as frame lo, then each later frame of
    // the window is folded in with a branch-free compare/select (vectorisable).
    constexpr int64_t kChunk = 1024;
    for (int64_t p0 = 0; p0 < hw; p0 += kChunk) {
      const int64_t len = hw - p0 < kChunk ? hw - p0 : kChunk;
      scalar_t* __restrict__ yc = yo + p0;
      int32_t* __restrict__ wc = wo + p0;
      const scalar_t* x0 = xb + lo * hw + p0;
      if (reweight) {
        const scalar_t pk = mb[lo];
        for (int64_t j = 0; j < len; ++j) yc[j] = std::exp(hh * (x0[j] - pk));
      } else {
        for (int64_t j = 0; j < len; ++j) yc[j] = x0[j];
      }
      for (int64_t j = 0; j < len; ++j) wc[j] = static_cast<int32_t>(lo);
      for (int64_t s = lo + 1; s <= hi; ++s) {
        const scalar_t* __restrict__ xs = xb + s * hw + p0;
        const int32_t si = static_cast<int32_t>(s);
        if (reweight) {
          const scalar_t pk = mb[s];
          for (int64_t j = 0; j < len; ++j) {
            const scalar_t v = std::exp(hh * (xs[j] - pk));
            const bool gt = v > yc[j];
            yc[j] = gt ? v : yc[j];
            wc[j] = gt ? si : wc[j];
          }
        } else {
          for (int64_t j = 0; j < len; ++j) {
            const scalar_t v = xs[j];
            const bool gt = v > yc[j];
            yc[j] = gt ? v : yc[j];
            wc[j] = gt ? si : wc[j];
          }
        }
      }
    }
    if (normalize) {
      scalar_t lo_v = yo[0], hi_v = yo[0];
      for (int64_t p = 1; p < hw; ++p) {
        lo_v = yo[p] < lo_v ? yo[p] : lo_v;
        hi_v = yo[p] > hi_v ? yo[p] : hi_v;
      }
      const scalar_t d = hi_v - lo_v;
      if (d > scalar_t(0)) {
        for (int64_t p = 0; p < hw; ++p) yo[p] = (yo[p] - lo_v) / d;
      } else {
        for (int64_t p = 0; p < hw; ++p) yo[p] = scalar_t(0);
      }
    }
  }
}

std::tuple<at::Tensor, at::Tensor> tmp_forward_cpu(const at::Tensor& cams_in,
                                                   const at::Tensor& shot_in, int64_t n,
                                                   int64_t direction, bool reweight, double h,
                                                   bool normalize) {
  check_args(cams_in, n, direction);
  TORCH_CHECK_VALUE(!reweight || std::isfinite(h),
                    "temporal_max_pool: reweight_h must be finite, got ", h);
  TORCH_CHECK(shot_in.scalar_type() == at::kLong, "temporal_max_pool: shot_ids must be int64, got ",
              shot_in.scalar_type());
  TORCH_CHECK(shot_in.dim() == 2 && shot_in.size(0) == cams_in.size(0) &&
                  shot_in.size(1) == cams_in.size(1),
              "temporal_max_pool: shot_ids must be [B, T] = [", cams_in.size(0), ", ",
              cams_in.size(1), "], got shape ", shot_in.sizes());
  TORCH_CHECK(shot_in.device() == cams_in.device(),
              "temporal_max_pool: shot_ids must be on the device of cams (", cams_in.device(),
              "), got ", shot_in.device());
  const at::Tensor cams = cams_in.contiguous();
  const at::Tensor shots = shot_in.contiguous();
  const int64_t B = cams.size(0), T = cams.size(1), hw = cams.size(2) * cams.size(3);
  at::Tensor out = at::empty_like(cams);
  at::Tensor winner = at::empty(cams.sizes(), cams.options().dtype(at::kInt));
  if (cams.numel() == 0) return {out, winner};
  // NaN never wins a comparison and an infinite peak turns re-weighting into NaN: refuse both
  // rather than return a winner that depends on how the maximum is searched
  TORCH_CHECK_VALUE(at::isfinite(cams).all().item<bool>(),
                    "temporal_max_pool: cams must be finite (they hold NaN or infinite values)");

  AT_DISPATCH_FLOATING_TYPES(cams.scalar_type(), "temporal_max_pool_cpu", [&] {
    tmp_forward_kernel<scalar_t>(cams, shots, out, winner, B, T, hw, n, direction, reweight, h,
                                 normalize);
  });
  return {out, winner};
}

template <typename scalar_t>
void tmp_backward_kernel(const at::Tensor& cams, const at::Tensor& g, const at::Tensor& winner,
                         at::Tensor& grad, int64_t B, int64_t T, int64_t hw, bool reweight,
                         double h, bool normalize) {
  const scalar_t* x = cams.data_ptr<scalar_t>();
  const scalar_t* go = g.data_ptr<scalar_t>();
  const int32_t* win = winner.data_ptr<int32_t>();
  scalar_t* gx = grad.data_ptr<scalar_t>();
  const scalar_t hh = static_cast<scalar_t>(h);
  std::vector<scalar_t> mx;
  std::vector<int64_t> arg;
  if (reweight) map_max(x, B * T, hw, mx, arg);
  const scalar_t* mxp = reweight ? mx.data() : nullptr;

  // Normalisation: d out(p) / d P = 1/D at p, plus -sum(g*out)/D at the max pixel and
  // sum(g*(out-1))/D at the min pixel of the pooled map (first pixel on ties).
  std::vector<scalar_t> inv_d(B * T, scalar_t(1)), c_mx(B * T, 0), c_mn(B * T, 0);
  std::vector<int64_t> p_mx(B * T, -1), p_mn(B * T, -1);
  if (normalize) {
#pragma omp parallel for schedule(static) if (B * T * hw > kParallelMin)
    for (int64_t m = 0; m < B * T; ++m) {
      const int64_t b = m / T;
      const scalar_t* xb = x + b * T * hw;
      const scalar_t* mb = reweight ? mxp + b * T : nullptr;
      const int32_t* wm = win + m * hw;
      const scalar_t* gm = go + m * hw;
      scalar_t lo_v = value_at(xb, mb, reweight, hh, wm[0], hw, 0), hi_v = lo_v;
      int64_t plo = 0, phi = 0;
      for (int64_t p = 1; p < hw; ++p) {
        const scalar_t v = value_at(xb, mb, reweight, hh, wm[p], hw, p);
        if (v < lo_v) { lo_v = v; plo = p; }
        if (v > hi_v) { hi_v = v; phi = p; }
      }
      const scalar_t d = hi_v - lo_v;
      if (!(d > scalar_t(0))) {
        inv_d[m] = scalar_t(0);
        continue;
      }
      scalar_t s0 = 0, s1 = 0;
      for (int64_t p = 0; p < hw; ++p) {
        const scalar_t o = (value_at(xb, mb, reweight, hh, wm[p], hw, p) - lo_v) / d;
        s0 += gm[p];
        s1 += gm[p] * o;
      }
      inv_d[m] = scalar_t(1) / d;
      c_mx[m] = -s1 / d;
      c_mn[m] = (s1 - s0) / d;
      p_mx[m] = phi;
      p_mn[m] = plo;
    }
  }

  // Scatter through the winning frame. Threads own disjoint (clip, pixel block) pairs and
  // walk the frames, so no two threads write the same element.
  constexpr int64_t kBlock = 4096;
  const int64_t nblk = (hw + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (B * T * hw > kParallelMin)
  for (int64_t job = 0; job < B * nblk; ++job) {
    const int64_t b = job / nblk, p0 = (job % nblk) * kBlock;
    const int64_t p1 = p0 + kBlock < hw ? p0 + kBlock : hw;
    scalar_t* gb = gx + b * T * hw;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t m = b * T + t;
      const int32_t* wm = win + m * hw;
      const scalar_t* gm = go + m * hw;
      for (int64_t p = p0; p < p1; ++p) {
        scalar_t v = normalize ? gm[p] * inv_d[m] : gm[p];
        if (normalize) {
          if (p == p_mx[m]) v += c_mx[m];
          if (p == p_mn[m]) v += c_mn[m];
        }
        gb[static_cast<int64_t>(wm[p]) * hw + p] += v;
      }
    }
  }

  // Re-weighting r = exp(h (c - max c)): dr/dc = h r at the pixel, and the max pixel gets
  // minus the sum of those terms (r does not change when c shifts by a constant).
  if (reweight) {
#pragma omp parallel for schedule(static) if (B * T * hw > kParallelMin)
    for (int64_t m = 0; m < B * T; ++m) {
      scalar_t* gm = gx + m * hw;
      const scalar_t* xm = x + m * hw;
      scalar_t total = 0;
      for (int64_t p = 0; p < hw; ++p) {
        const scalar_t v = hh * std::exp(hh * (xm[p] - mxp[m])) * gm[p];
        gm[p] = v;
        total += v;
      }
      gm[arg[m]] -= total;
    }
  }
}

at::Tensor tmp_backward_cpu(const at::Tensor& grad_in, const at::Tensor& cams_in,
                            const at::Tensor& winner_in, int64_t n, int64_t direction,
                            bool reweight, double h, bool normalize) {
  check_args(cams_in, n, direction);
  TORCH_CHECK(grad_in.sizes() == cams_in.sizes(),
              "temporal_max_pool_backward: grad_out must have the shape of cams ", cams_in.sizes(),
              ", got ", grad_in.sizes());
  TORCH_CHECK(grad_in.scalar_type() == cams_in.scalar_type(),
              "temporal_max_pool_backward: grad_out dtype ", grad_in.scalar_type(),
              " differs from cams dtype ", cams_in.scalar_type());
  TORCH_CHECK(winner_in.sizes() == cams_in.sizes() && winner_in.scalar_type() == at::kInt,
              "temporal_max_pool_backward: winner must be int32 with the shape of cams ",
              cams_in.sizes(), ", got ", winner_in.scalar_type(), " ", winner_in.sizes());
  const at::Tensor cams = cams_in.contiguous();
  const at::Tensor g = grad_in.contiguous();
  const at::Tensor winner = winner_in.contiguous();
  const int64_t B = cams.size(0), T = cams.size(1), hw = cams.size(2) * cams.size(3);
  at::Tensor grad = at::zeros_like(cams);
  if (cams.numel() == 0) return grad;

  AT_DISPATCH_FLOATING_TYPES(cams.scalar_type(), "temporal_max_pool_backward_cpu", [&] {
    tmp_backward_kernel<scalar_t>(cams, g, winner, grad, B, T, hw, reweight, h, normalize);
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(wsolbench, CPU, m) {
  m.impl("temporal_max_pool", &tmp_forward_cpu);
  m.impl("temporal_max_pool_backward", &tmp_backward_cpu);
}

}  // namespace wsolbench
