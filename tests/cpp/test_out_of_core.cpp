// Out of core on the CPU: every dtype is converted block by block inside the passes (never
// an N x D copy), with the results of fp32 data converted upfront; a mapped file over the
// memory budget is streamed, its passed pages dropped, with the same results.
#include <gtest/gtest.h>
#include <malloc.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <new>
#include <sstream>
#include <string>
#include <vector>

#include "cpu/convert.hpp"
#include "flashkm/flashkm.hpp"
#include "io/npy.hpp"
#include "support/io_fixtures.hpp"
#include "support/reference.hpp"

// ---- heap accounting: this test executable replaces the global allocation functions -------
namespace {
std::atomic<std::int64_t> g_live{0}, g_peak{0};
void* counted_alloc(std::size_t n) {
  void* p = std::malloc(n == 0 ? 1 : n);
  if (!p) throw std::bad_alloc();
  const std::int64_t live = g_live.fetch_add(static_cast<std::int64_t>(malloc_usable_size(p))) +
                            static_cast<std::int64_t>(malloc_usable_size(p));
  std::int64_t peak = g_peak.load();
  while (live > peak && !g_peak.compare_exchange_weak(peak, live)) {
  }
  return p;
}
void counted_free(void* p) noexcept {
  if (!p) return;
  g_live.fetch_sub(static_cast<std::int64_t>(malloc_usable_size(p)));
  std::free(p);
}
}  // namespace
void* operator new(std::size_t n) { return counted_alloc(n); }
void* operator new[](std::size_t n) { return counted_alloc(n); }
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_free(p); }

