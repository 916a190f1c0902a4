// CPU kernel of wsolbench::lattice_filter (schema in csrc/ops/lattice_filter.cpp).
//
// Per image, inside one OpenMP team (all threads on one image, or one thread per image when the
// batch has enough images), with barriers between the phases:
//   range      min/max of every feature over the valid points (and the finiteness check); they
//              bound the lattice coordinates, so a key is packed into 1, 2 or 4 64-bit words
//              (one word for the usual CRF features: one compare, one cheap hash)
//   embed      each point is lifted onto the d-dimensional hyperplane of Z^{d+1}: the enclosing
//              simplex (the packed key of its remainder-0 vertex and the permutation) and the
//              d+1 barycentric weights, in float64 whatever the value dtype so the lattice (a
//              discrete structure) is the pure-torch reference's
//   insert     the d+1 vertex keys (each one add from the previous) go into an open-addressing
//              table that stores the keys themselves (lock-free compare-and-swap on one word;
//              keys of 2 or 4 words, only for very wide feature ranges, are inserted by one
//              thread); each thread inserts the points it embedded (no barrier between the two
//              phases); a vertex equal to the same vertex of the previous point skips the probe; sized
//              from the previous image's lattice, grown 4x and redone when the load passes 1/2
//   compact    occupied slots -> dense lattice ids
//   neighbours the 2 (d+1) blur neighbours of each lattice point, looked up once and used by
//              every blur direction and by both blur orders
//   splat      scatter into a few private accumulators, one per fixed chunk of points (the
//              chunks depend on N only, so the sums, and the result, do not depend on the
//              thread count), summed in chunk order
//   blur       (0.5, 1, 0.5) along the d+1 directions, double buffered; symmetric (W + W^T):
//              both orders advance in the same pass over the lattice
//   slice      gather, times alpha = 1 / (1 + 2^-d), written channel-major into the output
// Lattice ids depend on the table layout (so on thread timing), the values never do: every sum
// runs in a fixed order over points or chunks. Buffers live in a per-thread workspace reused
// across calls (grown, never shrunk).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <tuple>
#include <vector>

#include "../ops/lattice_filter.h"

