// Data larger than the device budget, streamed (docs/CUDA.md, "Data larger than the GPU"):
// a budget that forces a resident prefix and several streamed chunks must give the fit,
// predict and transform of the resident data bitwise (labels, centroids, inertia, n_iter,
// every history record), for every init, metric and input kind (pinned, pageable, float64,
// fp16, strided), through a checkpoint and resume, and a budget too small for the per-row
// state must be a clear out_of_memory error. Every test skips without a CUDA device.
#include <gtest/gtest.h>

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "core/backend.hpp"
#include "cuda/cuda_backend.hpp"
#include "flashkm/error.hpp"
#include "flashkm/kmeans.hpp"
#include "io/matrix.hpp"
#include "io/npy.hpp"
#include "support/gpu_test_data.hpp"
#include "support/require_gpu.hpp"

using namespace flashkm;

namespace {

constexpr std::int64_t kN = 60000;  // 29+ chunks of 2048 rows: prefix + many streamed chunks
constexpr int kD = 32;
constexpr int kK = 40;

// Gaussian blobs with overlap (spread 1.5 around centres 3 apart): near-ties exist, so the
// certification cascade has rows to re-check in every chunk.
using gpu_test::blobs;

const std::vector<float>& data() {
  static const std::vector<float> x = blobs(kN, kD, 25, 1.5f, 11);
  return x;
}

/// The plan the backend makes for x under `budget` (attach only).
cuda::StreamInfo plan_of(const MatrixView& x, std::int64_t budget, const float* w = nullptr) {
  auto b = core::make_cuda_backend(0, Precision::automatic, true);
  b->set_memory_budget(budget);
  b->attach(x, w, Metric::l2);
  return cuda::stream_info(*b);
}

std::string describe(const cuda::StreamInfo& s) {
  char buf[256];
  std::snprintf(buf, sizeof(buf), "streamed=%d rows=%lld resident=%lld chunk_rows=%lld chunks=%lld direct=%d budget=%lld",
                int(s.streamed), (long long)s.rows, (long long)s.resident_rows, (long long)s.chunk_rows,
                (long long)s.chunks, int(s.direct), (long long)s.budget);
  return buf;
}

/// The smallest budget (steps of 5%) under which x is streamed with a resident prefix of at
/// least two chunks and at least three streamed chunks: found by asking the backend, so the
/// test does not depend on the planner's per-row constants.
std::int64_t streaming_budget(const MatrixView& x, const float* w = nullptr) {
  const std::int64_t data = x.rows * x.cols * static_cast<std::int64_t>(dtype_size(x.dtype));
  for (std::int64_t b = data / 8; b < 4 * data; b += b / 20) {
    try {
      const cuda::StreamInfo s = plan_of(x, b, w);
      const std::int64_t resident_chunks = (s.resident_rows + s.chunk_rows - 1) / s.chunk_rows;
      if (s.streamed && resident_chunks >= 2 && s.chunks - resident_chunks >= 3) {
        std::printf("streaming budget %lld bytes: %s\n", (long long)b, describe(s).c_str());
        return b;
      }
    } catch (const Error& e) {
      if (e.kind() != ErrorKind::out_of_memory) throw;
    }
  }
  ADD_FAILURE() << "no budget between data/8 and 4 x data gives a resident prefix and 3 streamed chunks";
  return 0;
}

struct FitOut {
  Model model;
  std::vector<std::int32_t> labels;
};

FitOut run_fit(const MatrixView& x, Params p, std::int64_t budget, const float* w = nullptr,
               const float* init = nullptr) {
  p.device = Device::cuda;
  p.max_memory = budget;
  FitOut out;
  out.labels.assign(static_cast<std::size_t>(x.rows), -7);
  FitArgs a;
  a.labels = out.labels.data();
  a.sample_weight = w;
  a.init_centroids = init;
  out.model = fit(x, p, a);
  return out;
}

template <class T>
bool same_bits(const T& a, const T& b) {
  return std::memcmp(&a, &b, sizeof(T)) == 0;
}

/// Bitwise equality of two fits, with the first difference named.
void expect_same_fit(const FitOut& s, const FitOut& r, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(s.model.n_iter, r.model.n_iter);
  EXPECT_EQ(s.model.converged, r.model.converged);
  EXPECT_TRUE(same_bits(s.model.inertia, r.model.inertia))
      << "inertia streamed " << s.model.inertia << " resident " << r.model.inertia << " (diff "
      << s.model.inertia - r.model.inertia << ")";
  ASSERT_EQ(s.model.centroids.size(), r.model.centroids.size());
  std::size_t diff = 0, first = 0;
  for (std::size_t i = 0; i < s.model.centroids.size(); ++i)
    if (!same_bits(s.model.centroids[i], r.model.centroids[i]) && diff++ == 0) first = i;
  const std::size_t d = s.model.cluster_weight.empty() ? kD : s.model.centroids.size() / s.model.cluster_weight.size();
  EXPECT_EQ(diff, 0u) << diff << " centroid values differ; first at centroid " << first / d << " column "
                      << first % d << ": streamed " << s.model.centroids[first] << " resident "
                      << r.model.centroids[first];
  for (std::size_t j = 0; j < s.model.cluster_weight.size() && j < r.model.cluster_weight.size(); ++j)
    EXPECT_TRUE(same_bits(s.model.cluster_weight[j], r.model.cluster_weight[j])) << "cluster_weight[" << j << "]";
  diff = 0;
  for (std::size_t i = 0; i < s.labels.size(); ++i)
    if (s.labels[i] != r.labels[i] && diff++ == 0) first = i;
  EXPECT_EQ(diff, 0u) << diff << " labels differ; first at row " << first << ": streamed " << s.labels[first]
                      << " resident " << r.labels[first];
  ASSERT_EQ(s.model.history.size(), r.model.history.size());
  for (std::size_t it = 0; it < s.model.history.size(); ++it) {
    const IterationInfo &a = s.model.history[it], &b = r.model.history[it];
    EXPECT_TRUE(same_bits(a.inertia, b.inertia)) << "iteration " << it + 1 << " inertia " << a.inertia << " vs " << b.inertia;
    EXPECT_TRUE(same_bits(a.shift, b.shift)) << "iteration " << it + 1 << " shift " << a.shift << " vs " << b.shift;
    EXPECT_EQ(a.n_changed, b.n_changed) << "iteration " << it + 1;
    EXPECT_EQ(a.n_rechecked, b.n_rechecked) << "iteration " << it + 1;
  }
}

Params base_params(InitMethod init, Metric metric) {
  Params p;
  p.n_clusters = kK;
  p.init = init;
  p.metric = metric;
  p.seed = 5;
  p.max_iter = 12;
  p.tol = 0;  // run every iteration: more passes compared
  return p;
}

}  // namespace

