// Multi-GPU fit (Params::device_ids, NCCL) and the NCCL communicator. Tests that need one or
// two GPUs skip with a message when fewer are present.
//
// Contract checked (docs/CUDA.md, "Multi-GPU"): one GPU through the distributed path equals
// the plain fit bitwise; two GPUs equal one GPU within the exact contract (labels equal on
// well-separated blobs, centroids within 1e-5 relative, inertia within 1e-9 relative) and
// are bitwise identical run to run. The device-resident update (sums reduced over NCCL on
// the GPUs) equals the host update path (FLASHKM_DISTRIBUTED_HOST_UPDATE=1): bitwise for l2,
// within 1e-6 relative for cosine (the norm of the sums is a tree sum on the device).
#include <gtest/gtest.h>

#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "core/multi_gpu.hpp"
#include "cuda/nccl_communicator.hpp"
#include "flashkm/error.hpp"
#include "flashkm/kmeans.hpp"
#include "support/reference.hpp"

using namespace flashkm;

namespace {

int gpu_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

#define REQUIRE_GPUS(n)                                                                          \
  do {                                                                                           \
    if (gpu_count() < (n))                                                                       \
      GTEST_SKIP() << "needs " << (n) << " CUDA device(s), " << gpu_count()                      \
                   << " present (run scripts/multigpu_check.sh on a multi-GPU machine)";        \
  } while (0)

constexpr std::int64_t kN = 100001;  // odd: the two shards differ by one row
constexpr std::int64_t kD = 64, kK = 48;

struct Data {
  std::vector<float> x = flashkm::testing::separated_blobs(kN, kD, kK, 1.0, 3);
  std::vector<float> c0 = std::vector<float>(x.begin(), x.begin() + kK * kD);  // rows 0..K-1 hit every blob
};
const Data& data() {
  static const Data d;
  return d;
}

Params cuda_params(std::vector<int> ids, int iters = 8) {
  Params p;
  p.device = Device::cuda;
  p.device_ids = std::move(ids);
  p.n_clusters = kK;
  p.init = InitMethod::given;
  p.max_iter = iters;
  p.tol = 0;
  return p;
}

struct Fit {
  Model model;
  std::vector<std::int32_t> labels;
};

/// fit() with the given init, or (given_init = false) k-means++ from `seed`; `distributed`:
/// the multi-GPU path itself (fit() sends a single id to the plain path).
Fit run(const Params& p, bool given_init = true, bool distributed = false) {
  Fit f;
  f.labels.assign(static_cast<std::size_t>(kN), -1);
  FitArgs a;
  a.init_centroids = given_init ? data().c0.data() : nullptr;
  a.labels = f.labels.data();
  Params q = p;
  if (!given_init) q.init = InitMethod::kmeanspp;
  const MatrixView x = MatrixView::of(data().x.data(), kN, kD);
  f.model = distributed ? core::fit_multi_gpu(x, q, a) : fit(x, q, a);
  return f;
}

/// FLASHKM_DISTRIBUTED_HOST_UPDATE=1 while in scope (read when a fit makes its backends).
struct HostUpdateSwitch {
  explicit HostUpdateSwitch(bool on) : on(on) {
    if (on) setenv("FLASHKM_DISTRIBUTED_HOST_UPDATE", "1", 1);
  }
  ~HostUpdateSwitch() {
    if (on) unsetenv("FLASHKM_DISTRIBUTED_HOST_UPDATE");
  }
  bool on;
};

/// The distributed fit with the given init `c0`, through the host or the device update.
Fit run_update_path(const Params& p, const std::vector<float>& c0, bool host_update) {
  const HostUpdateSwitch sw(host_update);
  Fit f;
  f.labels.assign(static_cast<std::size_t>(kN), -1);
  FitArgs a;
  a.init_centroids = c0.data();
  a.labels = f.labels.data();
  f.model = core::fit_multi_gpu(MatrixView::of(data().x.data(), kN, kD), p, a);
  return f;
}

/// 2 GPUs when present, else 1 GPU through the NCCL path.
std::vector<int> update_path_gpus() { return gpu_count() >= 2 ? std::vector<int>{0, 1} : std::vector<int>{0}; }

void expect_bitwise(const Fit& a, const Fit& b) {
  ASSERT_EQ(a.model.centroids.size(), b.model.centroids.size());
  EXPECT_EQ(0, std::memcmp(a.model.centroids.data(), b.model.centroids.data(), a.model.centroids.size() * 4))
      << "centroids differ bitwise";
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(0, std::memcmp(&a.model.inertia, &b.model.inertia, sizeof(double)))
      << a.model.inertia << " vs " << b.model.inertia;
  EXPECT_EQ(a.model.n_iter, b.model.n_iter);
  EXPECT_EQ(a.model.cluster_weight, b.model.cluster_weight);
}

TEST(MultiGpu, OneGpuDistributedEqualsPlainBitwise) {
  REQUIRE_GPUS(1);
  for (bool given : {true, false}) {
    SCOPED_TRACE(given ? "init given" : "init k-means++");
    Params plain = cuda_params({});
    plain.seed = 5;
    Params dist = cuda_params({0});
    dist.seed = 5;
    expect_bitwise(run(plain, given), run(dist, given, /*distributed=*/true));
  }
}

/// 2 GPUs against 1 within the exact contract; labels must be equal (separated blobs).
void expect_within_contract(const Fit& one, const Fit& two) {
  // Well-separated blobs: no row is near a tie, so every label must agree.
  EXPECT_EQ(one.labels, two.labels);
  ASSERT_EQ(one.model.centroids.size(), two.model.centroids.size());
  float worst = 0;
  for (std::size_t i = 0; i < one.model.centroids.size(); ++i) {
    const float a = one.model.centroids[i], b = two.model.centroids[i];
    const float scale = std::max({std::fabs(a), std::fabs(b), 1e-3f});
    worst = std::max(worst, std::fabs(a - b) / scale);
  }
  EXPECT_LE(worst, 1e-5f) << "largest relative centroid difference, 2 GPUs vs 1";
  EXPECT_NEAR(two.model.inertia, one.model.inertia, 1e-9 * std::fabs(one.model.inertia));
  EXPECT_EQ(one.model.n_iter, two.model.n_iter);
  // The labels are the float64 argmins of the final centroids (not just equal to 1 GPU's).
  flashkm::testing::expect_argmins_outside_near_ties(data().x, two.model.centroids, kD, two.labels);
}

TEST(MultiGpu, TwoGpusMatchOneGpuWithinContract) {
  REQUIRE_GPUS(2);
  expect_within_contract(run(cuda_params({})), run(cuda_params({0, 1})));
}

TEST(MultiGpu, TwoGpusMatchOneGpuForEveryInit) {
  REQUIRE_GPUS(2);
  // The initialisations sample by global row (prefix sums, Bernoulli draws by global index),
  // so the sharding changes no choice, only the order of fp64 sums.
  for (InitMethod init : {InitMethod::kmeanspp, InitMethod::kmeans_parallel, InitMethod::random}) {
    SCOPED_TRACE(to_string(init));
    Params one = cuda_params({}, 20), two = cuda_params({0, 1}, 20);
    one.init = two.init = init;
    one.seed = two.seed = 5;
    FitArgs a;
    Fit f1, f2;
    f1.labels.assign(static_cast<std::size_t>(kN), -1);
    f2.labels.assign(static_cast<std::size_t>(kN), -1);
    a.labels = f1.labels.data();
    f1.model = fit(MatrixView::of(data().x.data(), kN, kD), one, a);
    a.labels = f2.labels.data();
    f2.model = fit(MatrixView::of(data().x.data(), kN, kD), two, a);
    expect_within_contract(f1, f2);
  }
}

TEST(MultiGpu, TwoGpusBitwiseRunToRun) {
  REQUIRE_GPUS(2);
  Params p = cuda_params({0, 1});
  p.seed = 11;
  expect_bitwise(run(p, false), run(p, false));
  expect_bitwise(run(p, true), run(p, true));
}

TEST(MultiGpu, AllGpusRunAndAgree) {
  const int n = gpu_count();
  REQUIRE_GPUS(3);
  std::vector<int> ids(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) ids[i] = n - 1 - i;  // any order of devices
  const Fit one = run(cuda_params({}));
  const Fit all = run(cuda_params(ids));
  EXPECT_EQ(one.labels, all.labels);
  EXPECT_NEAR(all.model.inertia, one.model.inertia, 1e-9 * std::fabs(one.model.inertia));
}

TEST(MultiGpu, DeviceInputOnOneGpu) {
  REQUIRE_GPUS(2);
  const Fit host = run(cuda_params({0, 1}));
  // x, weights and labels on GPU 1; GPU 0's shard is copied over, GPU 1's is used in place.
  cudaSetDevice(1);
  float* dx = nullptr;
  std::int32_t* dl = nullptr;
  ASSERT_EQ(cudaSuccess, cudaMalloc(&dx, data().x.size() * 4));
  ASSERT_EQ(cudaSuccess, cudaMalloc(&dl, kN * 4));
  ASSERT_EQ(cudaSuccess, cudaMemcpy(dx, data().x.data(), data().x.size() * 4, cudaMemcpyHostToDevice));
  FitArgs a;
  a.init_centroids = data().c0.data();
  a.labels = dl;
  Fit dev;
  dev.model = fit(MatrixView::raw(dx, DType::f32, kN, kD, 0, Location::cuda, 1), cuda_params({0, 1}), a);
  dev.labels.resize(static_cast<std::size_t>(kN));
  ASSERT_EQ(cudaSuccess, cudaMemcpy(dev.labels.data(), dl, kN * 4, cudaMemcpyDeviceToHost));
  cudaFree(dx);
  cudaFree(dl);
  cudaSetDevice(0);
  expect_bitwise(host, dev);
}

TEST(MultiGpu, StopFromProgressEndsEveryRank) {
  REQUIRE_GPUS(2);
  Params p = cuda_params({0, 1}, 50);
  p.progress = [](int, const IterationInfo& it) { return it.iteration < 2; };
  const auto t0 = std::chrono::steady_clock::now();
  try {
    run(p);
    FAIL() << "expected Error(interrupted)";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::interrupted) << e.what();
  }
  // The other rank leaves through cancel(), not through the collective timeout (300 s).
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 60.0);
}