namespace wsolbench {
namespace {

constexpr int kMaxD = 8;
constexpr uint64_t kEmpty = ~0ULL;          // word 0 of a free slot (no key has all bits set)
constexpr uint64_t kInvalidPerm = ~0ULL;    // permutation code of a masked-out point
constexpr int kMaxChunks = 4;               // splat accumulators per image
constexpr int64_t kChunkPoints = 16384;     // points per splat chunk (at least)

enum Phase { kRange, kEmbed, kInsert, kCompact, kNeighbours, kSplat, kBlur, kSlice, kPhases };

// A growable raw buffer: reused across calls, no zero-initialisation.
struct Buf {
  std::unique_ptr<uint8_t[]> data;
  size_t bytes = 0;
  template <typename T>
  T* get(size_t count) {
    const size_t need = count * sizeof(T) + 64;
    if (need > bytes) {
      const size_t grown = std::max(need, bytes + bytes / 2);
      data.reset(new uint8_t[grown]);
      bytes = grown;
    }
    return reinterpret_cast<T*>(data.get());
  }
};

struct Workspace {
  Buf key0, perm, weight, vid, table, slot_id, lkeys, nbr, lat, nrm, partial;
  int64_t m_hint = 0;  // lattice points of the last image: the next table's size
};

// One per thread: in a team over one image the master's is shared, one image per thread uses
// each thread's own. OpenMP threads persist, so the buffers survive between calls.
thread_local Workspace tls_workspace;

// Where the fields of a packed key sit: coordinate i is (key_i - bias_i) << shift_i in word_i.
struct Layout {
  int kw = 1;
  int word[kMaxD];
  int shift[kMaxD];
  int64_t bias[kMaxD];
};

template <int KW>
struct Key {
  uint64_t w[KW];
  inline bool operator==(const Key& o) const {
    bool eq = true;
    for (int i = 0; i < KW; ++i) eq &= w[i] == o.w[i];
    return eq;
  }
  inline bool operator!=(const Key& o) const { return !(*this == o); }
  inline Key& operator+=(const Key& o) {  // mod 2^64 per word: the fields never leave their range
    for (int i = 0; i < KW; ++i) w[i] += o.w[i];
    return *this;
  }
  inline Key operator+(const Key& o) const {
    Key r = *this;
    r += o;
    return r;
  }
};

inline uint64_t mix64(uint64_t x) {
  x ^= x >> 31;
  x *= 0x9E3779B97F4A7C15ULL;
  x ^= x >> 29;
  return x;
}

template <int KW>
inline uint64_t hash_of(const Key<KW>& k) {
  uint64_t h = k.w[0];
  for (int i = 1; i < KW; ++i) h = mix64(h) ^ k.w[i];
  return mix64(h);
}

// Key of `delta_i` added to each coordinate i (two's complement in each word).
template <int KW>
Key<KW> delta_key(const Layout& lay, int d, const int64_t* delta) {
  Key<KW> k;
  for (int w = 0; w < KW; ++w) k.w[w] = 0;
  for (int i = 0; i < d; ++i)
    k.w[lay.word[i]] += static_cast<uint64_t>(delta[i]) << lay.shift[i];
  return k;
}

// State shared by the team working on one image.
template <typename scalar_t>
struct Image {
  int d = 0;
  int64_t n = 0;
  const scalar_t* feat = nullptr;  // [d, n]
  const uint8_t* valid = nullptr;  // [n] or null
  Workspace* ws = nullptr;
  double* timing = nullptr;        // [kPhases] ms, added to (thread 0 of the team), or null
  // built
  Layout lay;
  int64_t m = 0;
  bool bad = false, empty = false, overflow = false;
  int64_t used = 0;
  uint64_t cap = 0;
  scalar_t* weight = nullptr;  // [n, d+1]
  int32_t* vid = nullptr;      // [n, d+1]: table slot, then lattice id after the first splat; -1 masked
  bool remapped = false;
  int32_t* nbr = nullptr;      // [d+1, m, 2]: neighbour ids, m (a zero row) when absent
  uint64_t* key0 = nullptr;    // [n, kw]: packed key of the remainder-0 vertex
  uint64_t* perm = nullptr;    // [n]: inverse permutation, 4 bits per rank
  uint64_t* table = nullptr;   // [cap, kw]
  int32_t* slot_id = nullptr;  // [cap]
  uint64_t* lkeys = nullptr;   // [m, kw]
  double* partial = nullptr;   // per-thread partial results
  void* lat = nullptr;         // lattice values of the current filtering
  double lo[kMaxD], hi[kMaxD];
  std::chrono::steady_clock::time_point t_last;
};

template <typename scalar_t>
inline void tick(Image<scalar_t>& im, Phase ph) {
  if (im.timing == nullptr || omp_get_thread_num() != 0) return;
  const auto now = std::chrono::steady_clock::now();
  im.timing[ph] += std::chrono::duration<double, std::milli>(now - im.t_last).count();
  im.t_last = now;
}

// ---- range: bounds of the features, finiteness -------------------------------------------------
template <typename scalar_t>
void range_phase(Image<scalar_t>& im) {
  const int d = im.d;
  const int64_t n = im.n;
  const int nth = omp_get_num_threads(), t = omp_get_thread_num();
  double* part = im.partial;
  double lo[kMaxD], hi[kMaxD];
  for (int j = 0; j < d; ++j) { lo[j] = std::numeric_limits<double>::infinity(); hi[j] = -lo[j]; }
  int bad = 0;
  const int64_t a = n * t / nth, b = n * (t + 1) / nth;
  for (int j = 0; j < d; ++j) {
    const scalar_t* f = im.feat + j * n;
    double l = lo[j], h = hi[j];
    if (im.valid == nullptr) {
      for (int64_t p = a; p < b; ++p) {
        const double x = static_cast<double>(f[p]);
        l = std::min(l, x);
        h = std::max(h, x);
        bad |= !(std::fabs(x) <= 1e6);  // NaN too
      }
    } else {
      for (int64_t p = a; p < b; ++p) {
        if (!im.valid[p]) continue;
        const double x = static_cast<double>(f[p]);
        l = std::min(l, x);
        h = std::max(h, x);
        bad |= !(std::fabs(x) <= 1e6);
      }
    }
    lo[j] = l;
    hi[j] = h;
  }
  for (int j = 0; j < d; ++j) {
    part[(t * (2 * kMaxD + 1)) + j] = lo[j];
    part[(t * (2 * kMaxD + 1)) + kMaxD + j] = hi[j];
  }
  part[t * (2 * kMaxD + 1) + 2 * kMaxD] = bad;
#pragma omp barrier
#pragma omp single
  {
    bool any_bad = false;
    for (int j = 0; j < d; ++j) { im.lo[j] = std::numeric_limits<double>::infinity(); im.hi[j] = -im.lo[j]; }
    for (int tt = 0; tt < nth; ++tt) {
      for (int j = 0; j < d; ++j) {
        im.lo[j] = std::min(im.lo[j], part[tt * (2 * kMaxD + 1) + j]);
        im.hi[j] = std::max(im.hi[j], part[tt * (2 * kMaxD + 1) + kMaxD + j]);
      }
      any_bad |= part[tt * (2 * kMaxD + 1) + 2 * kMaxD] != 0;
    }
    im.bad = any_bad;
    im.empty = !(im.lo[0] <= im.hi[0]);  // no valid point
    if (!im.bad && !im.empty) {
      // interval bounds of the elevated coordinates el_i (see `embed_point`), with a margin
      // covering rounding to the remainder-0 vertex, the vertex offsets and the neighbours
      const double inv_std = std::sqrt(2.0 / 3.0) * (d + 1);
      double clo[kMaxD + 1], chi[kMaxD + 1];  // cf_j, j = 1..d
      for (int j = 1; j <= d; ++j) {
        const double s = inv_std / std::sqrt(static_cast<double>(j * (j + 1)));
        clo[j] = im.lo[j - 1] * s;
        chi[j] = im.hi[j - 1] * s;
      }
      int word = 0, shift = 0;
      for (int i = 0; i < d; ++i) {
        double elo = 0, ehi = 0;
        for (int j = i + 1; j <= d; ++j) { elo += clo[j]; ehi += chi[j]; }
        if (i > 0) { elo -= i * chi[i]; ehi -= i * clo[i]; }
        const int64_t margin = 4 * (d + 1) + 4;
        const int64_t kmin = static_cast<int64_t>(std::floor(elo)) - margin;
        const int64_t kmax = static_cast<int64_t>(std::ceil(ehi)) + margin;
        int bits = 1;
        while ((int64_t(1) << bits) <= kmax - kmin + 1) ++bits;
        if (shift + bits > 64) { ++word; shift = 0; }
        im.lay.word[i] = word;
        im.lay.shift[i] = shift;
        im.lay.bias[i] = kmin;
        shift += bits;
      }
      im.lay.kw = word + 1;
    }
  }
}

// ---- embed -------------------------------------------------------------------------------------
// std::nearbyint without SSE4.1 is a library call that saves and restores the FP environment;
// adding and subtracting 1.5 * 2^52 rounds half to even the same way (|x| < 2^51, default
// rounding mode; the features are bounded by 1e6).
inline double round_even(double x) {
  volatile double magic = 6755399441055744.0;  // volatile: the sum must not be folded away
  const double mg = magic;
  return (x + mg) - mg;
}

// Lift one point (steps as in Adams et al.); returns the remainder-0 vertex, the inverse
// permutation (inv[k] = coordinate of rank k) and the barycentric weights.
template <int D>
inline void embed_point(const double* f, const double* scale, int32_t* rem, int* inv, double* bary) {
  constexpr double down = 1.0 / (D + 1);
  double el[D + 1];
  double sm = 0.0;
  for (int j = D; j > 0; --j) {
    const double cf = f[j - 1] * scale[j - 1];
    el[j] = sm - j * cf;
    sm += cf;
  }
  el[0] = sm;
  int64_t sum = 0;
  int rnk[D + 1];
  for (int i = 0; i <= D; ++i) {
    const double rd = round_even(el[i] * down);
    rem[i] = static_cast<int32_t>(rd) * (D + 1);
    sum += static_cast<int64_t>(rd);
    rnk[i] = 0;
  }
  for (int i = 0; i < D; ++i) {
    const double di = el[i] - rem[i];
    for (int j = i + 1; j <= D; ++j) {
      const int lt = di < el[j] - rem[j];  // branch-free: these comparisons are unpredictable
      rnk[i] += lt;
      rnk[j] += 1 - lt;
    }
  }
  double v[D + 1];
  for (int i = 0; i <= D; ++i) {
    const int rk = rnk[i] + static_cast<int>(sum);
    const int wrap = (rk < 0) - (rk > D);  // branch-free: taken about half the time
    rnk[i] = rk + wrap * (D + 1);
    rem[i] += wrap * (D + 1);
    v[i] = (el[i] - rem[i]) * down;
    inv[rnk[i]] = i;
  }
  // b[D - rank_i] += v_i and b[D - rank_i + 1] -= v_i: each weight gets one term of each sign,
  // so gathering them through the inverse permutation rounds the same as the scatter
  for (int j = 1; j <= D; ++j) bary[j] = v[inv[D - j]] - v[inv[D - j + 1]];
  bary[0] = v[inv[D]] + (1.0 - v[inv[0]]);
}

template <typename scalar_t, int D>
void embed_phase(Image<scalar_t>& im) {
  const int64_t n = im.n;
  const int kw = im.lay.kw == 3 ? 4 : im.lay.kw;
  const double inv_std = std::sqrt(2.0 / 3.0) * (D + 1);
  double scale[D];
  for (int i = 0; i < D; ++i) scale[i] = inv_std / std::sqrt(static_cast<double>((i + 1) * (i + 2)));
  uint64_t* key0 = im.key0;
  uint64_t* perm = im.perm;
  const Layout& lay = im.lay;
  // the range of points this thread inserts next: no barrier between the two phases
  const int nth = omp_get_num_threads(), t = omp_get_thread_num();
  for (int64_t p = n * t / nth, end = n * (t + 1) / nth; p < end; ++p) {
    scalar_t* w = im.weight + p * (D + 1);
    if (im.valid != nullptr && !im.valid[p]) {
      perm[p] = kInvalidPerm;
      for (int r = 0; r <= D; ++r) w[r] = 0;
      continue;
    }
    double f[D], bary[D + 1];
    int32_t rem[D + 1];
    int inv[D + 1];
    for (int j = 0; j < D; ++j) f[j] = static_cast<double>(im.feat[j * n + p]);
    embed_point<D>(f, scale, rem, inv, bary);
    uint64_t words[4] = {0, 0, 0, 0};
    for (int i = 0; i < D; ++i)
      words[lay.word[i]] += static_cast<uint64_t>(rem[i] - lay.bias[i]) << lay.shift[i];
    for (int k = 0; k < kw; ++k) key0[p * kw + k] = words[k];
    uint64_t code = 0;
    for (int k = 0; k <= D; ++k) code |= static_cast<uint64_t>(inv[k]) << (4 * k);
    perm[p] = code;
    for (int r = 0; r <= D; ++r) w[r] = static_cast<scalar_t>(bary[r]);
  }
}

template <typename scalar_t>
void embed_dispatch(Image<scalar_t>& im) {
  switch (im.d) {
    case 1: embed_phase<scalar_t, 1>(im); break;
    case 2: embed_phase<scalar_t, 2>(im); break;
    case 3: embed_phase<scalar_t, 3>(im); break;
    case 4: embed_phase<scalar_t, 4>(im); break;
    case 5: embed_phase<scalar_t, 5>(im); break;
    case 6: embed_phase<scalar_t, 6>(im); break;
    case 7: embed_phase<scalar_t, 7>(im); break;
    default: embed_phase<scalar_t, 8>(im); break;
  }
}

// ---- insert ------------------------------------------------------------------------------------
template <int KW, bool kAtomic>
inline int64_t insert_key(Key<KW>* table, uint64_t mask, const Key<KW>& k, int64_t* used, int64_t limit,
                          bool* overflow) {
  uint64_t s = hash_of(k) & mask;
  while (true) {
    if (kAtomic) {
      uint64_t cur = __atomic_load_n(&table[s].w[0], __ATOMIC_RELAXED);
      if (cur == kEmpty) {
        uint64_t expected = kEmpty;
        if (__atomic_compare_exchange_n(&table[s].w[0], &expected, k.w[0], false, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED)) {
          if (__atomic_add_fetch(used, 1, __ATOMIC_RELAXED) > limit) __atomic_store_n(overflow, true, __ATOMIC_RELAXED);
          return static_cast<int64_t>(s);
        }
        cur = expected;
      }
      if (cur == k.w[0]) return static_cast<int64_t>(s);
    } else {
      if (table[s].w[0] == kEmpty) {
        table[s] = k;
        if (++*used > limit) *overflow = true;
        return static_cast<int64_t>(s);
      }
      if (table[s] == k) return static_cast<int64_t>(s);
    }
    s = (s + 1) & mask;
  }
}

template <int KW>
inline int64_t find_key(const Key<KW>* table, uint64_t mask, const Key<KW>& k) {
  uint64_t s = hash_of(k) & mask;
  while (true) {
    if (table[s] == k) return static_cast<int64_t>(s);
    if (table[s].w[0] == kEmpty) return -1;
    s = (s + 1) & mask;
  }
}

template <typename scalar_t, int KW, bool kAtomic>
void insert_points(Image<scalar_t>& im, Key<KW>* table, uint64_t mask, int64_t limit, int64_t a, int64_t b) {
  const int d = im.d;
  const Key<KW>* key0 = reinterpret_cast<const Key<KW>*>(im.key0);
  const uint64_t* perm = im.perm;
  int64_t ones[kMaxD];
  for (int i = 0; i < d; ++i) ones[i] = 1;
  const Key<KW> one = delta_key<KW>(im.lay, d, ones);
  Key<KW> step[kMaxD + 1];  // subtracting (d+1) from coordinate i (none for the last one)
  for (int i = 0; i <= d; ++i) {
    int64_t delta[kMaxD];
    for (int c = 0; c < d; ++c) delta[c] = (c == i) ? -(d + 1) : 0;
    step[i] = delta_key<KW>(im.lay, d, delta);
  }
  Key<KW> prev[kMaxD + 1];
  int32_t prev_slot[kMaxD + 1];
  for (int r = 0; r <= d; ++r) {
    for (int w = 0; w < KW; ++w) prev[r].w[w] = kEmpty;
    prev_slot[r] = -1;
  }
  uint64_t prev_code = kInvalidPerm;
  for (int64_t p = a; p < b; ++p) {
    int32_t* out = im.vid + p * (d + 1);
    const uint64_t code = perm[p];
    if (code == kInvalidPerm) {
      for (int r = 0; r <= d; ++r) out[r] = -1;
      continue;
    }
    // past the load limit the table is redone larger: stop (a full table would never end a probe)
    if (kAtomic ? __atomic_load_n(&im.overflow, __ATOMIC_RELAXED) : im.overflow) return;
    Key<KW> k = key0[p];
    if (code == prev_code && k == prev[0]) {  // the same simplex as the previous point
      for (int r = 0; r <= d; ++r) out[r] = prev_slot[r];
      continue;
    }
    prev_code = code;
    for (int r = 0; r <= d; ++r) {
      if (k != prev[r]) {
        prev[r] = k;
        prev_slot[r] = static_cast<int32_t>(insert_key<KW, kAtomic>(table, mask, k, &im.used, limit, &im.overflow));
      }
      out[r] = prev_slot[r];
      if (r < d) {  // vertex r+1: every coordinate +1, the one of rank d-r also -(d+1)
        k += one;
        k += step[(code >> (4 * (d - r))) & 15];
      }
    }
  }
}

template <typename scalar_t, int KW>
void build_phases(Image<scalar_t>& im) {
  const int d = im.d;
  const int64_t n = im.n;
  const int nth = omp_get_num_threads(), t = omp_get_thread_num();
  Workspace& ws = *im.ws;
  // table: 4x the last image's lattice (load ~1/4), never more than 2 slots per vertex
  uint64_t full = 1024;
  while (full < static_cast<uint64_t>(2 * n * (d + 1))) full <<= 1;
#pragma omp single
  {
    uint64_t cap = 1024;
    const int64_t want = std::max<int64_t>(4 * ws.m_hint, n * (d + 1) / 16);
    while (cap < static_cast<uint64_t>(want)) cap <<= 1;
    im.cap = std::min(cap, full);
    im.used = 0;
    im.overflow = false;
    im.table = ws.table.template get<uint64_t>(im.cap * KW);
    std::memset(im.table, 0xFF, sizeof(uint64_t) * KW * im.cap);  // kEmpty everywhere
  }
  embed_dispatch(im);
  tick(im, kEmbed);
  Key<KW>* table;
  while (true) {
    table = reinterpret_cast<Key<KW>*>(im.table);
    const uint64_t mask = im.cap - 1;
    const int64_t limit = static_cast<int64_t>(im.cap / 2);
    if (KW == 1) {  // one-word keys: lock-free, every thread on its own range of points
      insert_points<scalar_t, KW, true>(im, table, mask, limit, n * t / nth, n * (t + 1) / nth);
    } else {
#pragma omp single
      insert_points<scalar_t, KW, false>(im, table, mask, limit, 0, n);
    }
#pragma omp barrier
    const bool grow = im.overflow;
#pragma omp barrier
    if (!grow) break;
#pragma omp single
    {
      im.cap = std::min(full, im.cap * 4);  // at `full` the load cannot pass 1/2
      im.used = 0;
      im.overflow = false;
      im.table = ws.table.template get<uint64_t>(im.cap * KW);
      std::memset(im.table, 0xFF, sizeof(uint64_t) * KW * im.cap);
    }
  }
  tick(im, kInsert);

  // compact: slot ranges per thread, counted, offset, numbered in slot order
  const uint64_t cap = im.cap;
  int64_t* counts = reinterpret_cast<int64_t*>(im.partial);  // the range partials are no longer needed
  {
    const uint64_t lo = cap * t / nth, hi = cap * (t + 1) / nth;
    int64_t c = 0;
    for (uint64_t s = lo; s < hi; ++s) c += table[s].w[0] != kEmpty;
    counts[t + 1] = c;
#pragma omp barrier
#pragma omp single
    {
      counts[0] = 0;
      for (int tt = 0; tt < nth; ++tt) counts[tt + 1] += counts[tt];
      im.m = counts[nth];
      ws.m_hint = im.m;
      im.slot_id = ws.slot_id.template get<int32_t>(cap);
      im.lkeys = ws.lkeys.template get<uint64_t>(im.m * KW);
      im.nbr = ws.nbr.template get<int32_t>(static_cast<size_t>(im.m) * (d + 1) * 2);
    }
    int32_t* slot_id = im.slot_id;
    Key<KW>* lkeys = reinterpret_cast<Key<KW>*>(im.lkeys);
    int64_t id = counts[t];
    for (uint64_t s = lo; s < hi; ++s) {
      if (table[s].w[0] != kEmpty) {
        slot_id[s] = static_cast<int32_t>(id);
        lkeys[id] = table[s];
        ++id;
      }
    }
  }
  const int64_t m = im.m;
  const int32_t* slot_id = im.slot_id;
#pragma omp barrier
  tick(im, kCompact);

  // neighbours: along direction j (< d) the key moves by -1 in every coordinate but +d in j
  // (and the opposite); along direction d by -1 (+1) in every coordinate
  Key<KW> nb[kMaxD + 1][2];
  for (int j = 0; j <= d; ++j) {
    int64_t delta[kMaxD];
    for (int c = 0; c < d; ++c) delta[c] = (c == j) ? d : -1;
    nb[j][0] = delta_key<KW>(im.lay, d, delta);
    for (int c = 0; c < d; ++c) delta[c] = -delta[c];
    nb[j][1] = delta_key<KW>(im.lay, d, delta);
  }
  const Key<KW>* lkeys = reinterpret_cast<const Key<KW>*>(im.lkeys);
  const uint64_t mask = cap - 1;
#pragma omp for schedule(static)
  for (int64_t i = 0; i < m; ++i) {
    for (int j = 0; j <= d; ++j) {
      for (int e = 0; e < 2; ++e) {
        const int64_t s = find_key<KW>(table, mask, lkeys[i] + nb[j][e]);
        im.nbr[(static_cast<int64_t>(j) * m + i) * 2 + e] = s >= 0 ? slot_id[s] : static_cast<int32_t>(m);
      }
    }
  }
  tick(im, kNeighbours);
}

// ---- filter ------------------------------------------------------------------------------------
// How the values of one filtering are read (point p -> Kx channels) and its result written.
enum class Load { kValues, kValuesAndOnes, kValuesOverNorm, kOnes };
enum class Store { kScaled, kNormalised, kNorm };

template <typename scalar_t>
struct Pass {
  const scalar_t* in = nullptr;  // [K, n] channel-major
  int64_t K = 0;                 // channels of `in`
  int64_t Kx = 0;                // channels on the lattice
  Load load = Load::kValues;
  Store store = Store::kScaled;
  const scalar_t* norm = nullptr;  // [n] (kValuesOverNorm)
  scalar_t* out = nullptr;         // [K, n] or [n] (kNorm)
  bool reverse = false, symmetric = false;
};

// A tile of kTile points, channel-major input -> point-major x [kTile, Kx] (contiguous reads
// per channel, contiguous rows for the splat).
constexpr int64_t kTile = 32;

template <typename scalar_t>
inline void load_tile(const Pass<scalar_t>& ps, int64_t n, int64_t p0, int64_t cnt, int64_t Kx,
                      scalar_t* __restrict__ x) {
  switch (ps.load) {
    case Load::kOnes:
      for (int64_t q = 0; q < cnt; ++q) x[q * Kx] = scalar_t(1);
      return;
    case Load::kValuesAndOnes:
      for (int64_t q = 0; q < cnt; ++q) x[q * Kx + ps.K] = scalar_t(1);
      /* fall through */
    case Load::kValues:
      for (int64_t k = 0; k < ps.K; ++k) {
        const scalar_t* __restrict__ src = ps.in + k * n + p0;
        for (int64_t q = 0; q < cnt; ++q) x[q * Kx + k] = src[q];
      }
      return;
    case Load::kValuesOverNorm:
      for (int64_t k = 0; k < ps.K; ++k) {
        const scalar_t* __restrict__ src = ps.in + k * n + p0;
        const scalar_t* __restrict__ nr = ps.norm + p0;
        for (int64_t q = 0; q < cnt; ++q) x[q * Kx + k] = nr[q] > 0 ? src[q] / nr[q] : scalar_t(0);
      }
      return;
  }
}

thread_local Buf tls_tile;  // per-thread tiles (their size depends on K only)

// dst += w * x over K channels (a function so that the pointers are known not to alias)
template <typename scalar_t, int KC>
inline void axpy(scalar_t* __restrict__ dst, const scalar_t* __restrict__ x, scalar_t w, int64_t K) {
  if (KC > 0) {
    for (int k = 0; k < KC; ++k) dst[k] += w * x[k];
  } else {
    for (int64_t k = 0; k < K; ++k) dst[k] += w * x[k];
  }
}

// dst += w * (x + z)
template <typename scalar_t, int KC>
inline void axpy2(scalar_t* __restrict__ dst, const scalar_t* __restrict__ x, const scalar_t* __restrict__ z,
                  scalar_t w, int64_t K) {
  if (KC > 0) {
    for (int k = 0; k < KC; ++k) dst[k] += w * (x[k] + z[k]);
  } else {
    for (int64_t k = 0; k < K; ++k) dst[k] += w * (x[k] + z[k]);
  }
}

// KC: the channel count at compile time (0: run time), so the K loops unroll for small K.
template <typename scalar_t, int KC>
void filter_phases(Image<scalar_t>& im, const Pass<scalar_t>& ps) {
  const int d = im.d;
  const int64_t n = im.n, m = im.m;
  const int64_t Kx = KC > 0 ? KC : ps.Kx;
  const int64_t rows = (m + 1) * Kx;  // row m stays zero: the absent neighbour
  const int chunks = static_cast<int>(std::min<int64_t>(kMaxChunks, std::max<int64_t>(1, n / kChunkPoints)));
  const int nbuf = ps.symmetric ? 4 : 2;
#pragma omp single
  im.lat = im.ws->lat.template get<scalar_t>(static_cast<size_t>(rows) * (nbuf + chunks - 1));
  scalar_t* base = static_cast<scalar_t*>(im.lat);
  scalar_t* acc = base + rows * nbuf;  // chunks 1..: private accumulators; chunk 0 is buffer 0
  const bool remap = !im.remapped;
  const int32_t* slot_id = im.slot_id;
  scalar_t* __restrict__ x = tls_tile.template get<scalar_t>(static_cast<size_t>(kTile) * Kx);

  // splat
#pragma omp for schedule(static)
  for (int c = 0; c < chunks; ++c) {
    scalar_t* __restrict__ a = c == 0 ? base : acc + (c - 1) * rows;
    std::memset(a, 0, sizeof(scalar_t) * rows);
    const int64_t lo = n * c / chunks, hi = n * (c + 1) / chunks;
    for (int64_t p0 = lo; p0 < hi; p0 += kTile) {
      const int64_t cnt = std::min(kTile, hi - p0);
      load_tile(ps, n, p0, cnt, Kx, x);
      for (int64_t q = 0; q < cnt; ++q) {
        const int64_t p = p0 + q;
        int32_t* id = im.vid + p * (d + 1);
        if (id[0] < 0) continue;
        if (remap)
          for (int r = 0; r <= d; ++r) id[r] = slot_id[id[r]];
        const scalar_t* __restrict__ xq = x + q * Kx;
        const scalar_t* w = im.weight + p * (d + 1);
        for (int r = 0; r <= d; ++r) axpy<scalar_t, KC>(a + static_cast<int64_t>(id[r]) * Kx, xq, w[r], Kx);
      }
    }
  }
  if (chunks > 1) {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < m; ++i)
      for (int c = 1; c < chunks; ++c) {
        const scalar_t* __restrict__ s = acc + (c - 1) * rows + i * Kx;
        scalar_t* __restrict__ o = base + i * Kx;
        for (int64_t k = 0; k < Kx; ++k) o[k] += s[k];
      }
  }
  if (ps.symmetric) {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < rows; ++i) base[2 * rows + i] = base[i];
  }
#pragma omp single
  {
    im.remapped = true;
    std::memset(base + rows + m * Kx, 0, sizeof(scalar_t) * Kx);
    if (ps.symmetric) std::memset(base + 3 * rows + m * Kx, 0, sizeof(scalar_t) * Kx);
  }
  tick(im, kSplat);