TEST(Streamed, PlanHasResidentPrefixAndChunks) {
  REQUIRE_GPU();
  const MatrixView x = MatrixView::of(data().data(), kN, kD);
  const std::int64_t budget = streaming_budget(x);
  ASSERT_GT(budget, 0);
  const cuda::StreamInfo s = plan_of(x, budget);
  EXPECT_TRUE(s.streamed) << describe(s);
  EXPECT_EQ(s.resident_rows % 2048, 0) << describe(s);
  EXPECT_EQ(s.chunk_rows % 2048, 0) << describe(s);
  EXPECT_FALSE(s.direct) << "a std::vector is pageable memory: " << describe(s);
  EXPECT_EQ(s.bytes_copied, kN * kD * 4) << "attach copies the prefix once and validates every streamed row once";
  EXPECT_EQ(s.passes, 1) << describe(s);
  // No budget: everything fits the device, nothing is streamed.
  const cuda::StreamInfo r = plan_of(x, 0);
  EXPECT_FALSE(r.streamed) << describe(r);
}

class StreamedInit : public ::testing::TestWithParam<std::tuple<InitMethod, Metric>> {};

TEST_P(StreamedInit, FitEqualsResidentBitwise) {
  REQUIRE_GPU();
  const auto [init, metric] = GetParam();
  const MatrixView x = MatrixView::of(data().data(), kN, kD);
  const std::int64_t budget = streaming_budget(x);
  ASSERT_GT(budget, 0);
  Params p = base_params(init, metric);
  std::vector<float> given;
  if (init == InitMethod::given) given.assign(data().begin() + 1000 * kD, data().begin() + (1000 + kK) * kD);
  const FitOut r = run_fit(x, p, 0, nullptr, given.empty() ? nullptr : given.data());
  const FitOut s = run_fit(x, p, budget, nullptr, given.empty() ? nullptr : given.data());
  expect_same_fit(s, r, std::string("init ") + to_string(init) + ", metric " + to_string(metric));
  std::printf("%s/%s: %d iterations, inertia %.17g, re-checked rows in iteration 1: %lld\n", to_string(init),
              to_string(metric), s.model.n_iter, s.model.inertia,
              (long long)(s.model.history.empty() ? 0 : s.model.history[0].n_rechecked));
}