TEST(MultiGpu, BadDeviceLists) {
  const int n = gpu_count();
  auto kind_of = [](const Params& p) {
    try {
      run(p);
    } catch (const Error& e) {
      std::printf("  %s: %s\n", to_string(e.kind()), e.what());
      return e.kind();
    }
    return ErrorKind::internal;  // no error: fails the EXPECTs below
  };
  EXPECT_EQ(kind_of(cuda_params({0, 0})), ErrorKind::invalid_argument);
  EXPECT_EQ(kind_of(cuda_params({0, -1})), ErrorKind::invalid_argument);
  EXPECT_EQ(kind_of(cuda_params({0, std::max(n, 1)})), ErrorKind::device_unavailable);  // one past the last
  EXPECT_EQ(kind_of(cuda_params({n + 7, 0})), ErrorKind::device_unavailable);
  Params cpu = cuda_params({0, 1});
  cpu.device = Device::cpu;
  EXPECT_EQ(kind_of(cpu), ErrorKind::invalid_argument);
}

TEST(MultiGpu, DeviceUpdateEqualsHostUpdate) {
  REQUIRE_GPUS(1);
  for (Metric metric : {Metric::l2, Metric::cosine}) {
    SCOPED_TRACE(to_string(metric));
    Params p = cuda_params(update_path_gpus());
    p.metric = metric;
    const Fit host = run_update_path(p, data().c0, true);
    const Fit dev = run_update_path(p, data().c0, false);
    expect_bitwise(dev, run_update_path(p, data().c0, false));  // run to run
    if (metric == Metric::l2) {
      // The same rank-order sums, the host's division formula: the same bits.
      expect_bitwise(host, dev);
      continue;
    }
    EXPECT_EQ(host.labels, dev.labels);
    EXPECT_EQ(host.model.n_iter, dev.model.n_iter);
    EXPECT_EQ(host.model.cluster_weight, dev.model.cluster_weight);
    ASSERT_EQ(host.model.centroids.size(), dev.model.centroids.size());
    double worst = 0;
    for (std::size_t i = 0; i < host.model.centroids.size(); ++i) {
      const double a = host.model.centroids[i], b = dev.model.centroids[i];
      worst = std::max(worst, std::fabs(a - b) / std::max({std::fabs(a), std::fabs(b), 1e-3}));
    }
    EXPECT_LE(worst, 1e-6) << "largest relative centroid difference, device vs host update (cosine)";
  }
}

