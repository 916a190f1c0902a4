// CUDA kernel of wsolbench::lattice_filter (schema in csrc/ops/lattice_filter.cpp; the CPU
// kernel in csrc/cpu/lattice_filter.cpp documents the algorithm).
//
// All images of the batch share one hash table whose keys carry the image index, so the whole
// batch is built and filtered by a fixed sequence of launches on the current stream, with no
// host synchronisation: the number of lattice points M stays on the device, every buffer is
// sized from the input (upper bound M <= B * N * (d+1)) and the kernels over lattice points
// exit early past M.
//
//   embed      one thread per point: rem0, rank, barycentric weights (float64 arithmetic, so the
//              lattice is the one the CPU kernel and the reference build)
//   insert     one thread per vertex: lock-free open addressing with atomicCAS (2V slots)
//   compact    one pass over the table: occupied slots take dense ids from a device-side count
//              (one atomic per warp), no flags array and no scan
//   neighbours one thread per lattice point: 2 (d+1) lookups
//   splat      blocks of 256 consecutive points pre-aggregate their vertices in a shared-memory
//              table (lattice id -> channel accumulators, shared atomics) and flush one global
//              atomicAdd per distinct lattice point and channel; vertices that find no shared
//              slot within a few probes go straight to global memory
//   blur       one thread per (lattice point, channel), d+1 ping-pong launches, (0.5, 1, 0.5);
//              symmetric (W + W^T): the splat is cloned and one launch per direction advances both
//              orders (d+1 launches, not 2 (d+1) and an add)
//   slice      one thread per (point, channel), writes [B, K, N] directly (coalesced in N); sums
//              the two orders of W + W^T as it gathers
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>

#include "../ops/lattice_filter.h"

