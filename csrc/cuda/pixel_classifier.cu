// CUDA kernels of the PixelCAM pixel classifier (schemas: csrc/ops/pixel_classifier.cpp).
//
// probs: one thread per VEC consecutive pixels of one image; it walks the channels with
//   16-byte vector loads (a warp reads 32 consecutive vectors of one channel plane: coalesced),
//   keeps the K logits in registers and writes the softmax. The weight row is the same for the
//   whole warp (broadcast through the read-only cache). Features are read exactly once.
// seed CE: a warp takes 32 consecutive pixels, reads their labels in one coalesced load and
//   ballots the seeds; the warp then handles the seeds one by one, its lanes splitting the
//   channels and reducing the K logits with shuffles. Only the seeds' features are read.
//   The backward writes each seed's feature gradient (one owner per pixel) and accumulates the
//   weight/bias gradients with atomics. The loss scale 1/n_seeds is read on the device, so
//   nothing synchronises with the host.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cstdint>
#include <type_traits>

#include "reduce.cuh"

namespace wsolbench {
namespace {

using cuda_detail::Vec;

constexpr int kThreads = 256;
constexpr int kMaxClassesCuda = 32;
constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ float dev_exp(float v) { return expf(v); }
__device__ __forceinline__ double dev_exp(double v) { return exp(v); }
__device__ __forceinline__ float dev_log(float v) { return logf(v); }
__device__ __forceinline__ double dev_log(double v) { return log(v); }

void check_classifier(const char* op, const at::Tensor& f, const at::Tensor& w,
                      const at::Tensor& b) {
  TORCH_CHECK(f.is_cuda(), op, ": features must be a CUDA tensor, got ", f.device());
  TORCH_CHECK(f.dim() == 4, op, ": features must be [B, C, h, w], got shape ", f.sizes());
  TORCH_CHECK(f.scalar_type() == at::kFloat || f.scalar_type() == at::kDouble, op,
              ": features must be float32 or float64, got ", f.scalar_type());
  TORCH_CHECK(w.dim() == 2 && w.size(1) == f.size(1), op, ": weight must be [K, C] with C = ",
              f.size(1), ", got shape ", w.sizes());
  TORCH_CHECK(w.size(0) >= 1 && w.size(0) <= kMaxClassesCuda, op,
              ": weight must have 1 to ", kMaxClassesCuda, " classes on CUDA, got shape ",
              w.sizes());
  TORCH_CHECK(b.dim() == 1 && b.size(0) == w.size(0), op, ": bias must be [K] with K = ",
              w.size(0), ", got shape ", b.sizes());
  TORCH_CHECK(w.scalar_type() == f.scalar_type() && b.scalar_type() == f.scalar_type(), op,
              ": weight and bias must have the dtype of features (", f.scalar_type(), "), got ",
              w.scalar_type(), " and ", b.scalar_type());
  TORCH_CHECK(w.device() == f.device() && b.device() == f.device(), op,
              ": weight and bias must be on the device of features (", f.device(), "), got ",
              w.device(), " and ", b.device());
  TORCH_CHECK(f.size(0) <= 65535, op, ": at most 65535 images per call on CUDA, got ", f.size(0));
}

void check_labels(const char* op, const at::Tensor& f, const at::Tensor& labels) {
  TORCH_CHECK(labels.scalar_type() == at::kLong, op, ": labels must be int64, got ",
              labels.scalar_type());
  TORCH_CHECK(labels.dim() == 3 && labels.size(0) == f.size(0) && labels.size(1) == f.size(2) &&
                  labels.size(2) == f.size(3),
              op, ": labels must be [B, h, w] = [", f.size(0), ", ", f.size(2), ", ", f.size(3),
              "], got shape ", labels.sizes());
  TORCH_CHECK(labels.device() == f.device(), op, ": labels must be on the device of features (",
              f.device(), "), got ", labels.device());
}

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// ---------------------------------------------------------------- probabilities
template <typename scalar_t, int KMAX, int VEC>
__global__ void probs_kernel(const scalar_t* __restrict__ F, const scalar_t* __restrict__ W,
                             const scalar_t* __restrict__ bias, scalar_t* __restrict__ Y,
                             int64_t C, int64_t hw, int K, int fg) {
  using V = Vec<scalar_t, VEC>;
  const int64_t b = blockIdx.y;
  const int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (q * VEC >= hw) return;
  scalar_t acc[KMAX][VEC];
#pragma unroll
  for (int k = 0; k < KMAX; ++k) {
    const scalar_t bk = k < K ? bias[k] : scalar_t(0);
#pragma unroll
    for (int j = 0; j < VEC; ++j) acc[k][j] = bk;
  }
  const scalar_t* fb = F + b * C * hw + q * VEC;
#pragma unroll 4
  for (int64_t c = 0; c < C; ++c) {
    const V f = *reinterpret_cast<const V*>(fb + c * hw);
#pragma unroll
    for (int k = 0; k < KMAX; ++k) {
      if (k < K) {
        const scalar_t wk = __ldg(W + k * C + c);
#pragma unroll
        for (int j = 0; j < VEC; ++j) acc[k][j] += wk * f.v[j];
      }
    }
  }
  V outv;
#pragma unroll
  for (int j = 0; j < VEC; ++j) {
    scalar_t mx = acc[0][j];
#pragma unroll
    for (int k = 1; k < KMAX; ++k)
      if (k < K && acc[k][j] > mx) mx = acc[k][j];
    scalar_t den = 0;
#pragma unroll
    for (int k = 0; k < KMAX; ++k) {
      if (k < K) {
        acc[k][j] = dev_exp(acc[k][j] - mx);
        den += acc[k][j];
      }
    }
#pragma unroll
    for (int k = 0; k < KMAX; ++k)
      if (k < K) acc[k][j] /= den;
  }
  if (fg >= 0) {
#pragma unroll
    for (int j = 0; j < VEC; ++j) {
      scalar_t v = 0;
#pragma unroll
      for (int k = 0; k < KMAX; ++k)
        if (k == fg) v = acc[k][j];
      outv.v[j] = v;
    }
    *reinterpret_cast<V*>(Y + b * hw + q * VEC) = outv;
  } else {
#pragma unroll
    for (int k = 0; k < KMAX; ++k) {
      if (k < K) {
#pragma unroll
        for (int j = 0; j < VEC; ++j) outv.v[j] = acc[k][j];
        *reinterpret_cast<V*>(Y + (b * K + k) * hw + q * VEC) = outv;
      }
    }
  }
}

template <typename scalar_t, int KMAX, int VEC>
void launch_probs(const at::Tensor& f, const at::Tensor& w, const at::Tensor& b, at::Tensor& out,
                  int fg, cudaStream_t stream) {
  const int64_t B = f.size(0), C = f.size(1), hw = f.size(2) * f.size(3);
  const int64_t nvec = hw / VEC;
  const dim3 grid(static_cast<unsigned>((nvec + kThreads - 1) / kThreads), static_cast<unsigned>(B));
  probs_kernel<scalar_t, KMAX, VEC><<<grid, kThreads, 0, stream>>>(
      f.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(),
      out.data_ptr<scalar_t>(), C, hw, static_cast<int>(w.size(0)), fg);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::Tensor probs_cuda(const at::Tensor& f_in, const at::Tensor& w_in, const at::Tensor& b_in,
                      int64_t fg_class) {
  check_classifier("pixel_classifier_probs", f_in, w_in, b_in);
  const int64_t K = w_in.size(0);
  TORCH_CHECK(fg_class < K, "pixel_classifier_probs: fg_class must be < K = ", K,
              " (or < 0 for all classes), got ", fg_class);
  const c10::cuda::CUDAGuard guard(f_in.device());
  const at::Tensor f = f_in.contiguous(), w = w_in.contiguous(), b = b_in.contiguous();
  at::Tensor out = fg_class >= 0 ? at::empty({f.size(0), f.size(2), f.size(3)}, f.options())
                                 : at::empty({f.size(0), K, f.size(2), f.size(3)}, f.options());
  if (out.numel() == 0) return out;
  if (f.size(1) == 0) {  // no channels: the logits are the bias
    const at::Tensor p = at::softmax(b.view({1, K, 1, 1}), 1).expand({f.size(0), K, f.size(2), f.size(3)});
    out.copy_(fg_class >= 0 ? p.select(1, fg_class) : p);
    return out;
  }
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int fg = static_cast<int>(fg_class < 0 ? -1 : fg_class);
  const int64_t hw = f.size(2) * f.size(3);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "pixel_classifier_probs_cuda", [&] {
    constexpr int kVec = 16 / sizeof(scalar_t);
    const bool vec_ok = hw % kVec == 0 && aligned(f.data_ptr(), 16) && aligned(out.data_ptr(), 16);
    if (K <= 2 && vec_ok) {
      launch_probs<scalar_t, 2, kVec>(f, w, b, out, fg, stream);
    } else if (K <= 2) {
      launch_probs<scalar_t, 2, 1>(f, w, b, out, fg, stream);
    } else if (K <= 8 && vec_ok) {
      launch_probs<scalar_t, 8, kVec>(f, w, b, out, fg, stream);
    } else if (K <= 8) {
      launch_probs<scalar_t, 8, 1>(f, w, b, out, fg, stream);
    } else {
      launch_probs<scalar_t, kMaxClassesCuda, 1>(f, w, b, out, fg, stream);
    }
  });
  return out;
}

// ---------------------------------------------------------------- seed cross-entropy
// Logits of one seed, every lane of the warp ends with the full sums in z.
template <typename scalar_t, int KMAX>
__device__ __forceinline__ void warp_logits(const scalar_t* __restrict__ fpix,
                                            const scalar_t* __restrict__ W,
                                            const scalar_t* __restrict__ bias, int64_t C,
                                            int64_t hw, int K, int lane, scalar_t* z) {
#pragma unroll
  for (int k = 0; k < KMAX; ++k) z[k] = 0;
  for (int64_t c = lane; c < C; c += 32) {
    const scalar_t f = fpix[c * hw];
#pragma unroll
    for (int k = 0; k < KMAX; ++k)
      if (k < K) z[k] += __ldg(W + k * C + c) * f;
  }
#pragma unroll
  for (int k = 0; k < KMAX; ++k) {
    if (k < K) {
      scalar_t v = z[k];
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(kFull, v, off);
      z[k] = v + bias[k];
    }
  }
}

// Softmax of z in place; returns log-sum-exp.
template <typename scalar_t, int KMAX>
__device__ __forceinline__ scalar_t softmax_inplace(scalar_t* z, int K) {
  scalar_t mx = z[0];
#pragma unroll
  for (int k = 1; k < KMAX; ++k)
    if (k < K && z[k] > mx) mx = z[k];
  scalar_t den = 0;
#pragma unroll
  for (int k = 0; k < KMAX; ++k) {
    if (k < K) {
      z[k] = dev_exp(z[k] - mx);
      den += z[k];
    }
  }
#pragma unroll
  for (int k = 0; k < KMAX; ++k)
    if (k < K) z[k] /= den;
  return mx + dev_log(den);
}

template <typename scalar_t, int KMAX>
__global__ void seed_ce_forward_kernel(const scalar_t* __restrict__ F,
                                       const scalar_t* __restrict__ W,
                                       const scalar_t* __restrict__ bias,
                                       const int64_t* __restrict__ L, int64_t total, int64_t C,
                                       int64_t hw, int K, int64_t ignore,
                                       scalar_t* __restrict__ loss_sum,
                                       int64_t* __restrict__ count) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) >> 5;
  const int64_t nwarps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  for (int64_t base = warp * 32; base < total; base += nwarps * 32) {
    const int64_t i = base + lane;
    const int64_t y = i < total ? L[i] : ignore;
    unsigned mask = __ballot_sync(kFull, y != ignore);
    if (mask == 0) continue;
    if (lane == 0) {
      atomicAdd(reinterpret_cast<unsigned long long*>(count),
                static_cast<unsigned long long>(__popc(mask)));
    }
    while (mask) {
      const int src = __ffs(mask) - 1;
      mask &= mask - 1;
      const long long ys = __shfl_sync(kFull, static_cast<long long>(y), src);
      CUDA_KERNEL_ASSERT(ys >= 0 && ys < K);
      const int64_t pix = base + src;
      const int64_t b = pix / hw, p = pix % hw;
      scalar_t z[KMAX];
      warp_logits<scalar_t, KMAX>(F + b * C * hw + p, W, bias, C, hw, K, lane, z);
      if (lane == 0) {
        scalar_t zy = 0;
#pragma unroll
        for (int k = 0; k < KMAX; ++k)
          if (k == ys) zy = z[k];
        const scalar_t lse = softmax_inplace<scalar_t, KMAX>(z, K);
        atomicAdd(loss_sum, lse - zy);
      }
    }
  }
}