  // blur: buffers (0, 1) in one order, (2, 3) in the other when symmetric
  scalar_t* cur = base;
  scalar_t* nxt = base + rows;
  scalar_t* cur2 = base + 2 * rows;
  scalar_t* nxt2 = base + 3 * rows;
  const scalar_t half = scalar_t(0.5);
  for (int step = 0; step <= d; ++step) {
    const int j = ps.reverse ? d - step : step;
    const int32_t* nj = im.nbr + static_cast<int64_t>(j) * m * 2;
    const int32_t* nj2 = im.nbr + static_cast<int64_t>(d - j) * m * 2;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < m; ++i) {
      {
        const scalar_t* c = cur + i * Kx;
        const scalar_t* x1 = cur + static_cast<int64_t>(nj[2 * i]) * Kx;
        const scalar_t* x2 = cur + static_cast<int64_t>(nj[2 * i + 1]) * Kx;
        scalar_t* o = nxt + i * Kx;
        for (int64_t k = 0; k < Kx; ++k) o[k] = c[k] + half * (x1[k] + x2[k]);
      }
      if (ps.symmetric) {
        const scalar_t* c = cur2 + i * Kx;
        const scalar_t* x1 = cur2 + static_cast<int64_t>(nj2[2 * i]) * Kx;
        const scalar_t* x2 = cur2 + static_cast<int64_t>(nj2[2 * i + 1]) * Kx;
        scalar_t* o = nxt2 + i * Kx;
        for (int64_t k = 0; k < Kx; ++k) o[k] = c[k] + half * (x1[k] + x2[k]);
      }
    }
    std::swap(cur, nxt);
    std::swap(cur2, nxt2);
  }
  tick(im, kBlur);

  // slice, a tile of points at a time: point-major sums, written back channel-major
  const scalar_t alpha = static_cast<scalar_t>(1.0 / (1.0 + std::pow(2.0, -d)));
  const int64_t tiles = (n + kTile - 1) / kTile;
