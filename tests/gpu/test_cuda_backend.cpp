// CUDA backend tests: against a float64 reference and the CPU backend, op by op through
// core::Backend. Every test skips with a message when no CUDA device is present.
#include <gtest/gtest.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <ostream>
#include <sstream>
#include <string>
#include <utility>
#include <random>
#include <vector>

#include "core/backend.hpp"
#include "cuda/batched_backend.hpp"
#include "cuda/certify_candidates.hpp"
#include "cuda/cuda_backend.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/tf32_round.hpp"
#include "flashkm/error.hpp"
#include "support/gpu_test_data.hpp"
#include "support/require_gpu.hpp"

using namespace flashkm;

namespace {

using gpu_test::blobs;
using gpu_test::first_rows_per_problem;

/// x rounded to the operand type (so fp32 and 16-bit inputs carry the same values), and
/// that 16-bit copy on the device (owned by the caller: cudaFree).
void* round_to_operand(std::vector<float>& x, Precision prec) {
  std::vector<std::uint16_t> h(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (prec == Precision::fp16) {
      const __half v = __float2half_rn(x[i]);
      x[i] = __half2float(v);
      std::memcpy(&h[i], &v, 2);
    } else {
      const __nv_bfloat16 v = __float2bfloat16_rn(x[i]);
      x[i] = __bfloat162float(v);
      std::memcpy(&h[i], &v, 2);
    }
  }
  void* dx = nullptr;
  if (cudaMalloc(&dx, h.size() * 2) != cudaSuccess) return nullptr;
  if (cudaMemcpy(dx, h.data(), h.size() * 2, cudaMemcpyHostToDevice) != cudaSuccess) return nullptr;
  return dx;
}

struct Ref {
  std::vector<std::int32_t> label;
  std::vector<double> best, second;
};

/// float64 argmin over centroids from differences; ties to the lowest index.
Ref reference(const std::vector<float>& x, std::int64_t n, int d, const std::vector<float>& c, int k) {
  Ref r;
  r.label.resize(n);
  r.best.resize(n);
  r.second.resize(n);
  for (std::int64_t i = 0; i < n; ++i) {
    double b = INFINITY, s = INFINITY;
    int bi = 0;
    for (int j = 0; j < k; ++j) {
      double acc = 0;
      for (int q = 0; q < d; ++q) {
        const double df = double(x[i * d + q]) - double(c[j * d + q]);
        acc += df * df;
      }
      if (acc < b) {
        s = b;
        b = acc;
        bi = j;
      } else if (acc < s) {
        s = acc;
      }
    }
    r.label[i] = bi;
    r.best[i] = b;
    r.second[i] = s;
  }
  return r;
}

/// Rows rounded to fp16 and uploaded as 16-bit device input, with the float64 reference of
/// the rounded rows (the candidate-cascade tests' device-input case). Frees the copy.
struct Fp16DeviceRows {
  Fp16DeviceRows(const std::vector<float>& x, std::int64_t n, int d, const std::vector<float>& c, int k)
      : rounded(x), dx(round_to_operand(rounded, Precision::fp16)),
        view(MatrixView::raw(dx, DType::f16, n, d, 0, Location::cuda, 0)), ref(reference(rounded, n, d, c, k)) {}
  ~Fp16DeviceRows() { cudaFree(dx); }
  Fp16DeviceRows(const Fp16DeviceRows&) = delete;
  Fp16DeviceRows& operator=(const Fp16DeviceRows&) = delete;
  std::vector<float> rounded;
  void* dx;
  MatrixView view;
  Ref ref;
};

std::unique_ptr<core::Backend> gpu(Precision p, bool certify) {
  cuda::CudaOptions o;
  o.precision = p;
  o.certify = certify;
  return cuda::make_cuda_backend(o);
}

/// Labels must match the fp64 reference except where the fp64 gap is within `tie_rel`.
std::int64_t mismatches_outside_ties(const Ref& ref, const std::vector<std::int32_t>& got, double tie_rel) {
  std::int64_t bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (got[i] == ref.label[i]) continue;
    const double gap = ref.second[i] - ref.best[i];
    if (gap > tie_rel * std::max(1.0, ref.best[i])) ++bad;
  }
  return bad;
}

}  // namespace

TEST(CudaBackend, BuiltAndPresent) {
  EXPECT_TRUE(core::cuda_backend_built());
  REQUIRE_GPU();
  int dev = 0;
  cudaDeviceProp prop{};
  ASSERT_EQ(cudaGetDeviceProperties(&prop, dev), cudaSuccess);
  std::printf("device: %s, sm_%d%d, %d SMs\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
}

class Modes : public ::testing::TestWithParam<std::tuple<Precision, int>> {};

TEST_P(Modes, CertifiedLabelsMatchFloat64) {
  REQUIRE_GPU();
  const auto [prec, d] = GetParam();
  const std::int64_t n = 20000;
  const int k = 300;
  std::vector<float> x = blobs(n, d, 40, 1.0f, 7 + d);
  std::vector<float> c(x.begin(), x.begin() + std::int64_t(k) * d);
  const Ref ref = reference(x, n, d, c, k);
  auto b = gpu(prec, true);
  b->attach(MatrixView::of(x.data(), n, d), nullptr, Metric::l2);
  b->set_centroids(c.data(), k);
  const core::AssignStats st = b->assign();
  std::vector<std::int32_t> lab(n);
  b->copy_labels(lab.data());
  std::printf("precision %s d=%d: rechecked %lld of %lld rows, %lld of them in fp64\n", to_string(prec), d,
              (long long)st.n_rechecked, (long long)n, (long long)st.n_rechecked_fp64);
  EXPECT_LE(st.n_rechecked_fp64, st.n_rechecked);
  EXPECT_EQ(mismatches_outside_ties(ref, lab, 1e-12), 0);
  EXPECT_EQ(st.n_changed, n);  // first assign: all labels were -1
  std::vector<float> dist(n);
  b->copy_distances(dist.data());
  double inertia = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    // Low-precision distances carry an absolute error ~ u*|x|*|c| (labels are what is exact).
    double xn = 0;
    for (int q = 0; q < d; ++q) xn += double(x[i * d + q]) * x[i * d + q];
    EXPECT_NEAR(dist[i], ref.best[i], 1e-2 * (1.0 + ref.best[i] + xn)) << "row " << i;
    inertia += ref.best[i];
  }
  EXPECT_NEAR(st.inertia, inertia, 1e-3 * inertia);
  EXPECT_NEAR(b->exact_inertia(), inertia, 1e-9 * inertia);
}

INSTANTIATE_TEST_SUITE_P(All, Modes,
                         ::testing::Combine(::testing::Values(Precision::fp16, Precision::bf16, Precision::fp32,
                                                              Precision::tf32, Precision::automatic),
                                            ::testing::Values(100, 128, 768)));

// Rows built to be near-ties: the midpoint of two centroids plus a tiny push toward one.
TEST(CudaBackend, CertifiedOnNearTies) {
  REQUIRE_GPU();
  const int d = 128, k = 64;
  const std::int64_t n = 8192;
  const gpu_test::NearTies data = gpu_test::near_tie_rows(n, d, k, 1e-4f, 3);
  const std::vector<float>& x = data.x;
  const std::vector<float>& c = data.c;
  const Ref ref = reference(x, n, d, c, k);
  for (Precision p : {Precision::fp16, Precision::bf16, Precision::tf32}) {
    auto certified = gpu(p, true);
    certified->attach(MatrixView::of(x.data(), n, d), nullptr, Metric::l2);
    certified->set_centroids(c.data(), k);
    const core::AssignStats st = certified->assign();
    std::vector<std::int32_t> lab(n);
    certified->copy_labels(lab.data());
    EXPECT_EQ(mismatches_outside_ties(ref, lab, 0.0), 0) << to_string(p);
    EXPECT_GT(st.n_rechecked, 0) << to_string(p);

    auto raw = gpu(p, false);
    raw->attach(MatrixView::of(x.data(), n, d), nullptr, Metric::l2);
    raw->set_centroids(c.data(), k);
    raw->assign();
    raw->copy_labels(lab.data());
    std::printf("%s near-ties: certified rechecked %lld rows (%lld in fp64); uncertified differs from fp64 on %lld rows\n",
                to_string(p), (long long)st.n_rechecked, (long long)st.n_rechecked_fp64,
                (long long)mismatches_outside_ties(ref, lab, 0.0));
  }
}

