// Precision tf32 on the CUDA backend (mma.sync m16n8k8: fp32 values rounded to tf32, fp32
// accumulation, the certification cascade behind it): certified labels against the float64
// argmin on odd shapes and in every mma.sync tile config, near-ties, input dtypes, a fit
// against the CPU's from the same init, bitwise determinism, and the tile configs tf32
// refuses. The rounding helper's checks run everywhere; the rest skips without a GPU.
#include <gtest/gtest.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "core/backend.hpp"
#include "cuda/cuda_backend.hpp"
#include "cuda/tf32_round.hpp"
#include "flashkm/error.hpp"
#include "flashkm/flashkm.hpp"
#include "support/gpu_test_data.hpp"
#include "support/reference.hpp"
#include "support/require_gpu.hpp"

namespace flashkm {
namespace {

using cuda::TileConfig;

std::unique_ptr<core::Backend> tf32_backend(bool certify, TileConfig tile = TileConfig::automatic) {
  cuda::CudaOptions o;
  o.precision = Precision::tf32;
  o.certify = certify;
  o.tile = tile;
  return cuda::make_cuda_backend(o);
}

struct AssignOut {
  std::vector<std::int32_t> lab;
  std::vector<float> dist;
  core::AssignStats st;
};

AssignOut run_assign(core::Backend& b, const MatrixView& x, const std::vector<float>& c, std::int64_t k) {
  b.attach(x, nullptr, Metric::l2);
  b.set_centroids(c.data(), k);
  AssignOut o;
  o.st = b.assign();
  o.lab.resize(static_cast<std::size_t>(x.rows));
  o.dist.resize(static_cast<std::size_t>(x.rows));
  b.copy_labels(o.lab.data());
  b.copy_distances(o.dist.data());
  return o;
}

/// Rows whose label differs from the float64 argmin although the two best float64
/// distances are further apart than `tie_rel` (relative to max(1, best)).
std::int64_t off_argmin(const testing::NearestRef& ref, const std::vector<std::int32_t>& lab, double tie_rel) {
  std::int64_t bad = 0;
  for (std::size_t i = 0; i < lab.size(); ++i)
    if (lab[i] != ref.label[i] && ref.second[i] - ref.best[i] > tie_rel * std::max(1.0, ref.best[i])) ++bad;
  return bad;
}

double sq_norm(const std::vector<float>& x, std::int64_t d, std::int64_t i) {
  double s = 0;
  for (std::int64_t q = 0; q < d; ++q) s += double(x[i * d + q]) * x[i * d + q];
  return s;
}

}  // namespace

// ---- the rounding (host copy of the device function; no GPU needed) ------------------------

TEST(Tf32Round, NearestTiesAwayLowBitsZero) {
  using cuda::round_to_tf32;
  EXPECT_EQ(round_to_tf32(1.0f), 1.0f);
  EXPECT_EQ(round_to_tf32(1.0f + 0x1p-12f), 1.0f);                     // below half an ulp (2^-10)
  EXPECT_EQ(round_to_tf32(1.0f + 0x1p-11f), 1.0f + 0x1p-10f);          // a tie: away from zero
  EXPECT_EQ(round_to_tf32(-(1.0f + 0x1p-11f)), -(1.0f + 0x1p-10f));
  EXPECT_EQ(round_to_tf32(1.0f + 0x1p-11f + 0x1p-23f), 1.0f + 0x1p-10f);
  EXPECT_EQ(round_to_tf32(2.0f - 0x1p-23f), 2.0f);                     // carries into the exponent
  EXPECT_EQ(round_to_tf32(0.0f), 0.0f);
  EXPECT_EQ(round_to_tf32(0x1p-136f), 0x1p-136f);                      // subnormal tf32 spacing: 2^-136
  EXPECT_EQ(round_to_tf32(0x1p-137f), 0x1p-136f);                      // a subnormal tie: away from zero
  EXPECT_EQ(round_to_tf32(0x1p-138f), 0.0f);
  std::mt19937_64 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int t = 0; t < 100000; ++t) {
    const float v = nd(rng) * std::ldexp(1.0f, static_cast<int>(rng() % 60) - 30);
    const float r = round_to_tf32(v);
    std::uint32_t bits;
    std::memcpy(&bits, &r, 4);
    ASSERT_EQ(bits & 0x1fffu, 0u) << v;
    ASSERT_LE(std::fabs(double(r) - double(v)), 0x1p-11 * std::fabs(double(v))) << v;
    // fp16 and bf16 values are tf32 values (11 and 8 significant bits): exact.
    const float h = __half2float(__float2half(v * 0x1p-20f));
    const float b = __bfloat162float(__float2bfloat16(v));
    ASSERT_EQ(round_to_tf32(h), h);
    ASSERT_EQ(round_to_tf32(b), b);
  }
}

