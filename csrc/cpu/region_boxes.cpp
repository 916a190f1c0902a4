// CPU kernel of wsolbench::region_boxes (OpenMP over images).
//
// For one image and every threshold level k in 0..255 (foreground = q > k) it decides whether
// the image is correctly localised, without labelling the map 256 times:
//
// * Foreground components (8-connectivity) come from one union-find pass over the pixels in
//   decreasing value order: after the pixels of value v are added, the sets are exactly the
//   8-connected components of {q >= v} = {q > v - 1}. A set that is not touched at a value keeps
//   the same pixels, so each set "state" is alive over a contiguous range of levels; it is
//   closed (and its bounding box scored against the ground truth) when it grows or merges.
// * Holes (4-connected background regions not connected to the image border; OpenCV pads the
//   image with background, so a region touching the border is not a hole) come from the same
//   pass over background pixels in increasing value order (background at level k = {q <= k}).
//   A hole's contour runs through the foreground pixels around it, so its bounding rectangle is
//   the hole's bounding box grown by one pixel on every side.
// * V2 (all contours): per IoU threshold, a difference array over the 256 levels counts the
//   alive states whose box reaches the threshold.
// * V1 (largest contour): every new foreground state gets its OpenCV contour area by tracing
//   its outer border once (Suzuki-Abe border following, as cv2.findContours does, started at
//   the set's first pixel in raster order); a lazy max-heap gives the largest alive set per
//   level. Holes never win: a hole's polygon lies inside its parent's outer polygon, so its
//   area is at most the parent's, and on equality both give the same box. Ties between sets
//   are broken as cv2 + Python's max() do: cv2 lists top-level contours in reverse raster order
//   of their first pixel, max() keeps the first maximum, so the set whose first pixel comes
//   LAST in raster order wins. (A nested set never ties with the maximum: its area is strictly
//   below its enclosing set's.)
// * Levels without foreground (k >= max q) use the box [0, 0, 0, 0], as the reference does.
//
// Box of a contour: cv2.boundingRect then the reference's x1 = x + w clipped to W - 1, i.e.
// [xmin, ymin, min(xmax + 1, W - 1), min(ymax + 1, H - 1)]. IoU uses inclusive pixel widths.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdint>
#include <queue>
#include <tuple>
#include <vector>