// Measured error of the low-precision best distance against the bound without its safety
// factor: prints the worst ratio (the margin in docs/CUDA.md comes from this number).
TEST(CudaBackend, MeasuredErrorUnderBound) {
  REQUIRE_GPU();
  for (int d : {64, 128, 768}) {
    const std::int64_t n = 16384;
    const int k = 512;
    std::vector<float> x = blobs(n, d, 50, 0.5f, 11 + d);
    std::vector<float> c(x.begin() + std::int64_t(n - k) * d, x.end());
    // fp32: the exact SIMT kernel, which is also the certification cascade's second level.
    for (Precision p : {Precision::fp16, Precision::bf16, Precision::tf32, Precision::fp32}) {
      auto b = gpu(p, false);
      b->attach(MatrixView::of(x.data(), n, d), nullptr, Metric::l2);
      b->set_centroids(c.data(), k);
      b->assign();
      std::vector<std::int32_t> lab(n);
      std::vector<float> dist(n);
      b->copy_labels(lab.data());
      b->copy_distances(dist.data());
      // cmax and dcmax = max_j |c_j - operand(c_j)| (the centroids' exact rounding error).
      double cmax = 0, dcmax = 0;
      for (int j = 0; j < k; ++j) {
        double s = 0, ds = 0;
        for (int q = 0; q < d; ++q) {
          const float v = c[j * d + q];
          s += double(v) * v;
          const float r = p == Precision::fp16   ? __half2float(__float2half(v))
                          : p == Precision::bf16 ? __bfloat162float(__float2bfloat16(v))
                          : p == Precision::tf32 ? cuda::round_to_tf32(v)
                                                 : v;
          ds += (double(v) - r) * (double(v) - r);
        }
        cmax = std::max(cmax, std::sqrt(s));
        dcmax = std::max(dcmax, std::sqrt(ds));
      }
      // The bound of params_for() without kSafety: fp32 operands are exact (u = 0) and the
      // SIMT kernel's blocked fma chains round to nearest (16 + dp/16 roundings of 2^-24);
      // tensor cores dp terms of 2^-23.
      const bool f32 = p == Precision::fp32;
      const double u = p == Precision::fp16 || p == Precision::tf32 ? 0x1p-11 : p == Precision::bf16 ? 0x1p-8 : 0.0;
      const int dp = f32 ? (d + 15) / 16 * 16 : (d + 63) / 64 * 64;
      const double t = f32 ? 0x1p-24 : 0x1p-23;
      const double m = f32 ? 16 + dp / 16 : dp;
      const double acc = m * t / (1 - m * t);
      double worst = 0, worst_old = 0;
      for (std::int64_t i = 0; i < n; ++i) {
        double xn = 0, e = 0;
        for (int q = 0; q < d; ++q) {
          const double v = x[i * d + q];
          xn += v * v;
          const double df = v - double(c[lab[i] * d + q]);
          e += df * df;
        }
        const double nx = std::sqrt(xn);
        // x is fp32 data: rounded to the operand (ux = u). `old`: the bound before dcmax
        // (u * cmax for the centroids' rounding), printed for comparison.
        const double tail = (0x1p-23 + acc / 2) * cmax * cmax + 0x1p-23 * (xn + e);
        const double bound =
            2 * ((u * (1 + acc) + acc + 0x1p-23) * nx * cmax + (1 + u) * (1 + acc) * nx * dcmax) + tail;
        const double old = 2 * ((2 * u + u * u) * (1 + acc) + acc + 0x1p-23) * nx * cmax + tail;
        worst = std::max(worst, std::fabs(double(dist[i]) - e) / bound);
        worst_old = std::max(worst_old, std::fabs(double(dist[i]) - e) / old);
      }
      std::printf("d=%d %s: worst |error| / bound = %.4f (dcmax/(u cmax) = %.3f; against the cmax-only bound: %.4f)\n",
                  d, to_string(p), worst, u > 0 ? dcmax / (u * cmax) : 0.0, worst_old);
      EXPECT_LT(worst, 1.0);
    }
  }
}

TEST(CudaBackend, MatchesCpuBackendOpByOp) {
  REQUIRE_GPU();
  const std::int64_t n = 30000;
  const int d = 96, k = 200;
  std::vector<float> x = blobs(n, d, 30, 1.0f, 5);
  std::vector<float> w(n);
  std::mt19937 rng(1);
  for (auto& v : w) v = 0.5f + (rng() % 100) / 100.0f;
  std::vector<float> c(x.begin(), x.begin() + std::int64_t(k) * d);
  auto cpu = core::make_cpu_backend(0);
  auto gb = gpu(Precision::automatic, true);
  for (auto* b : {cpu.get(), gb.get()}) {
    b->attach(MatrixView::of(x.data(), n, d), w.data(), Metric::l2);
    b->set_centroids(c.data(), k);
  }
  const double var_gpu = core::mean_feature_variance(gb->feature_moments());
  const double var_cpu = core::mean_feature_variance(cpu->feature_moments());
  EXPECT_NEAR(var_gpu, var_cpu, 1e-9 * var_cpu);
  const auto s1 = cpu->assign(), s2 = gb->assign();
  EXPECT_NEAR(s2.inertia, s1.inertia, 1e-4 * s1.inertia);
  std::vector<std::int32_t> l1(n), l2(n);
  cpu->copy_labels(l1.data());
  gb->copy_labels(l2.data());
  const Ref ref = reference(x, n, d, c, k);
  EXPECT_EQ(mismatches_outside_ties(ref, l2, 1e-12), 0);
  std::int64_t differ = 0;
  for (std::int64_t i = 0; i < n; ++i) differ += l1[i] != l2[i];
  EXPECT_LE(differ, n / 10000 + 1);
  std::vector<double> sc(std::size_t(k) * d), wc(k), sg(std::size_t(k) * d), wg(k);
  cpu->accumulate(sc.data(), wc.data());
  gb->accumulate(sg.data(), wg.data());
  if (differ == 0) {
    for (int j = 0; j < k; ++j) {
      EXPECT_NEAR(wg[j], wc[j], 1e-9 * std::max(1.0, wc[j]));
      for (int q = 0; q < d; ++q) EXPECT_NEAR(sg[j * d + q], sc[j * d + q], 1e-9 * (1 + std::fabs(sc[j * d + q])));
    }
  }
  std::vector<double> cw(k);
  gb->cluster_weights(cw.data());
  for (int j = 0; j < k; ++j) EXPECT_EQ(cw[j], wg[j]);
  EXPECT_NEAR(gb->exact_inertia(), cpu->exact_inertia(), 1e-4 * cpu->exact_inertia());
  // farthest rows / gather
  const auto f1 = cpu->farthest_rows(5), f2 = gb->farthest_rows(5);
  if (differ == 0) EXPECT_EQ(f1.size(), f2.size());
  std::vector<float> r(5 * d);
  std::vector<std::int32_t> gl(5);
  std::vector<float> gw(5);
  gb->gather_rows(f2.data(), 5, r.data(), gl.data(), gw.data());
  for (int t = 0; t < 5; ++t) {
    EXPECT_EQ(r[t * d], x[f2[t] * d]);
    EXPECT_EQ(gw[t], w[f2[t]]);
    EXPECT_EQ(gl[t], l2[f2[t]]);
  }
  // initialisation support
  const double p1 = cpu->mindist_fill(INFINITY), p2 = gb->mindist_fill(INFINITY);
  (void)p1;
  (void)p2;
  const double u1 = cpu->mindist_update(x.data(), 1), u2 = gb->mindist_update(x.data(), 1);
  EXPECT_NEAR(u2, u1, 1e-4 * u1);
  std::vector<double> t1(3), t2(3);
  cpu->mindist_trial(x.data() + 100 * d, 3, t1.data());
  gb->mindist_trial(x.data() + 100 * d, 3, t2.data());
  for (int j = 0; j < 3; ++j) EXPECT_NEAR(t2[j], t1[j], 1e-4 * t1[j]);
  const std::vector<double> targets = {0.1 * u1, 0.5 * u1, 0.9 * u1};
  const auto a1 = cpu->sample_by_mindist(targets), a2 = gb->sample_by_mindist(targets);
  ASSERT_EQ(a1.size(), a2.size());
  for (std::size_t q = 0; q < a1.size(); ++q) EXPECT_NEAR(double(a2[q]), double(a1[q]), 2.0);
  const auto b1 = cpu->sample_bernoulli(2.0 * 50 / u1, 9, 1), b2 = gb->sample_bernoulli(2.0 * 50 / u1, 9, 1);
  EXPECT_NEAR(double(b2.size()), double(b1.size()), 2.0 + 0.01 * b1.size());
  std::vector<double> nw1(4), nw2(4);
  cpu->nearest_weights(x.data(), 4, nw1.data());
  gb->nearest_weights(x.data(), 4, nw2.data());
  for (int j = 0; j < 4; ++j) EXPECT_NEAR(nw2[j], nw1[j], 1e-3 * (1 + nw1[j]));
}

