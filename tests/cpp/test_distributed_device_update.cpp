// DistributedBackend's device-resident update (device_partial_sums -> allreduce_sum_device
// -> finish_update_from_sums), exercised on the CPU: a backend that pretends its sums live
// on a "device" (host memory) and a communicator that "reduces device memory" through its
// host allreduce_sum. This checks the orchestration -- agreement between ranks, the
// fallback to the host path on empty clusters or when a rank cannot, the environment
// switch, failures on one rank -- without a GPU; tests/gpu/test_multigpu.cpp checks the
// real CUDA + NCCL pair.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <thread>

#include "core/backend.hpp"
#include "core/communicator.hpp"
#include "core/distributed_backend.hpp"
#include "core/lloyd.hpp"
#include "flashkm/error.hpp"
#include "support/forwarding_backend.hpp"
#include "support/reference.hpp"

namespace flashkm {
namespace {

constexpr int kFakeDevice = 7;

struct Counters {
  std::atomic<int> partial_sums{0}, device_reductions{0}, finishes{0}, finish_empty{0};
};

/// The CPU backend, plus device_partial_sums / finish_update_from_sums over host vectors
/// that stand for device buffers. finish_update_from_sums is the host path's arithmetic, so
/// results must equal the host path bitwise (l2 and cosine alike).
class FakeDeviceBackend final : public test::ForwardingBackend {
 public:
  FakeDeviceBackend(Counters& c, bool supported, bool fail_sums)
      : ForwardingBackend(core::make_cpu_backend(1)), c_(c), supported_(supported), fail_sums_(fail_sums) {}

  const char* name() const override { return "fake-device"; }
  void attach(const MatrixView& x, const float* w, Metric m) override { inner().attach(x, w, m), metric_ = m; }
  void set_centroids(const float* c, std::int64_t k) override { inner().set_centroids(c, k), k_ = k; }

  bool device_partial_sums(std::int64_t k, core::DeviceSums* out) override {
    if (!supported_) return false;
    if (fail_sums_) FLASHKM_FAIL(out_of_memory, "fake device out of memory");
    ++c_.partial_sums;
    sums_.assign(static_cast<std::size_t>(k * cols()), -1.0);  // overwritten by accumulate
    weight_.assign(static_cast<std::size_t>(k), -1.0);
    inner().accumulate(sums_.data(), weight_.data());
    *out = {sums_.data(), weight_.data(), kFakeDevice, nullptr};
    return true;
  }

  std::int64_t finish_update_from_sums(std::int64_t k, Metric metric, const float* current, float* next,
                                       double* cluster_weight, double* shift) override {
    ++c_.finishes;
    EXPECT_EQ(k, k_);
    EXPECT_EQ(metric, metric_);
    std::int64_t n_empty = 0;
    for (const double w : weight_) n_empty += w <= 0;
    if (n_empty > 0) {
      ++c_.finish_empty;
      return n_empty;
    }
    const std::int64_t d = cols();
    std::copy(current, current + k * d, next);
    core::centroids_from_sums(sums_, weight_, d, metric, next);
    double s = 0;
    for (std::int64_t t = 0; t < k * d; ++t) {
      const double diff = double(next[t]) - double(current[t]);
      s += diff * diff;
    }
    *shift = s;
    std::copy(weight_.begin(), weight_.end(), cluster_weight);
    return 0;
  }

 private:
  Counters& c_;
  bool supported_, fail_sums_;
  Metric metric_ = Metric::l2;
  std::int64_t k_ = 0;
  std::vector<double> sums_, weight_;
};

/// A thread communicator that also "reduces device memory" of kFakeDevice (host memory).
class FakeDeviceComm final : public core::Communicator {
 public:
  FakeDeviceComm(core::Communicator& in, Counters& c) : in_(in), c_(c) {}
  int rank() const override { return in_.rank(); }
  int size() const override { return in_.size(); }
  std::vector<std::vector<std::byte>> allgather(const void* d, std::size_t b) override { return in_.allgather(d, b); }
  void allreduce_sum(double* d, std::size_t n) override { in_.allreduce_sum(d, n); }
  void broadcast(void* d, std::size_t b, int root) override { in_.broadcast(d, b, root); }
  bool device_allreduce_supported(int device) const override { return device == kFakeDevice; }
  bool allreduce_sum_device(double* d, std::size_t n, int device, void*) override {
    if (!device_allreduce_supported(device)) return false;
    ++c_.device_reductions;
    in_.allreduce_sum(d, n);
    return true;
  }

