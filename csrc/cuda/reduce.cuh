// Small block-wide reductions shared by the wsolbench CUDA kernels (blockDim.x a power of two
// no larger than kMaxBlock).
#pragma once

#include <cstdint>

namespace wsolbench {
namespace cuda_detail {

constexpr int kMaxBlock = 512;

// Value with its flat index; index < 0 marks "no element". Ties go to the smaller index.
template <typename T>
struct ValIdx {
  T v;
  int64_t i;
};

template <typename T, bool kMax>
__device__ __forceinline__ bool better(T ov, int64_t oi, T mv, int64_t mi) {
  if (oi < 0) return false;
  if (mi < 0) return true;
  if (kMax ? (ov > mv) : (ov < mv)) return true;
  return ov == mv && oi < mi;
}

template <typename T, bool kMax>
__device__ ValIdx<T> block_arg_reduce(ValIdx<T> x) {
  __shared__ T sv[kMaxBlock];
  __shared__ int64_t si[kMaxBlock];
  const int tid = threadIdx.x;
  sv[tid] = x.v;
  si[tid] = x.i;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (tid < s && better<T, kMax>(sv[tid + s], si[tid + s], sv[tid], si[tid])) {
      sv[tid] = sv[tid + s];
      si[tid] = si[tid + s];
    }
    __syncthreads();
  }
  ValIdx<T> r{sv[0], si[0]};
  __syncthreads();
  return r;
}

template <typename T>
__device__ T block_sum(T x) {
  __shared__ T sv[kMaxBlock];
  const int tid = threadIdx.x;
  sv[tid] = x;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (tid < s) sv[tid] += sv[tid + s];
    __syncthreads();
  }
  T r = sv[0];
  __syncthreads();
  return r;
}

// Aligned vector of N elements for wide, coalesced loads and stores.
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

}  // namespace cuda_detail
}  // namespace wsolbench