TEST(CudaBackend, DeterministicBitwise) {
  REQUIRE_GPU();
  const std::int64_t n = 50000;
  const int d = 128, k = 1000;
  std::vector<float> x = blobs(n, d, 100, 1.0f, 9);
  std::vector<float> c(x.begin(), x.begin() + std::int64_t(k) * d);
  std::vector<std::vector<double>> sums(2, std::vector<double>(std::size_t(k) * d));
  std::vector<std::vector<double>> wts(2, std::vector<double>(k));
  std::vector<std::vector<std::int32_t>> labs(2, std::vector<std::int32_t>(n));
  double inertia[2];
  for (int run = 0; run < 2; ++run) {
    auto b = gpu(Precision::automatic, true);
    b->attach(MatrixView::of(x.data(), n, d), nullptr, Metric::l2);
    b->set_centroids(c.data(), k);
    inertia[run] = b->assign().inertia;
    b->accumulate(sums[run].data(), wts[run].data());
    b->copy_labels(labs[run].data());
  }
  EXPECT_EQ(labs[0], labs[1]);
  EXPECT_EQ(0, std::memcmp(sums[0].data(), sums[1].data(), sums[0].size() * 8));
  EXPECT_EQ(0, std::memcmp(wts[0].data(), wts[1].data(), wts[0].size() * 8));
  EXPECT_EQ(0, std::memcmp(&inertia[0], &inertia[1], 8));
}

/// Lloyd iterations on two backends of one configuration: `dev` updates through its own
/// update_centroids() (sums stay on the device), `host` through the base class's host path.
/// Per iteration: identical labels and weights, centroids within 1e-6 relative, the same
/// number of empty clusters. Returns the device path's final centroids and shifts.
struct UpdateRun {
  std::vector<float> centroids;
  std::vector<double> shifts;
  std::int64_t bitwise_differences = 0;  // centroid values the two paths round differently
  std::int64_t empties = 0;
};
UpdateRun compare_update_paths(const std::vector<float>& x, const std::vector<float>* w, std::int64_t n, int d,
                               std::vector<float> c, std::int64_t k, Metric metric, int batch, int iters) {
  cuda::CudaOptions o;
  o.batch = batch;
  auto dev = cuda::make_cuda_backend(o), host = cuda::make_cuda_backend(o);
  for (auto* b : {dev.get(), host.get()}) b->attach(MatrixView::of(x.data(), n, d), w ? w->data() : nullptr, metric);
  std::vector<float> ch = c, nd(c.size()), nh(c.size());
  std::vector<double> wd(k), wh(k);
  std::vector<std::int32_t> ld(n), lh(n);
  UpdateRun r;
  for (int it = 0; it < iters; ++it) {
    dev->set_centroids(c.data(), k);
    host->set_centroids(ch.data(), k);
    dev->assign();
    host->assign();
    dev->copy_labels(ld.data());
    host->copy_labels(lh.data());
    EXPECT_EQ(ld, lh) << "iteration " << it;
    double sd = 0, sh = 0;
    const std::int64_t ed = dev->update_centroids(k, metric, c.data(), nd.data(), wd.data(), &sd);
    const std::int64_t eh = host->core::Backend::update_centroids(k, metric, ch.data(), nh.data(), wh.data(), &sh);
    EXPECT_EQ(ed, eh) << "iteration " << it;
    r.empties += ed;
    EXPECT_EQ(wd, wh) << "iteration " << it;
    EXPECT_NEAR(sd, sh, 1e-9 * sh + 1e-300) << "iteration " << it;
    for (std::size_t t = 0; t < nd.size(); ++t) {
      EXPECT_NEAR(nd[t], nh[t], 1e-6 * std::max(1e-3f, std::fabs(nh[t]))) << "iteration " << it << " element " << t;
      r.bitwise_differences += nd[t] != nh[t];
    }
    r.shifts.push_back(sd);
    c.swap(nd);
    ch.swap(nh);
  }
  r.centroids = c;
  return r;
}

TEST(CudaBackend, DeviceUpdateEqualsHostPath) {
  REQUIRE_GPU();
  const std::int64_t n = 40000;
  const int d = 96, k = 300;
  std::vector<float> x = blobs(n, d, 40, 1.0f, 31);
  std::vector<float> w(n);
  std::mt19937 rng(3);
  for (auto& v : w) v = 0.25f + (rng() % 100) / 50.0f;
  std::vector<float> c(x.begin(), x.begin() + std::int64_t(k) * d);
  // l2, weighted: the host path divides the same fp64 sums the same way, so the paths
  // should agree bitwise; the test asks 1e-6 and prints how many values differ.
  const UpdateRun a = compare_update_paths(x, &w, n, d, c, k, Metric::l2, 1, 5);
  std::printf("device update vs host path (l2): %lld of %lld centroid values differ bitwise\n",
              (long long)a.bitwise_differences, (long long)(5 * c.size()));
  // Bitwise run to run (a fresh backend).
  const UpdateRun b = compare_update_paths(x, &w, n, d, c, k, Metric::l2, 1, 5);
  EXPECT_EQ(0, std::memcmp(a.centroids.data(), b.centroids.data(), a.centroids.size() * 4));
  EXPECT_EQ(0, std::memcmp(a.shifts.data(), b.shifts.data(), a.shifts.size() * 8));
  // Cosine (unit-norm centroids; the norm of the sums is summed in another order than the host's).
  std::vector<float> cu = c;
  for (int j = 0; j < k; ++j) {
    double s = 0;
    for (int q = 0; q < d; ++q) s += double(cu[j * d + q]) * cu[j * d + q];
    for (int q = 0; q < d; ++q) cu[j * d + q] = float(cu[j * d + q] / std::sqrt(s));
  }
  compare_update_paths(x, nullptr, n, d, cu, k, Metric::cosine, 1, 3);
  // Batched (4 problems of 10,000 rows, 75 centroids each).
  std::vector<float> cb;
  for (int p = 0; p < 4; ++p) cb.insert(cb.end(), x.begin() + p * 10000 * d, x.begin() + (p * 10000 + 75) * d);
  compare_update_paths(x, nullptr, n, d, cb, 4 * 75, Metric::l2, 4, 3);
  // Empty clusters: duplicated centroids get no rows (ties go to the lowest index); the
  // device path falls back to the host path with relocation.
  std::vector<float> cd = c;
  std::copy(c.begin(), c.begin() + 10 * d, cd.begin() + 100 * d);
  const UpdateRun e = compare_update_paths(x, &w, n, d, cd, k, Metric::l2, 1, 2);
  EXPECT_GE(e.empties, 10);
}

TEST(CudaBackend, DeviceInputHalfAndBatched) {
  REQUIRE_GPU();
  const int B = 3, d = 128, k = 50;
  const std::int64_t n = 5000;
  std::vector<float> x = blobs(B * n, d, 20, 1.0f, 13);
  void* dx = round_to_operand(x, Precision::fp16);  // the reference sees the data as given
  ASSERT_NE(dx, nullptr);
  const std::vector<float> c = first_rows_per_problem(x, B, n, d, k);
  cuda::CudaOptions o;
  o.batch = B;
  auto bb = cuda::make_cuda_backend(o);
  bb->attach(MatrixView::raw(dx, DType::f16, B * n, d, 0, Location::cuda, 0), nullptr, Metric::l2);
  bb->set_centroids(c.data(), std::int64_t(B) * k);
  bb->assign();
  std::vector<std::int32_t> lab(B * n);
  bb->copy_labels(lab.data());
  std::vector<double> sums(std::size_t(B) * k * d), wts(std::size_t(B) * k);
  bb->accumulate(sums.data(), wts.data());
  for (int b = 0; b < B; ++b) {
    std::vector<float> xb(x.begin() + b * n * d, x.begin() + (b + 1) * n * d);
    std::vector<float> cb(c.begin() + std::size_t(b) * k * d, c.begin() + std::size_t(b + 1) * k * d);
    const Ref ref = reference(xb, n, d, cb, k);
    std::vector<std::int32_t> lb(lab.begin() + b * n, lab.begin() + (b + 1) * n);
    EXPECT_EQ(mismatches_outside_ties(ref, lb, 1e-12), 0) << "problem " << b;
    double tw = 0;
    for (int j = 0; j < k; ++j) tw += wts[b * k + j];
    EXPECT_EQ(tw, double(n));
  }
  cudaFree(dx);
}

TEST(CudaBackend, CosineAndInnerProduct) {
  REQUIRE_GPU();
  const std::int64_t n = 10000;
  const int d = 64, k = 100;
  std::vector<float> x = blobs(n, d, 20, 1.0f, 21);
  std::vector<float> c(x.begin(), x.begin() + std::int64_t(k) * d);
  for (int j = 0; j < k; ++j) {
    double s = 0;
    for (int q = 0; q < d; ++q) s += double(c[j * d + q]) * c[j * d + q];
    for (int q = 0; q < d; ++q) c[j * d + q] = float(c[j * d + q] / std::sqrt(s));
  }
  for (Metric m : {Metric::cosine, Metric::inner_product}) {
    auto cpu = core::make_cpu_backend(0);
    auto gb = gpu(Precision::automatic, true);
    cpu->attach(MatrixView::of(x.data(), n, d), nullptr, m);
    gb->attach(MatrixView::of(x.data(), n, d), nullptr, m);
    cpu->set_centroids(c.data(), k);
    gb->set_centroids(c.data(), k);
    const auto s1 = cpu->assign(), s2 = gb->assign();
    EXPECT_NEAR(s2.inertia, s1.inertia, 1e-3 * std::fabs(s1.inertia) + 1e-3) << to_string(m);
    std::vector<std::int32_t> l1(n), l2(n);
    cpu->copy_labels(l1.data());
    gb->copy_labels(l2.data());
    std::int64_t differ = 0;
    for (std::int64_t i = 0; i < n; ++i) differ += l1[i] != l2[i];
    EXPECT_LE(differ, 2) << to_string(m);
  }
}

