// CUDA kernels of temporal_max_pool (schema and semantics: csrc/ops/temporal_max_pool.cpp).
//
// Forward: one block per output map (clip b, frame t). Threads read the window's frames with
// 16-byte vector loads (consecutive threads, consecutive vectors: coalesced), keep the running
// max and its frame, and, when normalising, reduce the pooled map's min/max in the block and
// rescale the values they wrote themselves (still in L2). Re-weighting needs each frame's own
// max, reduced by a first small kernel.
// Backward: per-map statistics (min/max pixels of the pooled map, sums for the normalisation
// terms), then one thread per (clip, pixel) walks the frames and adds into the winning frame's
// pixel (no two threads share an element, so no atomics), then the re-weighting chain rule.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "reduce.cuh"

namespace wsolbench {
namespace {

using cuda_detail::ValIdx;
using cuda_detail::Vec;
using cuda_detail::block_arg_reduce;
using cuda_detail::block_sum;

constexpr int kThreads = 256;

__device__ __forceinline__ float dev_exp(float v) { return expf(v); }
__device__ __forceinline__ double dev_exp(double v) { return exp(v); }

__device__ __forceinline__ void window(const int64_t* shot, int64_t T, int64_t t, int64_t n,
                                       int direction, int64_t& lo, int64_t& hi) {
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

// Max of every input map and its first pixel.
template <typename scalar_t>
__global__ void map_max_kernel(const scalar_t* __restrict__ x, int64_t hw,
                               scalar_t* __restrict__ peak, int64_t* __restrict__ peak_at) {
  const int64_t m = blockIdx.x;
  const scalar_t* row = x + m * hw;
  ValIdx<scalar_t> best{scalar_t(0), -1};
  for (int64_t p = threadIdx.x; p < hw; p += blockDim.x) {
    const scalar_t v = row[p];
    if (best.i < 0 || v > best.v) best = {v, p};
  }
  best = block_arg_reduce<scalar_t, true>(best);
  if (threadIdx.x == 0) {
    peak[m] = best.v;
    peak_at[m] = best.i;
  }
}

template <typename scalar_t>
__device__ __forceinline__ scalar_t value_of(scalar_t c, const scalar_t* peak, bool reweight,
                                             scalar_t h, int64_t frame) {
  return reweight ? dev_exp(h * (c - peak[frame])) : c;
}

template <typename scalar_t, int VEC>
__global__ void pool_kernel(const scalar_t* __restrict__ x, const int64_t* __restrict__ shot,
                            const scalar_t* __restrict__ peak, scalar_t* __restrict__ y,
                            int32_t* __restrict__ win, int64_t T, int64_t hw, int64_t n,
                            int direction, bool reweight, scalar_t h, bool normalize) {
  using V = Vec<scalar_t, VEC>;
  using W = Vec<int32_t, VEC>;
  const int64_t m = blockIdx.x;
  const int64_t b = m / T, t = m % T;
  int64_t lo, hi;
  window(shot + b * T, T, t, n, direction, lo, hi);
  const scalar_t* xb = x + b * T * hw;
  const scalar_t* pb = reweight ? peak + b * T : nullptr;
  scalar_t* ym = y + m * hw;
  int32_t* wm = win + m * hw;
  const int64_t nvec = hw / VEC;
  ValIdx<scalar_t> mn{scalar_t(0), -1}, mx{scalar_t(0), -1};
  // Without normalisation a map is split over gridDim.y blocks (more loads in flight: one block
  // per map left the H100 at ~0.68 of copy bandwidth); normalising keeps one block per map
  // (gridDim.y == 1) for its block-wide min/max.
  for (int64_t q = blockIdx.y * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < nvec;
       q += static_cast<int64_t>(blockDim.x) * gridDim.y) {
    V best = *reinterpret_cast<const V*>(xb + lo * hw + q * VEC);
    W w;
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      best.v[j] = value_of(best.v[j], pb, reweight, h, lo);
      w.v[j] = static_cast<int32_t>(lo);
    }
    for (int64_t s = lo + 1; s <= hi; ++s) {
      const V c = *reinterpret_cast<const V*>(xb + s * hw + q * VEC);
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        const scalar_t v = value_of(c.v[j], pb, reweight, h, s);
        if (v > best.v[j]) {
          best.v[j] = v;
          w.v[j] = static_cast<int32_t>(s);
        }
      }
    }
    *reinterpret_cast<V*>(ym + q * VEC) = best;
    *reinterpret_cast<W*>(wm + q * VEC) = w;
    if (normalize) {
#pragma unroll
      for (int j = 0; j < VEC; ++j) {
        if (mn.i < 0 || best.v[j] < mn.v) mn = {best.v[j], q * VEC + j};
        if (mx.i < 0 || best.v[j] > mx.v) mx = {best.v[j], q * VEC + j};
      }
    }
  }
  if (!normalize) return;  // uniform across the block
  mn = block_arg_reduce<scalar_t, false>(mn);
  mx = block_arg_reduce<scalar_t, true>(mx);
  const scalar_t d = mx.v - mn.v;
  const bool pos = d > scalar_t(0);
  // Each thread rescales exactly the vectors it stored above.
  for (int64_t q = threadIdx.x; q < nvec; q += blockDim.x) {
    V v = *reinterpret_cast<const V*>(ym + q * VEC);
#pragma unroll
    for (int j = 0; j < VEC; ++j) v.v[j] = pos ? (v.v[j] - mn.v) / d : scalar_t(0);
    *reinterpret_cast<V*>(ym + q * VEC) = v;
  }
}

// Normalisation terms of every pooled map: 1/D, the extra gradient of its max pixel
// (-sum g*out / D) and of its min pixel (sum g*(out-1) / D).
template <typename scalar_t>
__global__ void norm_stats_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ g,
                                  const int32_t* __restrict__ win,
                                  const scalar_t* __restrict__ peak, int64_t T, int64_t hw,
                                  bool reweight, scalar_t h, scalar_t* __restrict__ coef,
                                  int64_t* __restrict__ at) {
  const int64_t m = blockIdx.x;
  const int64_t b = m / T;
  const scalar_t* xb = x + b * T * hw;
  const scalar_t* pb = reweight ? peak + b * T : nullptr;
  const int32_t* wm = win + m * hw;
  const scalar_t* gm = g + m * hw;
  ValIdx<scalar_t> mn{scalar_t(0), -1}, mx{scalar_t(0), -1};
  for (int64_t p = threadIdx.x; p < hw; p += blockDim.x) {
    const int64_t s = wm[p];
    const scalar_t v = value_of(xb[s * hw + p], pb, reweight, h, s);
    if (mn.i < 0 || v < mn.v) mn = {v, p};
    if (mx.i < 0 || v > mx.v) mx = {v, p};
  }
  mn = block_arg_reduce<scalar_t, false>(mn);
  mx = block_arg_reduce<scalar_t, true>(mx);
  const scalar_t d = mx.v - mn.v;
  if (!(d > scalar_t(0))) {  // constant map: zero output, zero gradient
    if (threadIdx.x == 0) {
      coef[3 * m] = scalar_t(0);
      coef[3 * m + 1] = scalar_t(0);
      coef[3 * m + 2] = scalar_t(0);
      at[2 * m] = -1;
      at[2 * m + 1] = -1;
    }
    return;
  }
  scalar_t s0 = 0, s1 = 0;
  for (int64_t p = threadIdx.x; p < hw; p += blockDim.x) {
    const int64_t s = wm[p];
    const scalar_t o = (value_of(xb[s * hw + p], pb, reweight, h, s) - mn.v) / d;
    s0 += gm[p];
    s1 += gm[p] * o;
  }
  s0 = block_sum(s0);
  s1 = block_sum(s1);
  if (threadIdx.x == 0) {
    coef[3 * m] = scalar_t(1) / d;
    coef[3 * m + 1] = -s1 / d;
    coef[3 * m + 2] = (s1 - s0) / d;
    at[2 * m] = mx.i;
    at[2 * m + 1] = mn.i;
  }
}