namespace flashkm {
namespace {

/// Peak growth of live heap bytes while fn runs.
template <class Fn>
std::int64_t peak_heap_growth(Fn&& fn) {
  const std::int64_t base = g_live.load();
  g_peak.store(base);
  fn();
  return g_peak.load() - base;
}

/// IEEE half bits of a float that is exactly a normal half (or zero).
std::uint16_t exact_half(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, 4);
  const std::uint16_t sign = static_cast<std::uint16_t>((b >> 16) & 0x8000u);
  if ((b & 0x7FFFFFFFu) == 0) return sign;
  const int exp = static_cast<int>((b >> 23) & 0xFF) - 127 + 15;
  EXPECT_TRUE(exp >= 1 && exp <= 30 && (b & 0x1FFFu) == 0) << f << " is not a normal half";
  return static_cast<std::uint16_t>(sign | (exp << 10) | ((b >> 13) & 0x3FFu));
}

/// Blobs rounded to multiples of 1/64 in (-32, 32): exactly representable in fp16.
std::vector<float> half_exact_blobs(std::int64_t n, std::int64_t d, std::uint64_t seed) {
  auto x = testing::blobs(n, d, 12, 8.0, 1.5, seed);
  for (auto& v : x) v = std::clamp(std::round(v * 64.0f) / 64.0f, -31.0f, 31.0f);
  return x;
}

struct Result {
  Model model;
  std::vector<std::int32_t> labels, predicted;
  std::vector<float> distances;
};

Result fit_and_predict(const MatrixView& x, Params p) {
  Result r;
  r.labels.resize(static_cast<std::size_t>(x.rows));
  r.predicted.resize(static_cast<std::size_t>(x.rows));
  r.distances.resize(static_cast<std::size_t>(x.rows));
  FitArgs args;
  args.labels = r.labels.data();
  r.model = fit(x, p, args);
  PredictOptions o;
  o.n_threads = p.n_threads;
  o.max_memory = p.max_memory;
  predict(r.model, x, r.predicted.data(), r.distances.data(), o);
  return r;
}

void expect_bitwise_equal(const Result& a, const Result& b) {
  ASSERT_EQ(a.model.centroids.size(), b.model.centroids.size());
  EXPECT_EQ(std::memcmp(a.model.centroids.data(), b.model.centroids.data(), a.model.centroids.size() * 4), 0);
  EXPECT_EQ(std::memcmp(&a.model.inertia, &b.model.inertia, 8), 0) << a.model.inertia << " vs " << b.model.inertia;
  EXPECT_EQ(a.model.n_iter, b.model.n_iter);
  EXPECT_EQ(a.model.cluster_weight, b.model.cluster_weight);
  ASSERT_EQ(a.model.history.size(), b.model.history.size());
  for (std::size_t i = 0; i < a.model.history.size(); ++i) {
    EXPECT_EQ(a.model.history[i].inertia, b.model.history[i].inertia);
    EXPECT_EQ(a.model.history[i].shift, b.model.history[i].shift);
  }
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(a.predicted, b.predicted);
  EXPECT_EQ(std::memcmp(a.distances.data(), b.distances.data(), a.distances.size() * 4), 0);
}

Params params(Metric metric) {
  Params p;
  p.n_clusters = 10;
  p.max_iter = 8;
  p.seed = 3;
  p.n_threads = 2;
  p.metric = metric;
  return p;
}

class Dtypes : public ::testing::TestWithParam<Metric> {};

TEST_P(Dtypes, Fp16AndFp64GiveTheResultsOfFp32ConvertedUpfront) {
  const std::int64_t n = 7000, d = 19;
  const auto x32 = half_exact_blobs(n, d, 21);
  std::vector<std::uint16_t> x16(x32.size());
  std::vector<double> x64(x32.begin(), x32.end());
  for (std::size_t t = 0; t < x32.size(); ++t) x16[t] = exact_half(x32[t]);
  const Params p = params(GetParam());
  const Result ref = fit_and_predict(MatrixView::of(x32.data(), n, d), p);
  {
    SCOPED_TRACE("float16");
    expect_bitwise_equal(ref, fit_and_predict(MatrixView::raw(x16.data(), DType::f16, n, d), p));
  }
  {
    SCOPED_TRACE("float64");
    expect_bitwise_equal(ref, fit_and_predict(MatrixView::of(x64.data(), n, d), p));
  }
}

INSTANTIATE_TEST_SUITE_P(Metrics, Dtypes, ::testing::Values(Metric::l2, Metric::cosine, Metric::inner_product));

// The conversion buffers are per block: the heap never holds anything of size N x D. With
// D = 256 an fp32 copy would be 1024 bytes per row against ~50 bytes per row of state.
TEST(OutOfCore, NoNxDAllocationForAnyDtype) {
  const std::int64_t n = 40000, d = 256;
  const auto x32 = half_exact_blobs(n, d, 5);
  std::vector<std::uint16_t> x16(x32.size());
  for (std::size_t t = 0; t < x32.size(); ++t) x16[t] = exact_half(x32[t]);
  std::vector<double> x64(x32.begin(), x32.end());
  const std::int64_t copy_bytes = n * d * 4;
  // Per-row state (24 B), the k-means++ trial distances (4 * (2 + ln 10) B), labels and
  // distances out (12 B), plus 4 MiB for per-thread blocks and O(K x D) tables; and for l2
  // the k-means++ trial's int8 sketch of X (D + 12 B a row, a quarter of an fp32 copy; see
  // CpuBackend::mindist_trial), dropped before Lloyd starts.
  const std::int64_t allowed = n * (24 + 16 + 12) + n * (d + 12) + (std::int64_t{4} << 20);
  ASSERT_LT(allowed, copy_bytes / 2);
  for (const auto& [name, view] :
       {std::pair{"float16", MatrixView::raw(x16.data(), DType::f16, n, d)},
        std::pair{"float64", MatrixView::of(x64.data(), n, d)}, std::pair{"float32", MatrixView::of(x32.data(), n, d)}}) {
    SCOPED_TRACE(name);
    const std::int64_t growth = peak_heap_growth([&] { fit_and_predict(view, params(Metric::l2)); });
    EXPECT_LT(growth, allowed) << "peak heap growth " << growth << " bytes; an N x D fp32 copy is " << copy_bytes;
    EXPECT_GT(growth, n * 12);  // the accounting sees the outputs at least
  }
}

/// Resident bytes of the mapping that contains `address` (/proc/self/smaps "Rss").
std::int64_t mapping_rss(const void* address) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  const auto a = reinterpret_cast<std::uintptr_t>(address);
  bool inside = false;
  while (std::getline(smaps, line)) {
    unsigned long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(':') > line.find('-')) {
      inside = lo <= a && a < hi;
      continue;
    }
    if (inside && line.rfind("Rss:", 0) == 0) return std::stoll(line.substr(4)) * 1024;
  }
  return -1;
}

// A mapped .npy over the budget streams: same bits as in memory, and its pages are dropped
// as the passes finish with them (without a budget, the whole file stays mapped).
TEST(OutOfCore, MappedFileOverBudgetStreamsWithTheSameResults) {
  const std::int64_t n = 100000, d = 64;
  const auto x32 = half_exact_blobs(n, d, 9);
  std::vector<std::uint16_t> x16(x32.size());
  for (std::size_t t = 0; t < x32.size(); ++t) x16[t] = exact_half(x32[t]);
  test::TempDir dir;
  const std::string path = dir.file("x16.npy");
  {
    std::ostringstream dict;
    dict << "{'descr': '<f2', 'fortran_order': False, 'shape': (" << n << ", " << d << "), }";
    test::write_bytes(path, test::make_npy(dict.str(), x16.data(), x16.size() * 2));
  }
  const std::int64_t data_bytes = n * d * 2;
  for (const Metric metric : {Metric::l2, Metric::cosine}) {
    SCOPED_TRACE(to_string(metric));
    Params p = params(metric);
    const Result ref = fit_and_predict(MatrixView::of(x32.data(), n, d), p);
    {
      const io::LoadedMatrix m = io::load_npy(path);
      ASSERT_TRUE(m.view.mapped_file);
      expect_bitwise_equal(ref, fit_and_predict(m.view, p));  // default budget: fits, kept
      EXPECT_GT(mapping_rss(m.view.data), data_bytes * 9 / 10);
    }
    const io::LoadedMatrix m = io::load_npy(path);
    p.max_memory = n * 24 + (std::int64_t{7} << 20);  // leaves 7 MiB for the 12.8 MB file: streamed
    expect_bitwise_equal(ref, fit_and_predict(m.view, p));
    // The last pass dropped every window it finished: at most boundary pages remain.
    EXPECT_LT(mapping_rss(m.view.data), data_bytes / 8) << "file " << data_bytes << " bytes";
  }
}

