// The CPU micro-kernels against a float64 brute force, for every SIMD level this CPU runs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <tuple>

#include "cpu/convert.hpp"
#include "cpu/kernels.hpp"
#include "cpu/packed_centroids.hpp"
#include "support/reference.hpp"

namespace flashkm {
namespace {

std::vector<const cpu::KernelTable*> available_tables() {
  std::vector<const cpu::KernelTable*> t{&cpu::kernels_generic()};
  if (cpu::cpu_has_avx2()) t.push_back(&cpu::kernels_avx2());
  if (cpu::cpu_has_avx512()) t.push_back(&cpu::kernels_avx512());
  return t;
}

struct Scored {
  std::vector<std::int32_t> index;
  std::vector<float> best, second;
};

// Run argmin2 over all rows in blocks of `block` rows, as the backend does.
Scored run_argmin2(const cpu::KernelTable& kt, const std::vector<float>& x, const std::vector<float>& c,
                   std::int64_t d, std::int64_t block = 64) {
  const std::int64_t n = static_cast<std::int64_t>(x.size()) / d, k = static_cast<std::int64_t>(c.size()) / d;
  cpu::PackedCentroids pc(c.data(), k, d, kt.nr, Metric::l2);
  Scored s;
  s.index.resize(n);
  s.best.resize(n);
  s.second.resize(n);
  std::vector<float> ws(static_cast<std::size_t>(kt.workspace_floats(block, d)));
  for (std::int64_t b = 0; b < n; b += block) {
    const std::int64_t rows = std::min(block, n - b);
    kt.argmin2(x.data() + b * d, rows, d, pc.view(), ws.data(), s.index.data() + b, s.best.data() + b,
               s.second.data() + b);
  }
  return s;
}

class KernelShapes : public ::testing::TestWithParam<std::tuple<std::int64_t, std::int64_t>> {};

TEST_P(KernelShapes, Argmin2MatchesFloat64OutsideNearTies) {
  const auto [d, k] = GetParam();
  const std::int64_t n = 203;  // not a multiple of any tile or block size
  const auto x = testing::uniform(n, d, 11 + d);
  const auto c = testing::uniform(k, d, 97 + k);
  const auto ref = testing::nearest_f64(x, c, d);
  for (const auto* kt : available_tables()) {
    SCOPED_TRACE(kt->name);
    const Scored s = run_argmin2(*kt, x, c, d);
    std::int64_t ties = 0;
    for (std::int64_t i = 0; i < n; ++i) {
      double nx = 0;
      for (std::int64_t j = 0; j < d; ++j) nx += double(x[i * d + j]) * x[i * d + j];
      const double tol = testing::tie_tolerance(x, c, d, i);
      // score = |c|^2 - 2 x.c = distance - |x|^2
      EXPECT_NEAR(double(s.best[i]) + nx, ref.best[i], tol) << "row " << i;
      if (k > 1) EXPECT_NEAR(double(s.second[i]) + nx, ref.second[i], tol) << "row " << i;
      else EXPECT_TRUE(std::isinf(s.second[i]));
      if (s.index[i] != ref.label[i]) {
        ++ties;
        EXPECT_LE(ref.second[i] - ref.best[i], 2 * tol) << "row " << i << " differs outside a near-tie";
      }
    }
    EXPECT_LE(ties, n / 50 + 1);
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, KernelShapes,
                         ::testing::Combine(::testing::Values(1, 3, 17, 128, 1000), ::testing::Values(1, 2, 7, 256)));

// The branch-free fp16 conversion against the format's definition, for all 65536 patterns:
// sign * mant * 2^-24 (subnormal), sign * (1024 + mant) * 2^(exp - 25), inf, NaN payloads.
TEST(Convert, HalfToFloatExactForEveryBitPattern) {
  for (std::uint32_t h = 0; h <= 0xFFFFu; ++h) {
    const std::uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu, sign = (h >> 15) & 1u;
    std::uint32_t want;
    if (exp == 0x1F) {
      want = (sign << 31) | 0x7F800000u | (mant << 13);
    } else {
      const double mag = exp == 0 ? std::ldexp(double(mant), -24) : std::ldexp(double(1024 + mant), int(exp) - 25);
      const float f = static_cast<float>(sign ? -mag : mag);
      std::memcpy(&want, &f, 4);
    }
    const float got_f = cpu::half_to_float(static_cast<std::uint16_t>(h));
    std::uint32_t got;
    std::memcpy(&got, &got_f, 4);
    ASSERT_EQ(got, want) << "half bits 0x" << std::hex << h;
  }
}

TEST(Kernels, TiesGoToTheLowestIndex) {
  const std::int64_t d = 4, k = 70;
  std::vector<float> c(static_cast<std::size_t>(k * d), 5.0f);  // all centroids equal
  const auto x = testing::uniform(37, d, 3);
  for (const auto* kt : available_tables()) {
    const Scored s = run_argmin2(*kt, x, c, d);
    for (auto idx : s.index) EXPECT_EQ(idx, 0) << kt->name;
    for (std::size_t i = 0; i < s.best.size(); ++i) EXPECT_EQ(s.best[i], s.second[i]) << kt->name;
  }
}

TEST(Kernels, FmaLevelsAgreeBitwise) {
  // Every dot product is one FMA chain in d order, so AVX2 and AVX-512 must agree exactly.
  if (!(cpu::cpu_has_avx2() && cpu::cpu_has_avx512())) GTEST_SKIP() << "needs AVX2 and AVX-512 on this CPU";
  const std::int64_t d = 77, k = 300;
  const auto x = testing::uniform(500, d, 5), c = testing::uniform(k, d, 6);
  const Scored a = run_argmin2(cpu::kernels_avx2(), x, c, d), b = run_argmin2(cpu::kernels_avx512(), x, c, d);
  EXPECT_EQ(a.index, b.index);
  EXPECT_EQ(a.best, b.best);
  EXPECT_EQ(a.second, b.second);
}

TEST(Kernels, Argmin2RowsEqualsArgmin2OfTheGatheredRows) {
  // The backend's pruned blocks: argmin2_rows reads the rows in place through an index list.
  const std::int64_t d = 37, k = 70, n = 150;
  const auto x = testing::uniform(n, d, 8), c = testing::uniform(k, d, 9);
  std::vector<std::int64_t> pick;
  for (std::int64_t i = 0; i < n; i += 1 + i % 3) pick.push_back(i);
  const auto m = static_cast<std::int64_t>(pick.size());
  std::vector<float> gathered(static_cast<std::size_t>(m * d));
  for (std::int64_t a = 0; a < m; ++a) std::copy_n(x.begin() + pick[a] * d, d, gathered.begin() + a * d);
  for (const auto* kt : available_tables()) {
    cpu::PackedCentroids pc(c.data(), k, d, kt->nr, Metric::l2);
    std::vector<float> ws(static_cast<std::size_t>(kt->workspace_floats(m, d)));
    std::vector<std::int32_t> i1(m), i2(m);
    std::vector<float> b1(m), b2(m), s1(m), s2(m);
    kt->argmin2(gathered.data(), m, d, pc.view(), ws.data(), i1.data(), b1.data(), s1.data());
    kt->argmin2_rows(x.data(), pick.data(), m, d, pc.view(), ws.data(), i2.data(), b2.data(), s2.data());
    EXPECT_EQ(i1, i2) << kt->name;
    EXPECT_EQ(b1, b2) << kt->name;
    EXPECT_EQ(s1, s2) << kt->name;
  }
}

TEST(Kernels, ScoresMatchArgmin) {
  const std::int64_t d = 19, k = 45, n = 50;
  const auto x = testing::uniform(n, d, 8), c = testing::uniform(k, d, 9);
  for (const auto* kt : available_tables()) {
    const Scored s = run_argmin2(*kt, x, c, d, 1024);
    cpu::PackedCentroids pc(c.data(), k, d, kt->nr, Metric::l2);
    std::vector<float> ws(static_cast<std::size_t>(kt->workspace_floats(n, d)));
    std::vector<float> out(static_cast<std::size_t>(n * k), -1.0f);
    kt->scores(x.data(), n, d, pc.view(), 0, pc.panels(), out.data(), k, ws.data());
    for (std::int64_t i = 0; i < n; ++i) {
      std::int64_t arg = 0;
      for (std::int64_t j = 1; j < k; ++j)
        if (out[i * k + j] < out[i * k + arg]) arg = j;
      EXPECT_EQ(arg, s.index[i]) << kt->name;
      EXPECT_EQ(out[i * k + arg], s.best[i]) << kt->name;
    }
  }
}

class TrialShapes : public ::testing::TestWithParam<std::int64_t> {};

TEST_P(TrialShapes, TrialScoresMatchFloat64) {
  const std::int64_t d = GetParam(), n = 37;
  const auto x = testing::uniform(n, d, 60 + d);
  const auto c = testing::uniform(cpu::kTrialLanes, d, 61 + d);
  std::vector<float> bias(cpu::kTrialLanes);
  for (int j = 0; j < cpu::kTrialLanes; ++j) {
    double b = 0;
    for (std::int64_t t = 0; t < d; ++t) b += double(c[j * d + t]) * c[j * d + t];
    bias[j] = static_cast<float>(b);
  }
  std::vector<std::vector<float>> results;
  for (const auto* kt : available_tables()) {
    std::vector<float> out(static_cast<std::size_t>(n * cpu::kTrialLanes), -1.0f);
    kt->trial_scores(x.data(), n, d, c.data(), d, bias.data(), -2.0f, out.data(), cpu::kTrialLanes);
    for (std::int64_t i = 0; i < n; ++i)
      for (int j = 0; j < cpu::kTrialLanes; ++j) {
        double dot = 0;
        for (std::int64_t t = 0; t < d; ++t) dot += double(x[i * d + t]) * c[j * d + t];
        EXPECT_NEAR(out[i * cpu::kTrialLanes + j], bias[j] - 2 * dot, 1e-5 * (bias[j] + d)) << kt->name;
      }
    if (std::string(kt->name) != "generic") results.push_back(out);
  }
  // The FMA levels share partial sums and reduction order: bitwise equal.
  for (std::size_t t = 1; t < results.size(); ++t) EXPECT_EQ(results[t], results[0]);
}

INSTANTIATE_TEST_SUITE_P(Dims, TrialShapes, ::testing::Values(1, 7, 8, 17, 128, 1000));

}  // namespace
}  // namespace flashkm
