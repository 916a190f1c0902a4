// CPU kernel of wsolbench::lattice_filter (schema in csrc/ops/lattice_filter.cpp).
//
// Per image:
//   1. embed: each point is lifted onto the d-dimensional hyperplane of Z^{d+1}; we find the
//      enclosing simplex (remainder-0 vertex `rem0` and the permutation `rank`) and the d+1
//      barycentric weights. Done in float64 whatever the value dtype so the lattice (a discrete
//      structure) is identical to the pure-torch reference.
//   2. build: the d+1 simplex vertices of every point are inserted into an open-addressing hash
//      table sized from the input (2 * N * (d+1) slots, rounded up to a power of two) with a
//      lock-free compare-and-swap insert (a slot stores the id of the first vertex carrying the
//      key; keys are recomputed from (rem0, rank) of that vertex). Slots are compacted into dense
//      lattice ids, then the splat is made a gather: a CSR list of (vertex) per lattice point,
//      sorted so that sums are deterministic, and the 2 (d+1) blur neighbours are looked up once.
//   3. filter: splat (parallel over lattice points, no atomics), blur along the d+1 directions
//      with weights (0.5, 1, 0.5) (parallel over lattice points, double buffered), slice
//      (parallel over points) times alpha = 1 / (1 + 2^-d). All K channels at once.
// OpenMP over images when there are many small images, otherwise within an image.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../ops/lattice_filter.h"

namespace wsolbench {
namespace {

constexpr int kMaxD = 8;

template <typename scalar_t>
struct Lattice {
  int d = 0;
  int64_t n = 0;                 // points of the image
  int64_t m = 0;                 // lattice points
  std::vector<int32_t> rem0;     // n * (d+1)
  std::vector<int8_t> rank;      // n * (d+1)
  std::vector<scalar_t> weight;  // n * (d+1) barycentric weights
  std::vector<int32_t> vlat;     // n * (d+1) lattice id of each vertex, -1 for invalid points
  std::vector<int32_t> rep;      // m: a vertex carrying the lattice point's key
  std::vector<int32_t> ptr;      // m + 1: CSR offsets of the vertices splatting into a point
  std::vector<int32_t> vtx;      // CSR: point of each splatting vertex, in vertex order
  std::vector<scalar_t> vw;      // CSR: its barycentric weight
  std::vector<int32_t> nbr;      // m * (d+1) * 2: blur neighbours (-1 when absent)
  std::vector<int32_t> table;    // hash slots: vertex id or -1

