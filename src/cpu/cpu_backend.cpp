// The CPU backend: OpenMP over blocks of rows, SIMD kernels from the run-time table.
//
// Determinism: per-row results depend only on the row (the kernels compute each dot
// product as one FMA chain in d order). Reductions over rows are fp64 sums over fixed
// chunks of kReductionChunk rows, combined in chunk order; per-cluster sums add each
// cluster's rows in row order (see accumulate()). Nothing depends on the number
// of threads or on scheduling, so results are bitwise identical for any n_threads.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "core/backend.hpp"
#include "core/random.hpp"
#include "cpu/convert.hpp"
#include "cpu/kernels.hpp"
#include "cpu/packed_centroids.hpp"
#include "cpu/stream_release.hpp"
#include "flashkm/error.hpp"

namespace flashkm::core {
namespace {

using cpu::KernelTable;
using cpu::PackedCentroids;

constexpr std::int64_t kChunk = kReductionChunk;
// Rows whose fp64 distances from differences are summed side by side (see assign()).
constexpr int kKeptGroup = 4;
// Relative rounding of one fp32 operation; the expanded form's error is below
// (d + 2) * this * (|x|^2 + |c|^2).
constexpr double kExpandedFormError = 0x1p-24;
// Fused update (assign() adds rows into per-stripe sums): at most this much memory for the
// tables, and enough stripes to keep every thread busy (more stripes, finer balance).
constexpr std::int64_t kStripeSumsBytes = std::int64_t{64} << 20;
constexpr std::int64_t kMaxStripes = 64;
constexpr std::int64_t kMinStripes = 16;
// Per-row state kept for the whole fit: |x|, label, best, upper and lower bound, mind. (The
// k-means++ trial adds 4 * (2 + ln K) bytes per row while it runs, and for l2 its sketch
// d32 + 13 bytes per row (d32: D rounded up to 32), dropped when Lloyd starts.)
constexpr std::int64_t kStateBytesPerRow = 24;
// k-means++: trials that read X directly after one where the sketch settled < half the rows.
constexpr std::int64_t kSketchPause = 8;
// k-means++ trials of at most this many candidates keep a chunk's potentials in registers.
constexpr int kPotLanes = 8;

/// The k-means++ trial's 7-bit sketch of X (l2; see mindist_trial). Row x: a scale
/// s = max|x_t| / 63, integer codes k_t = round(x_t / s) in [-63, 63], the sketch row
/// q = s k (real numbers: s k_t is exact in fp64), stored as unsigned codes k_t + 64 (d
/// rounded up to d32, a multiple of 32, padding code 64: k = 0); |q|^2 = s^2 sum k_t^2
/// (rounded once to fp32); resid >= |x - q| (fp64, widened, rounded up). A candidate gets
/// the same with 8 bits (|k| <= 127, see quantize()). The sketch distance |q - p|^2 then
/// comes from an exact integer dot product and a few fp32 roundings (TrialSketchLower).
/// d32 + 12 bytes a row against 4 d for fp32 X; built in one pass at the first trial that
/// uses it, dropped when Lloyd starts (set_centroids).
struct KppSketch {
  static constexpr std::int64_t kBytesPerRow = 12;  // + d32
  static constexpr std::int32_t kOffset = 64;       // stored code = k + 64 in [1, 127]
  std::int64_t d32 = 0;
  std::vector<std::uint8_t> codes;          // [N][d32]
  std::vector<float> scale, norm2, resid;   // [N] each

  static std::int64_t padded(std::int64_t d) { return (d + 31) / 32 * 32; }
  bool empty() const { return scale.empty(); }
  void resize(std::int64_t n, std::int64_t d) {
    d32 = padded(d);
    codes.assign(static_cast<std::size_t>(n * d32), static_cast<std::uint8_t>(kOffset));
    scale.resize(static_cast<std::size_t>(n));
    norm2.resize(static_cast<std::size_t>(n));
    resid.resize(static_cast<std::size_t>(n));
  }

  /// Codes of x [d] with |k| <= levels into k_out (with `offset` added), the scale, sum k^2,
  /// sum k and resid >= |x - s k|; a non-finite result (values near FLT_MAX) gives resid = inf.
  template <class Code>
  static void quantize(const float* x, std::int64_t d, int levels, std::int32_t offset, Code* k_out, float* scale,
                       double* sum_k2, std::int64_t* sum_k, float* resid) {
    float maxabs = 0;
    for (std::int64_t t = 0; t < d; ++t) maxabs = std::max(maxabs, std::fabs(x[t]));
    const float s = static_cast<float>(double(maxabs) / levels);
    double resid2 = 0, k2 = 0;
    std::int64_t k1 = 0;
    for (std::int64_t t = 0; t < d; ++t) {
      const float lim = static_cast<float>(levels);
      const auto k = static_cast<std::int32_t>(s > 0 ? std::nearbyint(std::clamp(x[t] / s, -lim, lim)) : 0.0f);
      k_out[t] = static_cast<Code>(k + offset);
      const double diff = double(x[t]) - double(s) * k;  // s k exact in fp64 (24 + 7 bits)
      resid2 += diff * diff;
      k2 += double(k) * k;
      k1 += k;
    }
    // (d + 4) 2^-52 covers the fp64 sum's roundings; then rounded up to fp32.
    const double r = std::sqrt(resid2) * (1.0 + double(d + 4) * 0x1p-52);
    float up = static_cast<float>(r);
    if (double(up) < r) up = std::nextafter(up, std::numeric_limits<float>::infinity());
    const bool finite = std::isfinite(up) && std::isfinite(double(s) * double(s) * k2) &&
                        double(s) * double(s) * k2 < 0x1p100;
    *scale = s;
    *sum_k2 = k2;
    *sum_k = k1;
    *resid = finite ? up : std::numeric_limits<float>::infinity();
  }

  void encode(std::int64_t i, const float* x, std::int64_t d) {
    double k2 = 0;
    std::int64_t k1 = 0;
    quantize(x, d, 63, kOffset, codes.data() + i * d32, &scale[i], &k2, &k1, &resid[i]);
    norm2[i] = static_cast<float>(double(scale[i]) * double(scale[i]) * k2);
  }
};

class CpuBackend final : public Backend {
 public:
  CpuBackend(int n_threads, bool use_bounds)
      : kernels_(cpu::select_kernels()),
        threads_(n_threads > 0 ? n_threads : omp_get_max_threads()),
        use_bounds_(use_bounds) {}

  const char* name() const override { return "cpu"; }
  std::int64_t sketch_settled_rows() const { return sketch_settled_; }
  BoundsKeptRows bounds_kept_rows() const { return BoundsKeptRows{kept_plain_.load(), kept_drifted_.load()}; }
  std::int64_t rows() const override { return n_; }
  std::int64_t cols() const override { return d_; }
  void set_memory_budget(std::int64_t bytes) override { budget_ = bytes; }