INSTANTIATE_TEST_SUITE_P(AllInits, StreamedInit,
                         ::testing::Combine(::testing::Values(InitMethod::kmeanspp, InitMethod::kmeans_parallel,
                                                              InitMethod::random, InitMethod::given),
                                            ::testing::Values(Metric::l2, Metric::cosine)));

TEST(Streamed, InnerProductAndWeightsAndBf16) {
  REQUIRE_GPU();
  const MatrixView x = MatrixView::of(data().data(), kN, kD);
  std::vector<float> w(kN);
  for (std::int64_t i = 0; i < kN; ++i) w[i] = 0.25f + float(i % 7);
  const std::int64_t budget = streaming_budget(x, w.data());
  ASSERT_GT(budget, 0);
  Params p = base_params(InitMethod::kmeanspp, Metric::inner_product);
  expect_same_fit(run_fit(x, p, budget, w.data()), run_fit(x, p, 0, w.data()), "inner_product, weighted");
  p = base_params(InitMethod::kmeans_parallel, Metric::l2);
  expect_same_fit(run_fit(x, p, budget, w.data()), run_fit(x, p, 0, w.data()), "l2, weighted");
  p.precision = Precision::bf16;  // more rows for the cascade
  expect_same_fit(run_fit(x, p, budget, w.data()), run_fit(x, p, 0, w.data()), "l2, weighted, bf16 operands");
  p.precision = Precision::tf32;  // mma.sync m16n8k8 (no operand copy of the rows)
  expect_same_fit(run_fit(x, p, budget, w.data()), run_fit(x, p, 0, w.data()), "l2, weighted, tf32 operands");
  p.precision = Precision::fp32;  // the SIMT path (no cascade)
  expect_same_fit(run_fit(x, p, budget, w.data()), run_fit(x, p, 0, w.data()), "l2, weighted, fp32 operands");
  p.precision = Precision::automatic;
  p.certify = false;
  expect_same_fit(run_fit(x, p, budget, w.data()), run_fit(x, p, 0, w.data()), "l2, weighted, uncertified");
}

// D > 768: the split-D mma.sync kernel, whose flagged rows the candidate cascade settles (its
// level 2 the same kernel over the flagged rows of each chunk; one host wait per chunk):
// streamed fits give the resident fit's bits, fp16 and tf32 operands.
TEST(Streamed, LargeDCandidateCascadeEqualsResident) {
  REQUIRE_GPU();
  const std::int64_t n = 16384;  // 8 chunks of 2048 rows
  const int d = 800;
  const std::vector<float> x = blobs(n, d, 25, 1.5f, 13);
  const MatrixView xv = MatrixView::of(x.data(), n, d);
  const std::int64_t budget = streaming_budget(xv);
  ASSERT_GT(budget, 0);
  for (Precision prec : {Precision::fp16, Precision::tf32}) {
    Params p = base_params(InitMethod::kmeanspp, Metric::l2);
    p.precision = prec;
    p.max_iter = 6;
    const FitOut r = run_fit(xv, p, 0);
    const FitOut s = run_fit(xv, p, budget);
    expect_same_fit(s, r, std::string("d=800 ") + to_string(prec));
    std::int64_t rechecked = 0;
    for (const IterationInfo& it : s.model.history) rechecked += it.n_rechecked;
    std::printf("d=800 %s: %d iterations, %lld rows re-checked in all\n", to_string(prec), s.model.n_iter,
                (long long)rechecked);
    EXPECT_GT(rechecked, 0) << "the data must exercise the cascade";
  }
}