template <typename scalar_t, int KMAX>
__global__ void seed_ce_backward_kernel(const scalar_t* __restrict__ grad_loss,
                                        const int64_t* __restrict__ count,
                                        const scalar_t* __restrict__ F,
                                        const scalar_t* __restrict__ W,
                                        const scalar_t* __restrict__ bias,
                                        const int64_t* __restrict__ L, int64_t total, int64_t C,
                                        int64_t hw, int K, int64_t ignore,
                                        scalar_t* __restrict__ GF, scalar_t* __restrict__ GW,
                                        scalar_t* __restrict__ GB) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) >> 5;
  const int64_t nwarps = (static_cast<int64_t>(gridDim.x) * blockDim.x) >> 5;
  const int64_t n = *count;
  const scalar_t scale = *grad_loss / static_cast<scalar_t>(n > 0 ? n : 1);
  for (int64_t base = warp * 32; base < total; base += nwarps * 32) {
    const int64_t i = base + lane;
    const int64_t y = i < total ? L[i] : ignore;
    unsigned mask = __ballot_sync(kFull, y != ignore);
    while (mask) {
      const int src = __ffs(mask) - 1;
      mask &= mask - 1;
      const long long ys = __shfl_sync(kFull, static_cast<long long>(y), src);
      const int64_t pix = base + src;
      const int64_t b = pix / hw, p = pix % hw;
      const scalar_t* fpix = F + b * C * hw + p;
      scalar_t z[KMAX];
      warp_logits<scalar_t, KMAX>(fpix, W, bias, C, hw, K, lane, z);
      softmax_inplace<scalar_t, KMAX>(z, K);
#pragma unroll
      for (int k = 0; k < KMAX; ++k) z[k] = (z[k] - (k == ys ? scalar_t(1) : scalar_t(0))) * scale;
      scalar_t* gpix = GF + b * C * hw + p;
      for (int64_t c = lane; c < C; c += 32) {
        const scalar_t f = fpix[c * hw];
        scalar_t g = 0;
#pragma unroll
        for (int k = 0; k < KMAX; ++k) {
          if (k < K) {
            const scalar_t wk = __ldg(W + k * C + c);
            g += wk * z[k];
            atomicAdd(GW + k * C + c, z[k] * f);
          }
        }
        gpix[c * hw] = g;
      }
      if (lane == 0) {
#pragma unroll
        for (int k = 0; k < KMAX; ++k)
          if (k < K) atomicAdd(GB + k, z[k]);
      }
    }
  }
}

