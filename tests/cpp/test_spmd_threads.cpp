// core::fit_on_threads (the one-thread-per-rank driver behind the multi-GPU fit) on the CPU:
// in-memory thread communicators and CPU backends, so CI checks the sharding, the labels in
// row order, the weights per shard, progress on rank 0 only and first-failure reporting.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "core/communicator.hpp"
#include "core/spmd_threads.hpp"
#include "flashkm/error.hpp"
#include "flashkm/kmeans.hpp"
#include "support/reference.hpp"

namespace flashkm {
namespace {

constexpr std::int64_t kN = 3001, kD = 8, kK = 12;  // 3001 = 1001 + 1000 + 1000 over 3 ranks

struct FitRun {
  Model model;
  std::vector<std::int32_t> labels;
};

Params given_params(int iters = 10) {
  Params p;
  p.n_clusters = kK;
  p.init = InitMethod::given;
  p.max_iter = iters;
  p.tol = 0;
  p.n_threads = 2;
  return p;
}

FitRun on_threads(int ranks, const std::vector<float>& x, const std::vector<float>& c0, const Params& p,
               const float* weights = nullptr, const core::PlaceShardFn& place = {}) {
  auto comms = core::make_thread_communicators(ranks);
  std::vector<core::Communicator*> raw;
  for (auto& c : comms) raw.push_back(c.get());
  FitRun r;
  r.labels.assign(static_cast<std::size_t>(kN), -1);
  FitArgs a;
  a.init_centroids = c0.data();
  a.labels = r.labels.data();
  a.sample_weight = weights;
  r.model = core::fit_on_threads(MatrixView::of(x.data(), kN, kD), std::vector<Params>(ranks, p), a, raw, place, {});
  return r;
}

TEST(SpmdThreads, ShardRowsContiguousAndEven) {
  const auto s = core::shard_rows(10, 3);
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s[0].row0, 0);
  EXPECT_EQ(s[0].rows, 4);
  EXPECT_EQ(s[1].row0, 4);
  EXPECT_EQ(s[1].rows, 3);
  EXPECT_EQ(s[2].row0, 7);
  EXPECT_EQ(s[2].rows, 3);
  const auto one = core::shard_rows(5, 1);
  EXPECT_EQ(one[0].rows, 5);
}

TEST(SpmdThreads, ThreeRanksMatchOneFitWithLabelsInRowOrder) {
  const std::vector<float> x = testing::separated_blobs(kN, kD, kK, 1.0, 17);
  const std::vector<float> c0(x.begin(), x.begin() + kK * kD);
  std::vector<float> w(static_cast<std::size_t>(kN));
  for (std::int64_t i = 0; i < kN; ++i) w[i] = 0.5f + static_cast<float>(i % 7);  // per-shard offsets matter
  std::vector<std::int32_t> plain_labels;
  const Model plain = testing::fit_given(x, kD, c0, 10, given_params(), &plain_labels, w.data());
  const FitRun three = on_threads(3, x, c0, given_params(), w.data());
  EXPECT_EQ(three.labels, plain_labels);  // separated blobs: no near-ties
  ASSERT_EQ(three.model.centroids.size(), plain.centroids.size());
  for (std::size_t i = 0; i < plain.centroids.size(); ++i)
    EXPECT_NEAR(three.model.centroids[i], plain.centroids[i], 1e-5 * std::max(1.0f, std::fabs(plain.centroids[i])));
  EXPECT_NEAR(three.model.inertia, plain.inertia, 1e-9 * plain.inertia);
  // Bitwise run to run for a given number of ranks.
  const FitRun again = on_threads(3, x, c0, given_params(), w.data());
  EXPECT_EQ(again.labels, three.labels);
  EXPECT_EQ(0, std::memcmp(again.model.centroids.data(), three.model.centroids.data(), 4 * three.model.centroids.size()));
}

TEST(SpmdThreads, ProgressOnRankZeroOnly) {
  const std::vector<float> x = testing::separated_blobs(kN, kD, kK, 1.0, 5);
  const std::vector<float> c0(x.begin(), x.begin() + kK * kD);
  std::atomic<int> calls{0}, elsewhere{0};
  const std::thread::id caller = std::this_thread::get_id();
  Params p = given_params(4);
  p.progress = [&](int, const IterationInfo&) {
    ++calls;
    if (std::this_thread::get_id() != caller) ++elsewhere;
    return true;
  };
  const FitRun r = on_threads(2, x, c0, p);
  EXPECT_EQ(calls.load(), r.model.n_iter);
  EXPECT_EQ(elsewhere.load(), 0) << "progress must run on the caller's thread (Python's Ctrl-C check)";
}

TEST(SpmdThreads, FirstFailureNamesItsRank) {
  const std::vector<float> x = testing::separated_blobs(kN, kD, kK, 1.0, 9);
  const std::vector<float> c0(x.begin(), x.begin() + kK * kD);
  // The placement of rank 1's rows fails: every rank learns it at the agreement that
  // follows, so nobody waits for rank 1 in a collective (no timeout involved).
  core::PlaceShardFn failing = [](int r, MatrixView&) -> std::shared_ptr<void> {
    if (r == 1) FLASHKM_FAIL(out_of_memory, "test: rank 1 cannot allocate");
    return nullptr;
  };
  const auto t0 = std::chrono::steady_clock::now();
  try {
    on_threads(3, x, c0, given_params(), nullptr, failing);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::out_of_memory) << e.what();
    EXPECT_NE(std::string(e.what()).find("rank 1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cannot allocate"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
}

TEST(SpmdThreads, FewerRowsThanRanksIsAnError) {
  std::vector<float> x(2 * kD, 1.0f);
  auto comms = core::make_thread_communicators(3);
  std::vector<core::Communicator*> raw;
  for (auto& c : comms) raw.push_back(c.get());
  Params p;
  p.n_clusters = 1;
  EXPECT_THROW(core::fit_on_threads(MatrixView::of(x.data(), 2, kD), std::vector<Params>(3, p), {}, raw, {}, {}),
               Error);
}

}  // namespace
}  // namespace flashkm
