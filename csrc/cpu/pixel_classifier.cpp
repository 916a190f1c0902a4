// CPU kernels of the PixelCAM pixel classifier (schemas: csrc/ops/pixel_classifier.cpp).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace wsolbench {
namespace {

// Below this much work the kernels run on the calling thread (fork/join would dominate).
constexpr int64_t kParallelMin = 1 << 16;

void check_classifier(const char* op, const at::Tensor& f, const at::Tensor& w,
                      const at::Tensor& b) {
  TORCH_CHECK(f.dim() == 4, op, ": features must be [B, C, h, w], got shape ", f.sizes());
  TORCH_CHECK(f.scalar_type() == at::kFloat || f.scalar_type() == at::kDouble, op,
              ": features must be float32 or float64, got ", f.scalar_type());
  TORCH_CHECK(w.dim() == 2 && w.size(1) == f.size(1), op, ": weight must be [K, C] with C = ",
              f.size(1), ", got shape ", w.sizes());
  TORCH_CHECK(w.size(0) >= 1, op, ": weight must have at least one class, got shape ", w.sizes());
  TORCH_CHECK(b.dim() == 1 && b.size(0) == w.size(0), op, ": bias must be [K] with K = ",
              w.size(0), ", got shape ", b.sizes());
  TORCH_CHECK(w.scalar_type() == f.scalar_type() && b.scalar_type() == f.scalar_type(), op,
              ": weight and bias must have the dtype of features (", f.scalar_type(), "), got ",
              w.scalar_type(), " and ", b.scalar_type());
  TORCH_CHECK(w.device() == f.device() && b.device() == f.device(), op,
              ": weight and bias must be on the device of features (", f.device(), "), got ",
              w.device(), " and ", b.device());
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

// ---------------------------------------------------------------- inference: probabilities
template <typename scalar_t>
void probs_kernel(const at::Tensor& f, const at::Tensor& w, const at::Tensor& bias,
                  at::Tensor& out, int64_t fg_class) {
  const int64_t B = f.size(0), C = f.size(1), hw = f.size(2) * f.size(3), K = w.size(0);
  const scalar_t* F = f.data_ptr<scalar_t>();
  const scalar_t* W = w.data_ptr<scalar_t>();
  const scalar_t* bb = bias.data_ptr<scalar_t>();
  scalar_t* Y = out.data_ptr<scalar_t>();
  constexpr int64_t kTile = 64;
  const int64_t ntile = (hw + kTile - 1) / kTile;
#pragma omp parallel if (B * C * hw > kParallelMin)
  {
    std::vector<scalar_t> acc(K * kTile);
#pragma omp for schedule(static)
    for (int64_t job = 0; job < B * ntile; ++job) {
      const int64_t b = job / ntile, p0 = (job % ntile) * kTile;
      const int64_t len = std::min(kTile, hw - p0);
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < len; ++j) acc[k * kTile + j] = bb[k];
      for (int64_t c = 0; c < C; ++c) {
        const scalar_t* fr = F + (b * C + c) * hw + p0;
        for (int64_t k = 0; k < K; ++k) {
          const scalar_t wk = W[k * C + c];
          scalar_t* a = acc.data() + k * kTile;
          for (int64_t j = 0; j < len; ++j) a[j] += wk * fr[j];
        }
      }
      for (int64_t j = 0; j < len; ++j) {
        scalar_t mx = acc[j];
        for (int64_t k = 1; k < K; ++k) mx = std::max(mx, acc[k * kTile + j]);
        scalar_t den = 0;
        for (int64_t k = 0; k < K; ++k) {
          const scalar_t e = std::exp(acc[k * kTile + j] - mx);
          acc[k * kTile + j] = e;
          den += e;
        }
        if (fg_class >= 0) {
          Y[b * hw + p0 + j] = acc[fg_class * kTile + j] / den;
        } else {
          for (int64_t k = 0; k < K; ++k) Y[(b * K + k) * hw + p0 + j] = acc[k * kTile + j] / den;
        }
      }
    }
  }
}

at::Tensor probs_cpu(const at::Tensor& f_in, const at::Tensor& w_in, const at::Tensor& b_in,
                     int64_t fg_class) {
  check_classifier("pixel_classifier_probs", f_in, w_in, b_in);
  const int64_t K = w_in.size(0);
  TORCH_CHECK(fg_class < K, "pixel_classifier_probs: fg_class must be < K = ", K, " (or < 0 for "
              "all classes), got ", fg_class);
  const at::Tensor f = f_in.contiguous(), w = w_in.contiguous(), b = b_in.contiguous();
  at::Tensor out = fg_class >= 0 ? at::empty({f.size(0), f.size(2), f.size(3)}, f.options())
                                 : at::empty({f.size(0), K, f.size(2), f.size(3)}, f.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "pixel_classifier_probs_cpu",
                             [&] { probs_kernel<scalar_t>(f, w, b, out, fg_class); });
  return out;
}

// ---------------------------------------------------------------- training: seed CE
struct Seed {
  int64_t b, p, y;
};

std::vector<Seed> collect_seeds(const char* op, const at::Tensor& labels, int64_t K,
                                int64_t ignore) {
  const int64_t B = labels.size(0), hw = labels.size(1) * labels.size(2);
  const int64_t* L = labels.data_ptr<int64_t>();
  std::vector<Seed> seeds;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t p = 0; p < hw; ++p) {
      const int64_t y = L[b * hw + p];
      if (y == ignore) continue;
      TORCH_CHECK(y >= 0 && y < K, op, ": labels must be in [0, ", K, ") or equal ignore_index (",
                  ignore, "), got ", y);
      seeds.push_back({b, p, y});
    }
  }
  return seeds;
}