namespace wsolbench {
namespace {

constexpr int kLevels = 256;

struct Box {
  int x0, y0, x1, y1;
};

inline double iou(const Box& a, const double* g) {
  double ix0 = std::max<double>(a.x0, g[0]), iy0 = std::max<double>(a.y0, g[1]);
  double ix1 = std::min<double>(a.x1, g[2]), iy1 = std::min<double>(a.y1, g[3]);
  double iw = std::max(0.0, ix1 - ix0 + 1.0), ih = std::max(0.0, iy1 - iy0 + 1.0);
  double inter = iw * ih;
  double area_a = (double(a.x1) - a.x0 + 1.0) * (double(a.y1) - a.y0 + 1.0);
  double area_b = (g[2] - g[0] + 1.0) * (g[3] - g[1] + 1.0);
  return inter / (area_a + area_b - inter);
}

inline double best_iou(const Box& a, const double* gt, int64_t m) {
  double best = -1.0;
  for (int64_t i = 0; i < m; ++i) best = std::max(best, iou(a, gt + 4 * i));
  return best;
}

struct UF {
  std::vector<int32_t> parent;
  int32_t find(int32_t x) {
    while (parent[x] != x) {
      parent[x] = parent[parent[x]];
      x = parent[x];
    }
    return x;
  }
};

// Chain-code directions as OpenCV numbers them: 0 = +x, then counter-clockwise on screen.
constexpr int kDx[8] = {1, 1, 0, -1, -1, -1, 0, 1};
constexpr int kDy[8] = {0, -1, -1, -1, 0, 1, 1, 1};

// Twice the cv2.contourArea of the outer border of the 8-connected component of {q >= v}
// whose first raster pixel is p0. Suzuki-Abe border following, OpenCV's conventions (start
// by searching clockwise from the left neighbour, then counter-clockwise from the previous
// pixel; stop when back at the start coming from the first neighbour found). `qp` is the map
// padded by one pixel of 0 (never foreground since v >= 1), row stride Wp, so no bounds checks.
int64_t outer_area2(const uint8_t* qp, int Wp, int p0, int v) {
  const int nb[8] = {1, 1 - Wp, -Wp, -1 - Wp, -1, -1 + Wp, Wp, 1 + Wp};
  int s = 4;
  bool found = false;
  for (int i = 0; i < 8; ++i) {
    s = (s - 1) & 7;
    if (qp[p0 + nb[s]] >= v) {
      found = true;
      break;
    }
  }
  if (!found) return 0;  // single pixel
  const int p1 = p0 + nb[s];
  int p3 = p0;
  int x3 = p0 % Wp, y3 = p0 / Wp;
  int64_t acc = 0;
  for (;;) {
    for (int i = 1; i <= 8; ++i) {
      const int d = (s + i) & 7;
      if (qp[p3 + nb[d]] >= v) {
        s = d;
        break;
      }
    }
    const int p4 = p3 + nb[s], x4 = x3 + kDx[s], y4 = y3 + kDy[s];
    acc += int64_t(x3) * y4 - int64_t(x4) * y3;
    if (p4 == p0 && p3 == p1) break;
    p3 = p4;
    x3 = x4;
    y3 = y4;
    s = (s + 4) & 7;
  }
  return acc < 0 ? -acc : acc;
}

struct Scorer {
  const double* gt;
  int64_t m;
  const double* deltas;
  int nt;
  // diff[t * (kLevels + 1) + k]
  std::vector<int32_t> diff;
  void cover(const Box& b, int lo, int hi) {  // levels lo..hi inclusive
    if (lo > hi) return;
    double s = best_iou(b, gt, m);
    for (int t = 0; t < nt; ++t)
      if (s >= deltas[t]) {
        diff[t * (kLevels + 1) + lo] += 1;
        diff[t * (kLevels + 1) + hi + 1] -= 1;
      }
  }
};

void one_image(const uint8_t* q, int H, int W, const double* gt, int64_t m, const double* deltas,
               int nt, bool largest, bool* out_v1, bool* out_v2) {
  // Pixels live in a padded index space (one pixel of margin, never added to a set) so that
  // neighbour visits need no bounds checks.
  const int Wp = W + 2, Np = (H + 2) * Wp;
  std::vector<uint8_t> qpad;
  if (largest) {
    qpad.assign(Np, 0);
    for (int y = 0; y < H; ++y) std::copy(q + y * W, q + (y + 1) * W, qpad.begin() + (y + 1) * Wp + 1);
  }
  // Counting sort of (padded) pixel indices by value.
  std::vector<int32_t> start(kLevels + 1, 0), order(H * W);
  for (int i = 0; i < H * W; ++i) start[q[i] + 1]++;
  for (int v = 0; v < kLevels; ++v) start[v + 1] += start[v];
  {
    std::vector<int32_t> pos(start.begin(), start.end() - 1);
    for (int y = 0; y < H; ++y)
      for (int x = 0; x < W; ++x) order[pos[q[y * W + x]]++] = (y + 1) * Wp + x + 1;
  }
  int maxq = 0;
  for (int v = kLevels - 1; v >= 0; --v)
    if (start[v + 1] > start[v]) {
      maxq = v;
      break;
    }
  const int nb8[8] = {1, 1 - Wp, -Wp, -1 - Wp, -1, -1 + Wp, Wp, 1 + Wp};
  const int nb4[4] = {1, -Wp, -1, Wp};

  Scorer sc{gt, m, deltas, nt, std::vector<int32_t>(nt * (kLevels + 1), 0)};
  // Per-set data, valid at roots only (one cache line per root): bbox in image coordinates,
  // the value/level at which the current state opened, and the set's first pixel (fg pass) or
  // whether it touches the image border (hole pass). A pixel joining an existing set writes
  // only its parent.
  struct Root {
    int32_t x0, y0, x1, y1, open, first;
  };
  std::vector<Root> R(Np);
  UF uf{std::vector<int32_t>(Np, -1)};
  auto box_fg = [&](int r) {
    return Box{R[r].x0, R[r].y0, std::min(R[r].x1 + 1, W - 1), std::min(R[r].y1 + 1, H - 1)};
  };
  auto merge = [&](int a, int b) {  // set b joins root a
    uf.parent[b] = a;
    R[a].x0 = std::min(R[a].x0, R[b].x0);
    R[a].y0 = std::min(R[a].y0, R[b].y0);
    R[a].x1 = std::max(R[a].x1, R[b].x1);
    R[a].y1 = std::max(R[a].y1, R[b].y1);
  };
  auto extend = [&](int a, int x, int y) {
    R[a].x0 = std::min(R[a].x0, x);
    R[a].y0 = std::min(R[a].y0, y);
    R[a].x1 = std::max(R[a].x1, x);
    R[a].y1 = std::max(R[a].y1, y);
  };
  const Box empty{0, 0, 0, 0};
  const double empty_iou = best_iou(empty, gt, m);

  // ---------------- foreground, decreasing values ----------------
  // A state opened at value `open` is alive for values [v_close + 1, open], i.e. levels
  // [v_close, open - 1] (foreground at level k is q >= k + 1).
  using Entry = std::tuple<int64_t, int32_t, int32_t, int32_t>;  // area2, first px, root, open
  std::priority_queue<Entry> heap;
  std::vector<int32_t> dirty;
  auto touch = [&](int r, int v) {  // root r is about to change at value v
    if (R[r].open > v) {
      sc.cover(box_fg(r), v, R[r].open - 1);
      R[r].open = v;
      if (largest) dirty.push_back(r);
    }
  };
  for (int v = kLevels - 1; v >= 1; --v) {
    dirty.clear();
    for (int i = start[v]; i < start[v + 1]; ++i) {
      const int p = order[i], y = p / Wp - 1, x = p - (y + 1) * Wp - 1;
      int a = -1;
      for (int d = 0; d < 8; ++d) {
        const int pn = uf.parent[p + nb8[d]];
        if (pn < 0 || pn == a) continue;  // not added yet / margin, or already in a's set
        const int b = uf.find(pn);
        if (b == a) continue;
        touch(b, v);
        if (a < 0) {  // p joins b's set
          a = b;
          uf.parent[p] = a;
          extend(a, x, y);
          R[a].first = std::min(R[a].first, p);
        } else {
          merge(a, b);
          R[a].first = std::min(R[a].first, R[b].first);
        }
      }
      if (a < 0) {  // a new set
        uf.parent[p] = p;
        R[p] = Root{x, y, x, y, v, p};
        if (largest) dirty.push_back(p);
      }
    }
    if (!largest) continue;
    for (int r : dirty) {
      if (uf.parent[r] != r || R[r].open != v) continue;
      R[r].open = -v - 1;  // dedupe marker, undone below
    }
    for (int r : dirty) {
      if (uf.parent[r] != r || R[r].open != -v - 1) continue;
      R[r].open = v;
      heap.emplace(outer_area2(qpad.data(), Wp, R[r].first, v), R[r].first, r, v);
    }
    // Largest alive contour at level v - 1.
    while (!heap.empty()) {
      const int r = std::get<2>(heap.top()), ov = std::get<3>(heap.top());
      if (uf.parent[r] == r && R[r].open == ov) break;
      heap.pop();
    }
    if (!heap.empty()) {
      const double s = best_iou(box_fg(std::get<2>(heap.top())), gt, m);
      for (int t = 0; t < nt; ++t) out_v1[t * kLevels + v - 1] = s >= deltas[t];
    }
  }
  for (int i = start[1]; i < H * W; ++i) {
    const int p = order[i];
    if (uf.parent[p] == p) sc.cover(box_fg(p), 0, R[p].open - 1);
  }

  // ---------------- holes, increasing values ----------------
  // Background at level k is q <= k. A state opened at level `open` is alive for levels
  // [open, close - 1]. `first` holds the "touches the image border" flag here.
  std::fill(uf.parent.begin(), uf.parent.end(), -1);
  auto box_hole = [&](int r) {
    return Box{R[r].x0 - 1, R[r].y0 - 1, std::min(R[r].x1 + 2, W - 1), std::min(R[r].y1 + 2, H - 1)};
  };
  auto touch_bg = [&](int r, int v) {
    if (R[r].open < v) {
      if (!R[r].first) sc.cover(box_hole(r), R[r].open, v - 1);
      R[r].open = v;
    }
  };
  for (int v = 0; v < maxq; ++v) {  // at levels >= maxq there is no foreground, hence no hole
    for (int i = start[v]; i < start[v + 1]; ++i) {
      const int p = order[i], y = p / Wp - 1, x = p - (y + 1) * Wp - 1;
      const int border = (x == 0 || y == 0 || x == W - 1 || y == H - 1);
      int a = -1;
      for (int d = 0; d < 4; ++d) {
        const int pn = uf.parent[p + nb4[d]];
        if (pn < 0 || pn == a) continue;
        const int b = uf.find(pn);
        if (b == a) continue;
        touch_bg(b, v);
        if (a < 0) {
          a = b;
          uf.parent[p] = a;
          extend(a, x, y);
          R[a].first |= border;
        } else {
          merge(a, b);
          R[a].first |= R[b].first;
        }
      }
      if (a < 0) {
        uf.parent[p] = p;
        R[p] = Root{x, y, x, y, v, border};
      }
    }
  }
  for (int i = 0; i < start[maxq]; ++i) {
    const int p = order[i];
    if (uf.parent[p] == p && !R[p].first) sc.cover(box_hole(p), R[p].open, maxq - 1);
  }

  // ---------------- levels without foreground ----------------
  for (int t = 0; t < nt; ++t) {
    const bool ok = empty_iou >= deltas[t];
    int32_t run = 0;
    for (int k = 0; k < kLevels; ++k) {
      run += sc.diff[t * (kLevels + 1) + k];
      out_v2[t * kLevels + k] = k >= maxq ? ok : run > 0;
      if (k >= maxq || !largest) out_v1[t * kLevels + k] = k >= maxq ? ok : false;
    }
  }
}

std::tuple<at::Tensor, at::Tensor> region_boxes_cpu(const at::Tensor& q, const at::Tensor& gt_boxes,
                                                    const at::Tensor& gt_offsets,
                                                    at::ArrayRef<double> iou_thresholds,
                                                    bool largest) {
  TORCH_CHECK(q.dim() == 3 && q.scalar_type() == at::kByte, "region_boxes: q must be uint8 [B, H, W]");
  TORCH_CHECK(gt_boxes.dim() == 2 && gt_boxes.size(1) == 4 && gt_boxes.scalar_type() == at::kDouble,
              "region_boxes: gt_boxes must be float64 [N, 4]");
  TORCH_CHECK(gt_offsets.dim() == 1 && gt_offsets.size(0) == q.size(0) + 1 &&
                  gt_offsets.scalar_type() == at::kLong,
              "region_boxes: gt_offsets must be int64 [B + 1]");
  TORCH_CHECK(q.size(1) * q.size(2) < (int64_t(1) << 30), "region_boxes: map too large");
  const auto qc = q.contiguous();
  const auto gc = gt_boxes.contiguous();
  const auto oc = gt_offsets.contiguous();
  const int64_t B = q.size(0);
  const int H = q.size(1), W = q.size(2);
  const int nt = iou_thresholds.size();
  const int64_t* off = oc.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(off[b] <= off[b + 1] && off[b + 1] <= gc.size(0) && off[0] == 0,
                "region_boxes: gt_offsets must be non-decreasing within gt_boxes");
  auto v1 = at::zeros({B, nt, kLevels}, q.options().dtype(at::kBool));
  auto v2 = at::zeros({B, nt, kLevels}, q.options().dtype(at::kBool));
  // an empty map has no pixel to threshold, so no box (not even the no-foreground one)
  TORCH_CHECK_VALUE(B == 0 || (H > 0 && W > 0),
                    "region_boxes: score maps must have at least one pixel, got H x W = ", H, " x ", W);
  if (B == 0) return {v1, v2};
  std::vector<double> deltas(iou_thresholds.begin(), iou_thresholds.end());
  const uint8_t* qp = qc.data_ptr<uint8_t>();
  const double* gp = gc.data_ptr<double>();
  bool* p1 = v1.data_ptr<bool>();
  bool* p2 = v2.data_ptr<bool>();
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b)
      one_image(qp + b * H * W, H, W, gp + 4 * off[b], off[b + 1] - off[b], deltas.data(), nt,
                largest, p1 + b * nt * kLevels, p2 + b * nt * kLevels);
  });
  return {v1, v2};
}

}  // namespace

TORCH_LIBRARY_IMPL(wsolbench, CPU, m) { m.impl("region_boxes", &region_boxes_cpu); }

}  // namespace wsolbench