  void attach(const MatrixView& x, const float* weights, Metric metric) override {
    FLASHKM_CHECK(x.where == Location::host, invalid_argument,
                  "the cpu device needs the data in host memory (got a CUDA pointer)");
    x_ = x;
    n_ = x.rows;
    d_ = x.cols;
    weights_ = weights;
    metric_ = metric;
    // Block rows so that a packed block (block x d floats) stays in L2 (~128 KiB).
    block_rows_ = std::clamp<std::int64_t>((128 * 1024 / 4) / std::max<std::int64_t>(d_, 1), kernels_.mr, 1024);
    block_rows_ = block_rows_ / kernels_.mr * kernels_.mr;
    // Out of core: a mapped file larger than the budget is streamed (stream_release.hpp).
    stream_ = cpu::plan_stream(x, budget_, kStateBytesPerRow * n_, threads_);
    cpu::advise_sequential(x_, stream_);

    row_norm_.assign(static_cast<std::size_t>(n_), 0.0f);
    labels_.assign(static_cast<std::size_t>(n_), -1);
    best_.assign(static_cast<std::size_t>(n_), 0.0f);
    upper_.assign(static_cast<std::size_t>(n_), 0.0f);
    lower_.assign(static_cast<std::size_t>(n_), 0.0f);
    bounds_valid_ = bounds_usable_ = false;
    drifted_.clear();
    kept_plain_ = kept_drifted_ = 0;
    sketch_ = KppSketch{};
    sketch_skip_ = sketch_settled_ = 0;

    // One pass: first non-finite value, first bad weight, first zero row (cosine), norms.
    const std::int64_t n_chunks = chunks();
    std::vector<std::int64_t> bad_value(n_chunks, -1), bad_weight(n_chunks, -1), zero_row(n_chunks, -1);
    cpu::PassRelease release(x_, stream_);
#pragma omp parallel num_threads(threads_) if (n_chunks > 1)
    {
      std::vector<double> rows(static_cast<std::size_t>(kKeptGroup * d_));
#pragma omp for schedule(dynamic, 1)
      for (std::int64_t c = 0; c < n_chunks; ++c) {
        const std::int64_t end = std::min(n_, (c + 1) * kChunk);
        double sums[kKeptGroup];
        for (std::int64_t i = c * kChunk; i < end; ++i) {
          // |x|^2 of kKeptGroup rows side by side (one chain each, in j order: the same bits
          // as one row at a time, without waiting on the add's latency at every element)
          const std::int64_t g = (i - c * kChunk) % kKeptGroup;
          if (g == 0) {
            const std::int64_t m = std::min<std::int64_t>(kKeptGroup, end - i);
            for (std::int64_t q = 0; q < m; ++q) cpu::load_row(x_, i + q, rows.data() + q * d_);
            if (m == kKeptGroup) {
              double a[kKeptGroup] = {};
              for (std::int64_t j = 0; j < d_; ++j)
                for (int q = 0; q < kKeptGroup; ++q) a[q] += rows[q * d_ + j] * rows[q * d_ + j];
              for (int q = 0; q < kKeptGroup; ++q) sums[q] = a[q];
            } else {
              for (std::int64_t q = 0; q < m; ++q) {
                double a = 0;
                for (std::int64_t j = 0; j < d_; ++j) a += rows[q * d_ + j] * rows[q * d_ + j];
                sums[q] = a;
              }
            }
          }
          const double s = sums[g];
          if (!std::isfinite(s)) {  // a NaN or Inf element, or an overflow of |x|^2
            if (bad_value[c] < 0) bad_value[c] = i;
            continue;
          }
          if (weights_ && !(weights_[i] >= 0 && std::isfinite(weights_[i])) && bad_weight[c] < 0) bad_weight[c] = i;
          if (metric_ == Metric::cosine && s == 0 && zero_row[c] < 0) zero_row[c] = i;
          row_norm_[i] = static_cast<float>(metric_ == Metric::cosine ? std::sqrt(s) : s);
        }
        release.done(c * kChunk, std::min(n_, (c + 1) * kChunk) - c * kChunk);
      }
    }
    auto first = [](const std::vector<std::int64_t>& v) {
      for (auto i : v) if (i >= 0) return i;
      return std::int64_t{-1};
    };
    if (auto i = first(bad_value); i >= 0) {
      std::int64_t j = 0;
      while (j < d_ && std::isfinite(cpu::element(x_, i, j))) ++j;
      if (j < d_)
        FLASHKM_FAIL(invalid_argument, "input contains NaN or infinity: first at row ", i + global_row_offset(),
                     ", column ", j);
      FLASHKM_FAIL(invalid_argument, "row ", i + global_row_offset(), " has a squared norm that overflows (values too large)");
    }
    if (auto i = first(bad_weight); i >= 0)
      FLASHKM_FAIL(invalid_argument, "sample_weight must be finite and >= 0: row ", i + global_row_offset(), " has ", weights_[i]);
    if (auto i = first(zero_row); i >= 0)
      FLASHKM_FAIL(invalid_argument, "metric 'cosine' needs non-zero rows: row ", i + global_row_offset(),
                   " is all zeros");
    total_weight_ = weights_ ? chunked_sum([&](std::int64_t i) { return double(weights_[i]); }) : double(n_);
    FLASHKM_CHECK(total_weight_ > 0, invalid_argument, "sample_weight sums to zero: at least one weight must be > 0");
  }

  FeatureMoments feature_moments() override {
    const std::int64_t n_chunks = chunks();
    std::vector<double> part(static_cast<std::size_t>(n_chunks * d_));
    // Column sums of x (center null) or of (x - center)^2, over fixed chunks in chunk order.
    auto column_pass = [&](const double* center) {
      cpu::PassRelease release(x_, stream_);
#pragma omp parallel num_threads(threads_) if (n_chunks > 1)
      {
        std::vector<double> row(static_cast<std::size_t>(d_));
#pragma omp for schedule(dynamic, 1)
        for (std::int64_t c = 0; c < n_chunks; ++c) {
          double* acc = part.data() + c * d_;
          std::fill(acc, acc + d_, 0.0);
          for (std::int64_t i = c * kChunk; i < std::min(n_, (c + 1) * kChunk); ++i) {
            cpu::load_row(x_, i, row.data());
            for (std::int64_t j = 0; j < d_; ++j) {
              const double v = center ? row[j] - center[j] : row[j];
              acc[j] += center ? v * v : v;
            }
          }
          release.done(c * kChunk, std::min(n_, (c + 1) * kChunk) - c * kChunk);
        }
      }
      std::vector<double> total(static_cast<std::size_t>(d_), 0.0);
      for (std::int64_t c = 0; c < n_chunks; ++c)
        for (std::int64_t j = 0; j < d_; ++j) total[j] += part[c * d_ + j];
      return total;
    };
    FeatureMoments m;
    m.count = n_;
    m.mean = column_pass(nullptr);
    for (auto& v : m.mean) v /= static_cast<double>(n_);
    m.m2 = column_pass(m.mean.data());
    return m;
  }

  void set_centroids(const float* c, std::int64_t k) override {
    sketch_ = KppSketch{};  // k-means++ is over: its sketch (1/4 of fp32 X) goes
    // Bounds of the last assignment stay usable when the same K centroids moved: remember
    // how far each moved (triangle inequality, l2 only: see assign()).
    bounds_usable_ = use_bounds_ && bounds_valid_ && metric_ == Metric::l2 && k == k_;
    if (bounds_usable_) {
      drift_.assign(static_cast<std::size_t>(k), 0.0f);
      drift_max_ = drift_second_ = 0;
      drift_argmax_ = 0;
      for (std::int64_t j = 0; j < k; ++j) {
        double s2 = 0;
        for (std::int64_t t = 0; t < d_; ++t) {
          const double diff = double(c[j * d_ + t]) - centroids_[j * d_ + t];
          s2 += diff * diff;
        }
        // rounded up, so that the bounds built from it stay bounds
        const float dj = std::nextafter(static_cast<float>(std::sqrt(s2)), std::numeric_limits<float>::infinity());
        drift_[j] = dj;
        if (dj > drift_max_) { drift_second_ = drift_max_; drift_max_ = dj; drift_argmax_ = j; }
        else if (dj > drift_second_) drift_second_ = dj;
      }
    }
    k_ = k;
    centroids_.assign(c, c + k * d_);
    packed_ = PackedCentroids(c, k, d_, kernels_.nr, metric_);
    max_centroid_norm2_ = 0;
    for (std::int64_t j = 0; j < k; ++j) max_centroid_norm2_ = std::max(max_centroid_norm2_, double(packed_.view().bias[j]));
    choose_drifted_set();
  }

  /// The drifted set F for assign()'s second test. Hamerly's test subtracts the largest
  /// drift of all centroids from a row's lower bound; when a few centroids still move far
  /// while most have settled (config a of bench/cpu_vs_peers: from the 3rd iteration half the
  /// centroids move < 0.3 and a few > 7, against gaps of ~6 between a row's nearest and
  /// second-nearest), it keeps almost no row. The second test subtracts only the largest
  /// drift outside F and computes the distances to F's centroids: m / K of a full pass for a
  /// row it keeps. m is chosen among the panel width times powers of two up to K / 4 (or 0:
  /// no second test) by the work it would leave on a fixed sample of rows (every N /
  /// 2048-th): m per candidate row plus K per row that neither test can keep. The estimate
  /// ignores candidates that the distances to F then refuse (they pay m + K), hence the cap:
  /// on config a, K / 2 gave 0.086-0.088 s/iter, K / 4 0.079-0.087, K / 8 0.088-0.089, none
  /// 0.101-0.107 (10 iterations from C0, 2 threads; b: 0.152 vs 0.195, c: 0.092 vs 0.103, d
  /// (K = 64): no change). Results never depend on the choice (a row is kept only where the
  /// full computation returns its label).
  void choose_drifted_set() {
    drifted_.clear();
    drift_rest_ = drift_max_;
    const std::int64_t k = k_, nr = kernels_.nr;
    if (!bounds_usable_ || k < 2 * nr) return;
    std::vector<std::int32_t> order(static_cast<std::size_t>(k));
    for (std::int64_t j = 0; j < k; ++j) order[j] = static_cast<std::int32_t>(j);
    std::sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
      return drift_[a] != drift_[b] ? drift_[a] > drift_[b] : a < b;
    });
    // Per sampled row not kept by Hamerly's test: the slack that the drift outside F must
    // stay under for the second test to take the row (lower - up).
    const std::int64_t stride = std::max<std::int64_t>(1, n_ / 2048);
    std::vector<float> slack;
    std::int64_t sample = 0;
    for (std::int64_t i = 0; i < n_; i += stride, ++sample) {
      const float up = moved_upper(i);
      if (!(up < hamerly_lower(i))) slack.push_back(lower_[i] - up);
    }
    double best_work = double(k) * double(slack.size());  // m = 0
    std::int64_t best_m = 0;
    for (std::int64_t m = nr; m <= k / 4; m *= 2) {
      const float rest = drift_[order[m]];
      std::int64_t candidates = 0;
      for (float v : slack) candidates += rest < v;
      const double work = double(m) * double(candidates) + double(k) * double(std::int64_t(slack.size()) - candidates);
      if (work < best_work) best_work = work, best_m = m;
    }
    if (best_m == 0) return;
    drifted_.assign(order.begin(), order.begin() + best_m);
    std::sort(drifted_.begin(), drifted_.end());
    drift_rest_ = drift_[order[best_m]];
    std::vector<float> cf(static_cast<std::size_t>(best_m * d_));
    for (std::int64_t q = 0; q < best_m; ++q)
      std::copy_n(centroids_.data() + std::int64_t{drifted_[q]} * d_, d_, cf.data() + q * d_);
    drifted_packed_ = PackedCentroids(cf.data(), best_m, d_, kernels_.nr, metric_);
  }