#pragma omp for schedule(static)
  for (int64_t tl = 0; tl < tiles; ++tl) {
    const int64_t p0 = tl * kTile, cnt = std::min(kTile, n - p0);
    for (int64_t q = 0; q < cnt; ++q) {
      const int64_t p = p0 + q;
      const int32_t* id = im.vid + p * (d + 1);
      scalar_t* __restrict__ y = x + q * Kx;
      for (int64_t k = 0; k < Kx; ++k) y[k] = 0;
      if (id[0] < 0) continue;
      const scalar_t* w = im.weight + p * (d + 1);
      for (int r = 0; r <= d; ++r) {
        const int64_t row = static_cast<int64_t>(id[r]) * Kx;
        if (ps.symmetric) axpy2<scalar_t, KC>(y, cur + row, cur2 + row, w[r], Kx);
        else axpy<scalar_t, KC>(y, cur + row, w[r], Kx);
      }
    }
    switch (ps.store) {
      case Store::kScaled:
        for (int64_t k = 0; k < ps.K; ++k) {
          scalar_t* __restrict__ o = ps.out + k * n + p0;
          for (int64_t q = 0; q < cnt; ++q) o[q] = x[q * Kx + k] * alpha;
        }
        break;
      case Store::kNorm:
        for (int64_t q = 0; q < cnt; ++q) ps.out[p0 + q] = x[q * Kx] * alpha;
        break;
      case Store::kNormalised:
        for (int64_t k = 0; k < ps.K; ++k) {
          scalar_t* __restrict__ o = ps.out + k * n + p0;
          for (int64_t q = 0; q < cnt; ++q) {
            const scalar_t nr = x[q * Kx + ps.K] * alpha;
            o[q] = nr > 0 ? x[q * Kx + k] * alpha / nr : scalar_t(0);
          }
        }
        break;
    }
  }
  tick(im, kSlice);
}

