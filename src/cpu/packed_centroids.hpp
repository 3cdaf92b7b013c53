// Centroids packed for the CPU kernels: panels of nr centroids laid out [d][nr] so that
// one d-step of the micro-kernel reads nr contiguous floats, plus the per-centroid bias.
#pragma once

#include <cstdint>
#include <vector>

#include "cpu/kernels.hpp"
#include "flashkm/types.hpp"

namespace flashkm::cpu {

class PackedCentroids {
 public:
  PackedCentroids() = default;
  /// Pack c [k x d]. l2: bias = |c|^2, alpha = -2 (score = |c|^2 - 2 x.c);
  /// cosine and inner_product: bias = 0, alpha = -1 (score = -x.c).
  PackedCentroids(const float* c, std::int64_t k, std::int64_t d, int nr, Metric metric);

  const PanelView& view() const { return view_; }
  std::int64_t panels() const { return view_.k_padded / nr_; }

 private:
  int nr_ = 0;
  std::vector<float> panels_;
  std::vector<float> bias_;
  PanelView view_;
};

}  // namespace flashkm::cpu
