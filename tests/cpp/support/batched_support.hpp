// Test support for batched fits: ragged problems and the "a problem in a batch is the
// problem alone" comparison (CPU tests/cpp/test_batched.cpp and GPU tests/gpu).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "flashkm/flashkm.hpp"

namespace flashkm::testing {

/// Bitwise equal doubles / floats (NaN-free data: memcmp is the test).
inline bool same_bits(const void* a, const void* b, std::size_t bytes) { return std::memcmp(a, b, bytes) == 0; }

/// EXPECTs that two models agree bitwise in every field but the wall times of the history.
inline void expect_same_fit(const Model& batched, const Model& alone, const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_EQ(batched.n_clusters, alone.n_clusters);
  ASSERT_EQ(batched.n_features, alone.n_features);
  ASSERT_EQ(batched.centroids.size(), alone.centroids.size());
  EXPECT_TRUE(same_bits(batched.centroids.data(), alone.centroids.data(), alone.centroids.size() * sizeof(float)))
      << "centroids differ";
  ASSERT_EQ(batched.cluster_weight.size(), alone.cluster_weight.size());
  EXPECT_TRUE(same_bits(batched.cluster_weight.data(), alone.cluster_weight.data(),
                        alone.cluster_weight.size() * sizeof(double)))
      << "cluster weights differ";
  EXPECT_TRUE(same_bits(&batched.inertia, &alone.inertia, sizeof(double)))
      << "inertia " << batched.inertia << " vs " << alone.inertia;
  EXPECT_EQ(batched.n_iter, alone.n_iter);
  EXPECT_EQ(batched.converged, alone.converged);
  EXPECT_EQ(batched.seed, alone.seed);
  EXPECT_EQ(batched.init, alone.init);
  ASSERT_EQ(batched.history.size(), alone.history.size());
  for (std::size_t t = 0; t < alone.history.size(); ++t) {
    const IterationInfo &a = batched.history[t], &b = alone.history[t];
    EXPECT_EQ(a.iteration, b.iteration);
    EXPECT_TRUE(same_bits(&a.inertia, &b.inertia, sizeof(double))) << "iteration " << t + 1 << " inertia "
                                                                    << a.inertia << " vs " << b.inertia;
    EXPECT_TRUE(same_bits(&a.shift, &b.shift, sizeof(double))) << "iteration " << t + 1 << " shift";
    EXPECT_EQ(a.n_changed, b.n_changed) << "iteration " << t + 1;
    EXPECT_EQ(a.n_rechecked, b.n_rechecked) << "iteration " << t + 1;
  }
}

/// Ragged sizes n_b and K k_b for B problems (deterministic).
struct RaggedShape {
  std::vector<std::int64_t> offsets, k;
};
inline RaggedShape ragged_shape(std::int64_t problems, std::int64_t n_min, std::int64_t n_max, std::int64_t k_max,
                                std::uint64_t seed) {
  RaggedShape s;
  s.offsets.push_back(0);
  std::uint64_t h = seed * 0x9E3779B97F4A7C15ull + 1;
  for (std::int64_t b = 0; b < problems; ++b) {
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ull;
    h ^= h >> 29;
    const std::int64_t n = n_min + static_cast<std::int64_t>(h % static_cast<std::uint64_t>(n_max - n_min + 1));
    s.offsets.push_back(s.offsets.back() + n);
    s.k.push_back(1 + static_cast<std::int64_t>((h >> 17) % static_cast<std::uint64_t>(std::min(k_max, n))));
  }
  return s;
}

}  // namespace flashkm::testing