// A centroid far from every row: its cluster is empty after the first assignment. Every rank
// sees that in the reduced weights and the host path repairs it (farthest rows); then the
// device path takes over. Same bits as the host path throughout (l2).
TEST(MultiGpu, DeviceUpdateEmptyClusterFallsBackAndMatches) {
  REQUIRE_GPUS(1);
  std::vector<float> c0 = data().c0;
  std::fill(c0.end() - kD, c0.end(), 1e3f);
  const Params p = cuda_params(update_path_gpus());
  const Fit host = run_update_path(p, c0, true);
  const Fit dev = run_update_path(p, c0, false);
  expect_bitwise(host, dev);
  // The repair happened: the far centroid was moved onto a row (it cannot come back).
  EXPECT_NE(dev.model.centroids[(kK - 1) * kD], 1e3f);
}

// ---- the communicator on its own ------------------------------------------------------

/// Runs f(rank, comm) on one thread per communicator; rethrows the first failure.
template <class F>
void on_ranks(std::vector<std::unique_ptr<cuda::NcclCommunicator>>& comms, F f) {
  std::vector<std::thread> t;
  std::vector<std::exception_ptr> err(comms.size());
  for (std::size_t r = 0; r < comms.size(); ++r)
    t.emplace_back([&, r] {
      try {
        cudaSetDevice(comms[r]->device());
        f(static_cast<int>(r), *comms[r]);
      } catch (...) {
        err[r] = std::current_exception();
      }
    });
  for (auto& th : t) th.join();
  for (auto& e : err)
    if (e) std::rethrow_exception(e);
}