// Logits of one seed pixel into z[0..K).
template <typename scalar_t, typename acc_t>
inline void seed_logits(const scalar_t* F, const scalar_t* W, const scalar_t* bias, int64_t C,
                        int64_t hw, int64_t K, const Seed& s, acc_t* z) {
  for (int64_t k = 0; k < K; ++k) z[k] = bias[k];
  const scalar_t* f = F + s.b * C * hw + s.p;
  for (int64_t c = 0; c < C; ++c) {
    const acc_t v = f[c * hw];
    for (int64_t k = 0; k < K; ++k) z[k] += static_cast<acc_t>(W[k * C + c]) * v;
  }
}

template <typename scalar_t>
void seed_ce_kernel(const at::Tensor& f, const at::Tensor& w, const at::Tensor& bias,
                    const std::vector<Seed>& seeds, at::Tensor& loss) {
  const int64_t C = f.size(1), hw = f.size(2) * f.size(3), K = w.size(0);
  const int64_t S = static_cast<int64_t>(seeds.size());
  const scalar_t* F = f.data_ptr<scalar_t>();
  const scalar_t* W = w.data_ptr<scalar_t>();
  const scalar_t* bb = bias.data_ptr<scalar_t>();
  double total = 0;
#pragma omp parallel reduction(+ : total) if (S * C * K > kParallelMin)
  {
    std::vector<double> z(K);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < S; ++i) {
      seed_logits(F, W, bb, C, hw, K, seeds[i], z.data());
      double mx = z[0];
      for (int64_t k = 1; k < K; ++k) mx = std::max(mx, z[k]);
      double den = 0;
      for (int64_t k = 0; k < K; ++k) den += std::exp(z[k] - mx);
      total += mx + std::log(den) - z[seeds[i].y];
    }
  }
  loss.fill_(S > 0 ? total / static_cast<double>(S) : 0.0);
}

std::tuple<at::Tensor, at::Tensor> seed_ce_cpu(const at::Tensor& f_in, const at::Tensor& w_in,
                                               const at::Tensor& b_in, const at::Tensor& l_in,
                                               int64_t ignore_index) {
  check_classifier("pixel_seed_ce", f_in, w_in, b_in);
  check_labels("pixel_seed_ce", f_in, l_in);
  const at::Tensor f = f_in.contiguous(), w = w_in.contiguous(), b = b_in.contiguous();
  const at::Tensor labels = l_in.contiguous();
  const auto seeds = collect_seeds("pixel_seed_ce", labels, w.size(0), ignore_index);
  at::Tensor loss = at::empty({}, f.options());
  at::Tensor count = at::full({}, static_cast<int64_t>(seeds.size()), f.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "pixel_seed_ce_cpu",
                             [&] { seed_ce_kernel<scalar_t>(f, w, b, seeds, loss); });
  return {loss, count};
}