int seed_blocks(int64_t total) {
  const int64_t warps_needed = (total + 31) / 32;
  const int64_t blocks = (warps_needed * 32 + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < 4096 ? (blocks > 0 ? blocks : 1) : 4096);
}

std::tuple<at::Tensor, at::Tensor> seed_ce_cuda(const at::Tensor& f_in, const at::Tensor& w_in,
                                                const at::Tensor& b_in, const at::Tensor& l_in,
                                                int64_t ignore_index) {
  check_classifier("pixel_seed_ce", f_in, w_in, b_in);
  check_labels("pixel_seed_ce", f_in, l_in);
  const c10::cuda::CUDAGuard guard(f_in.device());
  const at::Tensor f = f_in.contiguous(), w = w_in.contiguous(), b = b_in.contiguous();
  const at::Tensor labels = l_in.contiguous();
  const int64_t C = f.size(1), hw = f.size(2) * f.size(3), total = labels.numel();
  const int K = static_cast<int>(w.size(0));
  at::Tensor loss_sum = at::zeros({}, f.options());
  at::Tensor count = at::zeros({}, f.options().dtype(at::kLong));
  if (total > 0) {
    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    const int blocks = seed_blocks(total);
    AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "pixel_seed_ce_cuda", [&] {
      auto launch = [&](auto kmax) {
        constexpr int KM = decltype(kmax)::value;
        seed_ce_forward_kernel<scalar_t, KM><<<blocks, kThreads, 0, stream>>>(
            f.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(),
            labels.data_ptr<int64_t>(), total, C, hw, K, ignore_index,
            loss_sum.data_ptr<scalar_t>(), count.data_ptr<int64_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      };
      if (K <= 2) launch(std::integral_constant<int, 2>{});
      else if (K <= 8) launch(std::integral_constant<int, 8>{});
      else launch(std::integral_constant<int, kMaxClassesCuda>{});
    });
  }
  at::Tensor loss = loss_sum / count.clamp_min(1).to(f.scalar_type());
  return {loss, count};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> seed_ce_backward_cuda(
    const at::Tensor& grad_loss, const at::Tensor& f_in, const at::Tensor& w_in,
    const at::Tensor& b_in, const at::Tensor& l_in, const at::Tensor& n_seeds,
    int64_t ignore_index) {
  check_classifier("pixel_seed_ce_backward", f_in, w_in, b_in);
  check_labels("pixel_seed_ce_backward", f_in, l_in);
  TORCH_CHECK(grad_loss.numel() == 1 && grad_loss.device() == f_in.device(),
              "pixel_seed_ce_backward: grad_loss must hold one value on ", f_in.device(),
              ", got shape ", grad_loss.sizes(), " on ", grad_loss.device());
  TORCH_CHECK(n_seeds.numel() == 1 && n_seeds.scalar_type() == at::kLong &&
                  n_seeds.device() == f_in.device(),
              "pixel_seed_ce_backward: n_seeds must be a 0-dim int64 tensor on ", f_in.device(),
              ", got ", n_seeds.scalar_type(), " ", n_seeds.sizes(), " on ", n_seeds.device());
  const c10::cuda::CUDAGuard guard(f_in.device());
  const at::Tensor f = f_in.contiguous(), w = w_in.contiguous(), b = b_in.contiguous();
  const at::Tensor labels = l_in.contiguous();
  const at::Tensor gl = grad_loss.to(f.scalar_type()).contiguous();
  const at::Tensor cnt = n_seeds.contiguous();
  const int64_t C = f.size(1), hw = f.size(2) * f.size(3), total = labels.numel();
  const int K = static_cast<int>(w.size(0));
  at::Tensor gf = at::zeros_like(f), gw = at::zeros_like(w), gb = at::zeros_like(b);
  if (total == 0) return {gf, gw, gb};
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int blocks = seed_blocks(total);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "pixel_seed_ce_backward_cuda", [&] {
    auto launch = [&](auto kmax) {
      constexpr int KM = decltype(kmax)::value;
      seed_ce_backward_kernel<scalar_t, KM><<<blocks, kThreads, 0, stream>>>(
          gl.data_ptr<scalar_t>(), cnt.data_ptr<int64_t>(), f.data_ptr<scalar_t>(),
          w.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), labels.data_ptr<int64_t>(), total, C,
          hw, K, ignore_index, gf.data_ptr<scalar_t>(), gw.data_ptr<scalar_t>(),
          gb.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    };
    if (K <= 2) launch(std::integral_constant<int, 2>{});
    else if (K <= 8) launch(std::integral_constant<int, 8>{});
    else launch(std::integral_constant<int, kMaxClassesCuda>{});
  });
  return {gf, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(wsolbench, CUDA, m) {
  m.impl("pixel_classifier_probs", &probs_cuda);
  m.impl("pixel_seed_ce", &seed_ce_cuda);
  m.impl("pixel_seed_ce_backward", &seed_ce_backward_cuda);
}

}  // namespace wsolbench