// ---- odd shapes, every mma.sync tile config ----------------------------------------------

class Tf32Shapes : public ::testing::TestWithParam<std::tuple<int, int>> {};

// n = 3001 (not a multiple of the 128-row tile), d from 1 to 1000 (resident for d <= 128,
// streamed above; fp32 rows of d % 4 == 0 by cp.async, others converted while loading),
// k = 1, 7, 257 (not multiples of the 128/256-wide centroid tiles).
TEST_P(Tf32Shapes, CertifiedLabelsAreTheFloat64Argmin) {
  REQUIRE_GPU();
  const auto [d, k] = GetParam();
  const std::int64_t n = 3001;
  const auto x = testing::blobs(n, d, 20, 3.0, 1.0, 100 + d);
  const std::vector<float> c(x.begin(), x.begin() + std::int64_t(k) * d);
  const auto ref = testing::nearest_f64(x, c, d);
  const MatrixView xv = MatrixView::of(x.data(), n, d);

  std::vector<TileConfig> tiles = {TileConfig::automatic, TileConfig::stream_128x256, TileConfig::stream_128x128};
  if (d <= 128) tiles.push_back(TileConfig::resident_128x128);
  std::vector<std::int32_t> first;
  for (TileConfig t : tiles) {
    SCOPED_TRACE("tile " + std::to_string(int(t)));
    auto cert = tf32_backend(true, t);
    const AssignOut a = run_assign(*cert, xv, c, k);
    EXPECT_EQ(off_argmin(ref, a.lab, 1e-12), 0);
    EXPECT_EQ(a.st.n_changed, n);
    EXPECT_LE(a.st.n_rechecked_fp64, a.st.n_rechecked);
    if (first.empty()) first = a.lab;
    EXPECT_EQ(a.lab, first);  // certified labels do not depend on the tile config
    // Uncertified: the tf32 scores' error is about 2^-11 |x| |c| per product term; the
    // distances must be that close, and labels can differ only within it.
    auto raw = tf32_backend(false, t);
    const AssignOut r = run_assign(*raw, xv, c, k);
    std::int64_t off = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      const double xn = sq_norm(x, d, i);
      const double tol = 1e-2 * (1.0 + ref.best[i] + xn);
      ASSERT_NEAR(r.dist[i], ref.best[i], tol) << "row " << i;
      if (r.lab[i] != ref.label[i] && ref.second[i] - ref.best[i] > tol) ++off;
    }
    EXPECT_EQ(off, 0);
    EXPECT_EQ(r.st.n_rechecked, 0);
    if (t == TileConfig::automatic)
      std::printf("tf32 d=%d k=%d: certified re-checked %lld of %lld rows (%lld in fp64)\n", d, k,
                  (long long)a.st.n_rechecked, (long long)n, (long long)a.st.n_rechecked_fp64);
  }
  // Bitwise run to run (a fresh backend): labels, distances, counts.
  auto b1 = tf32_backend(true), b2 = tf32_backend(true);
  const AssignOut r1 = run_assign(*b1, xv, c, k), r2 = run_assign(*b2, xv, c, k);
  EXPECT_EQ(r1.lab, r2.lab);
  EXPECT_EQ(0, std::memcmp(r1.dist.data(), r2.dist.data(), r1.dist.size() * 4));
  EXPECT_EQ(r1.st.n_rechecked, r2.st.n_rechecked);
  EXPECT_EQ(r1.st.n_rechecked_fp64, r2.st.n_rechecked_fp64);
  EXPECT_EQ(0, std::memcmp(&r1.st.inertia, &r2.st.inertia, 8));
}

INSTANTIATE_TEST_SUITE_P(Odd, Tf32Shapes,
                         ::testing::Combine(::testing::Values(1, 3, 17, 129, 1000), ::testing::Values(1, 7, 257)));

// ---- near-ties: the cascade makes the labels exact ----------------------------------------