template <typename scalar_t>
void filter_dispatch(Image<scalar_t>& im, const Pass<scalar_t>& ps) {
  switch (ps.Kx) {
    case 1: filter_phases<scalar_t, 1>(im, ps); break;
    case 2: filter_phases<scalar_t, 2>(im, ps); break;
    case 3: filter_phases<scalar_t, 3>(im, ps); break;
    default: filter_phases<scalar_t, 0>(im, ps); break;
  }
}

// One image with a team of `nt` threads: feat [d, n], vals [K, n], out [K, n] channel-major.
// Returns false on bad features (nothing meaningful written).
template <typename scalar_t>
bool run_image(const scalar_t* feat, const scalar_t* vals, const uint8_t* valid, int d, int64_t n, int64_t K,
               bool normalize, bool transpose, bool symmetric, scalar_t* out, int nt, double* timing) {
  Image<scalar_t> im;
  im.d = d;
  im.n = n;
  im.feat = feat;
  im.valid = valid;
  im.ws = &tls_workspace;
  im.timing = timing;
  Workspace& ws = *im.ws;
  // every buffer the team shares is sized here, before the team starts
  im.partial = ws.partial.get<double>(static_cast<size_t>(std::max(nt, 1) + 2) * (2 * kMaxD + 1));
  im.weight = ws.weight.get<scalar_t>(n * (d + 1));
  im.vid = ws.vid.get<int32_t>(n * (d + 1));
  im.perm = ws.perm.get<uint64_t>(n);
  im.key0 = ws.key0.get<uint64_t>(n * 4);
  scalar_t* nrm = (normalize && transpose) ? ws.nrm.get<scalar_t>(n) : nullptr;
  if (timing != nullptr) im.t_last = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(nt)
  {
    range_phase(im);
    if (!im.bad && !im.empty) {
      tick(im, kRange);
      switch (im.lay.kw) {
        case 1: build_phases<scalar_t, 1>(im); break;
        case 2: build_phases<scalar_t, 2>(im); break;
        default: build_phases<scalar_t, 4>(im); break;
      }
      Pass<scalar_t> ps;
      ps.in = vals;
      ps.K = K;
      ps.out = out;
      ps.symmetric = symmetric;
      if (!normalize) {
        ps.Kx = K;
        ps.reverse = transpose;
        filter_dispatch(im, ps);
      } else if (!transpose) {  // values and ones in one pass
        ps.Kx = K + 1;
        ps.load = Load::kValuesAndOnes;
        ps.store = Store::kNormalised;
        filter_dispatch(im, ps);
      } else {  // W^T diag(1 / W 1): W 1 first, on the same lattice
        Pass<scalar_t> pn;
        pn.K = 1;
        pn.Kx = 1;
        pn.load = Load::kOnes;
        pn.store = Store::kNorm;
        pn.out = nrm;
        filter_dispatch(im, pn);
        ps.Kx = K;
        ps.load = Load::kValuesOverNorm;
        ps.norm = nrm;
        ps.reverse = true;
        filter_dispatch(im, ps);
      }
    } else if (!im.bad) {  // no valid point: zeros
#pragma omp for schedule(static)
      for (int64_t e = 0; e < K * n; ++e) out[e] = 0;
    }
  }
  return !im.bad;
}