namespace wsolbench {
namespace {

constexpr int kMaxD = 8;
constexpr int kThreads = 256;
constexpr int kSharedSlots = 512;  // distinct lattice points pre-aggregated per splat block
constexpr int kChannelChunk = 8;   // channels accumulated in shared memory per pass
constexpr int kSharedProbes = 16;

inline unsigned int blocks_for(int64_t work) {
  return static_cast<unsigned int>(std::max<int64_t>(1, (work + kThreads - 1) / kThreads));
}

__device__ __forceinline__ void vertex_key(const int32_t* __restrict__ rem0, const int8_t* __restrict__ rank,
                                           int64_t v, int d, int32_t* key) {
  const int64_t p = v / (d + 1);
  const int r = static_cast<int>(v - p * (d + 1));
  for (int i = 0; i < d; ++i) {
    const int rk = rank[p * (d + 1) + i];
    key[i] = rem0[p * (d + 1) + i] + (rk <= d - r ? r : r - (d + 1));
  }
}

__device__ __forceinline__ uint64_t hash_key(int64_t image, const int32_t* key, int d) {
  uint64_t h = 0x2545F4914F6CDD1DULL ^ static_cast<uint64_t>(image);
  h *= 0x9E3779B97F4A7C15ULL;
  for (int i = 0; i < d; ++i) {
    h ^= static_cast<uint32_t>(key[i]);
    h *= 0x9E3779B97F4A7C15ULL;
  }
  h ^= h >> 33;
  h *= 0xFF51AFD7ED558CCDULL;
  h ^= h >> 33;
  h *= 0xC4CEB9FE1A85EC53ULL;
  h ^= h >> 33;
  return h;
}

__device__ __forceinline__ bool same_key(const int32_t* a, const int32_t* b, int d) {
  for (int i = 0; i < d; ++i)
    if (a[i] != b[i]) return false;
  return true;
}

template <typename scalar_t>
__global__ void embed_kernel(const double* __restrict__ feat, const uint8_t* __restrict__ valid, int64_t P, int d,
                             int32_t* __restrict__ rem0_out, int8_t* __restrict__ rank_out,
                             scalar_t* __restrict__ weight_out) {
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (p >= P) return;
  int32_t* r0 = rem0_out + p * (d + 1);
  int8_t* rk = rank_out + p * (d + 1);
  scalar_t* w = weight_out + p * (d + 1);
  if (valid != nullptr && !valid[p]) {
    for (int i = 0; i <= d; ++i) {
      r0[i] = 0;
      rk[i] = 0;
      w[i] = scalar_t(0);
    }
    return;
  }
  const double* f = feat + p * d;
  const double inv_std = sqrt(2.0 / 3.0) * (d + 1);
  const double down = 1.0 / (d + 1);
  double el[kMaxD + 1], bary[kMaxD + 2];
  int32_t rem[kMaxD + 1];
  int rnk[kMaxD + 1];
  double sm = 0.0;
  for (int j = d; j > 0; --j) {
    const double cf = f[j - 1] * (inv_std / sqrt(static_cast<double>(j * (j + 1))));
    el[j] = sm - j * cf;
    sm += cf;
  }
  el[0] = sm;
  int64_t sum = 0;
  for (int i = 0; i <= d; ++i) {
    const double rd = nearbyint(el[i] * down);
    rem[i] = static_cast<int32_t>(rd) * (d + 1);
    sum += static_cast<int64_t>(rd);
    rnk[i] = 0;
  }
  for (int i = 0; i < d; ++i) {
    const double di = el[i] - rem[i];
    for (int j = i + 1; j <= d; ++j) {
      const int lt = di < el[j] - rem[j];  // branch-free: no divergence within a warp
      rnk[i] += lt;
      rnk[j] += 1 - lt;
    }
  }
  for (int i = 0; i <= d; ++i) {
    rnk[i] += static_cast<int>(sum);
    if (rnk[i] < 0) {
      rnk[i] += d + 1;
      rem[i] += d + 1;
    } else if (rnk[i] > d) {
      rnk[i] -= d + 1;
      rem[i] -= d + 1;
    }
  }
  for (int i = 0; i <= d + 1; ++i) bary[i] = 0.0;
  for (int i = 0; i <= d; ++i) {
    const double v = (el[i] - rem[i]) * down;
    bary[d - rnk[i]] += v;
    bary[d - rnk[i] + 1] -= v;
  }
  bary[0] += 1.0 + bary[d + 1];
  for (int i = 0; i <= d; ++i) {
    r0[i] = rem[i];
    rk[i] = static_cast<int8_t>(rnk[i]);
    w[i] = static_cast<scalar_t>(bary[i]);
  }
}

__global__ void insert_kernel(const int32_t* __restrict__ rem0, const int8_t* __restrict__ rank,
                              const uint8_t* __restrict__ valid, int64_t V, int64_t N, int d, int32_t* table,
                              uint64_t mask, int32_t* __restrict__ vslot) {
  const int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (v >= V) return;
  const int64_t p = v / (d + 1);
  if (valid != nullptr && !valid[p]) {
    vslot[v] = -1;
    return;
  }
  const int64_t image = p / N;
  int32_t key[kMaxD], other[kMaxD];
  vertex_key(rem0, rank, v, d, key);
  uint64_t s = hash_key(image, key, d) & mask;
  while (true) {
    int32_t owner = atomicCAS(&table[s], -1, static_cast<int32_t>(v));
    if (owner < 0) break;  // claimed the empty slot
    if (static_cast<int64_t>(owner) / ((d + 1) * N) == image) {
      vertex_key(rem0, rank, owner, d, other);
      if (same_key(other, key, d)) break;
    }
    s = (s + 1) & mask;
  }
  vslot[v] = static_cast<int32_t>(s);
}

// occupied slots -> dense ids in one pass over the table (no flags array, no scan): one atomic
// per warp on the device-side count M. The ids' order depends on scheduling; the filtered values
// do not (every lattice point's blur is a fixed formula of its neighbours). rep[id] = owner vertex.
__global__ void compact_kernel(const int32_t* __restrict__ table, int64_t cap, int32_t* __restrict__ m_count,
                               int32_t* __restrict__ slot_id, int32_t* __restrict__ rep) {
  const int64_t s = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int32_t owner = s < cap ? table[s] : -1;
  const unsigned occupied = __ballot_sync(0xffffffffu, owner >= 0);  // the whole warp reaches it
  if (s >= cap) return;
  if (owner < 0) {
    slot_id[s] = -1;
    return;
  }
  const int lane = threadIdx.x & 31;
  const int leader = __ffs(occupied) - 1;
  int32_t base = 0;
  if (lane == leader) base = atomicAdd(m_count, __popc(occupied));
  base = __shfl_sync(occupied, base, leader);
  const int32_t id = base + __popc(occupied & ((1u << lane) - 1u));
  slot_id[s] = id;
  rep[id] = owner;
}

__global__ void vertex_ids_kernel(const int32_t* __restrict__ vslot, const int32_t* __restrict__ slot_id, int64_t V,
                                  int32_t* __restrict__ vlat) {
  const int64_t v = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (v >= V) return;
  const int32_t s = vslot[v];
  vlat[v] = s < 0 ? -1 : slot_id[s];
}

__device__ __forceinline__ int32_t find_id(const int32_t* __restrict__ table, const int32_t* __restrict__ slot_id,
                                           const int32_t* __restrict__ rem0, const int8_t* __restrict__ rank,
                                           int64_t image, int64_t N, const int32_t* key, int d, uint64_t mask) {
  int32_t other[kMaxD];
  uint64_t s = hash_key(image, key, d) & mask;
  while (true) {
    const int32_t owner = table[s];
    if (owner < 0) return -1;
    if (static_cast<int64_t>(owner) / ((d + 1) * N) == image) {
      vertex_key(rem0, rank, owner, d, other);
      if (same_key(other, key, d)) return slot_id[s];
    }
    s = (s + 1) & mask;
  }
}

__global__ void neighbours_kernel(const int32_t* __restrict__ table, const int32_t* __restrict__ slot_id,
                                  const int32_t* __restrict__ rem0, const int8_t* __restrict__ rank,
                                  const int32_t* __restrict__ rep, const int32_t* __restrict__ m_dev, int64_t N, int d,
                                  uint64_t mask, int32_t* __restrict__ nbr) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= *m_dev) return;
  const int32_t owner = rep[i];
  const int64_t image = static_cast<int64_t>(owner) / ((d + 1) * N);
  int32_t key[kMaxD], k1[kMaxD], k2[kMaxD];
  vertex_key(rem0, rank, owner, d, key);
  for (int j = 0; j <= d; ++j) {
    for (int c = 0; c < d; ++c) {
      k1[c] = key[c] - 1;
      k2[c] = key[c] + 1;
    }
    if (j < d) {
      k1[j] = key[j] + d;
      k2[j] = key[j] - d;
    }
    nbr[(i * (d + 1) + j) * 2 + 0] = find_id(table, slot_id, rem0, rank, image, N, k1, d, mask);
    nbr[(i * (d + 1) + j) * 2 + 1] = find_id(table, slot_id, rem0, rank, image, N, k2, d, mask);
  }
}