// Rows a hair away from the midpoint of two centroids; d = 200 runs the streamed kernel
// (fp32 rows by cp.async, rounded in registers), d = 77 the resident one (rows rounded while
// loading). Certified labels equal the float64 argmin on every row that is not an exact
// float64 tie.
TEST(Tf32, CertifiedNearTiesEqualFloat64) {
  REQUIRE_GPU();
  for (int d : {77, 200}) {
    const int k = 64;
    const std::int64_t n = 8192;
    const gpu_test::NearTies data = gpu_test::near_tie_rows(n, d, k, 1e-5f, 3 + d);
    const std::vector<float>& x = data.x;
    const std::vector<float>& c = data.c;
    const auto ref = testing::nearest_f64(x, c, d);
    const MatrixView xv = MatrixView::of(x.data(), n, d);
    auto cert = tf32_backend(true);
    const AssignOut a = run_assign(*cert, xv, c, k);
    EXPECT_EQ(off_argmin(ref, a.lab, 0.0), 0) << "d=" << d;
    EXPECT_GT(a.st.n_rechecked, 0) << "d=" << d;
    auto raw = tf32_backend(false);
    const AssignOut r = run_assign(*raw, xv, c, k);
    std::printf("tf32 near-ties d=%d: certified re-checked %lld rows (%lld in fp64); uncertified off the fp64 argmin "
                "on %lld of %lld rows\n",
                d, (long long)a.st.n_rechecked, (long long)a.st.n_rechecked_fp64, (long long)off_argmin(ref, r.lab, 0.0),
                (long long)n);
  }
}

// ---- input dtypes ------------------------------------------------------------------------