// One thread per (clip, pixel): walks the frames, adds into the winning frame.
template <typename scalar_t>
__global__ void scatter_kernel(const scalar_t* __restrict__ g, const int32_t* __restrict__ win,
                               const scalar_t* __restrict__ coef, const int64_t* __restrict__ at,
                               int64_t B, int64_t T, int64_t hw, bool normalize,
                               scalar_t* __restrict__ grad) {
  const int64_t total = B * hw;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total;
       i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = i / hw, p = i % hw;
    scalar_t* gb = grad + b * T * hw;
    for (int64_t t = 0; t < T; ++t) {
      const int64_t m = b * T + t;
      scalar_t v = g[m * hw + p];
      if (normalize) {
        v *= coef[3 * m];
        if (p == at[2 * m]) v += coef[3 * m + 1];
        if (p == at[2 * m + 1]) v += coef[3 * m + 2];
      }
      gb[static_cast<int64_t>(win[m * hw + p]) * hw + p] += v;
    }
  }
}

// r = exp(h (c - max c)): dr/dc = h r at the pixel; the max pixel takes minus the map's sum.
template <typename scalar_t>
__global__ void reweight_grad_kernel(const scalar_t* __restrict__ x,
                                     const scalar_t* __restrict__ peak,
                                     const int64_t* __restrict__ peak_at, int64_t hw, scalar_t h,
                                     scalar_t* __restrict__ grad) {
  const int64_t m = blockIdx.x;
  const scalar_t* xm = x + m * hw;
  scalar_t* gm = grad + m * hw;
  scalar_t total = 0;
  for (int64_t p = threadIdx.x; p < hw; p += blockDim.x) {
    const scalar_t v = h * dev_exp(h * (xm[p] - peak[m])) * gm[p];
    gm[p] = v;
    total += v;
  }
  total = block_sum(total);  // ends with __syncthreads: every gm[p] above is written
  if (threadIdx.x == 0) gm[peak_at[m]] -= total;
}