  inline void key_of(int64_t v, int32_t* key) const {
    const int64_t p = v / (d + 1);
    key_of(p, static_cast<int>(v - p * (d + 1)), key);
  }
  // vertex r of point p (no integer division: the hot loops know p and r)
  inline void key_of(int64_t p, int r, int32_t* key) const {
    const int32_t* r0 = &rem0[p * (d + 1)];
    const int8_t* rk = &rank[p * (d + 1)];
    for (int i = 0; i < d; ++i) key[i] = r0[i] + (rk[i] <= d - r ? r : r - (d + 1));
  }
};

// inline comparison (memcmp with a run-time size is a library call in the hot loops)
template <typename T>
inline bool equal_n(const T* a, const T* b, int n) {
  bool eq = true;
  for (int i = 0; i < n; ++i) eq &= a[i] == b[i];
  return eq;
}

inline uint64_t hash_key(const int32_t* key, int d) {
  uint64_t h = 0x2545F4914F6CDD1DULL;
  for (int i = 0; i < d; ++i) {
    h ^= static_cast<uint32_t>(key[i]);
    h *= 0x9E3779B97F4A7C15ULL;
  }
  h ^= h >> 33;  // murmur3 finaliser: the low bits used as the slot depend on every coordinate
  h *= 0xFF51AFD7ED558CCDULL;
  h ^= h >> 33;
  h *= 0xC4CEB9FE1A85EC53ULL;
  h ^= h >> 33;
  return h;
}

// Lift points onto the lattice: rem0, rank, barycentric weights (steps as in Adams et al.).
template <typename scalar_t>
bool embed(Lattice<scalar_t>& L, const scalar_t* feat /* [d, n] */, const uint8_t* valid, int nt) {
  int bad = 0;
  const int d = L.d;
  const int64_t n = L.n;
  const double inv_std = std::sqrt(2.0 / 3.0) * (d + 1);
  double scale[kMaxD];
  for (int i = 0; i < d; ++i) scale[i] = inv_std / std::sqrt(static_cast<double>((i + 1) * (i + 2)));
  const double down = 1.0 / (d + 1);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t p = 0; p < n; ++p) {
    int32_t* r0 = &L.rem0[p * (d + 1)];
    int8_t* rk = &L.rank[p * (d + 1)];
    scalar_t* w = &L.weight[p * (d + 1)];
    if (valid != nullptr && !valid[p]) {
      for (int i = 0; i <= d; ++i) { r0[i] = 0; rk[i] = 0; w[i] = 0; }
      continue;
    }
    double f[kMaxD];
    bool ok = true;
    for (int j = 0; j < d; ++j) {
      f[j] = static_cast<double>(feat[j * n + p]);
      // lattice coordinates are int32: |f| * (d+1)^2 must stay far below 2^31
      ok &= std::fabs(f[j]) <= 1e6;  // false for NaN too
    }
    if (!ok) {
      __atomic_store_n(&bad, 1, __ATOMIC_RELAXED);
      for (int i = 0; i <= d; ++i) { r0[i] = 0; rk[i] = 0; w[i] = 0; }
      continue;
    }
    double el[kMaxD + 1], bary[kMaxD + 2];
    double sm = 0.0;
    for (int j = d; j > 0; --j) {
      const double cf = f[j - 1] * scale[j - 1];
      el[j] = sm - j * cf;
      sm += cf;
    }
    el[0] = sm;
    int64_t sum = 0;
    int32_t rem[kMaxD + 1];
    int rnk[kMaxD + 1];
    for (int i = 0; i <= d; ++i) {
      const double rd = std::nearbyint(el[i] * down);
      rem[i] = static_cast<int32_t>(rd) * (d + 1);
      sum += static_cast<int64_t>(rd);
      rnk[i] = 0;
    }
    for (int i = 0; i < d; ++i) {
      const double di = el[i] - rem[i];
      for (int j = i + 1; j <= d; ++j) {
        const int lt = di < el[j] - rem[j];  // branch-free: these comparisons are unpredictable
        rnk[i] += lt;
        rnk[j] += 1 - lt;
      }
    }
    for (int i = 0; i <= d; ++i) {
      rnk[i] += static_cast<int>(sum);
      if (rnk[i] < 0) { rnk[i] += d + 1; rem[i] += d + 1; }
      else if (rnk[i] > d) { rnk[i] -= d + 1; rem[i] -= d + 1; }
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
  return bad == 0;
}

template <typename scalar_t>
void build(Lattice<scalar_t>& L, const uint8_t* valid, int nt) {
  const int d = L.d;
  const int64_t nv = L.n * (d + 1);
  // The table is sized from the input: 2 * N * (d+1) slots always suffice (load <= 1/2), but
  // natural images have ~0.03-0.08 lattice points per pixel, so we start 16x smaller (cache
  // resident) and grow 4x whenever the load would pass 1/2 (at most twice).
  uint64_t full = 16;
  while (full < static_cast<uint64_t>(2 * nv)) full <<= 1;
  uint64_t cap = std::max<uint64_t>(1024, full / 16);
  if (cap > full) cap = full;
  uint64_t mask = 0;
  L.vlat.resize(nv);
  auto tb0 = std::chrono::steady_clock::now();
  while (true) {
    mask = cap - 1;
    L.table.assign(cap, -1);
    int32_t* table = L.table.data();
    const int64_t limit = static_cast<int64_t>(cap / 2);
    int64_t used = 0;
    int overflow = 0;

    // 1. lock-free insert; vlat temporarily holds the slot of each vertex. Neighbouring points
    //    mostly share their simplex, so each thread first compares a vertex's key with the key
    //    of the same-remainder vertex of the previous point it handled and skips the probe on a hit.
#pragma omp parallel num_threads(nt)
    {
      int32_t prev_key[kMaxD + 1][kMaxD];
      int64_t prev_slot[kMaxD + 1];
      for (int r = 0; r <= d; ++r) prev_slot[r] = -1;
      int64_t prev_p = -1;  // previous point handled by this thread
#pragma omp for schedule(static)
      for (int64_t p = 0; p < L.n; ++p) {
        if (__atomic_load_n(&overflow, __ATOMIC_RELAXED)) continue;
        if (valid != nullptr && !valid[p]) {
          for (int r = 0; r <= d; ++r) L.vlat[p * (d + 1) + r] = -1;
          continue;
        }
        // same simplex as the previous point (the common case on smooth images): reuse its slots
        if (prev_p >= 0 &&
            equal_n(&L.rem0[p * (d + 1)], &L.rem0[prev_p * (d + 1)], d + 1) &&
            equal_n(&L.rank[p * (d + 1)], &L.rank[prev_p * (d + 1)], d + 1)) {
          for (int r = 0; r <= d; ++r) L.vlat[p * (d + 1) + r] = L.vlat[prev_p * (d + 1) + r];
          continue;
        }
        prev_p = p;
        for (int r = 0; r <= d; ++r) {
          const int64_t v = p * (d + 1) + r;
          int32_t key[kMaxD], other[kMaxD];
          L.key_of(p, r, key);
          if (prev_slot[r] >= 0 && equal_n(prev_key[r], key, d)) {
            L.vlat[v] = static_cast<int32_t>(prev_slot[r]);
            continue;
          }
          uint64_t s = hash_key(key, d) & mask;
          while (true) {
            int32_t owner = __atomic_load_n(&table[s], __ATOMIC_ACQUIRE);
            if (owner < 0) {
              int32_t expected = -1;
              if (__atomic_compare_exchange_n(&table[s], &expected, static_cast<int32_t>(v), false,
                                              __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
                if (__atomic_add_fetch(&used, 1, __ATOMIC_RELAXED) > limit) {
                  __atomic_store_n(&overflow, 1, __ATOMIC_RELAXED);
                }
                break;
              }
              owner = expected;
            }
            L.key_of(owner, other);
            if (equal_n(other, key, d)) break;
            s = (s + 1) & mask;
          }
          L.vlat[v] = static_cast<int32_t>(s);
          for (int i = 0; i < d; ++i) prev_key[r][i] = key[i];
          prev_slot[r] = static_cast<int64_t>(s);
        }
      }
    }
    if (!overflow) break;
    cap = std::min(full, cap * 4);  // at `full` the load cannot pass 1/2: the loop ends
  }
  int32_t* table = L.table.data();

  auto tb1 = std::chrono::steady_clock::now();
  // 2. compact slots into dense ids (two-pass parallel count).
  std::vector<int32_t> slot_id(cap);
  const int chunks = std::max(1, nt);
  std::vector<int64_t> counts(chunks + 1, 0);
#pragma omp parallel for schedule(static, 1) num_threads(nt)
  for (int c = 0; c < chunks; ++c) {
    const uint64_t lo = cap * c / chunks, hi = cap * (c + 1) / chunks;
    int64_t cnt = 0;
    for (uint64_t s = lo; s < hi; ++s) cnt += table[s] >= 0;
    counts[c + 1] = cnt;
  }
  for (int c = 0; c < chunks; ++c) counts[c + 1] += counts[c];
  L.m = counts[chunks];
  L.rep.resize(L.m);
#pragma omp parallel for schedule(static, 1) num_threads(nt)
  for (int c = 0; c < chunks; ++c) {
    const uint64_t lo = cap * c / chunks, hi = cap * (c + 1) / chunks;
    int64_t id = counts[c];
    for (uint64_t s = lo; s < hi; ++s) {
      if (table[s] >= 0) {
        slot_id[s] = static_cast<int32_t>(id);
        L.rep[id] = table[s];
        ++id;
      } else {
        slot_id[s] = -1;
      }
    }
  }
  const int64_t m = L.m;
  // 3. CSR (lattice point -> vertices) without atomics, in vertex order (deterministic sums):
  //    each thread counts its static chunk of vertices, a prefix over (point, thread) gives every
  //    thread its own write offsets, then each thread fills its chunk in order.
  const int T = std::max(1, nt);
  std::vector<int32_t> cnt(static_cast<size_t>(T) * (m + 1), 0);
#pragma omp parallel num_threads(T)
  {
    const int t = omp_get_thread_num();
    const int nth = omp_get_num_threads();
    for (int tt = t; tt < T; tt += nth) {  // chunks of threads the runtime did not give us
      int32_t* c = &cnt[static_cast<size_t>(tt) * (m + 1)];
      const int64_t lo = nv * tt / T, hi = nv * (tt + 1) / T;
      for (int64_t v = lo; v < hi; ++v) {
        if (L.vlat[v] < 0) continue;
        const int32_t id = slot_id[L.vlat[v]];
        L.vlat[v] = id;
        ++c[id];
      }
    }
  }
  L.ptr.assign(m + 1, 0);
  {
    int32_t run = 0;
    for (int64_t i = 0; i < m; ++i) {
      L.ptr[i] = run;
      for (int t = 0; t < T; ++t) {
        int32_t& c = cnt[static_cast<size_t>(t) * (m + 1) + i];
        const int32_t n_t = c;
        c = run;  // becomes thread t's write offset for point i
        run += n_t;
      }
    }
    L.ptr[m] = run;
  }
  L.vtx.resize(L.ptr[m]);
  L.vw.resize(L.ptr[m]);
#pragma omp parallel num_threads(T)
  {
    const int t = omp_get_thread_num();
    const int nth = omp_get_num_threads();
    for (int tt = t; tt < T; tt += nth) {
      int32_t* off = &cnt[static_cast<size_t>(tt) * (m + 1)];
      const int64_t lo = nv * tt / T, hi = nv * (tt + 1) / T;
      int64_t p = lo / (d + 1);
      int r = static_cast<int>(lo - p * (d + 1));
      for (int64_t v = lo; v < hi; ++v) {
        const int32_t id = L.vlat[v];
        if (id >= 0) {
          const int32_t at = off[id]++;
          L.vtx[at] = static_cast<int32_t>(p);  // the point (not the vertex): no division when splatting
          L.vw[at] = L.weight[v];
        }
        if (++r == d + 1) { r = 0; ++p; }
      }
    }
  }

  auto tb3 = std::chrono::steady_clock::now();
  // 4. blur neighbours along each of the d+1 lattice directions, looked up in a second, compact
  //    table over the m lattice points (2m slots, keys stored densely: cache resident).
  L.table.clear();
  L.table.shrink_to_fit();
  std::vector<int32_t>().swap(slot_id);
  std::vector<int32_t> lkeys(m * d);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t i = 0; i < m; ++i) L.key_of(L.rep[i], &lkeys[i * d]);
  uint64_t cap2 = 16;
  while (cap2 < static_cast<uint64_t>(2 * m)) cap2 <<= 1;
  const uint64_t mask2 = cap2 - 1;
  std::vector<int32_t> t2(cap2, -1);
  for (int64_t i = 0; i < m; ++i) {  // keys are unique: no comparison needed
    uint64_t s = hash_key(&lkeys[i * d], d) & mask2;
    while (t2[s] >= 0) s = (s + 1) & mask2;
    t2[s] = static_cast<int32_t>(i);
  }
  auto lookup = [&](const int32_t* key) -> int32_t {
    uint64_t s = hash_key(key, d) & mask2;
    while (true) {
      const int32_t id = t2[s];
      if (id < 0) return -1;
      if (equal_n(&lkeys[static_cast<int64_t>(id) * d], key, d)) return id;
      s = (s + 1) & mask2;
    }
  };
  L.nbr.resize(m * (d + 1) * 2);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t i = 0; i < m; ++i) {
    int32_t k1[kMaxD], k2[kMaxD];
    const int32_t* key = &lkeys[i * d];
    for (int j = 0; j <= d; ++j) {
      for (int c = 0; c < d; ++c) { k1[c] = key[c] - 1; k2[c] = key[c] + 1; }
      if (j < d) { k1[j] = key[j] + d; k2[j] = key[j] - d; }
      L.nbr[(i * (d + 1) + j) * 2 + 0] = lookup(k1);
      L.nbr[(i * (d + 1) + j) * 2 + 1] = lookup(k2);
    }
  }
  auto tb4 = std::chrono::steady_clock::now();
  if (std::getenv("WSOL_LATTICE_TIMING") != nullptr)
    std::fprintf(stderr, "[lattice build] insert %.2f compact+csr %.2f nbrs %.2f ms\n",
                 std::chrono::duration<double, std::milli>(tb1 - tb0).count(),
                 std::chrono::duration<double, std::milli>(tb3 - tb1).count(),
                 std::chrono::duration<double, std::milli>(tb4 - tb3).count());
}

// The d + 1 blur passes over lattice values `cur` [m, K] (scratch `nxt`, same size), in
// direction order 0..d, or d..0 when `reverse`; returns the buffer holding the result.
template <typename scalar_t>
scalar_t* blur(const Lattice<scalar_t>& L, scalar_t* cur, scalar_t* nxt, int64_t K, bool reverse, int nt) {
  const int d = L.d;
  const int64_t m = L.m;
  for (int step = 0; step <= d; ++step) {
    const int j = reverse ? d - step : step;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t i = 0; i < m; ++i) {
      const int32_t n1 = L.nbr[(i * (d + 1) + j) * 2 + 0];
      const int32_t n2 = L.nbr[(i * (d + 1) + j) * 2 + 1];
      const scalar_t* c = cur + i * K;
      scalar_t* o = nxt + i * K;
      if (n1 >= 0 && n2 >= 0) {
        const scalar_t* x1 = cur + static_cast<int64_t>(n1) * K;
        const scalar_t* x2 = cur + static_cast<int64_t>(n2) * K;
        for (int64_t k = 0; k < K; ++k) o[k] = c[k] + scalar_t(0.5) * (x1[k] + x2[k]);
      } else if (n1 >= 0) {
        const scalar_t* x1 = cur + static_cast<int64_t>(n1) * K;
        for (int64_t k = 0; k < K; ++k) o[k] = c[k] + scalar_t(0.5) * (x1[k] + scalar_t(0));
      } else if (n2 >= 0) {
        const scalar_t* x2 = cur + static_cast<int64_t>(n2) * K;
        for (int64_t k = 0; k < K; ++k) o[k] = c[k] + scalar_t(0.5) * (scalar_t(0) + x2[k]);
      } else {
        for (int64_t k = 0; k < K; ++k) o[k] = c[k];
      }
    }
    std::swap(cur, nxt);
  }
  return cur;
}

// vals: [n, K] point-major; out: [n, K]. reverse = transpose (blur directions d..0);
// symmetric: W + W^T, both blur orders from one splat, summed before one slice.
template <typename scalar_t>
void filter(const Lattice<scalar_t>& L, const scalar_t* vals, int64_t K, bool reverse, bool symmetric,
            scalar_t* out, int nt) {
  const int d = L.d;
  const int64_t m = L.m, n = L.n;
  std::vector<scalar_t> a(m * K), b(m * K);
  // splat (gather form)
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t i = 0; i < m; ++i) {
    scalar_t* acc = &a[i * K];
    for (int64_t k = 0; k < K; ++k) acc[k] = 0;
    for (int32_t e = L.ptr[i]; e < L.ptr[i + 1]; ++e) {
      const scalar_t w = L.vw[e];
      const scalar_t* src = vals + static_cast<int64_t>(L.vtx[e]) * K;
      for (int64_t k = 0; k < K; ++k) acc[k] += w * src[k];
    }
  }
  // blur
  scalar_t* cur;
  std::vector<scalar_t> a2, b2;
  if (symmetric) {
    a2 = a;  // the splatted values, blurred in the other order
    b2.resize(m * K);
    cur = blur(L, a.data(), b.data(), K, false, nt);
    const scalar_t* rev = blur(L, a2.data(), b2.data(), K, true, nt);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t e = 0; e < m * K; ++e) cur[e] += rev[e];
  } else {
    cur = blur(L, a.data(), b.data(), K, reverse, nt);
  }
  // slice
  const scalar_t alpha = static_cast<scalar_t>(1.0 / (1.0 + std::pow(2.0, -d)));
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t p = 0; p < n; ++p) {
    scalar_t* o = out + p * K;
    for (int64_t k = 0; k < K; ++k) o[k] = 0;
    if (L.vlat[p * (d + 1)] < 0) continue;
    for (int r = 0; r <= d; ++r) {
      const int32_t id = L.vlat[p * (d + 1) + r];
      const scalar_t w = L.weight[p * (d + 1) + r];
      const scalar_t* src = cur + static_cast<int64_t>(id) * K;
      for (int64_t k = 0; k < K; ++k) o[k] += w * src[k];
    }
    for (int64_t k = 0; k < K; ++k) o[k] *= alpha;
  }
}