  AssignStats assign_labels() override {
    fuse_update_ = false;  // no update follows: the stripe sums would be thrown away
    struct Restore {
      bool& flag;
      ~Restore() { flag = true; }
    } restore{fuse_update_};
    return assign();
  }

  AssignStats assign() override {
    FLASHKM_ASSERT(k_ > 0, "assign() before set_centroids()");
    const std::int64_t stripes = fuse_update_ ? fused_stripes() : 0;
    std::int64_t changed = 0;
    const bool prune = bounds_usable_;
    auto assign_block = [&](std::int64_t begin, std::int64_t rows, const float* xb, std::int64_t ldx, Scratch& s) {
      // Hamerly's test: a row whose upper bound to its centroid stays below its lower bound
      // to every other centroid after the moves keeps its label; no distances needed.
      std::int64_t n_active = 0, n_kept = 0, n_check = 0;
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::int64_t i = begin + r;
        if (prune) {
          const float up = moved_upper(i), lo = hamerly_lower(i);
          if (up < lo) {
            upper_[i] = up;
            lower_[i] = lo;
            s.kept[n_kept++] = r;
            continue;
          }
          // The second test's candidates: kept if no centroid of the drifted set is near.
          if (!drifted_.empty() && up < lower_[i] - drift_rest_) {
            s.check[n_check++] = r;
            continue;
          }
        }
        s.active[n_active++] = r;
      }
      const std::int64_t n_plain = n_kept;
      if (n_check > 0) {
        // The drifted set F (choose_drifted_set): the centroids outside it moved at most
        // drift_rest_, so lower - drift_rest_ still bounds the distance to each of them; the
        // distances to F's centroids are computed, widened by the rounding bound as a full
        // computation's second best is. A row whose moved upper bound stays below both keeps
        // its label: the full computation would return it too.
        kernels_.argmin2_rows(xb, s.check.data(), n_check, ldx, drifted_packed_.view(), s.lanes.data(),
                              s.index.data(), s.best.data(), s.second.data());
        const std::int64_t first_added = n_active;
        for (std::int64_t a = 0; a < n_check; ++a) {
          const std::int64_t r = s.check[a], i = begin + r;
          const float up = moved_upper(i);
          // The nearest centroid of F other than the row's own.
          const float score = drifted_[s.index[a]] == labels_[i] ? s.second[a] : s.best[a];
          const float near_f = std::sqrt(std::max(0.0f, to_distance(score, i) - bound_error(i))) * (1.0f - 0x1p-22f);
          const float lo = std::min(lower_[i] - drift_rest_, near_f);
          if (up < lo) {
            upper_[i] = up;
            lower_[i] = lo;
            s.kept[n_kept++] = r;
          } else {
            s.active[n_active++] = r;
          }
        }
        // Both lists in row order again (each part is).
        std::inplace_merge(s.kept.begin(), s.kept.begin() + n_plain, s.kept.begin() + n_kept);
        std::inplace_merge(s.active.begin(), s.active.begin() + first_added, s.active.begin() + n_active);
      }
      kept_plain_ += n_plain;
      kept_drifted_ += n_kept - n_plain;
      // The kept rows' distances from differences in fp64 (the rows are in cache; the
      // inertia needs them). Each row's sum is one chain in t order; kKeptGroup rows run
      // side by side so that their chains overlap (one chain alone waits on the add's
      // latency at every element: measured 8.6 % of a Lloyd run at d = 768).
      // A kept row's upper bound is also retightened from that distance: the drifts added
      // every iteration it stays kept would otherwise accumulate. sqrt(dist + err) bounds
      // the true distance and the full computation's, as the bound of a computed row does.
      auto keep = [&](std::int64_t i, double dist) {
        best_[i] = static_cast<float>(dist);
        upper_[i] = std::min(upper_[i], std::sqrt(best_[i] + bound_error(i)) * (1.0f + 0x1p-22f));
      };
      std::int64_t q = 0;
      for (; q + kKeptGroup <= n_kept; q += kKeptGroup) {
        const float* xr[kKeptGroup];
        const float* c[kKeptGroup];
        double dist[kKeptGroup];
        for (int g = 0; g < kKeptGroup; ++g) {
          xr[g] = xb + s.kept[q + g] * ldx;
          c[g] = centroids_.data() + std::int64_t{labels_[begin + s.kept[q + g]]} * d_;
          dist[g] = 0;
        }
        for (std::int64_t t = 0; t < d_; ++t)
          for (int g = 0; g < kKeptGroup; ++g) dist[g] += (double(xr[g][t]) - c[g][t]) * (double(xr[g][t]) - c[g][t]);
        for (int g = 0; g < kKeptGroup; ++g) keep(begin + s.kept[q + g], dist[g]);
      }
      for (; q < n_kept; ++q) {
        const float* xr = xb + s.kept[q] * ldx;
        const float* c = centroids_.data() + std::int64_t{labels_[begin + s.kept[q]]} * d_;
        double dist = 0;
        for (std::int64_t t = 0; t < d_; ++t) dist += (double(xr[t]) - c[t]) * (double(xr[t]) - c[t]);
        keep(begin + s.kept[q], dist);
      }
      if (n_active == 0) return std::int64_t{0};
      if (n_active < rows)  // the rows that need distances, packed straight from the block
        kernels_.argmin2_rows(xb, s.active.data(), n_active, ldx, packed_.view(), s.lanes.data(), s.index.data(),
                              s.best.data(), s.second.data());
      else
        kernels_.argmin2(xb, rows, ldx, packed_.view(), s.lanes.data(), s.index.data(), s.best.data(),
                         s.second.data());
      std::int64_t local_changed = 0;
      for (std::int64_t a = 0; a < n_active; ++a) {
        const std::int64_t i = begin + s.active[a];
        local_changed += labels_[i] != s.index[a];
        labels_[i] = s.index[a];
        best_[i] = to_distance(s.best[a], i);
        if (metric_ == Metric::l2) {
          const float second = to_distance(s.second[a], i);
          // Bounds on the true distances: the computed ones widened by the expanded form's
          // rounding, so a row is skipped only where the full computation agrees anyway.
          const float err = bound_error(i);
          // (1 +- 2^-22) covers the roundings of the sqrt and of this product (no libm call)
          upper_[i] = std::sqrt(best_[i] + err) * (1.0f + 0x1p-22f);
          lower_[i] = std::sqrt(std::max(0.0f, second - err)) * (1.0f - 0x1p-22f);
        }
      }
      return local_changed;
    };
    if (stripes == 0) {
      for_blocks(assign_block, &changed);
      stripe_sums_valid_ = false;
    } else {
      // Fused update: while a block's rows are still in cache, add them to the sums of their
      // stripe (a fixed range of blocks, so the order of additions never depends on threads).
      const std::int64_t n_blocks = (n_ + block_rows_ - 1) / block_rows_;
      const std::int64_t width = d_ + 1;  // sums, then the weight
      stripe_sums_.resize(static_cast<std::size_t>(stripes * k_ * width));
      cpu::PassRelease release(x_, stream_);
#pragma omp parallel num_threads(threads_) reduction(+ : changed) if (stripes > 1)
      {
        Scratch s(*this);
#pragma omp for schedule(dynamic, 1)
        for (std::int64_t st = 0; st < stripes; ++st) {
          double* table = stripe_sums_.data() + st * k_ * width;
          std::fill(table, table + k_ * width, 0.0);
          for (std::int64_t b = st * n_blocks / stripes; b < (st + 1) * n_blocks / stripes; ++b) {
            const std::int64_t begin = b * block_rows_, rows = std::min(block_rows_, n_ - begin);
            std::int64_t ldx = d_;
            const float* xb = rows_as_f32(begin, rows, s.x.data(), &ldx);
            changed += assign_block(begin, rows, xb, ldx, s);
            for (std::int64_t r = 0; r < rows; ++r) {
              const std::int64_t i = begin + r;
              const double w = weight(i);
              const double scale = metric_ == Metric::cosine ? w / double(row_norm_[i]) : w;
              double* acc = table + std::int64_t{labels_[i]} * width;
              const float* row = xb + r * ldx;
              for (std::int64_t j = 0; j < d_; ++j) acc[j] += scale * double(row[j]);
              acc[d_] += w;
            }
            release.done(begin, rows);
          }
        }
      }
      stripe_sums_valid_ = true;
    }
    bounds_valid_ = metric_ == Metric::l2;
    AssignStats st;
    st.inertia = chunked_sum([&](std::int64_t i) { return weight(i) * double(best_[i]); });
    st.n_changed = changed;
    return st;
  }

  void accumulate(double* sums, double* cluster_weight) override {
    if (stripe_sums_valid_) {  // computed by assign(): combine the stripes in order
      const std::int64_t stripes = static_cast<std::int64_t>(stripe_sums_.size()) / (k_ * (d_ + 1));
      std::fill(sums, sums + k_ * d_, 0.0);
      std::fill(cluster_weight, cluster_weight + k_, 0.0);
      for (std::int64_t st = 0; st < stripes; ++st) {
        const double* table = stripe_sums_.data() + st * k_ * (d_ + 1);
#pragma omp parallel for num_threads(threads_) schedule(static) if (k_ * d_ > 65536)
        for (std::int64_t j = 0; j < k_; ++j) {
          for (std::int64_t t = 0; t < d_; ++t) sums[j * d_ + t] += table[j * (d_ + 1) + t];
          cluster_weight[j] += table[j * (d_ + 1) + d_];
        }
      }
      return;
    }
    // No sort and no atomics: each thread owns a contiguous range of clusters (balanced by
    // row counts) and streams the rows in order, adding those with a label in its range.
    // Every cluster's sum thus sees its rows in row order whatever the thread count, and
    // X is read forwards once in all (measured on 200k x 128: 20 ms, against 70 ms for a
    // counting sort + gather and 65-110 ms for splitting the columns between threads).
    std::fill(sums, sums + k_ * d_, 0.0);
    std::fill(cluster_weight, cluster_weight + k_, 0.0);
    std::vector<std::int64_t> count(static_cast<std::size_t>(k_), 0);
    for (std::int64_t i = 0; i < n_; ++i) ++count[labels_[i]];
    const int owners = static_cast<int>(std::min<std::int64_t>(threads_, k_));
    std::vector<std::int32_t> first(static_cast<std::size_t>(owners + 1), static_cast<std::int32_t>(k_));
    first[0] = 0;
    std::int64_t seen = 0;
    for (std::int64_t j = 0, t = 1; j < k_ && t < owners; ++j) {
      seen += count[j];
      if (seen * owners >= t * n_) first[t++] = static_cast<std::int32_t>(j + 1);
    }
    const bool cosine = metric_ == Metric::cosine;
    cpu::PassRelease release(x_, stream_, owners);  // every owner streams all rows
#pragma omp parallel for num_threads(owners) schedule(static, 1) if (owners > 1)
    for (int t = 0; t < owners; ++t) {
      const std::int32_t lo = first[t], hi = first[t + 1];
      std::vector<double> scratch(static_cast<std::size_t>(d_));
      for (std::int64_t c0 = 0; c0 < n_; c0 += kChunk) {
        for (std::int64_t i = c0; i < std::min(n_, c0 + kChunk); ++i) {
          const std::int32_t l = labels_[i];
          if (l < lo || l >= hi) continue;
          const double w = weight(i);
          cpu::add_scaled_row(x_, i, cosine ? w / double(row_norm_[i]) : w, sums + std::int64_t{l} * d_, scratch.data());
          cluster_weight[l] += w;
        }
        release.done(c0, std::min(n_, c0 + kChunk) - c0);
      }
    }
  }

  void copy_labels(std::int32_t* out) override { std::copy(labels_.begin(), labels_.end(), out); }
  void copy_distances(float* out) override { std::copy(best_.begin(), best_.end(), out); }

  std::vector<std::int64_t> farthest_rows(std::int64_t m) override {
    std::vector<std::int64_t> idx;
    idx.reserve(static_cast<std::size_t>(n_));
    for (std::int64_t i = 0; i < n_; ++i)
      if (weight(i) > 0) idx.push_back(i);
    m = std::min<std::int64_t>(m, static_cast<std::int64_t>(idx.size()));
    auto farther = [&](std::int64_t a, std::int64_t b) { return best_[a] > best_[b] || (best_[a] == best_[b] && a < b); };
    std::partial_sort(idx.begin(), idx.begin() + m, idx.end(), farther);
    idx.resize(static_cast<std::size_t>(m));
    return idx;
  }

  void gather_rows(const std::int64_t* idx, std::int64_t m, float* rows_out, std::int32_t* labels_out,
                   float* weights_out) override {
    for (std::int64_t t = 0; t < m; ++t) {
      const std::int64_t i = idx[t];
      FLASHKM_ASSERT(i >= 0 && i < n_, "gather_rows index out of range");
      if (rows_out) {
        float* out = rows_out + t * d_;
        cpu::load_row(x_, i, out);
        if (metric_ == Metric::cosine)
          for (std::int64_t j = 0; j < d_; ++j) out[j] /= row_norm_[i];
      }
      if (labels_out) labels_out[t] = labels_[i];
      if (weights_out) weights_out[t] = static_cast<float>(weight(i));
    }
  }

  double exact_inertia() override {
    if (metric_ == Metric::l2)  // kKeptGroup rows side by side: one chain each, in j order
      return chunked_sum_with_rows([&](std::int64_t i0, const double* rows, double* out) {
        const float* c[kKeptGroup];
        double acc[kKeptGroup];
        for (int g = 0; g < kKeptGroup; ++g) {
          c[g] = centroids_.data() + static_cast<std::int64_t>(labels_[i0 + g]) * d_;
          acc[g] = 0;
        }
        for (std::int64_t j = 0; j < d_; ++j)
          for (int g = 0; g < kKeptGroup; ++g) {
            const double diff = rows[g * d_ + j] - double(c[g][j]);
            acc[g] += diff * diff;
          }
        for (int g = 0; g < kKeptGroup; ++g) out[g] = weight(i0 + g) * acc[g];
      }, [&](std::int64_t i, const double* row) {
        const float* c = centroids_.data() + static_cast<std::int64_t>(labels_[i]) * d_;
        double acc = 0;
        for (std::int64_t j = 0; j < d_; ++j) {
          const double diff = row[j] - double(c[j]);
          acc += diff * diff;
        }
        return weight(i) * acc;
      });
    return chunked_sum_with_row([&](std::int64_t i, const double* row) {
      const float* c = centroids_.data() + static_cast<std::int64_t>(labels_[i]) * d_;
      double acc = 0;
      if (metric_ == Metric::l2) {
        for (std::int64_t j = 0; j < d_; ++j) {
          const double diff = row[j] - double(c[j]);
          acc += diff * diff;
        }
      } else {
        double dot = 0, norm2 = 0;
        for (std::int64_t j = 0; j < d_; ++j) {
          dot += row[j] * double(c[j]);
          norm2 += row[j] * row[j];
        }
        acc = metric_ == Metric::cosine ? 1.0 - dot / std::sqrt(norm2) : -dot;
      }
      return weight(i) * acc;
    });
  }

  void cluster_weights(double* out) override {
    std::fill(out, out + k_, 0.0);
    for (std::int64_t i = 0; i < n_; ++i) out[labels_[i]] += weight(i);
  }

  void copy_weights(float* out) override {
    for (std::int64_t i = 0; i < n_; ++i) out[i] = static_cast<float>(weight(i));
  }

  void all_distances(float* out) override {
    const std::int64_t k = k_;
    for_blocks([&](std::int64_t begin, std::int64_t rows, const float* xb, std::int64_t ldx, Scratch& s) {
      float* o = out + begin * k;
      kernels_.scores(xb, rows, ldx, packed_.view(), 0, packed_.panels(), o, k, s.lanes.data());
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::int64_t i = begin + r;
        float* oi = o + r * k;
        to_distances(oi, k, i, oi);
        if (metric_ != Metric::l2) continue;
        // |x|^2 - 2x.c + |c|^2 in fp32 loses digits when the distance is small against the
        // norms (data far from the origin): there the entry is recomputed from differences in
        // fp64, so transform() is accurate to ~1e-4 relative everywhere.
        const double norm_x = row_norm_[i];
        for (std::int64_t j = 0; j < k; ++j) {
          const double bound = kExpandedFormError * double(d_ + 2) * (norm_x + double(packed_.view().bias[j]));
          if (double(oi[j]) < 1e4 * bound) oi[j] = static_cast<float>(exact_l2(i, centroids_.data() + j * d_));
          oi[j] = std::sqrt(oi[j]);
        }
      }
      return std::int64_t{0};
    });
  }

  // ---- initialisation support ----

  double mindist_fill(float value) override {
    pending_ = -1;
    mind_.assign(static_cast<std::size_t>(n_), value);
    trial_dist_settled_ = pending_settled_ = false;
    return value == 0 ? 0.0 : double(value) * total_weight_;
  }

  double mindist_update(const float* c, std::int64_t m) override {
    FLASHKM_ASSERT(static_cast<std::int64_t>(mind_.size()) == n_, "mindist_update before mindist_fill");
    apply_pending_commit();
    const PackedCentroids packed(c, m, d_, kernels_.nr, metric_);
    for_blocks([&](std::int64_t begin, std::int64_t rows, const float* xb, std::int64_t ldx, Scratch& s) {
      kernels_.argmin2(xb, rows, ldx, packed.view(), s.lanes.data(), s.index.data(), s.best.data(), s.second.data());
      for (std::int64_t r = 0; r < rows; ++r) mind_[begin + r] = std::min(mind_[begin + r], to_distance(s.best[r], begin + r));
      return std::int64_t{0};
    });
    return chunked_sum([&](std::int64_t i) { return weight(i) * double(mind_[i]); });
  }

  // k-means++ steps cost one pass over X each: the trial keeps every row's distances to the
  // m candidates (N x m floats, m = 2 + ln K) and per-chunk potentials; the commit of the
  // winner is then free (the chunk sums are the winner's column of those potentials) and
  // is applied to mind lazily, chunk by chunk, by the next sample or trial.
  //
  // That pass reads 4 D bytes a row and does 8 D FMAs. For l2 a trial first reads a 7-bit
  // sketch of X instead (d32 + 12 bytes a row, integer products; see KppSketch): from a
  // row's sketch q and |x - q| it bounds every candidate's distance from below, and a row
  // whose computed distance to every candidate provably is >= mind (so min(mind, dist) =
  // mind, the same bits) is *settled*: X is not read, no distance written, the commit keeps
  // its mind. Only the other rows are computed from X, by the same kernel on the same row
  // values as without the sketch, and every row's terms are added to the chunk's
  // potentials in the same order: the potentials, the commits and so every pick are
  // bitwise those of the full pass (tests/cpp/test_init.cpp). On config a (200k x 128
  // blobs, K = 256) it settles 87-99 % of the rows from step ~10 on. Triangle-inequality
  // pruning against the chosen centres (Raff 2021) was measured first (numpy): < 1 % of
  // the rows of config a, as in 128-D the distances concentrate and |c - c_a| never
  // reaches 2 sqrt(mind).
  void mindist_trial(const float* cand, std::int64_t m, double* potentials) override {
    // Candidates in groups of kTrialLanes, zero rows padding the last group.
    const std::int64_t groups = (m + cpu::kTrialLanes - 1) / cpu::kTrialLanes, width = groups * cpu::kTrialLanes;
    std::vector<float> padded(static_cast<std::size_t>(width * d_), 0.0f), bias(static_cast<std::size_t>(width), 0.0f);
    std::copy(cand, cand + m * d_, padded.begin());
    double cand_norm2_max = 0;  // max |c_j|^2 of this trial's candidates (the rounding bound below)
    if (metric_ == Metric::l2)
      for (std::int64_t j = 0; j < m; ++j) {
        double norm2 = 0;
        for (std::int64_t t = 0; t < d_; ++t) norm2 += double(cand[j * d_ + t]) * cand[j * d_ + t];
        bias[j] = static_cast<float>(norm2);
        cand_norm2_max = std::max(cand_norm2_max, norm2);
      }
    const float alpha = metric_ == Metric::l2 ? -2.0f : -1.0f;
    const std::int64_t n_chunks = chunks();
    std::vector<double> part(static_cast<std::size_t>(n_chunks * m), 0.0);
    // Kept between trials (resize, not reallocate: a fresh 6 MB buffer per step costs page
    // faults). Rows of a chunk are rewritten only after the pending commit read them.
    std::vector<float>& dist = trial_dist_;
    if (m != trial_dist_m_) apply_pending_commit();  // the lazy path needs the same layout
    const std::int64_t m_prev = trial_dist_m_;
    if (static_cast<std::int64_t>(dist.size()) < n_ * m) dist.resize(static_cast<std::size_t>(n_ * m));
    bool sketch = use_kpp_sketch();
    // The candidates' 8-bit sketches: codes [width][d32] (zero rows past m), per lane the
    // offset 64 sum b, scale, |p|^2 (+inf past m: never the minimum).
    std::vector<std::int8_t> cand_codes;
    std::vector<std::int32_t> cand_offset(static_cast<std::size_t>(width), 0);
    std::vector<float> cand_scale(static_cast<std::size_t>(width), 0.0f);
    std::vector<float> cand_pp(static_cast<std::size_t>(width), std::numeric_limits<float>::infinity());
    double cand_resid_max = 0;
    if (sketch) {
      cand_codes.assign(static_cast<std::size_t>(width * sketch_.d32), 0);
      for (std::int64_t j = 0; j < m; ++j) {
        double k2 = 0;
        std::int64_t k1 = 0;
        float resid = 0;
        KppSketch::quantize(cand + j * d_, d_, 127, 0, cand_codes.data() + j * sketch_.d32, &cand_scale[j], &k2, &k1,
                            &resid);
        cand_offset[j] = static_cast<std::int32_t>(KppSketch::kOffset * k1);
        cand_pp[j] = static_cast<float>(double(cand_scale[j]) * double(cand_scale[j]) * k2);
        cand_resid_max = std::max(cand_resid_max, double(resid));
      }
      // a candidate near FLT_MAX, or codes whose sums could leave int32: no sketch this trial
      if (!std::isfinite(cand_resid_max) || sketch_.d32 * 127 * 127 >= (std::int64_t{1} << 30)) sketch = false;
      trial_settled_.resize(static_cast<std::size_t>(n_));
    }
    // Rounding of one computed l2 distance against the true one, as in assign()'s bounds:
    // |dist - |x - c|^2| <= kappa * (|x|^2 + |c|^2) for the fp32 expanded form
    // max(0, |x|^2 + fma(-2, x.c, |c|^2)) with |x|^2 and |c|^2 rounded once from fp64:
    // (d + 8) u is what the 8 partial chains + reduction tree + tail of the dot product,
    // the fma, the two roundings of the norms and the final add can reach; 4 (d + 4) u
    // covers it with room. That is relative to normal numbers: tiny data (|x| < ~1e-20)
    // loses up to 2^-149 an fp32 operation to underflow, which kTinyError covers.
    const double kappa = kExpandedFormError * 4.0 * double(d_ + 4);
    constexpr double kTinyError = 0x1p-100;
    std::vector<std::int64_t> computed(static_cast<std::size_t>(n_chunks), 0);
    cpu::PassRelease release(x_, stream_);
#pragma omp parallel num_threads(threads_) if (n_chunks > 1)
    {
      Scratch s(*this);
      std::vector<float> sc(static_cast<std::size_t>(block_rows_ * width));
      std::vector<float> lower, lower_g;  // the block's sketch bounds (all candidates, one group)
      std::vector<char> need;             // per row of the block: computed from X
      std::vector<double> threshold;      // per row of the block: lower at or above it settles the row
      if (sketch) {
        threshold.resize(static_cast<std::size_t>(block_rows_));
        lower.resize(static_cast<std::size_t>(block_rows_));
        lower_g.resize(static_cast<std::size_t>(groups > 1 ? block_rows_ : 0));
        need.resize(static_cast<std::size_t>(block_rows_));
      }
#pragma omp for schedule(dynamic, 1)
      for (std::int64_t c = 0; c < n_chunks; ++c) {
        apply_pending_commit(c, m_prev);
        // this chunk's potentials; kPotLanes wide (see below), copied into part at the end
        double pot_local[kPotLanes] = {};
        double* pot = m <= kPotLanes ? pot_local : part.data() + c * m;
        const std::int64_t end = std::min(n_, (c + 1) * kChunk);
        for (std::int64_t b = c * kChunk; b < end; b += block_rows_) {
          const std::int64_t rows = std::min(block_rows_, end - b);
          std::int64_t n_need = rows;
          if (sketch) {
            // Lower bounds from the sketch. Row x with sketch q, candidate c with sketch p:
            //   |x - c| >= |q - p| - |x - q| - |c - p| >= sqrt(lo) - r_x - r_c,
            // lo a lower bound of |q - p|^2 (TrialSketchLower). So lo >= (r_x + r_c +
            // sqrt(mind + ex))^2 gives |x - c|^2 >= mind + ex, and then the computed distance
            // of x is >= mind (its error is <= ex, see kappa): min(mind, dist) = mind. The
            // threshold is computed in fp64 and widened by (1 + 2^-40) twice, far more than
            // its few fp64 roundings (sqrt is correctly rounded); ex has 4x room.
            for (std::int64_t g = 0; g < groups; ++g) {
              const std::int64_t l0 = g * cpu::kTrialLanes;
              kernels_.trial_sketch_lower(sketch_.codes.data() + b * sketch_.d32, rows, sketch_.d32,
                                          cand_codes.data() + l0 * sketch_.d32, cand_offset.data() + l0,
                                          cand_scale.data() + l0, cand_pp.data() + l0, sketch_.scale.data() + b,
                                          sketch_.norm2.data() + b, g == 0 ? lower.data() : lower_g.data());
              if (g > 0)
                for (std::int64_t r = 0; r < rows; ++r) lower[r] = std::min(lower[r], lower_g[r]);
            }
            n_need = 0;
            // (one loop over contiguous arrays for the thresholds, so that it vectorises)
            const float* xn = row_norm_.data() + b;
            const float* rx = sketch_.resid.data() + b;
            const float* mi = mind_.data() + b;
            for (std::int64_t r = 0; r < rows; ++r) {
              const double ex = kappa * (double(xn[r]) + cand_norm2_max) + kTinyError;
              const double reach = (double(rx[r]) + cand_resid_max + std::sqrt(double(mi[r]) + ex)) * (1.0 + 0x1p-40);
              threshold[r] = reach * reach * (1.0 + 0x1p-40);
            }
            for (std::int64_t r = 0; r < rows; ++r) {
              const bool settled =
                  threshold[r] < std::numeric_limits<double>::infinity() && double(lower[r]) >= threshold[r];
              need[r] = !settled;
              s.active[n_need] = r;
              n_need += !settled;
            }
          }
          if (n_need == rows) {  // every row: in place (fp32) or converted, as without a sketch
            std::int64_t ldx = d_;
            const float* xb = rows_as_f32(b, rows, s.x.data(), &ldx);
            for (std::int64_t g = 0; g < groups; ++g)
              kernels_.trial_scores(xb, rows, ldx, padded.data() + g * cpu::kTrialLanes * d_, d_,
                                    bias.data() + g * cpu::kTrialLanes, alpha, sc.data() + g * cpu::kTrialLanes, width);
          } else if (n_need > 0) {  // the rows the sketch could not settle, packed: sc row a = active row a
            // Their rows are scattered: ask for all their lines first, so that the misses
            // overlap instead of one row's waiting on the last (perf: the copy was a third of
            // the sketch path's time).
            const std::int64_t row_bytes = d_ * static_cast<std::int64_t>(dtype_size(x_.dtype));
            for (std::int64_t a = 0; a < n_need; ++a) {
              const char* p = static_cast<const char*>(x_.row(b + s.active[a]));
              for (std::int64_t off = 0; off < row_bytes; off += 64) __builtin_prefetch(p + off);
            }
            for (std::int64_t a = 0; a < n_need; ++a) cpu::load_row(x_, b + s.active[a], s.x.data() + a * d_);
            for (std::int64_t g = 0; g < groups; ++g)
              kernels_.trial_scores(s.x.data(), n_need, d_, padded.data() + g * cpu::kTrialLanes * d_, d_,
                                    bias.data() + g * cpu::kTrialLanes, alpha, sc.data() + g * cpu::kTrialLanes,
                                    width);
          }
          computed[c] += n_need;
          const bool all = n_need == rows;
          std::int64_t a = 0;  // next packed row
          for (std::int64_t r = 0; r < rows; ++r) {
            const std::int64_t i = b + r;
            const double w = weight(i);
            const float mind = mind_[i];
            float* di = dist.data() + i * m;
            if (sketch) trial_settled_[i] = !(all || need[r]);
            if (all || need[r]) {
              to_distances(sc.data() + (all ? r : a++) * width, m, i, di);
              for (std::int64_t j = 0; j < m; ++j) {
                di[j] = std::min(mind, di[j]);
                pot[j] += w * double(di[j]);
              }
            } else if (m <= kPotLanes) {  // settled by the sketch: min(mind, dist) = mind for every j
              // kPotLanes fixed lanes (those past m unused): the compiler keeps pot in
              // registers across a run of settled rows instead of a load-add-store per row
              const double term = w * double(mind);
              double acc[kPotLanes];
              for (int j = 0; j < kPotLanes; ++j) acc[j] = pot[j];
              for (int j = 0; j < kPotLanes; ++j) acc[j] += term;
              for (; r + 1 < rows && !all && !need[r + 1]; ++r) {
                const std::int64_t i1 = b + r + 1;
                trial_settled_[i1] = 1;
                const double t1 = weight(i1) * double(mind_[i1]);
                for (int j = 0; j < kPotLanes; ++j) acc[j] += t1;
              }
              for (int j = 0; j < kPotLanes; ++j) pot[j] = acc[j];
            } else {
              const double term = w * double(mind);
              for (std::int64_t j = 0; j < m; ++j) pot[j] += term;
            }
          }
          release.done(b, rows);
        }
        if (pot == pot_local) std::copy(pot_local, pot_local + m, part.data() + c * m);
      }
    }
    std::fill(potentials, potentials + m, 0.0);
    for (std::int64_t c = 0; c < n_chunks; ++c)
      for (std::int64_t j = 0; j < m; ++j) potentials[j] += part[c * m + j];
    if (sketch) note_sketch_trial(std::accumulate(computed.begin(), computed.end(), std::int64_t{0}));
    trial_m_ = trial_dist_m_ = m;
    trial_dist_settled_ = sketch;
    trial_part_ = std::move(part);
    pending_ = -1;
  }

  double mindist_commit(std::int64_t j, const float*) override {
    FLASHKM_ASSERT(j >= 0 && j < trial_m_ && pending_ < 0, "mindist_commit without a matching mindist_trial");
    const std::int64_t n_chunks = chunks();
    pending_ = j;
    pending_settled_ = trial_dist_settled_;
    chunk_sum_.resize(static_cast<std::size_t>(n_chunks));
    chunk_applied_.assign(static_cast<std::size_t>(n_chunks), 0);
    double total = 0;  // same order as mindist_trial's combination: equals potentials[j]
    for (std::int64_t c = 0; c < n_chunks; ++c) total += (chunk_sum_[c] = trial_part_[c * trial_m_ + j]);
    trial_m_ = 0;  // a trial is committed at most once
    return total;
  }

  std::vector<std::int64_t> sample_by_mindist(const std::vector<double>& targets) override {
    const std::int64_t n_chunks = chunks();
    if (pending_ < 0) {  // chunk sums of w*mind, unless a pending commit already knows them
      chunk_sum_.resize(static_cast<std::size_t>(n_chunks));
#pragma omp parallel for num_threads(threads_) schedule(static) if (n_chunks > 1)
      for (std::int64_t c = 0; c < n_chunks; ++c) {
        double s = 0;
        for (std::int64_t i = c * kChunk; i < std::min(n_, (c + 1) * kChunk); ++i) s += weight(i) * double(mind_[i]);
        chunk_sum_[c] = s;
      }
    }
    std::vector<std::int64_t> out;
    out.reserve(targets.size());
    double before = 0;  // prefix of the chunks before c
    std::int64_t c = 0;
    for (double t : targets) {
      while (c < n_chunks && before + chunk_sum_[c] <= t) before += chunk_sum_[c++];
      std::int64_t pick = n_ - 1;  // rounding past the total: clip to the last row
      if (c < n_chunks) {
        apply_pending_commit(c);
        double run = before;
        for (std::int64_t i = c * kChunk; i < std::min(n_, (c + 1) * kChunk); ++i) {
          run += weight(i) * double(mind_[i]);
          if (run > t) { pick = i; break; }
        }
      }
      out.push_back(pick);
    }
    return out;
  }

  std::vector<std::int64_t> sample_bernoulli(double factor, std::uint64_t seed, std::uint64_t round) override {
    apply_pending_commit();
    const std::int64_t n_chunks = chunks();
    std::vector<std::vector<std::int64_t>> picked(static_cast<std::size_t>(n_chunks));
    // The uniform of a row is drawn by its global index: a shard picks what the whole would.
    const auto offset = static_cast<std::uint64_t>(global_row_offset());
#pragma omp parallel for num_threads(threads_) schedule(static) if (n_chunks > 1)
    for (std::int64_t c = 0; c < n_chunks; ++c)
      for (std::int64_t i = c * kChunk; i < std::min(n_, (c + 1) * kChunk); ++i)
        if (counter_uniform(seed, round, offset + static_cast<std::uint64_t>(i)) < factor * weight(i) * double(mind_[i]))
          picked[c].push_back(i);
    std::vector<std::int64_t> out;
    for (auto& v : picked) out.insert(out.end(), v.begin(), v.end());
    return out;
  }

  void nearest_weights(const float* c, std::int64_t m, double* out) override {
    const PackedCentroids packed(c, m, d_, kernels_.nr, metric_);
    std::vector<std::int32_t> nearest(static_cast<std::size_t>(n_));
    for_blocks([&](std::int64_t begin, std::int64_t rows, const float* xb, std::int64_t ldx, Scratch& s) {
      kernels_.argmin2(xb, rows, ldx, packed.view(), s.lanes.data(), nearest.data() + begin, s.best.data(),
                       s.second.data());
      return std::int64_t{0};
    });
    std::fill(out, out + m, 0.0);
    for (std::int64_t i = 0; i < n_; ++i) out[nearest[i]] += weight(i);
  }

 private:
  /// Per-thread buffers for one block of rows.
  struct Scratch {
    explicit Scratch(const CpuBackend& b)
        : x(static_cast<std::size_t>(b.block_rows_ * b.d_)),
          lanes(static_cast<std::size_t>(b.kernels_.workspace_floats(b.block_rows_, b.d_))),
          index(static_cast<std::size_t>(b.block_rows_)),
          best(static_cast<std::size_t>(b.block_rows_)),
          second(static_cast<std::size_t>(b.block_rows_)),
          active(static_cast<std::size_t>(b.block_rows_)),
          kept(static_cast<std::size_t>(b.block_rows_)),
          check(static_cast<std::size_t>(b.block_rows_)) {}
    std::vector<float> x, lanes;
    std::vector<std::int32_t> index;
    std::vector<float> best, second;
    std::vector<std::int64_t> active;  // rows of the block that need distances
    std::vector<std::int64_t> kept;    // rows whose bounds keep their label
    std::vector<std::int64_t> check;   // rows for the drifted-set test
  };

  std::int64_t chunks() const { return (n_ + kChunk - 1) / kChunk; }

  /// Stripes of the fused update in assign(), or 0 when the per-stripe tables would not
  /// fit kStripeSumsBytes. Depends only on N, K and D (never on threads), so the order of
  /// every sum is fixed by the problem alone.
  std::int64_t fused_stripes() const {
    const std::int64_t n_blocks = (n_ + block_rows_ - 1) / block_rows_;
    const std::int64_t fit = kStripeSumsBytes / (k_ * (d_ + 1) * 8);
    const std::int64_t stripes = std::min({kMaxStripes, n_blocks, fit});
    return stripes >= std::min(kMinStripes, n_blocks) ? stripes : 0;
  }

  /// Apply a pending mindist_commit to chunk c (once), or to every chunk when c < 0.
  void apply_pending_commit(std::int64_t c = -1, std::int64_t m = -1) {
    if (pending_ < 0) return;
    if (m < 0) m = trial_dist_m_;
    if (c < 0) {
      const std::int64_t n_chunks = chunks();
#pragma omp parallel for num_threads(threads_) schedule(static) if (n_chunks > 1)
      for (std::int64_t q = 0; q < n_chunks; ++q) apply_pending_commit(q, m);
      pending_ = -1;
      return;
    }
    if (chunk_applied_[c]) return;
    const std::int64_t end = std::min(n_, (c + 1) * kChunk);
    if (pending_settled_) {  // rows the sketch settled keep mind (their distances were not written)
      for (std::int64_t i = c * kChunk; i < end; ++i)
        if (!trial_settled_[i]) mind_[i] = trial_dist_[i * m + pending_];
    } else {
      for (std::int64_t i = c * kChunk; i < end; ++i) mind_[i] = trial_dist_[i * m + pending_];
    }
    chunk_applied_[c] = 1;
  }
  /// Whether this trial reads the sketch first (building it on first use): l2, bounds on,
  /// data not streamed. Which rows it settles never changes a result bit, so the choice is
  /// free: after a trial where it settled fewer than half the rows (the first steps: mind
  /// is still large) the next kSketchPause trials go straight to X.
  bool use_kpp_sketch() {
    if (!use_bounds_ || metric_ != Metric::l2 || stream_.release || n_ == 0) return false;
    // The sketch is the one N x D allocation of a fit (int8: a quarter of fp32 X): only
    // within a quarter of the memory budget, never for data streamed from disk.
    const std::int64_t budget = budget_ > 0 ? budget_ : cpu::physical_memory_bytes() / 2;
    if (n_ * (d_ + KppSketch::kBytesPerRow) > budget / 4) return false;
    if (sketch_skip_ > 0) {
      --sketch_skip_;
      return false;
    }
    if (sketch_.empty()) {
      sketch_.resize(n_, d_);
      const std::int64_t n_chunks = chunks();
#pragma omp parallel num_threads(threads_) if (n_chunks > 1)
      {
        std::vector<float> row(static_cast<std::size_t>(d_));
#pragma omp for schedule(static)
        for (std::int64_t c = 0; c < n_chunks; ++c)
          for (std::int64_t i = c * kChunk; i < std::min(n_, (c + 1) * kChunk); ++i) {
            cpu::load_row(x_, i, row.data());
            sketch_.encode(i, row.data(), d_);
          }
      }
    }
    return true;
  }
  void note_sketch_trial(std::int64_t computed_rows) {
    sketch_settled_ += n_ - computed_rows;
    if (2 * computed_rows > n_) sketch_skip_ = kSketchPause;
  }
  double weight(std::int64_t i) const { return weights_ ? double(weights_[i]) : 1.0; }

  /// Squared distance of row i to c from differences in fp64.
  double exact_l2(std::int64_t i, const float* c) const {
    double acc = 0;
    for (std::int64_t j = 0; j < d_; ++j) {
      const double diff = cpu::element(x_, i, j) - double(c[j]);
      acc += diff * diff;
    }
    return acc;
  }

  /// Scores -> distances for m values of row i, the metric switch outside the loop.
  void to_distances(const float* scores, std::int64_t m, std::int64_t i, float* out) const {
    const float norm = row_norm_[i];
    switch (metric_) {
      case Metric::l2: for (std::int64_t j = 0; j < m; ++j) out[j] = std::max(0.0f, norm + scores[j]); break;
      case Metric::cosine: for (std::int64_t j = 0; j < m; ++j) out[j] = 1.0f + scores[j] / norm; break;
      case Metric::inner_product: for (std::int64_t j = 0; j < m; ++j) out[j] = scores[j]; break;
    }
  }

  /// The Hamerly bounds of row i after the centroids' moves: its upper bound to its own
  /// centroid plus that one's drift, and its lower bound to every other one less the largest
  /// drift of the others.
  float moved_upper(std::int64_t i) const { return upper_[i] + drift_[labels_[i]]; }
  float hamerly_lower(std::int64_t i) const {
    return lower_[i] - (labels_[i] == drift_argmax_ ? drift_second_ : drift_max_);
  }
  /// The rounding bound of a computed l2 distance of row i (fp32 expanded form, any current
  /// centroid): the margin by which the bounds are widened.
  float bound_error(std::int64_t i) const {
    return static_cast<float>(kExpandedFormError * 4.0 * double(d_ + 4) * (double(row_norm_[i]) + max_centroid_norm2_));
  }

  /// Score -> distance for row i (see PackedCentroids for the scores).
  float to_distance(float score, std::int64_t i) const {
    switch (metric_) {
      case Metric::l2: return std::max(0.0f, row_norm_[i] + score);  // |x|^2 - 2x.c + |c|^2, clamped
      case Metric::cosine: return 1.0f + score / row_norm_[i];        // 1 - x.c / |x|
      case Metric::inner_product: return score;                       // -x.c
    }
    return score;
  }

  /// Rows [begin, begin+rows) converted to fp32 into out [rows][d].
  void convert_rows(std::int64_t begin, std::int64_t rows, float* out) const {
    for (std::int64_t r = 0; r < rows; ++r) cpu::load_row(x_, begin + r, out + r * d_);
  }

  /// Rows [begin, begin+rows) as fp32 rows `*ldx` floats apart: fp32 input in place (the
  /// kernels copy it into their tile layout anyway), other dtypes converted into `buffer`.
  const float* rows_as_f32(std::int64_t begin, std::int64_t rows, float* buffer, std::int64_t* ldx) const {
    if (x_.dtype == DType::f32) {
      *ldx = x_.stride();
      return static_cast<const float*>(x_.row(begin));
    }
    convert_rows(begin, rows, buffer);
    *ldx = d_;
    return buffer;
  }

  /// Run fn(begin, rows, block, ldx, scratch) -> int64 over all row blocks in parallel;
  /// the returned counts are summed into *total when given.
  template <class Fn>
  void for_blocks(Fn&& fn, std::int64_t* total = nullptr) {
    const std::int64_t n_blocks = (n_ + block_rows_ - 1) / block_rows_;
    std::int64_t sum = 0;
    cpu::PassRelease release(x_, stream_);
#pragma omp parallel num_threads(threads_) reduction(+ : sum) if (n_blocks > 1)
    {
      Scratch s(*this);
#pragma omp for schedule(dynamic, 1)
      for (std::int64_t b = 0; b < n_blocks; ++b) {
        const std::int64_t begin = b * block_rows_;
        const std::int64_t rows = std::min(block_rows_, n_ - begin);
        std::int64_t ldx = d_;
        const float* xb = rows_as_f32(begin, rows, s.x.data(), &ldx);
        sum += fn(begin, rows, xb, ldx, s);
        release.done(begin, rows);
      }
    }
    if (total) *total = sum;
  }

  /// sum_i f(i) in fp64 over fixed chunks, combined in chunk order.
  template <class Fn>
  double chunked_sum(Fn&& f) const {
    const std::int64_t n_chunks = chunks();
    std::vector<double> part(static_cast<std::size_t>(n_chunks));
#pragma omp parallel for num_threads(threads_) schedule(static) if (n_chunks > 1)
    for (std::int64_t c = 0; c < n_chunks; ++c) {
      double s = 0;
      for (std::int64_t i = c * kChunk; i < std::min(n_, (c + 1) * kChunk); ++i) s += f(i);
      part[c] = s;
    }
    double total = 0;
    for (double v : part) total += v;
    return total;
  }

  /// chunked_sum where f also gets row i as doubles.
  /// As chunked_sum_with_row, but group(i0, rows [kKeptGroup][d], out [kKeptGroup]) takes
  /// kKeptGroup consecutive rows at once (the tail of a chunk goes to one(i, row)); the terms
  /// are added in row order as there, so the sum has the same bits.
  template <class Group, class One>
  double chunked_sum_with_rows(Group&& group, One&& one) const {
    const std::int64_t n_chunks = chunks();
    std::vector<double> part(static_cast<std::size_t>(n_chunks));
    cpu::PassRelease release(x_, stream_);
#pragma omp parallel num_threads(threads_) if (n_chunks > 1)
    {
      std::vector<double> rows(static_cast<std::size_t>(kKeptGroup * d_));
      double out[kKeptGroup];
#pragma omp for schedule(static)
      for (std::int64_t c = 0; c < n_chunks; ++c) {
        double s = 0;
        const std::int64_t end = std::min(n_, (c + 1) * kChunk);
        std::int64_t i = c * kChunk;
        for (; i + kKeptGroup <= end; i += kKeptGroup) {
          for (int g = 0; g < kKeptGroup; ++g) cpu::load_row(x_, i + g, rows.data() + g * d_);
          group(i, rows.data(), out);
          for (int g = 0; g < kKeptGroup; ++g) s += out[g];
        }
        for (; i < end; ++i) {
          cpu::load_row(x_, i, rows.data());
          s += one(i, rows.data());
        }
        part[c] = s;
        release.done(c * kChunk, end - c * kChunk);
      }
    }
    double total = 0;
    for (double v : part) total += v;
    return total;
  }

  template <class Fn>
  double chunked_sum_with_row(Fn&& f) const {
    const std::int64_t n_chunks = chunks();
    std::vector<double> part(static_cast<std::size_t>(n_chunks));
    cpu::PassRelease release(x_, stream_);
#pragma omp parallel num_threads(threads_) if (n_chunks > 1)
    {
      std::vector<double> row(static_cast<std::size_t>(d_));
#pragma omp for schedule(static)
      for (std::int64_t c = 0; c < n_chunks; ++c) {
        double s = 0;
        for (std::int64_t i = c * kChunk; i < std::min(n_, (c + 1) * kChunk); ++i) {
          cpu::load_row(x_, i, row.data());
          s += f(i, row.data());
        }
        part[c] = s;
        release.done(c * kChunk, std::min(n_, (c + 1) * kChunk) - c * kChunk);
      }
    }
    double total = 0;
    for (double v : part) total += v;
    return total;
  }

  const KernelTable& kernels_;
  int threads_;
  bool use_bounds_;
  MatrixView x_{};
  const float* weights_ = nullptr;
  Metric metric_ = Metric::l2;
  std::int64_t budget_ = 0;   // set_memory_budget (0: default)
  cpu::StreamPlan stream_;    // whether passes drop the mapped pages they are done with
  std::int64_t n_ = 0, d_ = 0, k_ = 0, block_rows_ = 0;
  double total_weight_ = 0;
  std::vector<float> row_norm_;  // |x|^2 for l2, |x| for cosine
  std::vector<std::int32_t> labels_;
  std::vector<float> best_, mind_;
  std::vector<float> centroids_;
  PackedCentroids packed_;
  // k-means++ trial state (see mindist_trial): distances [N x m] (already min'ed with mind),
  // per-chunk potentials [chunks x m], the committed candidate awaiting application.
  std::int64_t trial_m_ = 0;       // candidates of the trial not yet committed (0: none)
  std::int64_t trial_dist_m_ = 0;  // columns of trial_dist_
  std::vector<float> trial_dist_;
  std::vector<double> trial_part_;
  std::int64_t pending_ = -1;
  std::vector<double> chunk_sum_;
  std::vector<char> chunk_applied_;
  // Rows of trial_dist_ the sketch settled (their distances not written: they keep mind),
  // when trial_dist_settled_; pending_settled_: the same for the trial pending_ refers to.
  std::vector<std::uint8_t> trial_settled_;
  bool trial_dist_settled_ = false, pending_settled_ = false;
  KppSketch sketch_;            // see mindist_trial; empty outside k-means++
  std::int64_t sketch_settled_ = 0;  // rows settled by the sketch since attach (tests)
  std::int64_t sketch_skip_ = 0;  // trials left that skip the sketch (it settled too few rows)
  // Hamerly bounds (l2): per row, an upper bound on the distance to its centroid and a
  // lower bound on the distance to every other one (not squared); centroid drifts since.
  std::vector<float> upper_, lower_, drift_;
  float drift_max_ = 0, drift_second_ = 0;
  std::int64_t drift_argmax_ = 0;
  // The drifted set of assign()'s second test (choose_drifted_set): the centroids that moved
  // most, packed; drift_rest_: the largest drift of the others. Empty: Hamerly's test alone.
  std::vector<std::int32_t> drifted_;
  PackedCentroids drifted_packed_;
  float drift_rest_ = 0;
  // Rows kept by each test since attach (tests; added once per block).
  std::atomic<std::int64_t> kept_plain_{0}, kept_drifted_{0};
  double max_centroid_norm2_ = 0;
  bool bounds_valid_ = false, bounds_usable_ = false;
  // Per-stripe [K][D + 1] sums of the last assign() (see fused_stripes()).
  std::vector<double> stripe_sums_;
  bool stripe_sums_valid_ = false;
  bool fuse_update_ = true;  // false inside assign_labels(): no stripe sums
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(int n_threads, bool use_bounds) {
  return std::make_unique<CpuBackend>(n_threads, use_bounds);
}

BoundsKeptRows cpu_bounds_kept_rows(const Backend& backend) {
  const auto* cpu = dynamic_cast<const CpuBackend*>(&backend);
  return cpu ? cpu->bounds_kept_rows() : BoundsKeptRows{};
}

std::int64_t cpu_kpp_sketch_settled_rows(const Backend& backend) {
  const auto* cpu = dynamic_cast<const CpuBackend*>(&backend);
  return cpu ? cpu->sketch_settled_rows() : 0;
}

}  // namespace flashkm::core
