// Distributed (SPMD) fits over in-memory thread communicators: one host thread per rank,
// each with its own row shard. They must reproduce the single-process fit, bitwise with one
// rank, and fail together when one rank fails.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <thread>

#include "core/backend.hpp"
#include "core/communicator.hpp"
#include "core/distributed_backend.hpp"
#include "core/distributed_fit.hpp"
#include "flashkm/flashkm.hpp"
#include "support/reference.hpp"

namespace flashkm {
namespace {

/// Uneven contiguous shards of n rows over p ranks: rank r gets a share proportional to
/// r + 1 (so no two shards have the same size and none is aligned to a chunk).
std::vector<std::int64_t> shard_offsets(std::int64_t n, int p) {
  std::vector<std::int64_t> off(static_cast<std::size_t>(p) + 1, 0);
  const std::int64_t parts = std::int64_t{p} * (p + 1) / 2;
  std::int64_t acc = 0;
  for (int r = 0; r < p; ++r) {
    acc += r + 1;
    off[static_cast<std::size_t>(r) + 1] = n * acc / parts;
  }
  return off;
}

struct RankResult {
  Model model;
  std::vector<std::int32_t> labels;  // the rank's own rows
  std::exception_ptr error;
};

/// Runs fit_distributed on p threads, rank r over rows [off[r], off[r+1]) of x.
std::vector<RankResult> fit_ranks(const std::vector<float>& x, std::int64_t d, const Params& params, int p,
                                  const std::vector<float>* weights = nullptr, const std::vector<float>* init = nullptr,
                                  std::vector<std::int64_t> off = {}) {
  const std::int64_t n = static_cast<std::int64_t>(x.size()) / d;
  if (off.empty()) off = shard_offsets(n, p);
  auto comms = core::make_thread_communicators(p);
  std::vector<RankResult> out(static_cast<std::size_t>(p));
  std::vector<std::thread> threads;
  for (int r = 0; r < p; ++r)
    threads.emplace_back([&, r] {
      RankResult& res = out[static_cast<std::size_t>(r)];
      const std::int64_t begin = off[static_cast<std::size_t>(r)], rows = off[static_cast<std::size_t>(r) + 1] - begin;
      res.labels.resize(static_cast<std::size_t>(rows));
      FitArgs args;
      args.labels = res.labels.data();
      args.sample_weight = weights ? weights->data() + begin : nullptr;
      args.init_centroids = init ? init->data() : nullptr;
      try {
        res.model = core::fit_distributed(MatrixView::of(x.data() + begin * d, rows, d), params, args,
                                          *comms[static_cast<std::size_t>(r)]);
      } catch (...) {
        res.error = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  return out;
}

std::vector<std::int32_t> all_labels(const std::vector<RankResult>& ranks) {
  std::vector<std::int32_t> out;
  for (const auto& r : ranks) out.insert(out.end(), r.labels.begin(), r.labels.end());
  return out;
}

void rethrow_any(const std::vector<RankResult>& ranks) {
  for (const auto& r : ranks)
    if (r.error) std::rethrow_exception(r.error);
}

std::string error_of(const std::exception_ptr& e, ErrorKind* kind = nullptr) {
  try {
    std::rethrow_exception(e);
  } catch (const Error& err) {
    if (kind) *kind = err.kind();
    return err.what();
  } catch (const std::exception& err) {
    return std::string("not a flashkm::Error: ") + err.what();
  }
}

struct Reference {
  Model model;
  std::vector<std::int32_t> labels;
};

Reference fit_plain(const std::vector<float>& x, std::int64_t d, const Params& params,
                    const std::vector<float>* weights = nullptr, const std::vector<float>* init = nullptr) {
  Reference ref;
  ref.labels.resize(x.size() / static_cast<std::size_t>(d));
  FitArgs args;
  args.labels = ref.labels.data();
  args.sample_weight = weights ? weights->data() : nullptr;
  args.init_centroids = init ? init->data() : nullptr;
  ref.model = fit(MatrixView::of(x.data(), static_cast<std::int64_t>(ref.labels.size()), d), params, args);
  return ref;
}

void expect_bitwise(const Model& a, const Model& b) {
  ASSERT_EQ(a.centroids.size(), b.centroids.size());
  EXPECT_EQ(std::memcmp(a.centroids.data(), b.centroids.data(), a.centroids.size() * sizeof(float)), 0);
  EXPECT_EQ(a.inertia, b.inertia);
  EXPECT_EQ(a.n_iter, b.n_iter);
  EXPECT_EQ(a.converged, b.converged);
  EXPECT_EQ(a.cluster_weight, b.cluster_weight);
}

void expect_close(const Model& got, const Model& want) {
  ASSERT_EQ(got.centroids.size(), want.centroids.size());
  double max_rel = 0, scale = 0;
  for (float v : want.centroids) scale = std::max(scale, std::abs(double(v)));
  for (std::size_t t = 0; t < want.centroids.size(); ++t)
    max_rel = std::max(max_rel, std::abs(double(got.centroids[t]) - want.centroids[t]) / std::max(scale, 1e-30));
  EXPECT_LE(max_rel, 1e-6) << "centroids differ from the single-process fit";
  EXPECT_LE(std::abs(got.inertia - want.inertia), 1e-10 * std::abs(want.inertia)) << got.inertia << " vs " << want.inertia;
  EXPECT_EQ(got.n_iter, want.n_iter);
}

struct Case {
  InitMethod init;
  Metric metric;
  bool weighted;
};

std::string case_name(const ::testing::TestParamInfo<Case>& info) {
  const Case& c = info.param;
  std::string s = c.init == InitMethod::kmeanspp          ? "kmeanspp"
                  : c.init == InitMethod::kmeans_parallel ? "kmeansparallel"
                  : c.init == InitMethod::random          ? "random"
                                                          : "given";
  s += c.metric == Metric::l2 ? "_l2" : "_cosine";
  if (c.weighted) s += "_weighted";
  return s;
}

class DistributedFit : public ::testing::TestWithParam<Case> {
 protected:
  static constexpr std::int64_t kN = 4099, kD = 6, kK = 9;  // N: prime, over two chunks of rows
  void SetUp() override {
    const Case& c = GetParam();
    x_ = testing::separated_blobs(kN, kD, kK, 1.0, 11);
    if (c.metric == Metric::cosine)  // directions that stay apart: blobs away from the origin
      for (std::size_t t = 0; t < x_.size(); ++t) x_[t] += t % kD == 0 ? 1000.0f : 0.0f;
    if (c.weighted) {
      w_.resize(static_cast<std::size_t>(kN));
      for (std::int64_t i = 0; i < kN; ++i) w_[static_cast<std::size_t>(i)] = 0.25f + float((i * 7919) % 13) / 4.0f;
    }
    params_.n_clusters = kK;
    params_.init = c.init;
    params_.metric = c.metric;
    params_.seed = 5;
    params_.max_iter = 50;
    params_.n_threads = 1;
    if (c.init == InitMethod::given) {
      init_.assign(x_.begin(), x_.begin() + kK * kD);  // rows 0..K-1: one per blob
      for (auto& v : init_) v += 0.3f;
    }
  }
  const std::vector<float>* weights() const { return w_.empty() ? nullptr : &w_; }
  const std::vector<float>* init() const { return init_.empty() ? nullptr : &init_; }

  std::vector<float> x_, w_, init_;
  Params params_;
};

TEST_P(DistributedFit, OneRankIsBitwiseThePlainFit) {
  const Reference ref = fit_plain(x_, kD, params_, weights(), init());
  const auto ranks = fit_ranks(x_, kD, params_, 1, weights(), init());
  rethrow_any(ranks);
  expect_bitwise(ranks[0].model, ref.model);
  EXPECT_EQ(ranks[0].labels, ref.labels);
}

TEST_P(DistributedFit, MatchesTheSingleProcessFit) {
  const Reference ref = fit_plain(x_, kD, params_, weights(), init());
  for (int p : {2, 3}) {
    SCOPED_TRACE("ranks " + std::to_string(p));
    const auto ranks = fit_ranks(x_, kD, params_, p, weights(), init());
    rethrow_any(ranks);
    for (const auto& r : ranks) expect_bitwise(r.model, ranks[0].model);  // every rank, same bits
    expect_close(ranks[0].model, ref.model);
    EXPECT_EQ(all_labels(ranks), ref.labels);
  }
}

INSTANTIATE_TEST_SUITE_P(, DistributedFit,
                         ::testing::Values(Case{InitMethod::kmeanspp, Metric::l2, false},
                                           Case{InitMethod::kmeanspp, Metric::cosine, true},
                                           Case{InitMethod::kmeans_parallel, Metric::l2, false},
                                           Case{InitMethod::kmeans_parallel, Metric::l2, true},
                                           Case{InitMethod::kmeans_parallel, Metric::cosine, false},
                                           Case{InitMethod::random, Metric::l2, true},
                                           Case{InitMethod::random, Metric::cosine, false},
                                           Case{InitMethod::given, Metric::l2, false},
                                           Case{InitMethod::given, Metric::cosine, true},
                                           Case{InitMethod::kmeanspp, Metric::l2, true}),
                         case_name);

// Uniform noise: many near-ties, so sums taken in another order may move a row. Labels must
// still be the float64 argmins outside near-ties; when they all agree with the single-process
// fit, so must centroids and inertia.
TEST(Distributed, NearTiesOnUniformData) {
  const std::int64_t n = 5003, d = 4, k = 32;
  const auto x = testing::uniform(n, d, 3);
  Params p;
  p.n_clusters = k;
  p.init = InitMethod::kmeanspp;
  p.seed = 9;
  p.max_iter = 8;
  p.tol = 0;
  const Reference ref = fit_plain(x, d, p);
  for (int ranks_n : {2, 3}) {
    SCOPED_TRACE("ranks " + std::to_string(ranks_n));
    const auto ranks = fit_ranks(x, d, p, ranks_n);
    rethrow_any(ranks);
    const auto labels = all_labels(ranks);
    testing::expect_argmins_outside_near_ties(x, ranks[0].model.centroids, d, labels);
    std::int64_t differ = 0;
    for (std::size_t i = 0; i < labels.size(); ++i) differ += labels[i] != ref.labels[i];
    EXPECT_LT(differ, n / 100);
    if (differ == 0) expect_close(ranks[0].model, ref.model);
  }
}

TEST(Distributed, BitwiseRunToRun) {
  const std::int64_t d = 5;
  const auto x = testing::blobs(3001, d, 12, 4.0, 1.0, 8);
  Params p;
  p.n_clusters = 12;
  p.init = InitMethod::kmeans_parallel;
  p.seed = 3;
  p.n_init = 2;
  const auto a = fit_ranks(x, d, p, 3);
  const auto b = fit_ranks(x, d, p, 3);
  rethrow_any(a);
  rethrow_any(b);
  expect_bitwise(a[0].model, b[0].model);
  EXPECT_EQ(all_labels(a), all_labels(b));
}

// Duplicate initial centroids leave clusters empty: the repair takes the globally farthest
// rows, wherever they live.
TEST(Distributed, EmptyClusterRepairMatches) {
  const std::int64_t n = 2500, d = 3, k = 8;
  const auto x = testing::blobs(n, d, 8, 6.0, 1.0, 4);
  std::vector<float> init(static_cast<std::size_t>(k * d));
  for (std::int64_t j = 0; j < k; ++j)
    std::copy(x.begin() + (j % 3) * d, x.begin() + (j % 3 + 1) * d, init.begin() + j * d);  // 3 distinct
  Params p;
  p.n_clusters = k;
  p.init = InitMethod::given;
  p.max_iter = 5;
  p.tol = 0;
  const Reference ref = fit_plain(x, d, p, nullptr, &init);
  for (int ranks_n : {2, 3}) {
    const auto ranks = fit_ranks(x, d, p, ranks_n, nullptr, &init);
    rethrow_any(ranks);
    expect_close(ranks[0].model, ref.model);
    EXPECT_EQ(all_labels(ranks), ref.labels);
  }
}

TEST(Distributed, MoreClustersThanLocalRows) {
  const std::int64_t n = 40, d = 3, k = 25;  // shards of 6, 13, 21 rows
  const auto x = testing::blobs(n, d, 5, 5.0, 1.0, 2);
  for (InitMethod init : {InitMethod::kmeanspp, InitMethod::random, InitMethod::kmeans_parallel}) {
    Params p;
    p.n_clusters = k;
    p.init = init;
    p.seed = 1;
    const Reference ref = fit_plain(x, d, p);
    const auto ranks = fit_ranks(x, d, p, 3);
    rethrow_any(ranks);
    expect_close(ranks[0].model, ref.model);
    EXPECT_EQ(all_labels(ranks), ref.labels);
  }
}

TEST(Distributed, NaNOnOneRankFailsEveryRank) {
  const std::int64_t n = 900, d = 4;
  auto x = testing::blobs(n, d, 4, 5.0, 1.0, 6);
  const auto off = shard_offsets(n, 3);
  const std::int64_t bad_row = off[1] + 7;  // on rank 1
  x[static_cast<std::size_t>(bad_row * d + 2)] = std::nanf("");
  Params p;
  p.n_clusters = 4;
  const auto ranks = fit_ranks(x, d, p, 3);
  for (int r = 0; r < 3; ++r) {
    ASSERT_TRUE(ranks[static_cast<std::size_t>(r)].error) << "rank " << r << " did not fail";
    ErrorKind kind{};
    const std::string msg = error_of(ranks[static_cast<std::size_t>(r)].error, &kind);
    EXPECT_EQ(kind, ErrorKind::invalid_argument) << msg;
    EXPECT_NE(msg.find("rank 1 of 3"), std::string::npos) << msg;
    // the row is named by its global index
    EXPECT_NE(msg.find("row " + std::to_string(bad_row) + ", column 2"), std::string::npos) << msg;
  }
}

TEST(Distributed, RankWithoutRowsIsAClearError) {
  const std::int64_t n = 300, d = 2;
  const auto x = testing::blobs(n, d, 3, 5.0, 1.0, 1);
  Params p;
  p.n_clusters = 3;
  const auto ranks = fit_ranks(x, d, p, 3, nullptr, nullptr, {0, 150, 150, 300});
  for (const auto& r : ranks) {
    ASSERT_TRUE(r.error);
    const std::string msg = error_of(r.error);
    EXPECT_NE(msg.find("rank 1 of 3 has 0 rows"), std::string::npos) << msg;
  }
}

TEST(Distributed, TooFewRowsInAllIsAnError) {
  const auto x = testing::blobs(10, 2, 2, 5.0, 1.0, 1);
  Params p;
  p.n_clusters = 11;
  const auto ranks = fit_ranks(x, 2, p, 2);
  for (const auto& r : ranks) {
    ASSERT_TRUE(r.error);
    EXPECT_NE(error_of(r.error).find("n_samples=10"), std::string::npos) << error_of(r.error);
  }
}

TEST(Distributed, CheckpointsAreRefusedClearly) {
  const auto x = testing::blobs(300, 2, 3, 5.0, 1.0, 1);
  Params p;
  p.n_clusters = 3;
  p.checkpoint_path = "never-written.ckpt";
  const auto ranks = fit_ranks(x, 2, p, 2);
  for (const auto& r : ranks) {
    ASSERT_TRUE(r.error);
    ErrorKind kind{};
    EXPECT_NE(error_of(r.error, &kind).find("checkpoints of distributed and multi-GPU fits are not supported"),
              std::string::npos)
        << error_of(r.error);
    EXPECT_EQ(kind, ErrorKind::invalid_argument);
  }
}

TEST(Distributed, RanksWithOtherParametersAreAnError) {
  const auto x = testing::blobs(300, 2, 3, 5.0, 1.0, 1);
  auto comms = core::make_thread_communicators(2);
  std::vector<std::string> errors(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      Params p;
      p.n_clusters = 3;
      p.seed = static_cast<std::uint64_t>(r);  // differs
      try {
        core::fit_distributed(MatrixView::of(x.data() + r * 300, 150, 2), p, {}, *comms[static_cast<std::size_t>(r)]);
      } catch (const Error& e) {
        errors[static_cast<std::size_t>(r)] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  for (const auto& e : errors) EXPECT_NE(e.find("rank 1 was given other parameters"), std::string::npos) << e;
}

// ---- the communicators themselves ----

TEST(Communicator, AllreduceSumsInRankOrder) {
  auto comms = core::make_thread_communicators(3);
  // 1 + 1e-16 + (-1) depends on the order: rank order gives (1 + 1e-16) - 1 = 0.
  const double values[3] = {1.0, 1e-16, -1.0};
  std::vector<double> got(3);
  std::vector<std::thread> threads;
  for (int r = 0; r < 3; ++r)
    threads.emplace_back([&, r] {
      double v = values[r];
      comms[static_cast<std::size_t>(r)]->allreduce_sum(&v, 1);
      got[static_cast<std::size_t>(r)] = v;
    });
  for (auto& t : threads) t.join();
  for (double v : got) EXPECT_EQ(v, (1.0 + 1e-16) + -1.0);
}

TEST(Communicator, BroadcastAndAgreement) {
  auto comms = core::make_thread_communicators(2);
  std::vector<std::string> errors(2);
  std::vector<int> received(2, -1);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      auto& c = *comms[static_cast<std::size_t>(r)];
      int v = r == 1 ? 42 : 0;
      c.broadcast(&v, sizeof v, 1);
      received[static_cast<std::size_t>(r)] = v;
      std::exception_ptr mine;
      if (r == 1) mine = std::make_exception_ptr(Error(ErrorKind::io, "disk on fire"));
      try {
        core::agree_or_throw(c, mine);
      } catch (const Error& e) {
        errors[static_cast<std::size_t>(r)] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(received, (std::vector<int>{42, 42}));
  for (const auto& e : errors) EXPECT_EQ(e, "rank 1 of 2: disk on fire");
}

TEST(Communicator, AMissingRankTimesOutInsteadOfHanging) {
  ::setenv("FLASHKM_COLLECTIVE_TIMEOUT_S", "0.3", 1);
  auto comms = core::make_thread_communicators(2);
  ::unsetenv("FLASHKM_COLLECTIVE_TIMEOUT_S");
  double v = 1;
  try {
    comms[0]->allreduce_sum(&v, 1);  // rank 1 never comes
    FAIL() << "no timeout";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::io);
    EXPECT_NE(std::string(e.what()).find("timed out"), std::string::npos) << e.what();
  }
  // the group stays broken: the late rank fails at once rather than waiting for nobody
  EXPECT_THROW(comms[1]->allreduce_sum(&v, 1), Error);
}

TEST(Communicator, BadTimeoutIsRejected) {
  ::setenv("FLASHKM_COLLECTIVE_TIMEOUT_S", "soon", 1);
  EXPECT_THROW(core::make_thread_communicators(2), Error);
  ::unsetenv("FLASHKM_COLLECTIVE_TIMEOUT_S");
}

}  // namespace
}  // namespace flashkm
