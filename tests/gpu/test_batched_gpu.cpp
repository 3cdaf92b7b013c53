// Batched and ragged fits on the CUDA backend against per-problem CUDA fits: every problem
// of a batch must be the bits of the same problem fitted alone (same explicit precision):
// equal and ragged sizes, per-problem K, every tile family (resident fp16/bf16, streamed
// large-D, exact fp32 SIMT), certified (the cascade, candidates after every tensor-core
// config) and not, weights, cosine and inner
// product, empty-cluster repair, device input in place, B > 65,535. Every test skips with
// a message when no CUDA device is present.
#include <gtest/gtest.h>

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <tuple>
#include <vector>

#include "core/backend.hpp"
#include "flashkm/flashkm.hpp"
#include "support/batched_support.hpp"
#include "support/reference.hpp"
#include "support/require_gpu.hpp"

namespace flashkm {
namespace {

using testing::expect_same_fit;
using testing::RaggedShape;

Params cuda_params(Precision precision, bool certify) {
  Params p;
  p.device = Device::cuda;
  p.precision = precision;
  p.certify = certify;
  p.max_iter = 12;
  p.seed = 17;
  return p;
}

class BatchedCuda : public ::testing::TestWithParam<std::tuple<Precision, bool>> {};

TEST_P(BatchedCuda, RaggedEqualsAloneBitwise) {
  REQUIRE_GPU();
  const auto [precision, certify] = GetParam();
  const std::int64_t d = 64;
  const auto s = testing::ragged_shape(13, 100, 3000, 300, 3);
  const auto x = testing::blobs(s.offsets.back(), d, 40, 3.0, 1.0, 5);
  testing::check_ragged_vs_alone(x, d, s, cuda_params(precision, certify));
}

INSTANTIATE_TEST_SUITE_P(Modes, BatchedCuda,
                         ::testing::Combine(::testing::Values(Precision::fp16, Precision::bf16, Precision::fp32,
                                                              Precision::tf32),
                                            ::testing::Bool()));

TEST(BatchedCudaMore, CertifiedNearTiesCascade) {
  REQUIRE_GPU();
  // Uniform noise: many near-ties, so the certification cascade flags rows at every level.
  const std::int64_t d = 32;
  const auto s = testing::ragged_shape(7, 500, 4000, 64, 8);
  const auto x = testing::uniform(s.offsets.back(), d, 12);
  Params p = cuda_params(Precision::fp16, true);
  testing::check_ragged_vs_alone(x, d, s, p);
  p.precision = Precision::bf16;
  testing::check_ragged_vs_alone(x, d, s, p);
}

TEST(BatchedCudaMore, CertifiedNearTiesCandidateCascadeLargeD) {
  REQUIRE_GPU();
  // D > 768: the split-D mma.sync kernel (every device), whose flagged rows the candidate
  // cascade settles with the same kernel over the problems' flagged regions; tf32 too. Each
  // problem of the batch must still be the bits of the problem fitted alone.
  const std::int64_t d = 800;
  const auto s = testing::ragged_shape(5, 300, 2000, 64, 9);
  const auto x = testing::uniform(s.offsets.back(), d, 14);
  for (const Precision prec : {Precision::fp16, Precision::bf16, Precision::tf32}) {
    Params p = cuda_params(prec, true);
    p.max_iter = 5;
    SCOPED_TRACE(to_string(prec));
    testing::check_ragged_vs_alone(x, d, s, p);
  }
}

TEST(BatchedCudaMore, StreamedLargeDAndWeightsAndMetrics) {
  REQUIRE_GPU();
  const std::int64_t d = 300;  // > 256: streamed (split-D) tiles; fp32 data -> 16-bit operand copy
  const auto s = testing::ragged_shape(5, 300, 1500, 300, 4);
  const auto n = s.offsets.back();
  const auto x = testing::blobs(n, d, 9, 3.0, 1.0, 77);
  std::vector<float> w(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) w[i] = 0.5f + static_cast<float>(i % 5);
  for (const Metric metric : {Metric::l2, Metric::cosine, Metric::inner_product}) {
    Params p = cuda_params(Precision::fp16, true);
    p.metric = metric;
    p.init = InitMethod::random;
    SCOPED_TRACE(to_string(metric));
    testing::check_ragged_vs_alone(x, d, s, p, &w);
  }
}

TEST(BatchedCudaMore, EmptyClusterRepairAndPerProblemConvergence) {
  REQUIRE_GPU();
  const std::int64_t d = 16;
  const std::vector<std::int64_t> off = {0, 700, 1500, 2600};
  const std::vector<std::int64_t> k = {5, 6, 7};
  const auto x = testing::blobs(off.back(), d, 6, 3.0, 1.0, 31);
  std::vector<float> init;
  for (std::size_t b = 0; b < k.size(); ++b)
    init.insert(init.end(), x.begin() + off[b] * d, x.begin() + (off[b] + k[b]) * d);
  for (std::int64_t t = 0; t < d; ++t) init[(5 + 3) * d + t] = 1e3f;  // problem 1, centroid 3: empties
  Params p = cuda_params(Precision::fp16, true);
  p.init = InitMethod::given;
  p.tol = 1e-3;
  p.max_iter = 100;
  testing::check_ragged_vs_alone(x, d, RaggedShape{off, k}, p, nullptr, &init);
}

TEST(BatchedCudaMore, DeviceInputInPlaceAndDeviceLabels) {
  REQUIRE_GPU();
  const std::int64_t d = 128, B = 6, n = 2000, k = 50;
  const auto x = testing::blobs(B * n, d, 30, 3.0, 1.0, 9);
  float* dx = nullptr;
  std::int32_t* dl = nullptr;
  ASSERT_EQ(cudaMalloc(&dx, x.size() * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dl, B * n * 4), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
  std::vector<std::int64_t> off(B + 1);
  for (std::int64_t b = 0; b <= B; ++b) off[b] = b * n;
  const std::vector<std::int64_t> ks = {k};
  RaggedBatch rb;
  rb.x = MatrixView::raw(dx, DType::f32, B * n, d, 0, Location::cuda, 0);
  rb.offsets = off;
  rb.n_clusters = ks;
  rb.labels = dl;
  const Params p = cuda_params(Precision::fp16, true);
  const auto from_device = fit_batched(rb, p);
  std::vector<std::int32_t> labels(static_cast<std::size_t>(B * n));
  ASSERT_EQ(cudaMemcpy(labels.data(), dl, labels.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  cudaFree(dx);
  cudaFree(dl);
  RaggedBatch hb = rb;
  std::vector<std::int32_t> host_labels(labels.size(), -1);
  hb.x = MatrixView::of(x.data(), B * n, d);
  hb.labels = host_labels.data();
  const auto from_host = fit_batched(hb, p);
  for (std::int64_t b = 0; b < B; ++b) expect_same_fit(from_device[b], from_host[b], "problem " + std::to_string(b));
  EXPECT_EQ(labels, host_labels);
  // Bitwise run to run.
  const auto again = fit_batched(hb, p);
  for (std::int64_t b = 0; b < B; ++b) expect_same_fit(again[b], from_host[b], "rerun, problem " + std::to_string(b));
}

// 16-bit rows on the device in the operand type (the wgmma kernel reads them by TMA on an
// H200; the other kernels by 16-byte loads) against the same values as fp32 on the host
// (converted while loading): uncertified, the operands are the same, so are the fits, bit
// for bit. Ragged sizes, not multiples of the rows tile, d = 128 and 512.
TEST(BatchedCudaMore, HalfDeviceInputEqualsFloatInput) {
  REQUIRE_GPU();
  for (const std::int64_t d : {128, 512}) {
    const auto s = testing::ragged_shape(9, 300, 2500, 200, 11 + d);
    const std::int64_t n = s.offsets.back();
    auto x = testing::blobs(n, d, 30, 3.0, 1.0, 13);
    std::vector<__half> xh(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      xh[i] = __float2half_rn(x[i]);
      x[i] = __half2float(xh[i]);
    }
    std::vector<float> init;
    for (std::size_t b = 0; b < s.k.size(); ++b)
      init.insert(init.end(), x.begin() + s.offsets[b] * d, x.begin() + (s.offsets[b] + s.k[b]) * d);
    void* dx = nullptr;
    ASSERT_EQ(cudaMalloc(&dx, xh.size() * 2), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(dx, xh.data(), xh.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
    Params p = cuda_params(Precision::fp16, false);
    p.init = InitMethod::given;
    RaggedBatch rb;
    rb.x = MatrixView::raw(dx, DType::f16, n, d, 0, Location::cuda, 0);
    rb.offsets = s.offsets;
    rb.n_clusters = s.k;
    rb.init_centroids = init.data();
    std::vector<std::int32_t> lh(static_cast<std::size_t>(n), -1), lf(static_cast<std::size_t>(n), -1);
    rb.labels = lh.data();
    const auto from_half = fit_batched(rb, p);
    cudaFree(dx);
    RaggedBatch fb = rb;
    fb.x = MatrixView::of(x.data(), n, d);
    fb.labels = lf.data();
    const auto from_float = fit_batched(fb, p);
    ASSERT_EQ(from_half.size(), from_float.size());
    for (std::size_t b = 0; b < from_half.size(); ++b)
      expect_same_fit(from_half[b], from_float[b], "d " + std::to_string(d) + " problem " + std::to_string(b));
    EXPECT_EQ(lh, lf) << "d " << d;
  }
}

TEST(BatchedCudaMore, MoreThan65535Problems) {
  REQUIRE_GPU();
  const std::int64_t B = 70000, n = 16, d = 8, k = 3;
  std::vector<float> x(static_cast<std::size_t>(B * n * d));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 2654435761u) % 1000) / 100.0f;
  std::vector<std::int64_t> off(B + 1), ks(static_cast<std::size_t>(B));
  for (std::int64_t b = 0; b <= B; ++b) off[b] = b * n;
  for (std::int64_t b = 0; b < B; ++b) ks[b] = 1 + b % k;
  std::vector<float> init;
  for (std::int64_t b = 0; b < B; ++b) init.insert(init.end(), x.begin() + off[b] * d, x.begin() + (off[b] + ks[b]) * d);
  Params p = cuda_params(Precision::fp16, true);
  p.init = InitMethod::given;
  testing::check_ragged_vs_alone(x, d, RaggedShape{off, ks}, p, nullptr, &init, 6997);
}

TEST(BatchedCudaMore, BadInputNamedByProblem) {
  REQUIRE_GPU();
  const std::int64_t d = 4;
  auto x = testing::uniform(90, d, 2);
  x[(70 * d) + 1] = NAN;
  const std::vector<std::int64_t> off = {0, 30, 60, 90}, k = {2, 2, 2};
  RaggedBatch rb;
  rb.x = MatrixView::of(x.data(), 90, d);
  rb.offsets = off;
  rb.n_clusters = k;
  try {
    fit_batched(rb, cuda_params(Precision::fp16, true));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("problem 2: input contains NaN or infinity: first at row 10, column 1"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace flashkm