// One image: feat [d, n], vals [K, n] and out [K, n] channel-major (the op's layout); the
// lattice works point-major, so the values are transposed in and out here, inside our own
// parallel regions (no extra ATen passes). Returns false on bad features (nothing written).
template <typename scalar_t>
bool filter_image(const scalar_t* feat, const scalar_t* vals, const uint8_t* valid, int d, int64_t n, int64_t K,
                  bool normalize, bool transpose, bool symmetric, scalar_t* out, int nt) {
  // below ~64k vertices the fork/join of the ~15 parallel regions costs more than the work
  // (and far more when the cores are oversubscribed): run serially
  if (n * (d + 1) < (1 << 16)) nt = 1;
  Lattice<scalar_t> L;
  L.d = d;
  L.n = n;
  L.rem0.resize(n * (d + 1));
  L.rank.resize(n * (d + 1));
  L.weight.resize(n * (d + 1));
  static const bool timing = std::getenv("WSOL_LATTICE_TIMING") != nullptr;
  auto t0 = std::chrono::steady_clock::now();
  if (!embed(L, feat, valid, nt)) return false;
  auto t1 = std::chrono::steady_clock::now();
  build(L, valid, nt);
  auto t2 = std::chrono::steady_clock::now();
  if (timing) {
    std::fprintf(stderr, "[lattice] n=%lld m=%lld embed %.2f ms build %.2f ms\n", (long long)n, (long long)L.m,
                 std::chrono::duration<double, std::milli>(t1 - t0).count(),
                 std::chrono::duration<double, std::milli>(t2 - t1).count());
  }
  const bool with_ones = normalize && !transpose;  // one pass over K + 1 channels (values, ones)
  const int64_t Kx = with_ones ? K + 1 : K;
  std::vector<scalar_t> pv(n * Kx), po(n * Kx);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t p = 0; p < n; ++p) {
    for (int64_t k = 0; k < K; ++k) pv[p * Kx + k] = vals[k * n + p];
    if (with_ones) pv[p * Kx + K] = scalar_t(1);
  }
  if (normalize && transpose) {
    // transpose of the normalized filter: W^T diag(1 / W 1)
    std::vector<scalar_t> ones(n, scalar_t(1)), nrm(n);
    filter(L, ones.data(), 1, false, false, nrm.data(), nt);
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int64_t p = 0; p < n; ++p) {
      for (int64_t k = 0; k < K; ++k) pv[p * K + k] = nrm[p] > 0 ? pv[p * K + k] / nrm[p] : scalar_t(0);
    }
  }
  filter(L, pv.data(), Kx, transpose, symmetric, po.data(), nt);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t p = 0; p < n; ++p) {
    if (with_ones) {
      const scalar_t nrm = po[p * Kx + K];
      for (int64_t k = 0; k < K; ++k) out[k * n + p] = nrm > 0 ? po[p * Kx + k] / nrm : scalar_t(0);
    } else {
      for (int64_t k = 0; k < K; ++k) out[k * n + p] = po[p * Kx + k];
    }
  }
  return true;
}