TEST(CudaBackend, BadInputAndOutOfMemory) {
  REQUIRE_GPU();
  std::vector<float> x = blobs(1000, 16, 4, 1.0f, 2);
  x[17 * 16 + 3] = NAN;
  auto b = gpu(Precision::automatic, true);
  try {
    b->attach(MatrixView::of(x.data(), 1000, 16), nullptr, Metric::l2);
    FAIL() << "NaN accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("row 17"), std::string::npos) << e.what();
  }
  // A device allocation far beyond the card: a flashkm error naming the bytes, no crash.
  try {
    cuda::DeviceBuffer<double> huge(std::size_t(1) << 47, "a test workspace");
    FAIL() << "allocation of 1 PiB succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::out_of_memory);
    EXPECT_NE(std::string(e.what()).find("1125899906842624 bytes"), std::string::npos) << e.what();
  }
  // The process lives on and the device still works.
  x[17 * 16 + 3] = 0.5f;
  auto b2 = gpu(Precision::automatic, true);
  b2->attach(MatrixView::of(x.data(), 1000, 16), nullptr, Metric::l2);
  b2->set_centroids(x.data(), 4);
  EXPECT_GT(b2->assign().inertia, 0.0);
}

// The certification cascade on data where every value is a small dyadic rational, so the
// fp64 reference is exact and labels must equal it everywhere (exact ties: lowest index).
// Rows: exact midpoints of two centroids (exact ties: no finite-precision level can certify
// them, they must reach fp64) and midpoints pushed by 1/8 along one coordinate toward the
// first centroid (gap 1..3: inside the tensor-core bound (2E ~ 6 for fp16, ~ 48 for bf16
// here; tf32 operands of fp32 data: fp16's), far outside the fp32 one (2E < 0.03), so the
// fp32 level must settle them). Every value is exact in fp16, bf16 and tf32, so every level
// computes these scores exactly.
TEST(CudaBackend, CascadeLevelsBothExercised) {
  REQUIRE_GPU();
  const int d = 128, k = 64;
  const std::int64_t n = 16384;
  std::mt19937_64 rng(17);
  std::vector<float> c(static_cast<std::size_t>(k) * d), x(static_cast<std::size_t>(n) * d);
  for (auto& v : c) v = static_cast<float>(static_cast<int>(rng() % 17) - 8);
  std::int64_t n_ties = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const int a = static_cast<int>(rng() % k);
    const int bb = (a + 1 + static_cast<int>(rng() % (k - 1))) % k;
    for (int q = 0; q < d; ++q) x[i * d + q] = 0.5f * (c[a * d + q] + c[bb * d + q]);
    if (i % 4 == 0) {
      ++n_ties;
      continue;
    }
    // Push along a coordinate where the two differ by 4..12: gap = 2 * (1/8) * |diff|.
    for (int q0 = static_cast<int>(rng() % d), s = 0; s < d; ++s) {
      const int q = (q0 + s) % d;
      const float df = c[a * d + q] - c[bb * d + q];
      if (std::fabs(df) >= 4 && std::fabs(df) <= 12) {
        x[i * d + q] += df > 0 ? 0.125f : -0.125f;
        break;
      }
    }
  }
  const Ref ref = reference(x, n, d, c, k);
  std::int64_t exact_ties = 0;
  for (std::int64_t i = 0; i < n; ++i) exact_ties += ref.second[i] == ref.best[i];
  for (Precision p : {Precision::fp16, Precision::bf16, Precision::tf32}) {
    std::vector<std::vector<std::int32_t>> lab(2, std::vector<std::int32_t>(n));
    std::vector<std::vector<float>> dist(2, std::vector<float>(n));
    core::AssignStats st[2];
    for (int run = 0; run < 2; ++run) {
      // The SIMT cascade (fp32 level, then fp64), the one this test exercises; the candidate
      // cascade has its own tests (CandidateCascade below).
      cuda::CudaOptions so;
      so.precision = p;
      so.cascade = cuda::CertifyCascade::simt;
      auto b = cuda::make_cuda_backend(so);
      b->attach(MatrixView::of(x.data(), n, d), nullptr, Metric::l2);
      b->set_centroids(c.data(), k);
      st[run] = b->assign();
      b->copy_labels(lab[run].data());
      b->copy_distances(dist[run].data());
    }
    std::printf("%s cascade: %lld constructed ties (%lld exact in fp64), %lld rows re-checked, %lld of them in fp64\n",
                to_string(p), (long long)n_ties, (long long)exact_ties, (long long)st[0].n_rechecked,
                (long long)st[0].n_rechecked_fp64);
    EXPECT_EQ(lab[0], ref.label) << to_string(p);
    EXPECT_EQ(st[0].n_changed, n);
    // Both levels exercised: every exact tie reaches fp64; the fp32 level settles the rest
    // (most of the flagged rows).
    EXPECT_GE(st[0].n_rechecked_fp64, exact_ties) << to_string(p);
    EXPECT_GT(st[0].n_rechecked_fp64, 0) << to_string(p);
    EXPECT_GT(st[0].n_rechecked, 2 * st[0].n_rechecked_fp64) << to_string(p);
    // Deterministic bitwise run to run (the flagged lists' order is not, the results are).
    EXPECT_EQ(lab[0], lab[1]);
    EXPECT_EQ(0, std::memcmp(dist[0].data(), dist[1].data(), dist[0].size() * 4));
    EXPECT_EQ(st[0].n_rechecked, st[1].n_rechecked);
    EXPECT_EQ(st[0].n_rechecked_fp64, st[1].n_rechecked_fp64);

    // Batched: two problems (the data twice, the centroids twice); level 1 lists its rows
    // per problem, level 2 reads one problem per tile. Same labels, twice the counts.
    std::vector<float> x2(x), c2(c);
    x2.insert(x2.end(), x.begin(), x.end());
    c2.insert(c2.end(), c.begin(), c.end());
    cuda::CudaOptions o;
    o.precision = p;
    o.batch = 2;
    o.cascade = cuda::CertifyCascade::simt;
    auto bb = cuda::make_cuda_backend(o);
    bb->attach(MatrixView::of(x2.data(), 2 * n, d), nullptr, Metric::l2);
    bb->set_centroids(c2.data(), 2 * k);
    const core::AssignStats sb = bb->assign();
    std::vector<std::int32_t> lb(2 * n);
    bb->copy_labels(lb.data());
    EXPECT_EQ(std::vector<std::int32_t>(lb.begin(), lb.begin() + n), ref.label) << to_string(p) << " problem 0";
    EXPECT_EQ(std::vector<std::int32_t>(lb.begin() + n, lb.end()), ref.label) << to_string(p) << " problem 1";
    EXPECT_EQ(sb.n_rechecked, 2 * st[0].n_rechecked) << to_string(p);
    EXPECT_EQ(sb.n_rechecked_fp64, 2 * st[0].n_rechecked_fp64) << to_string(p);
  }
}

// ---- TileConfig::wgmma_sm90 (the Hopper kernel, flash_assign_sm90.cu) --------------------

namespace {

std::unique_ptr<core::Backend> gpu_tile(Precision p, bool certify, cuda::TileConfig t, int batch = 1) {
  cuda::CudaOptions o;
  o.precision = p;
  o.certify = certify;
  o.tile = t;
  o.batch = batch;
  return cuda::make_cuda_backend(o);
}

bool wgmma_device() {
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return false;
  return cuda::sm90_wgmma_supported(prop.major * 10 + prop.minor);
}

#define REQUIRE_WGMMA()                                                                     \
  do {                                                                                      \
    REQUIRE_GPU();                                                                          \
    if (!wgmma_device())                                                                    \
      GTEST_SKIP() << "tile config wgmma_sm90 needs a compute capability 9.0 GPU and an "   \
                      "sm_90a build";                                                       \
  } while (0)

struct AssignOut {
  std::vector<std::int32_t> lab;
  std::vector<float> dist;
  core::AssignStats st;
};

AssignOut run_assign(core::Backend& b, const MatrixView& x, const float* c, std::int64_t k_total,
                     Metric metric = Metric::l2) {
  b.attach(x, nullptr, metric);
  b.set_centroids(c, k_total);
  AssignOut o;
  o.st = b.assign();
  o.lab.resize(x.rows);
  o.dist.resize(x.rows);
  b.copy_labels(o.lab.data());
  b.copy_distances(o.dist.data());
  return o;
}

}  // namespace

