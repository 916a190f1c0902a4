// Shared argument checks for wsolbench::lattice_filter (CPU and CUDA kernels).
#pragma once
#include <ATen/ATen.h>
#include <c10/util/Optional.h>
#include <cstdint>
#include <limits>

namespace wsolbench {

constexpr int64_t kLatticeMaxDim = 8;

// features [B, d, N], values [B, K, N], valid [B, N] (bool or uint8), all on one device.
inline void check_lattice_args(const at::Tensor& features, const at::Tensor& values,
                               const c10::optional<at::Tensor>& valid, bool normalize, bool symmetric) {
  TORCH_CHECK(!(normalize && symmetric), "lattice_filter: symmetric=True applies W + W^T of the unnormalised "
              "filter; it cannot be combined with normalize=True");
  TORCH_CHECK(features.dim() == 3, "lattice_filter: features must be [B, d, N], got ",
              features.dim(), " dims ", features.sizes());
  TORCH_CHECK(values.dim() == 3, "lattice_filter: values must be [B, K, N], got ", values.dim(),
              " dims ", values.sizes());
  TORCH_CHECK(features.scalar_type() == at::kFloat || features.scalar_type() == at::kDouble,
              "lattice_filter: features must be float32 or float64, got ", features.scalar_type());
  TORCH_CHECK(values.scalar_type() == features.scalar_type(),
              "lattice_filter: values dtype (", values.scalar_type(),
              ") must match features dtype (", features.scalar_type(), ")");
  TORCH_CHECK(values.device() == features.device(), "lattice_filter: values device (",
              values.device(), ") must match features device (", features.device(), ")");
  const int64_t d = features.size(1);
  TORCH_CHECK(d >= 1 && d <= kLatticeMaxDim, "lattice_filter: features dimension d = size(1) must be in [1, ",
              kLatticeMaxDim, "], got d = ", d);
  TORCH_CHECK(values.size(0) == features.size(0), "lattice_filter: values batch size (", values.size(0),
              ") must match features batch size (", features.size(0), ")");
  TORCH_CHECK(values.size(2) == features.size(2), "lattice_filter: values point count N (", values.size(2),
              ") must match features point count N (", features.size(2), ")");
  TORCH_CHECK(features.size(2) * (d + 1) < std::numeric_limits<int32_t>::max() / 2,
              "lattice_filter: features has too many points per image (", features.size(2), ")");
  if (valid.has_value()) {
    const at::Tensor& v = *valid;
    TORCH_CHECK(v.scalar_type() == at::kBool || v.scalar_type() == at::kByte,
                "lattice_filter: valid must be bool or uint8, got ", v.scalar_type());
    TORCH_CHECK(v.dim() == 2 && v.size(0) == features.size(0) && v.size(1) == features.size(2),
                "lattice_filter: valid must be [B, N] = [", features.size(0), ", ", features.size(2),
                "], got ", v.sizes());
    TORCH_CHECK(v.device() == features.device(), "lattice_filter: valid device (", v.device(),
                ") must match features device (", features.device(), ")");
  }
}

}  // namespace wsolbench