// values [B, K, N]; lat [Mmax, K] zeroed. One block = kThreads consecutive points (flattened
// over the batch); their (d+1) vertices are pre-aggregated per distinct lattice id in shared
// memory before one global atomicAdd per (lattice point, channel).
template <typename scalar_t>
__global__ void splat_kernel(const scalar_t* __restrict__ values, const scalar_t* __restrict__ weight,
                             const int32_t* __restrict__ vlat, int64_t P, int64_t N, int64_t K, int d,
                             scalar_t* __restrict__ lat) {
  __shared__ int32_t skey[kSharedSlots];
  __shared__ scalar_t sacc[kSharedSlots * kChannelChunk];
  const int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  for (int s = threadIdx.x; s < kSharedSlots; s += blockDim.x) skey[s] = -1;
  __syncthreads();
  int slot[kMaxD + 1];
  int32_t ids[kMaxD + 1];
  scalar_t ws[kMaxD + 1];
  const bool active = p < P && vlat[p * (d + 1)] >= 0;
  for (int r = 0; r <= d; ++r) {
    slot[r] = -1;
    ids[r] = -1;
    ws[r] = scalar_t(0);
    if (!active) continue;
    const int32_t id = vlat[p * (d + 1) + r];
    ids[r] = id;
    ws[r] = weight[p * (d + 1) + r];
    uint32_t h = static_cast<uint32_t>(id) * 2654435761u;
    for (int probe = 0; probe < kSharedProbes; ++probe) {
      const int s = static_cast<int>((h + probe) % kSharedSlots);
      const int32_t prev = atomicCAS(&skey[s], -1, id);
      if (prev == -1 || prev == id) {
        slot[r] = s;
        break;
      }
    }
  }
  const int64_t b = active ? p / N : 0;
  const int64_t n = active ? p - b * N : 0;
  for (int64_t c0 = 0; c0 < K; c0 += kChannelChunk) {
    const int kc = static_cast<int>(K - c0 < kChannelChunk ? K - c0 : kChannelChunk);
    __syncthreads();  // previous flush done before the accumulators are cleared
    for (int e = threadIdx.x; e < kSharedSlots * kChannelChunk; e += blockDim.x) sacc[e] = scalar_t(0);
    __syncthreads();
    if (active) {
      for (int r = 0; r <= d; ++r) {
        for (int k = 0; k < kc; ++k) {
          const scalar_t val = ws[r] * values[(b * K + c0 + k) * N + n];
          if (slot[r] >= 0) {
            atomicAdd(&sacc[slot[r] * kChannelChunk + k], val);
          } else {
            atomicAdd(&lat[static_cast<int64_t>(ids[r]) * K + c0 + k], val);
          }
        }
      }
    }
    __syncthreads();
    for (int e = threadIdx.x; e < kSharedSlots * kChannelChunk; e += blockDim.x) {
      const int s = e / kChannelChunk, k = e - s * kChannelChunk;
      const int32_t id = skey[s];
      if (id >= 0 && k < kc) atomicAdd(&lat[static_cast<int64_t>(id) * K + c0 + k], sacc[e]);
    }
  }
}