template <typename scalar_t>
bool run_batch(const at::Tensor& feat, const at::Tensor& vals, const at::Tensor& vmask, at::Tensor& out, int64_t B,
               int64_t d, int64_t N, int64_t K, bool normalize, bool transpose, bool symmetric, int threads,
               double* timing) {
  const scalar_t* fp = feat.data_ptr<scalar_t>();
  const scalar_t* vp = vals.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  const uint8_t* mp = vmask.defined() ? vmask.data_ptr<uint8_t>() : nullptr;
  // one image per thread when the batch splits evenly enough (no barriers), or the images are
  // too small for a team; otherwise the whole team works inside each image
  const bool small = N * (d + 1) < (1 << 15);
  const bool per_image = threads > 1 && B > 1 && (small || (B >= threads && (B % threads == 0 || B >= 4 * threads)));
  int ok = 1;
  if (per_image) {
    std::vector<double> t_thread(static_cast<size_t>(threads) * kPhases, 0.0);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t b = 0; b < B; ++b) {
      double* tm = timing ? &t_thread[static_cast<size_t>(omp_get_thread_num()) * kPhases] : nullptr;
      if (!run_image<scalar_t>(fp + b * N * d, vp + b * N * K, mp ? mp + b * N : nullptr, static_cast<int>(d), N, K,
                               normalize, transpose, symmetric, op + b * N * K, 1, tm)) {
        __atomic_store_n(&ok, 0, __ATOMIC_RELAXED);
      }
    }
    if (timing)
      for (int t = 0; t < threads; ++t)
        for (int ph = 0; ph < kPhases; ++ph) timing[ph] += t_thread[static_cast<size_t>(t) * kPhases + ph];
  } else {
    const int nt = small ? 1 : threads;
    for (int64_t b = 0; b < B && ok; ++b) {
      ok = run_image<scalar_t>(fp + b * N * d, vp + b * N * K, mp ? mp + b * N : nullptr, static_cast<int>(d), N, K,
                               normalize, transpose, symmetric, op + b * N * K, nt, timing);
    }
  }
  return ok != 0;
}