template <typename scalar_t>
bool run_batch(const at::Tensor& feat, const at::Tensor& vals, const at::Tensor& vmask, at::Tensor& out, int64_t B,
               int64_t d, int64_t N, int64_t K, bool normalize, bool transpose, bool symmetric, bool per_image,
               int threads) {
  const scalar_t* fp = feat.data_ptr<scalar_t>();
  const scalar_t* vp = vals.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  const uint8_t* mp = vmask.defined() ? vmask.data_ptr<uint8_t>() : nullptr;
  int ok = 1;
  if (per_image) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t b = 0; b < B; ++b) {
      if (!filter_image<scalar_t>(fp + b * N * d, vp + b * N * K, mp ? mp + b * N : nullptr, static_cast<int>(d), N,
                                  K, normalize, transpose, symmetric, op + b * N * K, 1)) {
        __atomic_store_n(&ok, 0, __ATOMIC_RELAXED);
      }
    }
  } else {
    for (int64_t b = 0; b < B && ok; ++b) {
      ok = filter_image<scalar_t>(fp + b * N * d, vp + b * N * K, mp ? mp + b * N : nullptr, static_cast<int>(d), N,
                                  K, normalize, transpose, symmetric, op + b * N * K, threads);
    }
  }
  return ok != 0;
}

