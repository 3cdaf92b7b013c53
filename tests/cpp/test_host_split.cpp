// The host-thread splits of src/cuda/host_split.hpp (header-only, no CUDA): the centroid
// uploads and compares of both CUDA backends run on them, so every array must be visited
// exactly once and each thread's arrays must be contiguous and in order.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "cuda/host_split.hpp"

namespace flashkm::cuda {
namespace {

std::vector<std::pair<std::size_t, std::size_t>> ranges_of(const std::vector<std::size_t>& sizes) {
  std::mutex mu;
  std::vector<std::pair<std::size_t, std::size_t>> seen;
  host_over_ranges(
      sizes.size(), [&](std::size_t a) { return sizes[a]; },
      [&](std::size_t lo, std::size_t hi) {
        std::lock_guard<std::mutex> lock(mu);
        seen.emplace_back(lo, hi);
      });
  std::sort(seen.begin(), seen.end());
  return seen;
}

TEST(HostSplit, RangesCoverEveryArrayOnceInOrder) {
  const std::size_t mb = std::size_t(1) << 20;
  const std::vector<std::vector<std::size_t>> cases = {
      {},                                    // nothing
      {100},                                 // one small array: one range
      std::vector<std::size_t>(500, 131072), // 500 x 128 KiB (B = 500, K = 256, D = 128)
      {64 * mb, 1, 1, 1, 1},                 // one huge array first
      {1, 2, 3, 40 * mb, 5, 6},              // one huge array in the middle
      std::vector<std::size_t>(37, 3 * mb),  // more arrays than threads
  };
  for (const auto& sizes : cases) {
    const auto seen = ranges_of(sizes);
    if (sizes.empty()) {
      ASSERT_LE(seen.size(), 1u);  // one call over [0, 0) at most
      continue;
    }
    std::size_t next = 0;
    for (const auto& [lo, hi] : seen) {
      EXPECT_EQ(lo, next) << "a gap or an overlap before array " << lo;
      EXPECT_LT(lo, hi) << "an empty range";
      next = hi;
    }
    EXPECT_EQ(next, sizes.size());
    std::size_t total = 0;
    for (std::size_t v : sizes) total += v;
    if (total < 4 * mb) EXPECT_EQ(seen.size(), 1u) << "small totals stay on one thread";
    EXPECT_LE(seen.size(), 8u);
    if (total >= 16 * mb && sizes.size() > 1 && std::thread::hardware_concurrency() > 1)
      EXPECT_GT(seen.size(), 1u) << "a large total is split over threads";
  }
}

TEST(HostSplit, EqualItemsCoverEveryItemOnceWithAlignedCuts) {
  for (const std::int64_t n : {std::int64_t{0}, std::int64_t{1}, std::int64_t{1000}, std::int64_t{12345678}}) {
    std::mutex mu;
    std::vector<std::pair<std::int64_t, std::int64_t>> seen;
    host_split(n, 1, std::int64_t(2) << 20, 64, [&](std::int64_t lo, std::int64_t hi) {
      std::lock_guard<std::mutex> lock(mu);
      seen.emplace_back(lo, hi);
    });
    std::sort(seen.begin(), seen.end());
    std::int64_t next = 0;
    for (std::size_t r = 0; r < seen.size(); ++r) {
      EXPECT_EQ(seen[r].first, next);
      if (r + 1 < seen.size()) EXPECT_EQ(seen[r].second % 64, 0) << "cut not aligned";
      next = seen[r].second;
    }
    EXPECT_EQ(next, n);
  }
}

}  // namespace
}  // namespace flashkm::cuda