TEST(NcclCommunicator, CollectivesInRankOrder) {
  REQUIRE_GPUS(1);
  const int n = std::min(gpu_count(), 4);
  std::vector<int> ids(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) ids[i] = i;
  auto comms = cuda::make_nccl_communicators(ids);
  on_ranks(comms, [n](int r, core::Communicator& c) {
    ASSERT_EQ(c.rank(), r);
    ASSERT_EQ(c.size(), n);
    // allreduce_sum: exactly the rank-order sum (1e16 + 1 + ... loses the ones in this order).
    std::vector<double> v = {r == 0 ? 1e16 : 1.0, double(r), -0.5 * r};
    c.allreduce_sum(v.data(), v.size());
    double want0 = 1e16, want1 = 0, want2 = 0;
    for (int q = 1; q < n; ++q) want0 += 1.0, want1 += q, want2 += -0.5 * q;
    EXPECT_EQ(v[0], want0);
    EXPECT_EQ(v[1], want1);
    EXPECT_EQ(v[2], want2);
    // allgather with different sizes, one of them empty.
    std::vector<std::byte> mine(static_cast<std::size_t>(r == 1 ? 0 : 3 + 5 * r), std::byte(r + 1));
    auto all = c.allgather(mine.data(), mine.size());
    ASSERT_EQ(static_cast<int>(all.size()), n);
    for (int q = 0; q < n; ++q) {
      EXPECT_EQ(all[q].size(), static_cast<std::size_t>(q == 1 ? 0 : 3 + 5 * q));
      for (std::byte b : all[q]) EXPECT_EQ(b, std::byte(q + 1));
    }
    // broadcast from the last rank.
    long long val = r == n - 1 ? 424242 : -1;
    c.broadcast(&val, sizeof val, n - 1);
    EXPECT_EQ(val, 424242);
  });
  cuda::destroy_nccl_communicators(comms);
}