template <typename scalar_t>
void seed_ce_backward_kernel(double scale, const at::Tensor& f, const at::Tensor& w,
                             const at::Tensor& bias, const std::vector<Seed>& seeds,
                             at::Tensor& gf, at::Tensor& gw, at::Tensor& gb) {
  const int64_t C = f.size(1), hw = f.size(2) * f.size(3), K = w.size(0);
  const int64_t S = static_cast<int64_t>(seeds.size());
  const scalar_t* F = f.data_ptr<scalar_t>();
  const scalar_t* W = w.data_ptr<scalar_t>();
  const scalar_t* bb = bias.data_ptr<scalar_t>();
  scalar_t* GF = gf.data_ptr<scalar_t>();
  scalar_t* GW = gw.data_ptr<scalar_t>();
  scalar_t* GB = gb.data_ptr<scalar_t>();
  std::vector<double> dz(S * K);
  // d loss / d z = (softmax(z) - onehot(y)) * scale; the seeds' feature gradients are W^T dz
  // (every seed owns its pixel: no two iterations write the same element).
#pragma omp parallel if (S * C * K > kParallelMin)
  {
    std::vector<double> z(K);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < S; ++i) {
      const Seed& s = seeds[i];
      seed_logits(F, W, bb, C, hw, K, s, z.data());
      double mx = z[0];
      for (int64_t k = 1; k < K; ++k) mx = std::max(mx, z[k]);
      double den = 0;
      for (int64_t k = 0; k < K; ++k) den += (z[k] = std::exp(z[k] - mx));
      double* d = dz.data() + i * K;
      for (int64_t k = 0; k < K; ++k) d[k] = (z[k] / den - (k == s.y ? 1.0 : 0.0)) * scale;
      scalar_t* g = GF + s.b * C * hw + s.p;
      for (int64_t c = 0; c < C; ++c) {
        double v = 0;
        for (int64_t k = 0; k < K; ++k) v += d[k] * W[k * C + c];
        g[c * hw] = static_cast<scalar_t>(v);
      }
    }
  }
  // Weight gradient: threads own channels.
#pragma omp parallel for schedule(static) if (S * C * K > kParallelMin)
  for (int64_t c = 0; c < C; ++c) {
    for (int64_t k = 0; k < K; ++k) {
      double v = 0;
      for (int64_t i = 0; i < S; ++i) v += dz[i * K + k] * F[seeds[i].b * C * hw + c * hw + seeds[i].p];
      GW[k * C + c] = static_cast<scalar_t>(v);
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    double v = 0;
    for (int64_t i = 0; i < S; ++i) v += dz[i * K + k];
    GB[k] = static_cast<scalar_t>(v);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> seed_ce_backward_cpu(
    const at::Tensor& grad_loss, const at::Tensor& f_in, const at::Tensor& w_in,
    const at::Tensor& b_in, const at::Tensor& l_in, const at::Tensor& n_seeds,
    int64_t ignore_index) {
  check_classifier("pixel_seed_ce_backward", f_in, w_in, b_in);
  check_labels("pixel_seed_ce_backward", f_in, l_in);
  TORCH_CHECK(grad_loss.numel() == 1, "pixel_seed_ce_backward: grad_loss must hold one value, "
              "got shape ", grad_loss.sizes());
  TORCH_CHECK(n_seeds.numel() == 1 && n_seeds.scalar_type() == at::kLong,
              "pixel_seed_ce_backward: n_seeds must be a 0-dim int64 tensor, got ",
              n_seeds.scalar_type(), " ", n_seeds.sizes());
  const at::Tensor f = f_in.contiguous(), w = w_in.contiguous(), b = b_in.contiguous();
  const at::Tensor labels = l_in.contiguous();
  const auto seeds = collect_seeds("pixel_seed_ce_backward", labels, w.size(0), ignore_index);
  const int64_t n = std::max<int64_t>(n_seeds.item<int64_t>(), 1);
  const double scale = grad_loss.item<double>() / static_cast<double>(n);
  at::Tensor gf = at::zeros_like(f), gw = at::empty_like(w), gb = at::empty_like(b);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "pixel_seed_ce_backward_cpu", [&] {
    seed_ce_backward_kernel<scalar_t>(scale, f, w, b, seeds, gf, gw, gb);
  });
  return {gf, gw, gb};
}

}  // namespace

TORCH_LIBRARY_IMPL(wsolbench, CPU, m) {
  m.impl("pixel_classifier_probs", &probs_cpu);
  m.impl("pixel_seed_ce", &seed_ce_cpu);
  m.impl("pixel_seed_ce_backward", &seed_ce_backward_cpu);
}

}  // namespace wsolbench