 private:
  core::Communicator& in_;
  Counters& c_;
};

struct Result {
  core::LloydResult fit;
  std::vector<std::int32_t> labels;
  std::exception_ptr error;
};

struct Options {
  bool host_update = false;     // FLASHKM_DISTRIBUTED_HOST_UPDATE=1
  int unsupported_rank = -1;    // this rank's backend has no device
  int failing_rank = -1;        // this rank's device_partial_sums throws
};

/// Lloyd over `p` ranks (thread communicators), each a DistributedBackend over a fake
/// device backend of its contiguous shard; returns rank 0's fit and all labels.
Result run(const std::vector<float>& x, std::int64_t d, const std::vector<float>& init, std::int64_t k, Metric metric,
           int p, const Options& o, Counters& c) {
  const std::int64_t n = static_cast<std::int64_t>(x.size()) / d;
  if (o.host_update) setenv("FLASHKM_DISTRIBUTED_HOST_UPDATE", "1", 1);
  auto threads_comms = core::make_thread_communicators(p);
  std::vector<std::unique_ptr<FakeDeviceComm>> comms;
  std::vector<std::unique_ptr<core::Backend>> backends;
  for (int r = 0; r < p; ++r) {  // constructed here: the switch is read by the constructor
    comms.push_back(std::make_unique<FakeDeviceComm>(*threads_comms[static_cast<std::size_t>(r)], c));
    backends.push_back(core::make_distributed_backend(
        std::make_unique<FakeDeviceBackend>(c, r != o.unsupported_rank, r == o.failing_rank), *comms.back()));
  }
  unsetenv("FLASHKM_DISTRIBUTED_HOST_UPDATE");
  std::vector<Result> out(static_cast<std::size_t>(p));
  std::vector<std::thread> threads;
  for (int r = 0; r < p; ++r)
    threads.emplace_back([&, r] {
      Result& res = out[static_cast<std::size_t>(r)];
      const std::int64_t begin = n * r / p, rows = n * (r + 1) / p - begin;
      try {
        core::Backend& b = *backends[static_cast<std::size_t>(r)];
        b.attach(MatrixView::of(x.data() + begin * d, rows, d), nullptr, metric);
        Params params;
        params.n_clusters = k;
        params.metric = metric;
        params.max_iter = 6;
        params.tol = 0;
        res.fit = core::lloyd(b, init, k, params, 0.0, 0);
        res.labels.resize(static_cast<std::size_t>(rows));
        b.copy_labels(res.labels.data());
      } catch (...) {
        res.error = std::current_exception();
      }
    });
  for (auto& t : threads) t.join();
  for (int r = 1; r < p; ++r) {
    Result& res = out[static_cast<std::size_t>(r)];
    EXPECT_EQ(static_cast<bool>(res.error), static_cast<bool>(out[0].error)) << "rank " << r;
    if (!res.error && !out[0].error)  // every rank holds the same centroids
      EXPECT_EQ(0, std::memcmp(res.fit.centroids.data(), out[0].fit.centroids.data(),
                               out[0].fit.centroids.size() * sizeof(float)));
    out[0].labels.insert(out[0].labels.end(), res.labels.begin(), res.labels.end());
  }
  return std::move(out[0]);
}

void expect_bitwise(const Result& a, const Result& b) {
  ASSERT_FALSE(a.error);
  ASSERT_FALSE(b.error);
  ASSERT_EQ(a.fit.centroids.size(), b.fit.centroids.size());
  EXPECT_EQ(0, std::memcmp(a.fit.centroids.data(), b.fit.centroids.data(), a.fit.centroids.size() * sizeof(float)));
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(0, std::memcmp(&a.fit.inertia, &b.fit.inertia, sizeof(double)));
  EXPECT_EQ(a.fit.n_iter, b.fit.n_iter);
  EXPECT_EQ(a.fit.cluster_weight, b.fit.cluster_weight);
  ASSERT_EQ(a.fit.history.size(), b.fit.history.size());
  for (std::size_t i = 0; i < a.fit.history.size(); ++i) EXPECT_EQ(a.fit.history[i].shift, b.fit.history[i].shift);
}

constexpr std::int64_t kN = 3001, kD = 6, kK = 10;

std::vector<float> data() { return testing::blobs(kN, kD, kK, 5.0, 1.0, 11); }

TEST(DistributedDeviceUpdate, EqualsTheHostPathBitwise) {
  const auto x = data();
  const std::vector<float> init(x.begin(), x.begin() + kK * kD);
  for (Metric metric : {Metric::l2, Metric::cosine}) {
    for (int p : {1, 3}) {
      SCOPED_TRACE(std::string(metric == Metric::l2 ? "l2" : "cosine") + ", ranks " + std::to_string(p));
      Counters dev, host;
      const Result a = run(x, kD, init, kK, metric, p, {}, dev);
      const Result b = run(x, kD, init, kK, metric, p, {.host_update = true}, host);
      expect_bitwise(a, b);
      EXPECT_EQ(dev.device_reductions.load(), 2 * p * a.fit.n_iter);  // sums and weights, every iteration
      EXPECT_GT(dev.finishes.load(), dev.finish_empty.load());  // (cosine from these rows meets an empty cluster)
      EXPECT_EQ(host.partial_sums.load(), 0);  // the switch: not even the local half
      EXPECT_EQ(host.device_reductions.load(), 0);
      const Result again = run(x, kD, init, kK, metric, p, {}, dev);
      expect_bitwise(a, again);
    }
  }
}

// Duplicate initial centroids: clusters are empty in the first iteration; every rank sees it
// in the reduced weights, finishes nothing, and the host path repairs them.
TEST(DistributedDeviceUpdate, EmptyClusterFallsBackToTheHostPath) {
  const auto x = data();
  std::vector<float> init(static_cast<std::size_t>(kK * kD));
  for (std::int64_t j = 0; j < kK; ++j)
    std::copy(x.begin() + (j % 4) * kD, x.begin() + (j % 4 + 1) * kD, init.begin() + j * kD);  // 4 distinct
  Counters dev, host;
  const Result a = run(x, kD, init, kK, Metric::l2, 3, {}, dev);
  const Result b = run(x, kD, init, kK, Metric::l2, 3, {.host_update = true}, host);
  expect_bitwise(a, b);
  EXPECT_GT(dev.finish_empty.load(), 0);            // the fallback ran ...
  EXPECT_GT(dev.finishes.load(), dev.finish_empty.load());  // ... and the device path after it
}

// One rank without a device: every rank agrees on the host path (no rank is left waiting in
// a device reduction), and decides it once.
TEST(DistributedDeviceUpdate, ARankWithoutDeviceMakesEveryRankUseTheHostPath) {
  const auto x = data();
  const std::vector<float> init(x.begin(), x.begin() + kK * kD);
  Counters mixed, host;
  const Result a = run(x, kD, init, kK, Metric::l2, 3, {.unsupported_rank = 1}, mixed);
  const Result b = run(x, kD, init, kK, Metric::l2, 3, {.host_update = true}, host);
  expect_bitwise(a, b);
  EXPECT_EQ(mixed.device_reductions.load(), 0);
  EXPECT_EQ(mixed.partial_sums.load(), 2);  // ranks 0 and 2, in the first iteration only
}

TEST(DistributedDeviceUpdate, AFailureOnOneRankFailsEveryRank) {
  const auto x = data();
  const std::vector<float> init(x.begin(), x.begin() + kK * kD);
  Counters c;
  const Result a = run(x, kD, init, kK, Metric::l2, 3, {.failing_rank = 2}, c);  // run() checks every rank threw
  ASSERT_TRUE(a.error);
  try {
    std::rethrow_exception(a.error);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::out_of_memory);
    EXPECT_NE(std::string(e.what()).find("rank 2 of 3"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("fake device out of memory"), std::string::npos) << e.what();
  }
  EXPECT_EQ(c.device_reductions.load(), 0);
}

}  // namespace
}  // namespace flashkm