template <typename scalar_t>
__global__ void blur_kernel(const scalar_t* __restrict__ cur, const int32_t* __restrict__ nbr,
                            const int32_t* __restrict__ m_dev, int64_t K, int d, int j, scalar_t* __restrict__ nxt) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t i = e / K;
  if (i >= *m_dev) return;
  const int64_t k = e - i * K;
  const int32_t n1 = nbr[(i * (d + 1) + j) * 2 + 0];
  const int32_t n2 = nbr[(i * (d + 1) + j) * 2 + 1];
  const scalar_t v1 = n1 >= 0 ? cur[static_cast<int64_t>(n1) * K + k] : scalar_t(0);
  const scalar_t v2 = n2 >= 0 ? cur[static_cast<int64_t>(n2) * K + k] : scalar_t(0);
  nxt[e] = cur[e] + scalar_t(0.5) * (v1 + v2);
}

// W + W^T: one launch advances both blur orders (direction j of one, d - j of the other)
template <typename scalar_t>
__global__ void blur_both_kernel(const scalar_t* __restrict__ cur, const scalar_t* __restrict__ cur2,
                                 const int32_t* __restrict__ nbr, const int32_t* __restrict__ m_dev, int64_t K, int d,
                                 int j, scalar_t* __restrict__ nxt, scalar_t* __restrict__ nxt2) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t i = e / K;
  if (i >= *m_dev) return;
  const int64_t k = e - i * K;
  {
    const int32_t n1 = nbr[(i * (d + 1) + j) * 2 + 0];
    const int32_t n2 = nbr[(i * (d + 1) + j) * 2 + 1];
    const scalar_t v1 = n1 >= 0 ? cur[static_cast<int64_t>(n1) * K + k] : scalar_t(0);
    const scalar_t v2 = n2 >= 0 ? cur[static_cast<int64_t>(n2) * K + k] : scalar_t(0);
    nxt[e] = cur[e] + scalar_t(0.5) * (v1 + v2);
  }
  {
    const int jr = d - j;
    const int32_t n1 = nbr[(i * (d + 1) + jr) * 2 + 0];
    const int32_t n2 = nbr[(i * (d + 1) + jr) * 2 + 1];
    const scalar_t v1 = n1 >= 0 ? cur2[static_cast<int64_t>(n1) * K + k] : scalar_t(0);
    const scalar_t v2 = n2 >= 0 ? cur2[static_cast<int64_t>(n2) * K + k] : scalar_t(0);
    nxt2[e] = cur2[e] + scalar_t(0.5) * (v1 + v2);
  }
}

// lat2 (or null): the other blur order of W + W^T, summed here instead of in a pass of its own
template <typename scalar_t>
__global__ void slice_kernel(const scalar_t* __restrict__ lat, const scalar_t* __restrict__ lat2,
                             const scalar_t* __restrict__ weight,
                             const int32_t* __restrict__ vlat, int64_t B, int64_t K, int64_t N, int d, scalar_t alpha,
                             scalar_t* __restrict__ out) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;  // over [B, K, N]
  if (e >= B * K * N) return;
  const int64_t n = e % N;
  const int64_t k = (e / N) % K;
  const int64_t b = e / (N * K);
  const int64_t p = b * N + n;
  scalar_t acc = scalar_t(0);
  if (vlat[p * (d + 1)] >= 0) {
    for (int r = 0; r <= d; ++r) {
      const int64_t at = static_cast<int64_t>(vlat[p * (d + 1) + r]) * K + k;
      acc += weight[p * (d + 1) + r] * (lat2 != nullptr ? lat[at] + lat2[at] : lat[at]);
    }
  }
  out[e] = acc * alpha;
}