TEST(Streamed, PinnedInputIsCopiedDirectly) {
  REQUIRE_GPU();
  const std::size_t bytes = std::size_t(kN) * kD * 4;
  float* pinned = nullptr;
  ASSERT_EQ(cudaMallocHost(&pinned, bytes), cudaSuccess);
  std::memcpy(pinned, data().data(), bytes);
  const MatrixView xp = MatrixView::of(static_cast<const float*>(pinned), kN, kD);
  const std::int64_t budget = streaming_budget(xp);
  const cuda::StreamInfo s = plan_of(xp, budget);
  EXPECT_TRUE(s.streamed && s.direct) << "cudaMallocHost memory must be copied without staging: " << describe(s);
  Params p = base_params(InitMethod::kmeanspp, Metric::l2);
  const FitOut fp = run_fit(xp, p, budget);
  const FitOut fr = run_fit(MatrixView::of(data().data(), kN, kD), p, 0);
  expect_same_fit(fp, fr, "pinned input");
  cudaFreeHost(pinned);
}

TEST(Streamed, Fp16Float64AndStridedInput) {
  REQUIRE_GPU();
  Params p = base_params(InitMethod::kmeanspp, Metric::l2);
  // fp16 input (the benchmark's dtype): rows of 64 bytes.
  std::vector<__half> h(data().size());
  for (std::size_t i = 0; i < h.size(); ++i) h[i] = __float2half_rn(data()[i]);
  const MatrixView xh = MatrixView::raw(h.data(), DType::f16, kN, kD);
  expect_same_fit(run_fit(xh, p, streaming_budget(xh)), run_fit(xh, p, 0), "fp16 input");
  // float64 input: converted to fp32 on the host while staging (resident: on the device).
  std::vector<double> dd(data().begin(), data().end());
  for (std::size_t i = 0; i < dd.size(); i += 3) dd[i] += 1e-9;  // bits fp32 cannot hold: rounding matters
  const MatrixView x64 = MatrixView::of(dd.data(), kN, kD);
  expect_same_fit(run_fit(x64, p, streaming_budget(MatrixView::of(data().data(), kN, kD))), run_fit(x64, p, 0),
                  "float64 input");
  // A strided view (every row padded by 8 floats).
  std::vector<float> padded(std::size_t(kN) * (kD + 8), -1e30f);
  for (std::int64_t i = 0; i < kN; ++i)
    std::memcpy(&padded[i * (kD + 8)], &data()[i * kD], kD * sizeof(float));
  const MatrixView xs = MatrixView::of(padded.data(), kN, kD, kD + 8);
  expect_same_fit(run_fit(xs, p, streaming_budget(xs)), run_fit(MatrixView::of(data().data(), kN, kD), p, 0),
                  "strided input");
}

TEST(Streamed, MappedNpyFile) {
  REQUIRE_GPU();
  // What the CLI does: a memory-mapped .npy (pageable, file-backed) streamed through the
  // pinned staging buffers.
  const std::string path =
      (std::filesystem::temp_directory_path() / ("flashkm_streamed_" + std::to_string(::getpid()) + ".npy")).string();
  io::save_npy(path, data().data(), {kN, kD});
  {
    const io::LoadedMatrix m = io::load_matrix(path);
    ASSERT_TRUE(m.view.mapped_file) << "load_matrix should map the .npy";
    const std::int64_t budget = streaming_budget(m.view);
    EXPECT_FALSE(plan_of(m.view, budget).direct);
    Params p = base_params(InitMethod::kmeanspp, Metric::l2);
    expect_same_fit(run_fit(m.view, p, budget), run_fit(MatrixView::of(data().data(), kN, kD), p, 0),
                    "mapped .npy vs resident vector");
  }
  std::filesystem::remove(path);
}

TEST(Streamed, EmptyClusterRepairReadsStreamedRows) {
  REQUIRE_GPU();
  // Given init with two centroids far from every row: both clusters are empty after the first
  // assignment, so the update takes the host path: farthest rows, gathered from the host.
  const MatrixView x = MatrixView::of(data().data(), kN, kD);
  std::vector<float> init(data().begin() + 7 * kD, data().begin() + (7 + kK) * kD);
  for (int j = 0; j < kD; ++j) init[3 * kD + j] = 1000.0f, init[17 * kD + j] = -1000.0f;
  Params p = base_params(InitMethod::given, Metric::l2);
  expect_same_fit(run_fit(x, p, streaming_budget(x), nullptr, init.data()), run_fit(x, p, 0, nullptr, init.data()),
                  "empty clusters repaired");
}

TEST(Streamed, RunToRunBitwise) {
  REQUIRE_GPU();
  const MatrixView x = MatrixView::of(data().data(), kN, kD);
  const std::int64_t budget = streaming_budget(x);
  Params p = base_params(InitMethod::kmeanspp, Metric::l2);
  p.n_init = 2;
  expect_same_fit(run_fit(x, p, budget), run_fit(x, p, budget), "streamed twice, n_init 2");
}