void check_args(const at::Tensor& cams, int64_t n, int64_t direction) {
  TORCH_CHECK(cams.is_cuda(), "temporal_max_pool: cams must be a CUDA tensor, got ",
              cams.device());
  TORCH_CHECK(cams.dim() == 4, "temporal_max_pool: cams must be [B, T, H, W], got shape ",
              cams.sizes());
  TORCH_CHECK(cams.scalar_type() == at::kFloat || cams.scalar_type() == at::kDouble,
              "temporal_max_pool: cams must be float32 or float64, got ", cams.scalar_type());
  TORCH_CHECK(n >= 0, "temporal_max_pool: window n must be >= 0, got ", n);
  TORCH_CHECK(direction >= 0 && direction <= 2,
              "temporal_max_pool: direction must be 0 (before), 1 (after) or 2 (both), got ",
              direction);
}

bool aligned(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

std::tuple<at::Tensor, at::Tensor> tmp_forward_cuda(const at::Tensor& cams_in,
                                                    const at::Tensor& shot_in, int64_t n,
                                                    int64_t direction, bool reweight, double h,
                                                    bool normalize) {
  check_args(cams_in, n, direction);
  TORCH_CHECK_VALUE(!reweight || std::isfinite(h),
                    "temporal_max_pool: reweight_h must be finite, got ", h);
  TORCH_CHECK(shot_in.scalar_type() == at::kLong,
              "temporal_max_pool: shot_ids must be int64, got ", shot_in.scalar_type());
  TORCH_CHECK(shot_in.dim() == 2 && shot_in.size(0) == cams_in.size(0) &&
                  shot_in.size(1) == cams_in.size(1),
              "temporal_max_pool: shot_ids must be [B, T] = [", cams_in.size(0), ", ",
              cams_in.size(1), "], got shape ", shot_in.sizes());
  TORCH_CHECK(shot_in.device() == cams_in.device(),
              "temporal_max_pool: shot_ids must be on the device of cams (", cams_in.device(),
              "), got ", shot_in.device());
  const c10::cuda::CUDAGuard guard(cams_in.device());
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
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  at::Tensor peak, peak_at;
  if (reweight) {
    peak = at::empty({B * T}, cams.options());
    peak_at = at::empty({B * T}, cams.options().dtype(at::kLong));
  }
  AT_DISPATCH_FLOATING_TYPES(cams.scalar_type(), "temporal_max_pool_cuda", [&] {
    const scalar_t* x = cams.data_ptr<scalar_t>();
    scalar_t* pk = reweight ? peak.data_ptr<scalar_t>() : nullptr;
    if (reweight) {
      map_max_kernel<scalar_t><<<B * T, kThreads, 0, stream>>>(x, hw, pk,
                                                               peak_at.data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    constexpr int kVec = 16 / sizeof(scalar_t);
    scalar_t* y = out.data_ptr<scalar_t>();
    int32_t* w = winner.data_ptr<int32_t>();
    const bool vec_ok = hw % kVec == 0 && aligned(x, 16) && aligned(y, 16) &&
                        aligned(w, sizeof(int32_t) * kVec);
    const int64_t nvec = vec_ok ? hw / kVec : hw;
    // about 4 vectors per thread, at most 8 blocks per map; 1 when normalising (see the kernel)
    const int64_t per_block = static_cast<int64_t>(kThreads) * 4;
    const dim3 grid(static_cast<unsigned>(B * T),
                    normalize ? 1u : static_cast<unsigned>(std::max<int64_t>(
                                         1, std::min<int64_t>(8, (nvec + per_block - 1) / per_block))));
    if (vec_ok) {
      pool_kernel<scalar_t, kVec><<<grid, kThreads, 0, stream>>>(
          x, shots.data_ptr<int64_t>(), pk, y, w, T, hw, n, static_cast<int>(direction),
          reweight, static_cast<scalar_t>(h), normalize);
    } else {
      pool_kernel<scalar_t, 1><<<grid, kThreads, 0, stream>>>(
          x, shots.data_ptr<int64_t>(), pk, y, w, T, hw, n, static_cast<int>(direction),
          reweight, static_cast<scalar_t>(h), normalize);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, winner};
}

at::Tensor tmp_backward_cuda(const at::Tensor& grad_in, const at::Tensor& cams_in,
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
  TORCH_CHECK(grad_in.device() == cams_in.device() && winner_in.device() == cams_in.device(),
              "temporal_max_pool_backward: grad_out and winner must be on ", cams_in.device());
  const c10::cuda::CUDAGuard guard(cams_in.device());
  const at::Tensor cams = cams_in.contiguous();
  const at::Tensor g = grad_in.contiguous();
  const at::Tensor winner = winner_in.contiguous();
  const int64_t B = cams.size(0), T = cams.size(1), hw = cams.size(2) * cams.size(3);
  at::Tensor grad = at::zeros_like(cams);
  if (cams.numel() == 0) return grad;
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  at::Tensor peak, peak_at, coef, at_px;
  if (reweight) {
    peak = at::empty({B * T}, cams.options());
    peak_at = at::empty({B * T}, cams.options().dtype(at::kLong));
  }
  if (normalize) {
    coef = at::empty({B * T, 3}, cams.options());
    at_px = at::empty({B * T, 2}, cams.options().dtype(at::kLong));
  }
  AT_DISPATCH_FLOATING_TYPES(cams.scalar_type(), "temporal_max_pool_backward_cuda", [&] {
    const scalar_t* x = cams.data_ptr<scalar_t>();
    const scalar_t hh = static_cast<scalar_t>(h);
    scalar_t* pk = reweight ? peak.data_ptr<scalar_t>() : nullptr;
    int64_t* pk_at = reweight ? peak_at.data_ptr<int64_t>() : nullptr;
    scalar_t* cf = normalize ? coef.data_ptr<scalar_t>() : nullptr;
    int64_t* ap = normalize ? at_px.data_ptr<int64_t>() : nullptr;
    if (reweight) {
      map_max_kernel<scalar_t><<<B * T, kThreads, 0, stream>>>(x, hw, pk, pk_at);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (normalize) {
      norm_stats_kernel<scalar_t><<<B * T, kThreads, 0, stream>>>(
          x, g.data_ptr<scalar_t>(), winner.data_ptr<int32_t>(), pk, T, hw, reweight, hh, cf, ap);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    const int64_t blocks64 = (B * hw + kThreads - 1) / kThreads;
    const int blocks = static_cast<int>(blocks64 < 65535 ? blocks64 : 65535);
    scatter_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
        g.data_ptr<scalar_t>(), winner.data_ptr<int32_t>(), cf, ap, B, T, hw, normalize,
        grad.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (reweight) {
      reweight_grad_kernel<scalar_t><<<B * T, kThreads, 0, stream>>>(x, pk, pk_at, hw, hh,
                                                                     grad.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return grad;
}

}  // namespace

TORCH_LIBRARY_IMPL(wsolbench, CUDA, m) {
  m.impl("temporal_max_pool", &tmp_forward_cuda);
  m.impl("temporal_max_pool_backward", &tmp_backward_cuda);
}

}  // namespace wsolbench