at::Tensor lattice_filter_impl(const at::Tensor& features, const at::Tensor& values,
                               const c10::optional<at::Tensor>& valid, bool normalize, bool transpose, bool symmetric,
                               double* timing) {
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
  const bool ok = values.scalar_type() == at::kDouble
                      ? run_batch<double>(feat, vals, vmask, out, B, d, N, K, normalize, transpose, symmetric, threads,
                                          timing)
                      : run_batch<float>(feat, vals, vmask, out, B, d, N, K, normalize, transpose, symmetric, threads,
                                         timing);
  TORCH_CHECK(ok, "lattice_filter: features must be finite with |f| <= 1e6 (positions divided by their standard "
              "deviations; lattice coordinates are int32)");
  return out;
}

at::Tensor lattice_filter_cpu(const at::Tensor& features, const at::Tensor& values,
                              const c10::optional<at::Tensor>& valid, bool normalize, bool transpose, bool symmetric) {
  return lattice_filter_impl(features, values, valid, normalize, transpose, symmetric, nullptr);
}

// The same filtering, plus the time of each phase in ms (summed over images; with one image
// per thread, summed over threads too): range, embed, insert, compact, neighbours, splat, blur,
// slice. For profiling only; the plain op takes no clock readings.
std::tuple<at::Tensor, at::Tensor> lattice_filter_phases_cpu(const at::Tensor& features, const at::Tensor& values,
                                                             const c10::optional<at::Tensor>& valid, bool normalize,
                                                             bool transpose, bool symmetric) {
  double timing[kPhases] = {0};
  auto out = lattice_filter_impl(features, values, valid, normalize, transpose, symmetric, timing);
  auto t = at::empty({kPhases}, at::TensorOptions().dtype(at::kDouble));
  for (int i = 0; i < kPhases; ++i) t[i] = timing[i];
  return {out, t};
}

}  // namespace

TORCH_LIBRARY_IMPL(wsolbench, CPU, m) {
  m.impl("lattice_filter", &lattice_filter_cpu);
  m.impl("lattice_filter_phases", &lattice_filter_phases_cpu);
}

}  // namespace wsolbench