TEST(Streamed, DefaultTolUsesStreamedFeatureMoments) {
  REQUIRE_GPU();
  // tol > 0 scales by the mean feature variance: feature_moments' two passes, chunked.
  const MatrixView x = MatrixView::of(data().data(), kN, kD);
  Params p = base_params(InitMethod::kmeans_parallel, Metric::l2);
  p.tol = 1e-4;
  p.max_iter = 300;
  const FitOut s = run_fit(x, p, streaming_budget(x)), r = run_fit(x, p, 0);
  expect_same_fit(s, r, "default tol");
}

TEST(Streamed, PredictTransformScore) {
  REQUIRE_GPU();
  const MatrixView x = MatrixView::of(data().data(), kN, kD);
  const std::int64_t budget = streaming_budget(x);
  for (Metric metric : {Metric::l2, Metric::cosine}) {
    SCOPED_TRACE(to_string(metric));
    const Model m = run_fit(x, base_params(InitMethod::kmeanspp, metric), 0).model;
    PredictOptions res, str;
    res.device = str.device = Device::cuda;
    str.max_memory = budget;
    std::vector<std::int32_t> l1(kN), l2(kN);
    std::vector<float> d1(kN), d2(kN);
    predict(m, x, l1.data(), d1.data(), res);
    predict(m, x, l2.data(), d2.data(), str);
    EXPECT_EQ(l1, l2);
    EXPECT_EQ(std::memcmp(d1.data(), d2.data(), kN * sizeof(float)), 0) << "predict distances differ";
    std::vector<float> t1(std::size_t(kN) * kK), t2(std::size_t(kN) * kK);
    transform(m, x, t1.data(), res);
    transform(m, x, t2.data(), str);
    EXPECT_EQ(std::memcmp(t1.data(), t2.data(), t1.size() * sizeof(float)), 0) << "transform differs";
    const double s1 = score(m, x, nullptr, res), s2 = score(m, x, nullptr, str);
    EXPECT_TRUE(same_bits(s1, s2)) << s1 << " vs " << s2;
  }
}

TEST(Streamed, CheckpointAndResume) {
  REQUIRE_GPU();
  const MatrixView x = MatrixView::of(data().data(), kN, kD);
  const std::int64_t budget = streaming_budget(x);
  const std::string path =
      (std::filesystem::temp_directory_path() / ("flashkm_streamed_ckpt_" + std::to_string(::getpid()))).string();
  std::filesystem::remove(path);
  Params p = base_params(InitMethod::kmeanspp, Metric::l2);
  const FitOut full = run_fit(x, p, budget);
  // Interrupted after iteration 4 (the callback stops it), then resumed.
  Params pi = p;
  pi.checkpoint_path = path;
  pi.progress = [](int, const IterationInfo& it) { return it.iteration < 4; };
  try {
    run_fit(x, pi, budget);
    ADD_FAILURE() << "the progress callback should have stopped the fit";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::interrupted) << e.what();
  }
  ASSERT_TRUE(std::filesystem::exists(path));
  Params pr = p;
  pr.checkpoint_path = path;
  pr.resume = true;
  const FitOut resumed = run_fit(x, pr, budget);
  expect_same_fit(resumed, full, "streamed, resumed after iteration 4");
  expect_same_fit(resumed, run_fit(x, p, 0), "streamed resumed vs resident");
  std::filesystem::remove(path);
}

TEST(Streamed, TooSmallBudgetIsAnErrorNamingBytes) {
  REQUIRE_GPU();
  const MatrixView x = MatrixView::of(data().data(), kN, kD);
  Params p = base_params(InitMethod::kmeanspp, Metric::l2);
  try {
    run_fit(x, p, 200000);  // under the per-row state of 60,000 rows
    ADD_FAILURE() << "expected out_of_memory";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::out_of_memory) << e.what();
    const std::string m = e.what();
    EXPECT_NE(m.find("200000 bytes is too small"), std::string::npos) << m;
    EXPECT_NE(m.find("max_memory"), std::string::npos) << m;
    std::printf("error: %s\n", m.c_str());
  }
  // The process works on.
  EXPECT_TRUE(std::isfinite(run_fit(x, p, 0).model.inertia));
}