// The heuristic picks the wgmma kernel only where it runs (runs without a GPU too).
TEST(TileHeuristic, WgmmaOnlyWhereSupported) {
  using cuda::TileConfig;
  EXPECT_EQ(cuda::choose_tile(1 << 20, 1024, 128, 132, 80), TileConfig::resident_128x128);
  EXPECT_EQ(cuda::choose_tile(1 << 20, 1024, 300, 132, 80), TileConfig::stream_128x256);
  EXPECT_EQ(cuda::choose_tile(1 << 20, 1024, 800, 132, 90), TileConfig::stream_128x256);  // padded d > 768
  EXPECT_FALSE(cuda::sm90_wgmma_supported(80));
  EXPECT_FALSE(cuda::sm90_wgmma_supported(100));
  const bool sm90 = cuda::sm90_wgmma_supported(90);
  const TileConfig want = sm90 ? TileConfig::wgmma_sm90 : TileConfig::resident_128x128;
  EXPECT_EQ(cuda::choose_tile(1 << 20, 1024, 128, 132, 90), want);
  EXPECT_EQ(cuda::choose_tile(1 << 20, 1024, 256, 132, 90), want);
  EXPECT_EQ(cuda::choose_tile(1 << 20, 0, 128, 132, 90), want);  // k unknown (attach)
  // Few centroids too: the rows tiles load under the MMA of the previous tile.
  EXPECT_EQ(cuda::choose_tile(1 << 20, 256, 128, 132, 90), want);
  EXPECT_EQ(cuda::choose_tile(1 << 20, 128, 64, 132, 90), want);
  // Large D up to 768 (padded): one config for every k (attach chooses with k unknown).
  const TileConfig want_large = sm90 ? TileConfig::wgmma_sm90 : TileConfig::stream_128x256;
  EXPECT_EQ(cuda::choose_tile(1 << 20, 0, 300, 132, 90), want_large);
  EXPECT_EQ(cuda::choose_tile(1 << 20, 256, 768, 132, 90), want_large);
  EXPECT_EQ(cuda::flash_tile_rows(TileConfig::wgmma_sm90, 128), 256);
  EXPECT_EQ(cuda::flash_tile_rows(TileConfig::wgmma_sm90, 768), 128);
  EXPECT_EQ(cuda::tile_bn(TileConfig::wgmma_sm90), 128);
  EXPECT_FALSE(cuda::tile_streams_x(TileConfig::wgmma_sm90));
  EXPECT_FALSE(cuda::tile_streams_x(TileConfig::resident_128x128));
  EXPECT_TRUE(cuda::tile_streams_x(TileConfig::stream_128x256));
}

/// One WgmmaTile case: operand precision, d, k, problems (equal-sized, one launch).
struct WgmmaCase {
  Precision prec;
  int d, k, batch;
};
std::ostream& operator<<(std::ostream& o, const WgmmaCase& c) {
  return o << to_string(c.prec) << "_d" << c.d << "_k" << c.k << "_B" << c.batch;
}

class WgmmaTile : public ::testing::TestWithParam<WgmmaCase> {};