// fp16 and bf16 device data (exact in tf32: only the centroids round), resident and
// streamed (d = 300: converted while loading); fp64 host data (rounded to fp32 on the way
// in, as for every precision). Certified labels = the float64 argmin of the data as given.
TEST(Tf32, InputDtypes) {
  REQUIRE_GPU();
  for (int d : {64, 300}) {
    const std::int64_t n = 4099;
    const int k = 130;
    std::vector<float> x = testing::blobs(n, d, 20, 3.0, 1.0, 7 + d);
    for (DType dt : {DType::f16, DType::bf16}) {
      SCOPED_TRACE(std::string(to_string(dt)) + " d=" + std::to_string(d));
      std::vector<std::uint16_t> raw(x.size());
      std::vector<float> xr(x.size());  // the data as given, in fp32 for the reference
      for (std::size_t i = 0; i < x.size(); ++i) {
        if (dt == DType::f16) {
          const __half h = __float2half(x[i]);
          std::memcpy(&raw[i], &h, 2);
          xr[i] = __half2float(h);
        } else {
          const __nv_bfloat16 h = __float2bfloat16(x[i]);
          std::memcpy(&raw[i], &h, 2);
          xr[i] = __bfloat162float(h);
        }
      }
      void* dx = nullptr;
      ASSERT_EQ(cudaMalloc(&dx, raw.size() * 2), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(dx, raw.data(), raw.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
      const std::vector<float> c(xr.begin(), xr.begin() + std::int64_t(k) * d);
      const auto ref = testing::nearest_f64(xr, c, d);
      auto b = tf32_backend(true);
      const AssignOut a = run_assign(*b, MatrixView::raw(dx, dt, n, d, 0, Location::cuda, 0), c, k);
      EXPECT_EQ(off_argmin(ref, a.lab, 1e-12), 0);
      cudaFree(dx);
    }
    std::vector<double> x64(x.begin(), x.end());
    const std::vector<float> c(x.begin(), x.begin() + std::int64_t(k) * d);
    const auto ref = testing::nearest_f64(x, c, d);
    auto b = tf32_backend(true);
    const AssignOut a = run_assign(*b, MatrixView::of(x64.data(), n, d), c, k);
    EXPECT_EQ(off_argmin(ref, a.lab, 1e-12), 0) << "f64 d=" << d;
  }
}

// ---- a whole fit against the CPU backend ---------------------------------------------------

// Separated blobs (no near-ties), odd d and k, from the same given init: the labels are the
// CPU's, centroids within 1e-5 relative, the same iterations; two GPU fits are bitwise equal.
TEST(Tf32, FitMatchesTheCpuFromTheSameInit) {
  REQUIRE_GPU();
  for (auto [d, k] : {std::pair<std::int64_t, std::int64_t>{129, 257}, {17, 7}, {1000, 33}}) {
    SCOPED_TRACE("d=" + std::to_string(d) + " k=" + std::to_string(k));
    const std::int64_t n = 20011;
    const auto x = testing::separated_blobs(n, d, k, 1.0, 41 + d);
    const std::vector<float> c0(x.begin(), x.begin() + k * d);
    Params p;
    std::vector<std::int32_t> lc, lg, lg2;
    const Model cpu = testing::fit_given(x, d, c0, 5, p, &lc);
    p.device = Device::cuda;
    p.precision = Precision::tf32;
    const Model gpu = testing::fit_given(x, d, c0, 5, p, &lg);
    const Model gpu2 = testing::fit_given(x, d, c0, 5, p, &lg2);
    EXPECT_EQ(lc, lg);
    EXPECT_EQ(cpu.n_iter, gpu.n_iter);
    for (std::size_t t = 0; t < cpu.centroids.size(); ++t)
      ASSERT_NEAR(gpu.centroids[t], cpu.centroids[t], 1e-5 * (std::abs(cpu.centroids[t]) + 1.0)) << "value " << t;
    EXPECT_NEAR(gpu.inertia, cpu.inertia, 1e-6 * cpu.inertia);
    EXPECT_EQ(lg, lg2);
    EXPECT_EQ(gpu.centroids, gpu2.centroids);
    EXPECT_EQ(0, std::memcmp(&gpu.inertia, &gpu2.inertia, 8));
  }
}

// Uniform noise (many near-ties): certified tf32 labels of a fit are the float64 argmins of
// its final centroids outside fp32 near-ties, and the report counts the re-checked rows.
TEST(Tf32, FitOnNearTiesReportsRecheckedRows) {
  REQUIRE_GPU();
  const std::int64_t n = 30001, d = 32, k = 100;
  const auto x = testing::uniform(n, d, 42);
  const std::vector<float> c0(x.begin(), x.begin() + k * d);
  Params p;
  p.device = Device::cuda;
  p.precision = Precision::tf32;
  std::vector<std::int32_t> lg;
  const Model gpu = testing::fit_given(x, d, c0, 3, p, &lg);
  testing::expect_argmins_outside_near_ties(x, gpu.centroids, d, lg);
  std::int64_t rechecked = 0;
  for (const IterationInfo& it : gpu.history) rechecked += it.n_rechecked;
  EXPECT_GT(rechecked, 0);
  std::printf("tf32 fit on uniform noise: %lld rows re-checked over %d iterations\n", (long long)rechecked,
              gpu.n_iter);
}

// ---- tile configs tf32 cannot run ----------------------------------------------------------

TEST(Tf32, RefusedTileConfigsAreClearErrors) {
  EXPECT_FALSE(cuda::tile_supports(TileConfig::wgmma_sm90, cuda::Operand::tf32, 64));
  EXPECT_TRUE(cuda::tile_supports(TileConfig::resident_128x128, cuda::Operand::tf32, 128));
  EXPECT_FALSE(cuda::tile_supports(TileConfig::resident_128x128, cuda::Operand::tf32, 192));
  EXPECT_TRUE(cuda::tile_supports(TileConfig::resident_128x128, cuda::Operand::fp16, 256));
  EXPECT_TRUE(cuda::tile_supports(TileConfig::stream_128x256, cuda::Operand::tf32, 1024));
  EXPECT_EQ(cuda::choose_tile_tf32(128), TileConfig::resident_128x128);
  EXPECT_EQ(cuda::choose_tile_tf32(129), TileConfig::stream_128x256);
  REQUIRE_GPU();
  const auto x = testing::blobs(1000, 200, 4, 3.0, 1.0, 2);
  for (TileConfig t : {TileConfig::wgmma_sm90, TileConfig::resident_128x128}) {
    auto b = tf32_backend(true, t);
    try {
      b->attach(MatrixView::of(x.data(), 1000, 200), nullptr, Metric::l2);
      FAIL() << "tile config " << int(t) << " accepted with tf32 at d = 200";
    } catch (const Error& e) {
      EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
      EXPECT_NE(std::string(e.what()).find("tf32"), std::string::npos) << e.what();
    }
  }
}

}  // namespace flashkm
