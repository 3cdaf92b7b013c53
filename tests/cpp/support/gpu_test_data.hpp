// Data generators shared by the GPU test files (header-only; float data, fixed seeds, so
// every test sees the same rows run to run).
#pragma once

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

namespace flashkm::gpu_test {

/// Gaussian blobs: k0 centres ~ N(0, 9 I), rows = a random centre + spread * N(0, I); [n x d].
inline std::vector<float> blobs(std::int64_t n, int d, int k0, float spread, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> centres(static_cast<std::size_t>(k0) * d), x(static_cast<std::size_t>(n) * d);
  for (auto& v : centres) v = 3.0f * nd(rng);
  for (std::int64_t i = 0; i < n; ++i) {
    const int c = static_cast<int>(rng() % k0);
    for (int j = 0; j < d; ++j) x[i * d + j] = centres[c * d + j] + spread * nd(rng);
  }
  return x;
}

/// Near-tie rows: k centroids c ~ N(0, I) [k x d], and n rows each near the midpoint of two
/// distinct centroids, t c_a + (1 - t) c_b with t = 0.5 + jitter * N(0, 1), plus 0.01 N(0, I)
/// noise, so that the two best distances differ by a hair: what certification must settle.
struct NearTies {
  std::vector<float> x, c;
};
inline NearTies near_tie_rows(std::int64_t n, int d, int k, float jitter, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  NearTies r;
  r.c.resize(static_cast<std::size_t>(k) * d);
  r.x.resize(static_cast<std::size_t>(n) * d);
  for (auto& v : r.c) v = nd(rng);
  for (std::int64_t i = 0; i < n; ++i) {
    const int a = static_cast<int>(rng() % k);
    const int bb = (a + 1 + static_cast<int>(rng() % (k - 1))) % k;
    const float t = 0.5f + jitter * nd(rng);
    for (int q = 0; q < d; ++q) r.x[i * d + q] = t * r.c[a * d + q] + (1 - t) * r.c[bb * d + q] + 0.01f * nd(rng);
  }
  return r;
}

/// Each of B problems' first k rows of x [B*n x d] as its initial centroids [B*k x d].
inline std::vector<float> first_rows_per_problem(const std::vector<float>& x, int B, std::int64_t n, int d, int k) {
  std::vector<float> c(static_cast<std::size_t>(B) * k * d);
  for (int b = 0; b < B; ++b)
    std::copy(x.begin() + b * n * d, x.begin() + (b * n + k) * d, c.begin() + static_cast<std::size_t>(b) * k * d);
  return c;
}

}  // namespace flashkm::gpu_test