namespace {


bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

// Random data, B equal problems in one launch: the wgmma kernel with its rows tile read by
// TMA (16-bit device input of the operand type) and loaded by the consumers (the same values
// as fp32, converted on load) must give the same bits; against the mma.sync kernel (same
// operands, fp32 accumulation in another order; resident for d <= 256, streamed above) and
// the fp64 reference, uncertified and certified.
TEST_P(WgmmaTile, MatchesResidentAndExactKernels) {
  REQUIRE_WGMMA();
  const WgmmaCase cs = GetParam();
  const Precision prec = cs.prec;
  const int d = cs.d, k = cs.k, B = cs.batch;
  // Not a multiple of the 256- or 128-row tile; smaller where the fp64 reference is costly.
  const std::int64_t n = d > 256 || B > 1 ? 5003 : 12005;
  std::vector<float> x = blobs(B * n, d, 40, 1.0f, 21 + d + k);
  void* dx = round_to_operand(x, prec);
  ASSERT_NE(dx, nullptr);
  const std::vector<float> c = first_rows_per_problem(x, B, n, d, k);
  std::vector<Ref> refs;
  for (int b = 0; b < B; ++b)
    refs.push_back(reference(std::vector<float>(x.begin() + b * n * d, x.begin() + (b + 1) * n * d), n, d,
                             std::vector<float>(c.begin() + std::size_t(b) * k * d, c.begin() + std::size_t(b + 1) * k * d), k));
  auto ref_of = [&](std::int64_t i) -> std::pair<const Ref&, std::int64_t> { return {refs[i / n], i % n}; };
  const MatrixView xv = MatrixView::of(x.data(), B * n, d);
  const MatrixView xv16 = MatrixView::raw(dx, prec == Precision::fp16 ? DType::f16 : DType::bf16, B * n, d, 0, Location::cuda, 0);
  const cuda::TileConfig other = d <= 256 ? cuda::TileConfig::resident_128x128 : cuda::TileConfig::stream_128x256;
  auto wg = gpu_tile(prec, false, cuda::TileConfig::wgmma_sm90, B);
  auto res = gpu_tile(prec, false, other, B);
  const AssignOut a = run_assign(*wg, xv, c.data(), std::int64_t(B) * k);    // rows loaded by the consumers
  const AssignOut t = run_assign(*wg, xv16, c.data(), std::int64_t(B) * k);  // rows by TMA (where aligned)
  const AssignOut r = run_assign(*res, xv, c.data(), std::int64_t(B) * k);
  EXPECT_EQ(a.lab, t.lab) << "TMA rows vs consumer-loaded rows";
  EXPECT_TRUE(same_bits(a.dist, t.dist)) << "TMA rows vs consumer-loaded rows: distances";
  std::int64_t diff_res = 0, diff_res_outside = 0;
  for (std::int64_t i = 0; i < B * n; ++i) {
    const auto [ref, ri] = ref_of(i);
    double xn = 0;
    for (int q = 0; q < d; ++q) xn += double(x[i * d + q]) * x[i * d + q];
    const double tol = 1e-2 * (1.0 + ref.best[ri] + xn);
    EXPECT_NEAR(a.dist[i], ref.best[ri], tol) << "row " << i;
    EXPECT_NEAR(a.dist[i], r.dist[i], tol) << "row " << i;
    if (a.lab[i] != r.lab[i]) {
      ++diff_res;
      // Only where the two fp32 accumulation orders can disagree: a near-tie.
      if (ref.second[ri] - ref.best[ri] > 1e-2 * std::max(1.0, ref.best[ri])) ++diff_res_outside;
    }
  }
  std::printf("wgmma %s d=%d k=%d B=%d: labels differ from mma.sync on %lld of %lld rows\n", to_string(prec), d, k, B,
              (long long)diff_res, (long long)(B * n));
  // Uncertified labels are those of the same operands and fp32 accumulation; against fp64
  // they may differ wherever the gap is under the operand rounding (bf16: 2^-8 of |x||c|,
  // well above 1e-2 of the distance on these blobs: seen on the H200, 19 rows at d=64), so
  // exactness is asserted for the certified launches below.
  EXPECT_EQ(diff_res_outside, 0);
  EXPECT_EQ(a.st.n_changed, B * n);
  EXPECT_EQ(t.st.n_changed, B * n);

  // Certified: the labels are the exact argmin, so both kernels agree with fp64.
  auto wgc = gpu_tile(prec, true, cuda::TileConfig::wgmma_sm90, B);
  auto resc = gpu_tile(prec, true, other, B);
  const AssignOut ac = run_assign(*wgc, xv16, c.data(), std::int64_t(B) * k);
  const AssignOut rc = run_assign(*resc, xv, c.data(), std::int64_t(B) * k);
  std::printf("  certified: re-checked %lld rows (%lld in fp64); mma.sync %lld (%lld)\n", (long long)ac.st.n_rechecked,
              (long long)ac.st.n_rechecked_fp64, (long long)rc.st.n_rechecked, (long long)rc.st.n_rechecked_fp64);
  for (int b = 0; b < B; ++b)
    EXPECT_EQ(mismatches_outside_ties(refs[b], std::vector<std::int32_t>(ac.lab.begin() + b * n, ac.lab.begin() + (b + 1) * n),
                                      1e-12),
              0)
        << "problem " << b;
  EXPECT_EQ(ac.lab, rc.lab);
  EXPECT_EQ(ac.st.n_changed, B * n);
  cudaFree(dx);
}

// d: multiples of 64 and not (100: rows not 16-byte aligned, the consumers load them even
// from 16-bit input; 72, 136: d % 8 == 0, TMA zero-fills the chunk past d); d > 256 up to
// kMaxWgmmaDp (one rows buffer, fewer stages, no ping-pong at some widths); k = 128, 256,
// 384 and not a multiple of 128; B > 1 equal problems.
INSTANTIATE_TEST_SUITE_P(
    All, WgmmaTile,
    ::testing::Values(WgmmaCase{Precision::fp16, 64, 300, 1}, WgmmaCase{Precision::bf16, 64, 300, 1},
                      WgmmaCase{Precision::fp16, 100, 300, 1}, WgmmaCase{Precision::bf16, 100, 300, 1},
                      WgmmaCase{Precision::fp16, 128, 300, 1}, WgmmaCase{Precision::bf16, 128, 300, 1},
                      WgmmaCase{Precision::fp16, 192, 300, 1}, WgmmaCase{Precision::bf16, 192, 300, 1},
                      WgmmaCase{Precision::fp16, 256, 300, 1}, WgmmaCase{Precision::bf16, 256, 300, 1},
                      WgmmaCase{Precision::fp16, 128, 128, 1}, WgmmaCase{Precision::fp16, 128, 256, 1},
                      WgmmaCase{Precision::bf16, 128, 384, 1}, WgmmaCase{Precision::fp16, 72, 256, 1},
                      WgmmaCase{Precision::bf16, 136, 200, 1}, WgmmaCase{Precision::fp16, 320, 300, 1},
                      WgmmaCase{Precision::fp16, 512, 256, 1}, WgmmaCase{Precision::fp16, 768, 300, 1},
                      WgmmaCase{Precision::bf16, 768, 128, 1}, WgmmaCase{Precision::fp16, 128, 130, 3},
                      WgmmaCase{Precision::bf16, 256, 200, 3}, WgmmaCase{Precision::fp16, 704, 130, 2}),
    [](const ::testing::TestParamInfo<WgmmaCase>& i) {
      std::ostringstream o;
      o << i.param;
      return o.str();
    });

// Near-tie rows (midpoints of two centroids): certified wgmma labels equal the fp64 argmin
// and the mma.sync kernel's certified labels; the certification cascade is exercised.
TEST(WgmmaTileSingle, CertifiedOnNearTies) {
  REQUIRE_WGMMA();
  const int d = 128, k = 64;
  const std::int64_t n = 8192;
  const gpu_test::NearTies data = gpu_test::near_tie_rows(n, d, k, 1e-4f, 3);
  const std::vector<float>& x = data.x;
  const std::vector<float>& c = data.c;
  const Ref ref = reference(x, n, d, c, k);
  const MatrixView xv = MatrixView::of(x.data(), n, d);
  for (Precision p : {Precision::fp16, Precision::bf16}) {
    auto wg = gpu_tile(p, true, cuda::TileConfig::wgmma_sm90);
    auto res = gpu_tile(p, true, cuda::TileConfig::resident_128x128);
    const AssignOut a = run_assign(*wg, xv, c.data(), k);
    const AssignOut r = run_assign(*res, xv, c.data(), k);
    EXPECT_EQ(mismatches_outside_ties(ref, a.lab, 0.0), 0) << to_string(p);
    EXPECT_GT(a.st.n_rechecked, 0) << to_string(p);
    EXPECT_EQ(a.lab, r.lab) << to_string(p);
    std::printf("%s near-ties, wgmma: re-checked %lld rows (%lld in fp64); mma.sync: %lld (%lld)\n", to_string(p),
                (long long)a.st.n_rechecked, (long long)a.st.n_rechecked_fp64, (long long)r.st.n_rechecked,
                (long long)r.st.n_rechecked_fp64);
  }
}

// fp16 data on the device, B = 3 problems with ragged tiles; fp16 operands (16-byte loads)
// and bf16 operands (converted while loading); certified (the default).
TEST(WgmmaTileSingle, DeviceHalfInputBatched) {
  REQUIRE_WGMMA();
  const int B = 3, d = 128, k = 130;
  const std::int64_t n = 5000;
  std::vector<float> x = blobs(B * n, d, 20, 1.0f, 17);
  void* dx = round_to_operand(x, Precision::fp16);  // the reference sees the data as given
  ASSERT_NE(dx, nullptr);
  const std::vector<float> c = first_rows_per_problem(x, B, n, d, k);
  const MatrixView xv = MatrixView::raw(dx, DType::f16, B * n, d, 0, Location::cuda, 0);
  for (Precision p : {Precision::fp16, Precision::bf16}) {
    auto wg = gpu_tile(p, true, cuda::TileConfig::wgmma_sm90, B);
    auto res = gpu_tile(p, true, cuda::TileConfig::resident_128x128, B);
    const AssignOut a = run_assign(*wg, xv, c.data(), std::int64_t(B) * k);
    const AssignOut r = run_assign(*res, xv, c.data(), std::int64_t(B) * k);
    EXPECT_EQ(a.lab, r.lab) << to_string(p);
    for (int b = 0; b < B; ++b) {
      std::vector<float> xb(x.begin() + b * n * d, x.begin() + (b + 1) * n * d);
      std::vector<float> cb(c.begin() + std::size_t(b) * k * d, c.begin() + std::size_t(b + 1) * k * d);
      const Ref ref = reference(xb, n, d, cb, k);
      std::vector<std::int32_t> lb(a.lab.begin() + b * n, a.lab.begin() + (b + 1) * n);
      EXPECT_EQ(mismatches_outside_ties(ref, lb, 1e-12), 0) << to_string(p) << " problem " << b;
    }
  }
  cudaFree(dx);
}

// ---- The candidate cascade (certify_candidates.hpp; wgmma, one problem) ---------------------

namespace {

std::unique_ptr<core::Backend> gpu_cascade(Precision p, cuda::CertifyCascade how,
                                           cuda::TileConfig tile = cuda::TileConfig::wgmma_sm90) {
  cuda::CudaOptions o;
  o.precision = p;
  o.cascade = how;
  o.tile = tile;
  return cuda::make_cuda_backend(o);
}

/// The candidate cascade against the full fp64 re-check of every flagged row (cascade fp64:
/// the reference the design must equal bitwise), the SIMT cascade (same labels) and itself
/// run to run (bitwise). Returns the candidate run.
/// Which rows overflow the candidate list depends on the listing order: with `overflows`,
/// their count (n_rechecked_fp64) may differ run to run; the results never do.
/// `tile`: level 1's tile config (every cascade of the comparison runs it).
AssignOut expect_candidates_equal_fp64(const MatrixView& xv, const std::vector<float>& c, int k, Precision p, Metric m,
                                       const std::string& what, bool overflows = false,
                                       cuda::TileConfig tile = cuda::TileConfig::wgmma_sm90) {
  SCOPED_TRACE(what);
  auto cand = gpu_cascade(p, cuda::CertifyCascade::candidates, tile);
  auto full = gpu_cascade(p, cuda::CertifyCascade::fp64, tile);
  auto simt = gpu_cascade(p, cuda::CertifyCascade::simt, tile);
  const AssignOut a = run_assign(*cand, xv, c.data(), k, m);
  const AssignOut f = run_assign(*full, xv, c.data(), k, m);
  const AssignOut s = run_assign(*simt, xv, c.data(), k, m);
  auto again = gpu_cascade(p, cuda::CertifyCascade::candidates, tile);
  const AssignOut a2 = run_assign(*again, xv, c.data(), k, m);
  std::printf("%s: %lld rows flagged, %lld candidate pairs, %lld rows re-checked against all centroids "
              "(simt cascade: %lld in fp64)\n",
              what.c_str(), (long long)a.st.n_rechecked, (long long)a.st.n_candidates, (long long)a.st.n_rechecked_fp64,
              (long long)s.st.n_rechecked_fp64);
  // Same level 1: the same rows flagged.
  EXPECT_EQ(a.st.n_rechecked, f.st.n_rechecked);
  EXPECT_GT(a.st.n_rechecked, 0) << "the data must exercise the cascade";
  // Every flagged row lists at least its best and (its gap being under 2E) its second best.
  EXPECT_GE(a.st.n_candidates, 2 * (a.st.n_rechecked - a.st.n_rechecked_fp64));
  EXPECT_EQ(a.lab, f.lab) << "labels differ from the full fp64 re-check";
  EXPECT_TRUE(same_bits(a.dist, f.dist)) << "distances differ from the full fp64 re-check";
  EXPECT_EQ(a.st.n_changed, f.st.n_changed);
  EXPECT_EQ(std::memcmp(&a.st.inertia, &f.st.inertia, sizeof(double)), 0) << a.st.inertia << " vs " << f.st.inertia;
  EXPECT_EQ(a.lab, s.lab) << "labels differ from the SIMT cascade";
  EXPECT_EQ(a.lab, a2.lab) << "run to run";
  EXPECT_TRUE(same_bits(a.dist, a2.dist)) << "run to run";
  EXPECT_EQ(a.st.n_candidates, a2.st.n_candidates);
  if (!overflows) EXPECT_EQ(a.st.n_rechecked_fp64, a2.st.n_rechecked_fp64);
  return a;
}

}  // namespace

// Near-tie rows (midpoints of two centroids), fp32 host input (rows converted by the
// consumers) and fp16 device input: certified labels = the exact fp64 argmin, and the
// candidate cascade gives the full fp64 re-check's labels and distance bits.
TEST(CandidateCascade, NearTiesEqualFullFp64Recheck) {
  REQUIRE_WGMMA();
  for (int d : {128, 100, 768}) {
    const int k = 64;
    const std::int64_t n = 8192;
    gpu_test::NearTies data = gpu_test::near_tie_rows(n, d, k, 1e-4f, 3 + d);
    const Ref ref = reference(data.x, n, d, data.c, k);
    for (Precision p : {Precision::fp16, Precision::bf16}) {
      const std::string what = std::string(to_string(p)) + " d=" + std::to_string(d);
      const AssignOut a = expect_candidates_equal_fp64(MatrixView::of(data.x.data(), n, d), data.c, k, p, Metric::l2, what);
      EXPECT_EQ(mismatches_outside_ties(ref, a.lab, 0.0), 0) << what;
      EXPECT_EQ(a.st.n_rechecked_fp64, 0) << what << ": the candidates fit the list";
    }
    // 16-bit device input of the operand type (level 1 by TMA, the candidate level gathers).
    const Fp16DeviceRows x16(data.x, n, d, data.c, k);
    ASSERT_NE(x16.dx, nullptr);
    const AssignOut a = expect_candidates_equal_fp64(x16.view, data.c, k, Precision::fp16, Metric::l2,
                                                     "fp16 device input d=" + std::to_string(d));
    EXPECT_EQ(mismatches_outside_ties(x16.ref, a.lab, 0.0), 0);
  }
}

// Cosine and inner product: the distances the fp64 level writes (cosine: 1 + s / |x|).
TEST(CandidateCascade, CosineAndInnerProductEqualFullFp64Recheck) {
  REQUIRE_WGMMA();
  const int d = 128, k = 300;
  const std::int64_t n = 20000;
  std::vector<float> x = blobs(n, d, 40, 1.0f, 29);
  std::vector<float> c(x.begin(), x.begin() + std::int64_t(k) * d);
  for (Metric m : {Metric::cosine, Metric::inner_product})
    for (Precision p : {Precision::fp16, Precision::bf16})
      expect_candidates_equal_fp64(MatrixView::of(x.data(), n, d), c, k, p, m,
                                   std::string(to_string(p)) + (m == Metric::cosine ? " cosine" : " inner product"));
}

// Duplicate centroids: every row ties exactly with the 16 copies of its nearest centroid,
// 8 in each of the two centroid tiles: 16 x 20000 pairs against a list of 2^18 (a power of
// two >= 8 per flagged row), so the first tile's pairs fit and part of the second's do not:
// rows overflow to the full fp64 re-check (never dropped) while others are settled by their
// candidates; still the full re-check's bits, ties to the lowest index.
TEST(CandidateCascade, DuplicateCentroidsOverflowToFullRecheck) {
  REQUIRE_WGMMA();
  const int d = 64, distinct = 16, copies = 16, k = distinct * copies;
  const std::int64_t n = 20000;
  std::vector<float> x = blobs(n, d, distinct, 1.0f, 31);
  std::vector<float> c(static_cast<std::size_t>(k) * d);
  for (int j = 0; j < k; ++j)  // copy q of centroid a at j = q * distinct + a
    std::copy(x.begin() + std::int64_t(j % distinct) * d, x.begin() + std::int64_t(j % distinct + 1) * d,
              c.begin() + std::int64_t(j) * d);
  const Ref ref = reference(x, n, d, c, k);
  for (Precision p : {Precision::fp16, Precision::bf16}) {
    const AssignOut a = expect_candidates_equal_fp64(MatrixView::of(x.data(), n, d), c, k, p, Metric::l2,
                                                     std::string(to_string(p)) + " duplicates", true);
    EXPECT_EQ(mismatches_outside_ties(ref, a.lab, 0.0), 0);
    EXPECT_EQ(a.st.n_rechecked, n);
    EXPECT_GT(a.st.n_rechecked_fp64, 0) << "the overflow path must be exercised";
    EXPECT_LT(a.st.n_rechecked_fp64, n) << "the listed rows must be settled by their candidates";
    for (std::int64_t i = 0; i < n; ++i) ASSERT_LT(a.lab[i], distinct) << "row " << i;
  }
}

namespace {

// Ragged batch (the batched backend: the flagged regions of the problems as problems of the
// candidate launch, in chunks of tiles): per problem, the labels and inertia bits of the
// batch's full fp64 re-check cascade and of the problem alone (single backend, candidates,
// tile config `alone_tile`: the one the batched backend's heuristic picks).
void expect_batched_candidates_equal_full_and_alone(int d, const std::vector<Precision>& precisions,
                                                    cuda::TileConfig alone_tile) {
  const std::vector<std::int64_t> ns = {3001, 700, 5000, 1, 2600};
  const std::vector<std::int64_t> ks = {64, 130, 17, 5, 256};
  std::vector<gpu_test::NearTies> data;
  for (std::size_t b = 0; b < ns.size(); ++b)
    data.push_back(gpu_test::near_tie_rows(ns[b], d, static_cast<int>(ks[b]), 1e-4f, 40 + b));
  std::vector<core::ProblemData> pd;
  std::vector<std::int64_t> which, k;
  std::vector<const float*> cs;
  for (std::size_t b = 0; b < ns.size(); ++b) {
    pd.push_back(core::ProblemData{MatrixView::of(data[b].x.data(), ns[b], d), nullptr});
    which.push_back(static_cast<std::int64_t>(b));
    k.push_back(ks[b]);
    cs.push_back(data[b].c.data());
  }
  for (Precision p : precisions) {
    SCOPED_TRACE(std::string(to_string(p)) + " d=" + std::to_string(d));
    struct Run {
      std::vector<core::AssignStats> st;
      std::vector<std::vector<std::int32_t>> lab;
    };
    auto batched = [&](cuda::CertifyCascade how) {
      cuda::CudaOptions o;
      o.precision = p;
      o.cascade = how;
      auto bb = cuda::make_cuda_batched_backend(o);
      bb->attach(pd, Metric::l2);
      bb->set_centroids(which, cs, k);
      Run r;
      bb->assign(which, false, r.st);
      for (std::size_t b = 0; b < ns.size(); ++b) {
        r.lab.emplace_back(ns[b]);
        bb->copy_labels(static_cast<std::int64_t>(b), r.lab.back().data());
      }
      return r;
    };
    const Run cand = batched(cuda::CertifyCascade::candidates);
    const Run full = batched(cuda::CertifyCascade::fp64);
    const Run again = batched(cuda::CertifyCascade::candidates);
    std::int64_t flagged = 0;
    for (std::size_t b = 0; b < ns.size(); ++b) {
      SCOPED_TRACE("problem " + std::to_string(b));
      flagged += cand.st[b].n_rechecked;
      EXPECT_EQ(cand.lab[b], full.lab[b]);
      EXPECT_EQ(std::memcmp(&cand.st[b].inertia, &full.st[b].inertia, sizeof(double)), 0)
          << cand.st[b].inertia << " vs " << full.st[b].inertia;
      EXPECT_EQ(cand.st[b].n_rechecked, full.st[b].n_rechecked);
      EXPECT_EQ(cand.st[b].n_changed, full.st[b].n_changed);
      EXPECT_EQ(cand.st[b].n_rechecked_fp64, 0);
      EXPECT_EQ(cand.lab[b], again.lab[b]);
      EXPECT_EQ(std::memcmp(&cand.st[b].inertia, &again.st[b].inertia, sizeof(double)), 0);
      // Alone: the single backend's candidate cascade on the same rows and centroids.
      auto alone = gpu_cascade(p, cuda::CertifyCascade::candidates, alone_tile);
      const AssignOut a = run_assign(*alone, pd[b].x, cs[b], ks[b], Metric::l2);
      EXPECT_EQ(a.lab, cand.lab[b]);
      EXPECT_EQ(std::memcmp(&a.st.inertia, &cand.st[b].inertia, sizeof(double)), 0)
          << a.st.inertia << " vs " << cand.st[b].inertia;
      EXPECT_EQ(a.st.n_rechecked, cand.st[b].n_rechecked);
    }
    std::printf("%s d=%d batched: %lld rows flagged, %lld candidate pairs\n", to_string(p), d, (long long)flagged,
                (long long)cand.st[0].n_candidates);
    EXPECT_GT(flagged, 0);
    EXPECT_GE(cand.st[0].n_candidates, 2 * flagged);
  }
}

}  // namespace

TEST(CandidateCascade, BatchedRaggedEqualsFullRecheckAndAlone) {
  REQUIRE_WGMMA();
  expect_batched_candidates_equal_full_and_alone(128, {Precision::fp16, Precision::bf16}, cuda::TileConfig::wgmma_sm90);
}

// ---- The candidate cascade after the mma.sync kernels (every other tile config, tf32) -------

namespace {

struct MmaSyncCase {
  cuda::TileConfig tile;
  Precision prec;
  std::string name;
};

/// Every mma.sync tile config with every tensor-core operand that takes d features.
std::vector<MmaSyncCase> mma_sync_cases(int d) {
  const int dp = (d + cuda::kChunkD - 1) / cuda::kChunkD * cuda::kChunkD;
  const std::pair<cuda::TileConfig, const char*> tiles[] = {{cuda::TileConfig::resident_128x128, "resident_128x128"},
                                                            {cuda::TileConfig::stream_128x256, "stream_128x256"},
                                                            {cuda::TileConfig::stream_128x128, "stream_128x128"}};
  const std::pair<Precision, cuda::Operand> ops[] = {
      {Precision::fp16, cuda::Operand::fp16}, {Precision::bf16, cuda::Operand::bf16}, {Precision::tf32, cuda::Operand::tf32}};
  std::vector<MmaSyncCase> r;
  for (const auto& t : tiles)
    for (const auto& o : ops)
      if (cuda::tile_supports(t.first, o.second, dp))
        r.push_back({t.first, o.first, std::string(t.second) + " " + to_string(o.first) + " d=" + std::to_string(d)});
  return r;
}

}  // namespace

// Which certified assigns take the candidate cascade (host logic, runs without a GPU): every
// tensor-core tile config and operand, never an fp32 level 1, only where asked (automatic or
// candidates), and not past the d the threshold's slack covers.
TEST(CandidateCascadeChoice, EveryTensorCoreConfigAndOperand) {
  using cuda::CertifyCascade;
  using cuda::Operand;
  using cuda::TileConfig;
  for (TileConfig t : {TileConfig::resident_128x128, TileConfig::stream_128x256, TileConfig::stream_128x128,
                       TileConfig::wgmma_sm90})
    for (Operand op : {Operand::fp16, Operand::bf16, Operand::tf32}) {
      EXPECT_TRUE(cuda::candidate_cascade(CertifyCascade::automatic, t, op, 1536));
      EXPECT_TRUE(cuda::candidate_cascade(CertifyCascade::candidates, t, op, 800));
      EXPECT_FALSE(cuda::candidate_cascade(CertifyCascade::simt, t, op, 800));
      EXPECT_FALSE(cuda::candidate_cascade(CertifyCascade::fp64, t, op, 800));
      EXPECT_FALSE(cuda::candidate_cascade(CertifyCascade::candidates, t, op, cuda::kMaxCandidateD + 1));
      EXPECT_FALSE(cuda::candidate_cascade(CertifyCascade::candidates, t, Operand::fp32, 800));
    }
}

// Near-tie rows in every mma.sync config and operand, D from 100 (rows not 16-byte aligned)
// to 1536 (split-D streamed tiles, the benchmark's D): level 2 is the same kernel in its
// candidate mode, so the candidate cascade gives the full fp64 re-check's labels and
// distance bits, the exact argmin outside ties, with no overflow. Then fp16 device input
// (rows read by cp.async, gathered through the flagged list).
TEST(CandidateCascadeMmaSync, NearTiesEqualFullFp64Recheck) {
  REQUIRE_GPU();
  for (int d : {100, 200, 800, 1536}) {
    const int k = 64;
    const std::int64_t n = d > 256 ? 4096 : 8192;  // the host's fp64 reference
    gpu_test::NearTies data = gpu_test::near_tie_rows(n, d, k, 1e-4f, 5 + d);
    const Ref ref = reference(data.x, n, d, data.c, k);
    for (const MmaSyncCase& cs : mma_sync_cases(d)) {
      const AssignOut a = expect_candidates_equal_fp64(MatrixView::of(data.x.data(), n, d), data.c, k, cs.prec,
                                                       Metric::l2, cs.name, false, cs.tile);
      EXPECT_EQ(mismatches_outside_ties(ref, a.lab, 0.0), 0) << cs.name;
      EXPECT_EQ(a.st.n_rechecked_fp64, 0) << cs.name << ": the candidates fit the list";
    }
    const Fp16DeviceRows x16(data.x, n, d, data.c, k);
    ASSERT_NE(x16.dx, nullptr);
    for (const MmaSyncCase& cs : mma_sync_cases(d)) {
      if (cs.prec != Precision::fp16) continue;
      const AssignOut a = expect_candidates_equal_fp64(x16.view, data.c, k, cs.prec, Metric::l2,
                                                       "fp16 device input " + cs.name, false, cs.tile);
      EXPECT_EQ(mismatches_outside_ties(x16.ref, a.lab, 0.0), 0) << cs.name;
    }
  }
}

// Cosine and inner product after the split-D kernels (their distances: the fp64 level's).
TEST(CandidateCascadeMmaSync, CosineAndInnerProductEqualFullFp64Recheck) {
  REQUIRE_GPU();
  const int d = 800, k = 300;
  const std::int64_t n = 10000;
  std::vector<float> x = blobs(n, d, 40, 1.0f, 33);
  std::vector<float> c(x.begin(), x.begin() + std::int64_t(k) * d);
  for (Metric m : {Metric::cosine, Metric::inner_product})
    for (const MmaSyncCase& cs : mma_sync_cases(d))
      expect_candidates_equal_fp64(MatrixView::of(x.data(), n, d), c, k, cs.prec, m,
                                   cs.name + (m == Metric::cosine ? " cosine" : " inner product"), false, cs.tile);
}

// Duplicate centroids (16 copies of 16) after the mma.sync kernels: 16 x 20000 pairs against
// a list of 2^18 (a power of two >= 8 per flagged row; 13 per row): with 128-wide centroid
// tiles (8 copies each) the first tile's pairs fit and part of the second's do not, with
// 256-wide tiles (all 16 copies in one) the warps that reserve last lose theirs: rows
// overflow to the full fp64 re-check while others are settled by their candidates; still
// the full re-check's bits, ties to the lowest index.
TEST(CandidateCascadeMmaSync, DuplicateCentroidsOverflowToFullRecheck) {
  REQUIRE_GPU();
  for (int d : {200, 800}) {
    const int distinct = 16, copies = 16, k = distinct * copies;
    const std::int64_t n = 20000;
    std::vector<float> x = blobs(n, d, distinct, 1.0f, 37 + d);
    std::vector<float> c(static_cast<std::size_t>(k) * d);
    for (int j = 0; j < k; ++j)  // copy q of centroid a at j = q * distinct + a
      std::copy(x.begin() + std::int64_t(j % distinct) * d, x.begin() + std::int64_t(j % distinct + 1) * d,
                c.begin() + std::int64_t(j) * d);
    const Ref ref = reference(x, n, d, c, k);
    for (const MmaSyncCase& cs : mma_sync_cases(d)) {
      const AssignOut a = expect_candidates_equal_fp64(MatrixView::of(x.data(), n, d), c, k, cs.prec, Metric::l2,
                                                       cs.name + " duplicates", true, cs.tile);
      EXPECT_EQ(mismatches_outside_ties(ref, a.lab, 0.0), 0) << cs.name;
      EXPECT_EQ(a.st.n_rechecked, n) << cs.name;
      EXPECT_GT(a.st.n_rechecked_fp64, 0) << cs.name << ": the overflow path must be exercised";
      EXPECT_LT(a.st.n_rechecked_fp64, n) << cs.name << ": the listed rows must be settled by their candidates";
      for (std::int64_t i = 0; i < n; ++i) ASSERT_LT(a.lab[i], distinct) << cs.name << " row " << i;
    }
  }
}

// The batched backend after the mma.sync kernels (D > 768: the split-D config its heuristic
// picks; tf32 at D = 100: the resident config): per problem, the batch's full re-check and
// the problem alone, bitwise.
TEST(CandidateCascadeMmaSync, BatchedRaggedEqualsFullRecheckAndAlone) {
  REQUIRE_GPU();
  expect_batched_candidates_equal_full_and_alone(800, {Precision::fp16, Precision::bf16, Precision::tf32},
                                                 cuda::TileConfig::automatic);
  expect_batched_candidates_equal_full_and_alone(100, {Precision::tf32}, cuda::TileConfig::automatic);
}

// The candidate cascade's workspace bounds (host arithmetic: runs without a GPU): a power of
// two of pairs, room for 8 per flagged row up to 2^21 pairs (32 MiB with their scores), the
// rows in chunks that keep that ratio, every flagged row in some chunk, and the chunk's
// full re-check list fitting the scores array.
TEST(CandidateCascadeSizes, BoundedAndCoverEveryRow) {
  for (const std::int64_t flagged : {std::int64_t(1), std::int64_t(7), std::int64_t(1000), std::int64_t(8193),
                                     std::int64_t(262144), std::int64_t(262145), std::int64_t(1) << 22,
                                     std::int64_t(50000000)}) {
    const cuda::CandidateSizes z = cuda::candidate_sizes(flagged);
    SCOPED_TRACE(flagged);
    EXPECT_EQ(z.capacity & (z.capacity - 1), 0) << "a power of two";
    EXPECT_LE(z.capacity, cuda::kMaxCandidatePairs);
    EXPECT_GE(z.capacity, std::min<std::int64_t>(8 * flagged, cuda::kMaxCandidatePairs));
    EXPECT_LE(z.capacity * 16, std::int64_t(32) << 20);
    EXPECT_GE(z.chunk_rows, 1);
    EXPECT_LE(z.chunk_rows, z.capacity);  // the re-check list reuses the scores
    EXPECT_LE(8 * z.chunk_rows, std::max<std::int64_t>(z.capacity, 8));
    EXPECT_GE(z.chunks * z.chunk_rows, flagged);
    EXPECT_LT((z.chunks - 1) * z.chunk_rows, flagged);
  }
  EXPECT_EQ(cuda::candidate_sizes(0).chunks, 0);
}