TEST(NcclCommunicator, DeviceAllreduceInPlaceInRankOrder) {
  REQUIRE_GPUS(1);
  const int n = std::min(gpu_count(), 4);
  std::vector<int> ids(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) ids[i] = i;
  auto comms = cuda::make_nccl_communicators(ids);
  on_ranks(comms, [n](int r, core::Communicator& c) {
    const int dev = r;  // ids[r] == r
    EXPECT_TRUE(c.device_allreduce_supported(dev));
    EXPECT_FALSE(c.device_allreduce_supported(dev + 100));
    // Large enough for several blocks of the sum kernel; element 0 shows the rank order.
    std::vector<double> v(100003);
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = 0.25 * double(i) + r;
    v[0] = r == 0 ? 1e16 : 1.0;
    double* d = nullptr;
    cudaStream_t st = nullptr;
    ASSERT_EQ(cudaSuccess, cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    ASSERT_EQ(cudaSuccess, cudaMalloc(&d, v.size() * sizeof(double)));
    // Written on the caller's stream, not waited for: the reduction must order itself after it.
    ASSERT_EQ(cudaSuccess, cudaMemcpyAsync(d, v.data(), v.size() * sizeof(double), cudaMemcpyHostToDevice, st));
    EXPECT_FALSE(c.allreduce_sum_device(d, v.size(), dev + 100, st));  // not its device: refused, no collective
    EXPECT_TRUE(c.allreduce_sum_device(d, v.size(), dev, st));
    std::vector<double> got(v.size());
    ASSERT_EQ(cudaSuccess, cudaMemcpy(got.data(), d, v.size() * sizeof(double), cudaMemcpyDeviceToHost));
    cudaFree(d);
    cudaStreamDestroy(st);
    std::vector<double> host = v;  // the host allreduce_sum on the same values: the same bits
    c.allreduce_sum(host.data(), host.size());
    EXPECT_EQ(0, std::memcmp(got.data(), host.data(), v.size() * sizeof(double)));
    double want0 = 1e16;
    for (int q = 1; q < n; ++q) want0 += 1.0;
    EXPECT_EQ(got[0], want0);
  });
  cuda::destroy_nccl_communicators(comms);
}

TEST(NcclCommunicator, MissingPeerTimesOutWithError) {
  REQUIRE_GPUS(2);
  const char* before = std::getenv("FLASHKM_COLLECTIVE_TIMEOUT_S");
  const std::string saved = before ? before : "";
  setenv("FLASHKM_COLLECTIVE_TIMEOUT_S", "2", 1);  // read when the communicators are made
  auto comms = cuda::make_nccl_communicators({0, 1});
  if (before)
    setenv("FLASHKM_COLLECTIVE_TIMEOUT_S", saved.c_str(), 1);
  else
    unsetenv("FLASHKM_COLLECTIVE_TIMEOUT_S");
  const auto t0 = std::chrono::steady_clock::now();
  double v = 1;
  cudaSetDevice(0);
  try {
    comms[0]->allreduce_sum(&v, 1);  // rank 1 never joins
    FAIL() << "expected a timeout";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("timed out"), std::string::npos) << e.what();
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(s, 1.9);
  EXPECT_LT(s, 30.0);
  EXPECT_THROW(comms[0]->allreduce_sum(&v, 1), Error);  // aborted stays unusable
  comms[1]->cancel();  // its peer is gone: abort rather than destroy
}

}  // namespace