// An interrupted out-of-core fit resumes from its checkpoint (issue 6, faults): a mapped file
// over the budget, stopped after iteration 3, resumed, gives the uninterrupted streamed fit.
// (l2: the resumed run starts with fresh Hamerly bounds, so the per-iteration inertia after
// the resume point may differ in its last bits; docs/ARCHITECTURE.md. The rest is bitwise.)
TEST(OutOfCore, InterruptedStreamedFitResumesFromItsCheckpoint) {
  const std::int64_t n = 150000, d = 32;
  const auto x = testing::uniform(n, d, 21);  // labels keep changing: all 8 iterations run
  test::TempDir dir;
  const std::string path = dir.file("x.npy");
  {
    std::ostringstream dict;
    dict << "{'descr': '<f4', 'fortran_order': False, 'shape': (" << n << ", " << d << "), }";
    test::write_bytes(path, test::make_npy(dict.str(), x.data(), x.size() * 4));
  }
  for (const Metric metric : {Metric::l2, Metric::cosine}) {
    SCOPED_TRACE(to_string(metric));
    Params p = params(metric);
    p.tol = 0;
    p.max_memory = n * 24 + (std::int64_t{7} << 20);  // 7 MiB of windows for a 19.2 MB file: streamed
    const io::LoadedMatrix m = io::load_npy(path);
    ASSERT_TRUE(m.view.mapped_file);
    const Result straight = fit_and_predict(m.view, p);
    ASSERT_GE(straight.model.n_iter, 5);
    p.checkpoint_path = dir.file(std::string("fit_") + to_string(metric) + ".ckpt");
    Params stop = p;
    stop.progress = [](int, const IterationInfo& info) { return info.iteration < 3; };
    try {
      fit_and_predict(m.view, stop);
      FAIL() << "expected an interruption after iteration 3";
    } catch (const Error& e) {
      ASSERT_EQ(e.kind(), ErrorKind::interrupted) << e.what();
    }
    ASSERT_TRUE(test::file_exists(p.checkpoint_path));
    p.resume = true;
    int first_reported = 0;
    p.progress = [&](int, const IterationInfo& info) {
      if (first_reported == 0) first_reported = info.iteration;
      return true;
    };
    const Result resumed = fit_and_predict(m.view, p);
    EXPECT_EQ(first_reported, 4) << "resumed after the last completed iteration, not from the start";
    EXPECT_EQ(std::memcmp(resumed.model.centroids.data(), straight.model.centroids.data(),
                          straight.model.centroids.size() * 4), 0);
    EXPECT_EQ(std::memcmp(&resumed.model.inertia, &straight.model.inertia, 8), 0);
    EXPECT_EQ(resumed.model.n_iter, straight.model.n_iter);
    EXPECT_EQ(resumed.labels, straight.labels);
    EXPECT_EQ(resumed.predicted, straight.predicted);
    ASSERT_EQ(resumed.model.history.size(), straight.model.history.size());
    for (std::size_t i = 0; i < straight.model.history.size(); ++i) {
      EXPECT_EQ(resumed.model.history[i].shift, straight.model.history[i].shift) << i;
      if (metric != Metric::l2) EXPECT_EQ(resumed.model.history[i].inertia, straight.model.history[i].inertia) << i;
    }
  }
}

TEST(OutOfCore, BudgetBelowThePerRowStateIsAnError) {
  const std::int64_t n = 50000, d = 4;
  const auto x = testing::uniform(n, d, 1);
  Params p = params(Metric::l2);
  p.max_memory = n * 8;
  try {
    fit(MatrixView::of(x.data(), n, d), p);
    FAIL() << "expected out_of_memory";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::out_of_memory);
    EXPECT_NE(std::string(e.what()).find("per-row state"), std::string::npos) << e.what();
  }
  p.max_memory = -1;
  EXPECT_THROW(validate(p), Error);
}

}  // namespace
}  // namespace flashkm