struct GpuLattice {
  int d = 0;
  int64_t B = 0, N = 0, V = 0;
  at::Tensor weight, vlat, nbr, m_dev;
};

template <typename scalar_t>
GpuLattice build_lattice(const at::Tensor& feat /* [B, N, d] f64 */, const at::Tensor& vmask, int64_t B, int64_t N,
                         int d, const at::TensorOptions& vopts, cudaStream_t stream) {
  GpuLattice L;
  L.d = d;
  L.B = B;
  L.N = N;
  const int64_t P = B * N;
  L.V = P * (d + 1);
  auto iopts = vopts.dtype(at::kInt);
  auto rem0 = at::empty({L.V}, iopts);
  auto rank = at::empty({L.V}, vopts.dtype(at::kChar));
  L.weight = at::empty({L.V}, vopts);
  const uint8_t* mp = vmask.defined() ? vmask.data_ptr<uint8_t>() : nullptr;
  embed_kernel<scalar_t><<<blocks_for(P), kThreads, 0, stream>>>(feat.data_ptr<double>(), mp, P, d,
                                                                  rem0.data_ptr<int32_t>(), rank.data_ptr<int8_t>(),
                                                                  L.weight.data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  int64_t cap = 16;
  while (cap < 2 * L.V) cap <<= 1;  // load factor <= 1/2 even if every vertex is distinct
  const uint64_t mask = static_cast<uint64_t>(cap - 1);
  auto table = at::full({cap}, -1, iopts);
  auto vslot = at::empty({L.V}, iopts);
  insert_kernel<<<blocks_for(L.V), kThreads, 0, stream>>>(rem0.data_ptr<int32_t>(), rank.data_ptr<int8_t>(), mp,
                                                          L.V, N, d, table.data_ptr<int32_t>(), mask,
                                                          vslot.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  L.m_dev = at::zeros({1}, iopts);  // M, counted and kept on the device
  auto slot_id = at::empty({cap}, iopts);
  auto rep = at::empty({std::max<int64_t>(L.V, 1)}, iopts);
  compact_kernel<<<blocks_for(cap), kThreads, 0, stream>>>(table.data_ptr<int32_t>(), cap, L.m_dev.data_ptr<int32_t>(),
                                                           slot_id.data_ptr<int32_t>(), rep.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  L.vlat = at::empty({L.V}, iopts);
  vertex_ids_kernel<<<blocks_for(L.V), kThreads, 0, stream>>>(vslot.data_ptr<int32_t>(), slot_id.data_ptr<int32_t>(),
                                                              L.V, L.vlat.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  L.nbr = at::empty({std::max<int64_t>(L.V, 1) * (d + 1) * 2}, iopts);
  neighbours_kernel<<<blocks_for(L.V), kThreads, 0, stream>>>(
      table.data_ptr<int32_t>(), slot_id.data_ptr<int32_t>(), rem0.data_ptr<int32_t>(), rank.data_ptr<int8_t>(),
      rep.data_ptr<int32_t>(), L.m_dev.data_ptr<int32_t>(), N, d, mask, L.nbr.data_ptr<int32_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return L;
}

// d + 1 blur launches over lattice values `cur` (scratch `nxt`), direction order 0..d or d..0;
// returns the buffer holding the result
template <typename scalar_t>
scalar_t* blur_lattice(const GpuLattice& L, scalar_t* cur, scalar_t* nxt, int64_t K, bool reverse,
                       cudaStream_t stream) {
  const int d = L.d;
  for (int step = 0; step <= d; ++step) {
    const int j = reverse ? d - step : step;
    blur_kernel<scalar_t><<<blocks_for(L.V * K), kThreads, 0, stream>>>(cur, L.nbr.data_ptr<int32_t>(),
                                                                         L.m_dev.data_ptr<int32_t>(), K, d, j, nxt);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    std::swap(cur, nxt);
  }
  return cur;
}

// values [B, K, N] contiguous -> W values (or W^T values; or (W + W^T) values when symmetric:
// one splat, both blur orders, one slice) [B, K, N]
template <typename scalar_t>
at::Tensor apply_lattice(const GpuLattice& L, const at::Tensor& values, bool reverse, bool symmetric,
                         cudaStream_t stream) {
  const int64_t K = values.size(1);
  const int d = L.d;
  auto out = at::empty({L.B, K, L.N}, values.options());
  if (K == 0 || L.V == 0) return out.zero_();
  auto a = at::zeros({L.V, K}, values.options());  // upper bound on lattice points
  auto b = at::empty({L.V, K}, values.options());
  splat_kernel<scalar_t><<<blocks_for(L.B * L.N), kThreads, 0, stream>>>(
      values.data_ptr<scalar_t>(), L.weight.data_ptr<scalar_t>(), L.vlat.data_ptr<int32_t>(), L.B * L.N, L.N, K, d,
      a.data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  scalar_t* cur;
  scalar_t* rev = nullptr;
  at::Tensor a2, b2;
  if (symmetric) {
    a2 = a.clone();  // the splatted values, blurred in the other order (clone: on the current stream)
    b2 = at::empty_like(b);
    cur = a.data_ptr<scalar_t>();
    rev = a2.data_ptr<scalar_t>();
    scalar_t* nxt = b.data_ptr<scalar_t>();
    scalar_t* nxt2 = b2.data_ptr<scalar_t>();
    for (int j = 0; j <= d; ++j) {
      blur_both_kernel<scalar_t><<<blocks_for(L.V * K), kThreads, 0, stream>>>(
          cur, rev, L.nbr.data_ptr<int32_t>(), L.m_dev.data_ptr<int32_t>(), K, d, j, nxt, nxt2);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      std::swap(cur, nxt);
      std::swap(rev, nxt2);
    }
  } else {
    cur = blur_lattice<scalar_t>(L, a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), K, reverse, stream);
  }
  const scalar_t alpha = static_cast<scalar_t>(1.0 / (1.0 + std::pow(2.0, -d)));
  slice_kernel<scalar_t><<<blocks_for(L.B * K * L.N), kThreads, 0, stream>>>(
      cur, rev, L.weight.data_ptr<scalar_t>(), L.vlat.data_ptr<int32_t>(), L.B, K, L.N, d, alpha,
      out.data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

at::Tensor lattice_filter_cuda(const at::Tensor& features, const at::Tensor& values,
                               const c10::optional<at::Tensor>& valid, bool normalize, bool transpose,
                               bool symmetric) {
  check_lattice_args(features, values, valid, normalize, symmetric);
  TORCH_CHECK(features.is_cuda(), "lattice_filter: features must be a CUDA tensor here");
  const at::cuda::OptionalCUDAGuard guard(features.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t B = features.size(0), N = features.size(2);
  const int d = static_cast<int>(features.size(1));
  auto feat = features.to(at::kDouble).transpose(1, 2).contiguous();  // [B, N, d]
  auto vals = values.contiguous();                                    // [B, K, N]
  at::Tensor vmask;
  if (valid.has_value()) vmask = valid->to(at::kByte).contiguous();
  if (B == 0 || N == 0 || values.size(1) == 0) return at::zeros_like(vals);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(values.scalar_type(), "lattice_filter_cuda", [&] {
    GpuLattice L = build_lattice<scalar_t>(feat, vmask, B, N, d, values.options(), stream);
    if (!normalize) {
      out = apply_lattice<scalar_t>(L, vals, transpose, symmetric, stream);
    } else {
      auto ones = at::ones({B, 1, N}, values.options());
      if (!transpose) {
        auto both = apply_lattice<scalar_t>(L, at::cat({vals, ones}, 1), false, false, stream);
        auto nrm = both.narrow(1, values.size(1), 1);
        auto num = both.narrow(1, 0, values.size(1));
        out = at::where(nrm > 0, num / nrm.clamp_min(1e-30), at::zeros_like(num)).contiguous();
      } else {
        auto nrm = apply_lattice<scalar_t>(L, ones, false, false, stream);
        auto scaled = at::where(nrm > 0, vals / nrm.clamp_min(1e-30), at::zeros_like(vals)).contiguous();
        out = apply_lattice<scalar_t>(L, scaled, true, false, stream);
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(wsolbench, CUDA, m) {
  m.impl("lattice_filter", &lattice_filter_cuda);
}

}  // namespace wsolbench