at::Tensor lattice_filter_cpu(const at::Tensor& features, const at::Tensor& values,
                              const c10::optional<at::Tensor>& valid, bool normalize, bool transpose, bool symmetric) {
  check_lattice_args(features, values, valid, normalize, symmetric);
  TORCH_CHECK(features.device().is_cpu(), "lattice_filter: features must be a CPU tensor here");
  const int64_t B = features.size(0), d = features.size(1), N = features.size(2), K = values.size(1);
  auto feat = features.contiguous();  // [B, d, N] (no copy when already contiguous)
  auto vals = values.contiguous();    // [B, K, N]
  at::Tensor vmask;
  if (valid.has_value()) vmask = valid->to(at::kByte).contiguous();
  auto out = at::empty({B, K, N}, values.options().memory_format(at::MemoryFormat::Contiguous));
  if (B == 0 || N == 0 || K == 0) return out.zero_();
  const int threads = std::max(1, at::get_num_threads());
  // many small images: one image per thread; otherwise all threads inside each image.
  const bool per_image = threads > 1 && B >= threads && N * (d + 1) < (1 << 17);
  const bool ok = values.scalar_type() == at::kDouble
                      ? run_batch<double>(feat, vals, vmask, out, B, d, N, K, normalize, transpose, symmetric,
                                          per_image, threads)
                      : run_batch<float>(feat, vals, vmask, out, B, d, N, K, normalize, transpose, symmetric,
                                         per_image, threads);
  TORCH_CHECK(ok, "lattice_filter: features must be finite with |f| <= 1e6 (positions divided by their standard "
              "deviations; lattice coordinates are int32)");
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(wsolbench, CPU, m) {
  m.impl("lattice_filter", &lattice_filter_cpu);
}

}  // namespace wsolbench
