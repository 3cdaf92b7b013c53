#include "cpu/packed_centroids.hpp"

#include <limits>

namespace flashkm::cpu {

PackedCentroids::PackedCentroids(const float* c, std::int64_t k, std::int64_t d, int nr, Metric metric) : nr_(nr) {
  const std::int64_t k_padded = (k + nr - 1) / nr * nr;
  panels_.assign(static_cast<std::size_t>(k_padded * d), 0.0f);
  bias_.assign(static_cast<std::size_t>(k_padded), std::numeric_limits<float>::infinity());
  for (std::int64_t j = 0; j < k; ++j) {
    const std::int64_t p = j / nr, lane = j % nr;
    float* panel = panels_.data() + p * d * nr;
    double norm2 = 0;
    for (std::int64_t t = 0; t < d; ++t) {
      const float v = c[j * d + t];
      panel[t * nr + lane] = v;
      norm2 += static_cast<double>(v) * v;
    }
    // |c|^2 in fp64 then rounded once: the bias carries no accumulation error of its own.
    bias_[static_cast<std::size_t>(j)] = metric == Metric::l2 ? static_cast<float>(norm2) : 0.0f;
  }
  view_ = PanelView{panels_.data(), bias_.data(), k, k_padded, d, metric == Metric::l2 ? -2.0f : -1.0f};
}

}  // namespace flashkm::cpu
