// The batched CUDA backend: B ragged problems (own rows, own K) on one GPU, each Lloyd step
// of every active problem in one launch (core/batched_backend.hpp).
//
// Layout. All rows live in one device matrix, problem b at rows [row_begin[b], row_begin[b+1])
// (used in place when the caller's device rows already are laid out so; else copied once).
// The centroids of the active problems are packed one problem after another: centroid j of
// the problem in slot a is row koff[a] + j of the fp32 set (K_total = sum of k), and its
// operands start at row c_row[a] (each problem padded to the tile width). So the sort-
// inverse update over K_total clusters is the single-problem update unchanged (keys
// koff[a] + label; rows of a cluster in row order), and only the assign kernels need the
// per-problem table (ProblemDesc) and a tile table of (problem, row0) that never straddles
// two problems (problem_tiles.cuh). Row reductions (inertia, moments) run over tables of
// row chunks cut from each problem's row 0 with the single kernels' shapes.
//
// Results contract: per problem, the bits of the single CUDA backend on that problem (same
// operand precision): same per-row arithmetic (kernels, certification constants: certify.hpp,
// centroid operands: centroid_prep.cuh), same reduction shapes, same update pieces. A problem
// whose update finds an empty cluster is updated by a single CUDA backend on its rows
// (problem(b)), which repairs it by the core's host path, exactly as the problem alone.
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <system_error>
#include <thread>
#include <vector>

#include "core/batched_backend.hpp"
#include "cuda/batched_backend.hpp"
#include "cuda/batched_kernels.cuh"
#include "cuda/certify.hpp"
#include "cuda/certify_candidates.hpp"
#include "cuda/cuda_backend.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/flash_assign.hpp"
#include "cuda/host_upload.hpp"
#include "cuda/kernels.cuh"

namespace flashkm::cuda {
namespace {

// counters_ slots, as the single backend's: level 1 (flagged, changed), kEmpty, level 2/3.
enum : int { kFlagged = 0, kChanged = 1, kEmpty = 2, kFlagged2 = 3, kChanged2 = 4, kNumCounters = 5 };

std::int64_t round_up(std::int64_t v, std::int64_t m) { return (v + m - 1) / m * m; }

/// Row chunks of the listed problems (slot = position in the list), cut from each problem's
/// row 0; `out` counts the listed rows in order (compacted positions). off [m + 1]: the
/// chunk range of each listed problem.
void cut_chunks(const std::vector<std::int64_t>& list, const std::vector<std::int64_t>& row_begin,
                std::vector<ProblemChunk>& chunks, std::vector<std::int64_t>& off) {
  chunks.clear();
  off.assign(1, 0);
  std::int64_t out = 0;
  for (std::size_t a = 0; a < list.size(); ++a) {
    const std::int64_t b = list[a], begin = row_begin[b], n = row_begin[b + 1] - begin;
    for (std::int64_t r = 0; r < n; r += kRowChunk)
      chunks.push_back(ProblemChunk{begin + r, out + r, static_cast<std::int32_t>(std::min<std::int64_t>(kRowChunk, n - r)),
                                static_cast<std::int32_t>(a)});
    out += n;
    off.push_back(static_cast<std::int64_t>(chunks.size()));
  }
}

template <class T>
void upload(DeviceBuffer<T>& dst, const std::vector<T>& src, const char* what, cudaStream_t s) {
  dst.ensure(std::max<std::size_t>(src.size(), 1), what);
  if (!src.empty())
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(dst.get(), src.data(), src.size() * sizeof(T), cudaMemcpyHostToDevice, s));
}

/// Problem b's rows of a batch as a Backend for init 'random' (rows, weights, gathered rows
/// through the single backend's gather kernel: the same bits); everything else is refused.
class ProblemRowsView final : public core::Backend {
 public:
  ProblemRowsView(const XView& x, const float* xnorm, const float* w, std::int64_t row_begin, std::int64_t n,
                  Metric metric, int device, cudaStream_t stream)
      : x_(x), xnorm_(xnorm), w_(w), row_begin_(row_begin), n_(n), metric_(metric), device_(device), stream_(stream) {}
  const char* name() const override { return "cuda batch problem view"; }
  std::int64_t rows() const override { return n_; }
  std::int64_t cols() const override { return x_.d; }
  void copy_weights(float* out) override {
    DeviceGuard g(device_);
    if (!w_) {
      std::fill(out, out + n_, 1.0f);
      return;
    }
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(out, w_ + row_begin_, n_ * 4, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void gather_rows(const std::int64_t* idx, std::int64_t m, float* rows_out, std::int32_t* labels_out,
                   float* weights_out) override {
    DeviceGuard g(device_);
    if (m <= 0) return;
    std::vector<std::int64_t> global(static_cast<std::size_t>(m));
    for (std::int64_t t = 0; t < m; ++t) {
      FLASHKM_ASSERT(idx[t] >= 0 && idx[t] < n_, "gather_rows index out of range");
      global[t] = row_begin_ + idx[t];
    }
    DeviceBuffer<std::int64_t> di(std::size_t(m), "gather indices");
    DeviceBuffer<float> rows(rows_out ? std::size_t(m) * x_.d : 0, "gathered rows");
    DeviceBuffer<float> wo(std::size_t(m), "gathered weights");
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(di.get(), global.data(), m * 8, cudaMemcpyHostToDevice, stream_));
    launch_gather(x_, xnorm_, metric_ == Metric::cosine, nullptr, w_, di.get(), m, rows.get(), nullptr, wo.get(),
                  stream_);
    if (rows_out)
      FLASHKM_CUDA_CHECK(cudaMemcpyAsync(rows_out, rows.get(), m * x_.d * 4, cudaMemcpyDeviceToHost, stream_));
    if (weights_out) FLASHKM_CUDA_CHECK(cudaMemcpyAsync(weights_out, wo.get(), m * 4, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (labels_out) std::fill(labels_out, labels_out + m, -1);
  }
  // Not offered by the view.
  void attach(const MatrixView&, const float*, Metric) override { refuse("attach"); }
  core::FeatureMoments feature_moments() override { refuse("feature_moments"); }
  void set_centroids(const float*, std::int64_t) override { refuse("set_centroids"); }
  core::AssignStats assign() override { refuse("assign"); }
  void accumulate(double*, double*) override { refuse("accumulate"); }
  void copy_labels(std::int32_t*) override { refuse("copy_labels"); }
  void copy_distances(float*) override { refuse("copy_distances"); }
  std::vector<std::int64_t> farthest_rows(std::int64_t) override { refuse("farthest_rows"); }
  double exact_inertia() override { refuse("exact_inertia"); }
  void cluster_weights(double*) override { refuse("cluster_weights"); }
  void all_distances(float*) override { refuse("all_distances"); }
  double mindist_fill(float) override { refuse("mindist_fill"); }
  double mindist_update(const float*, std::int64_t) override { refuse("mindist_update"); }
  void mindist_trial(const float*, std::int64_t, double*) override { refuse("mindist_trial"); }
  std::vector<std::int64_t> sample_by_mindist(const std::vector<double>&) override { refuse("sample_by_mindist"); }
  std::vector<std::int64_t> sample_bernoulli(double, std::uint64_t, std::uint64_t) override {
    refuse("sample_bernoulli");
  }
  void nearest_weights(const float*, std::int64_t, double*) override { refuse("nearest_weights"); }

 private:
  [[noreturn]] static void refuse(const char* op) {
    FLASHKM_FAIL(internal, "the batch's problem view offers rows and weights only, not ", op);
  }
  XView x_;
  const float* xnorm_;
  const float* w_;
  std::int64_t row_begin_, n_;
  Metric metric_;
  int device_;
  cudaStream_t stream_;
};

/// A packed centroid set of the active problems for one kernel family.
struct RaggedSet {
  Operand op = Operand::fp32;
  int dp = 0;
  std::int64_t kp_total = 0;
  DeviceBuffer<float> c32;            // [k_total x d]
  DeviceBuffer<unsigned char> c_op;   // [kp_total x dp] operands
  DeviceBuffer<float> cterm;          // [kp_total]
  DeviceBuffer<unsigned> cmax_bits;   // [m]
  DeviceBuffer<unsigned> dcmax_bits;  // [m]
  DeviceBuffer<unsigned> overflow;    // [1]
};

class CudaBatchedBackend final : public core::BatchedBackend {
 public:
  explicit CudaBatchedBackend(const CudaOptions& o) : opt_(o) {
    const DeviceInfo dev = open_device(o);
    sm_count_ = dev.sm_count;
    cc_ = dev.cc;
    DeviceGuard g(o.device_id);
    FLASHKM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  ~CudaBatchedBackend() override {
    single_.reset();
    if (stream_) cudaStreamDestroy(stream_);
  }

  const char* name() const override { return "cuda"; }
  std::int64_t problems() const override { return static_cast<std::int64_t>(row_begin_.size()) - 1; }
  std::int64_t rows(std::int64_t b) const override { return row_begin_[b + 1] - row_begin_[b]; }
  std::int64_t cols() const override { return d_; }

  std::size_t bytes_held() const {
    return labels_.bytes() + dist_.bytes() + xnorm_.bytes() + scratch_.bytes() + cub_temp_.bytes() + part_.bytes() +
           upd_.bytes() + sums_dev_.bytes() + cw_.bytes() + xop_.bytes() +
           xown_.bytes() + w_own_.bytes() + keys_alt_.bytes() + vals_alt_.bytes() + row_off_.bytes() +
           shift_part_.bytes() + seg_out_.bytes() + pstats_.bytes() + pcounts_.bytes() +
           set_bytes(main_) + set_bytes(next_) + cas_.c_op.bytes() + cas_.cterm.bytes() + d_desc_op_.bytes() +
           d_desc_simt_.bytes() + d_koff_.bytes() + d_chunks_.bytes() + d_all_chunks_.bytes() + t_flash_.bytes() +
           t_simt_.bytes() + d_sub_chunks_.bytes() + d_sub_off_.bytes() + d_piece_rows_.bytes() +
           d_cluster_of_.bytes() + cand_pairs_.bytes() + cand_scores_.bytes() + cand_ctr_.bytes() +
           d_desc_cand_.bytes() + t_cand_.bytes();
  }

  // ---- attach ---------------------------------------------------------------------------
  void attach(const std::vector<core::ProblemData>& problems, Metric metric) override {
    DeviceGuard g(opt_.device_id);
    FLASHKM_ASSERT(!problems.empty(), "batched attach without problems");
    const MatrixView& x0 = problems[0].x;
    d_ = static_cast<int>(x0.cols);
    metric_ = metric;
    FLASHKM_CHECK(x0.cols <= (1 << 20), invalid_argument, "d = ", x0.cols, " is too large for the CUDA backend");
    const auto B = static_cast<std::int64_t>(problems.size());
    row_begin_.assign(1, 0);
    for (const auto& p : problems) row_begin_.push_back(row_begin_.back() + p.x.rows);
    n_total_ = row_begin_.back();
    FLASHKM_CHECK(n_total_ < (std::int64_t(1) << 31), invalid_argument,
                  "the CUDA backend sorts row indices as int32: the batch's rows in all must be < 2^31, got ",
                  n_total_);
    const DType dtype = x0.dtype;
    const std::size_t esz = dtype_size(dtype);
    if (x0.where == Location::cuda)
      FLASHKM_CHECK(x0.device_id == opt_.device_id, invalid_argument, "x lives on CUDA device ", x0.device_id,
                    " but the backend runs on device ", opt_.device_id);
    // One matrix of all rows: the caller's, when the problems are consecutive rows of one
    // device matrix (a RaggedBatch on the GPU); else copied together once.
    const std::int64_t stride0 = x0.stride();
    bool consecutive = true;
    for (std::int64_t b = 0; b < B && consecutive; ++b)
      consecutive = problems[b].x.stride() == stride0 &&
                    problems[b].x.data == static_cast<const char*>(x0.data) +
                                              std::size_t(row_begin_[b]) * std::size_t(stride0) * esz;
    if (x0.where == Location::cuda && consecutive) {
      xv_ = XView{x0.data, dtype, stride0, n_total_, d_, n_total_};
    } else {
      xown_.reset(std::size_t(n_total_) * d_ * esz, "a device copy of the batch's rows");
      char* dst = reinterpret_cast<char*>(xown_.get());
      if (consecutive) {
        FLASHKM_CUDA_CHECK(cudaMemcpy2DAsync(dst, d_ * esz, x0.data, stride0 * esz, d_ * esz, n_total_,
                                             cudaMemcpyDefault, stream_));
      } else {
        for (std::int64_t b = 0; b < B; ++b) {
          const MatrixView& xb = problems[b].x;
          FLASHKM_CUDA_CHECK(cudaMemcpy2DAsync(dst + std::size_t(row_begin_[b]) * d_ * esz, d_ * esz, xb.data,
                                               xb.stride() * esz, d_ * esz, xb.rows, cudaMemcpyDefault, stream_));
        }
      }
      xv_ = XView{xown_.get(), dtype, d_, n_total_, d_, n_total_};
    }
    if (dtype == DType::f64) {
      DeviceBuffer<unsigned char> f32(std::size_t(n_total_) * d_ * 4, "an fp32 copy of float64 data");
      launch_f64_to_f32(static_cast<const double*>(xv_.x), n_total_, d_, xv_.stride,
                        reinterpret_cast<float*>(f32.get()), stream_);
      FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
      xown_ = std::move(f32);
      xv_ = XView{xown_.get(), DType::f32, d_, n_total_, d_, n_total_};
    }
    // Weights: one device array when any problem has them (ones for those that have none:
    // w * v with w = 1.0f is v exactly, so those problems keep their unweighted bits).
    has_weights_.assign(problems.size(), 0);
    bool any = false;
    for (std::int64_t b = 0; b < B; ++b) any |= (has_weights_[b] = problems[b].weights != nullptr) != 0;
    w_ = nullptr;
    if (any) {
      w_own_.reset(std::size_t(n_total_), "sample weights");
      for (std::int64_t b = 0; b < B; ++b) {
        float* dst = w_own_.get() + row_begin_[b];
        if (problems[b].weights)
          FLASHKM_CUDA_CHECK(cudaMemcpyAsync(dst, problems[b].weights, rows(b) * sizeof(float), cudaMemcpyDefault,
                                             stream_));
        else
          launch_fill(dst, 1.0f, rows(b), stream_);
      }
      w_ = w_own_.get();
    }
    xnorm_.reset(std::size_t(n_total_), "row norms");
    labels_.reset(std::size_t(n_total_), "labels");
    dist_.reset(std::size_t(n_total_), "distances");
    FLASHKM_CUDA_CHECK(cudaMemsetAsync(labels_.get(), 0xff, n_total_ * sizeof(std::int32_t), stream_));
    counters_.ensure(kNumCounters, "counters");

    // Validate (first bad row of each kind), |x|^2, max |x|; then per-problem weight sums.
    DeviceBuffer<long long> status(4, "validation status");
    const long long init[4] = {std::numeric_limits<long long>::max(), std::numeric_limits<long long>::max(),
                               std::numeric_limits<long long>::max(), 0};
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(status.get(), init, sizeof(init), cudaMemcpyHostToDevice, stream_));
    launch_validate(xv_, w_, xnorm_.get(), status.get(), stream_);
    long long st[4];
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(st, status.get(), sizeof(st), cudaMemcpyDeviceToHost, stream_));
    std::vector<std::int64_t> all(problems.size());
    for (std::int64_t b = 0; b < B; ++b) all[b] = b;
    cut_chunks(all, row_begin_, all_chunks_, all_chunk_off_);
    upload(d_all_chunks_, all_chunks_, "row chunks of the batch", stream_);
    std::vector<double> wsum(problems.size(), 1.0);
    if (w_) {
      DeviceBuffer<std::int64_t> off(all_chunk_off_.size(), "chunk offsets");
      FLASHKM_CUDA_CHECK(cudaMemcpyAsync(off.get(), all_chunk_off_.data(), all_chunk_off_.size() * 8,
                                         cudaMemcpyHostToDevice, stream_));
      part_.ensure(std::max<std::size_t>(all_chunks_.size(), 1), "reduction parts");
      seg_out_.ensure(std::size_t(B), "per-problem sums");
      launch_chunk_weighted_sums(w_, nullptr, d_all_chunks_.get(), static_cast<std::int64_t>(all_chunks_.size()),
                                 part_.get(), stream_);
      launch_segment_sums(part_.get(), off.get(), B, seg_out_.get(), stream_);
      FLASHKM_CUDA_CHECK(cudaMemcpyAsync(wsum.data(), seg_out_.get(), B * 8, cudaMemcpyDeviceToHost, stream_));
      FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    } else {
      FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    }
    report_first_bad(st, wsum);
    std::uint32_t bits = static_cast<std::uint32_t>(st[3]);
    std::memcpy(&max_abs_, &bits, sizeof(float));

    // One operand for the whole batch (docs/CUDA.md: the batch's max |x| decides 'auto').
    op_ = choose_operand(opt_.precision, dtype, max_abs_);
    if (op_ != Operand::fp32) {
      const int dp = static_cast<int>(round_up(d_, kChunkD));
      // The single backend's choice for one problem (a function of D and the device), so
      // that every problem runs the kernel it runs alone (wgmma_sm90 on an H200, D <= 768;
      // tf32: the mma.sync kernels).
      tile_ = op_ == Operand::tf32 ? choose_tile_tf32(d_) : choose_tile(n_total_, 0, d_, sm_count_, cc_);
      FLASHKM_CHECK(tile_ != TileConfig::wgmma_sm90 || (sm90_wgmma_supported(cc_) && dp <= kMaxWgmmaDp), internal,
                    "the tile heuristic chose wgmma_sm90 where it cannot run");
      flash_rows_ = flash_tile_rows(tile_, dp);
      AssignParams probe{};
      probe.x = xv_.x;
      probe.x_dtype = xv_.dtype;
      probe.x_stride = xv_.stride;
      probe.x_batch = 0;
      probe.d = d_;
      // Streamed tiles read x as aligned operands: fp16/bf16 from a 16-bit copy made once;
      // tf32 converts while loading.
      if (op_ != Operand::tf32 && tile_streams_x(tile_) && !x_streamable(probe, op_)) {
        xop_.reset(std::size_t(n_total_) * dp * 2, "a 16-bit operand copy of the data (large d)");
        launch_convert_rows(xv_, op_ == Operand::fp16 ? 0 : 1, dp, xop_.get(), stream_);
        FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
      }
    }
    layout_.active.clear();
    layout_.k.clear();
    sub_which_.clear();
    next_valid_ = false;
    single_.reset();
    single_b_ = -1;
  }

  // Per-problem count, mean and M2 in two passes over the row chunks (the single backend's
  // column sums per chunk, chunk sums added in chunk order per problem).
  std::vector<core::FeatureMoments> feature_moments() override {
    DeviceGuard g(opt_.device_id);
    const std::int64_t B = problems();
    const auto n_chunks = static_cast<std::int64_t>(all_chunks_.size());
    DeviceBuffer<double> part(std::size_t(n_chunks) * d_, "column sums");
    DeviceBuffer<double> centers(std::size_t(B) * d_, "column means");
    std::vector<double> h(std::size_t(n_chunks) * d_);
    std::vector<core::FeatureMoments> m(static_cast<std::size_t>(B));
    auto pass = [&](const double* c, bool second) {
      launch_chunk_column_sums(xv_, c, d_all_chunks_.get(), n_chunks, part.get(), stream_);
      FLASHKM_CUDA_CHECK(cudaMemcpyAsync(h.data(), part.get(), h.size() * 8, cudaMemcpyDeviceToHost, stream_));
      FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
      for (std::int64_t b = 0; b < B; ++b) {
        std::vector<double> tot(static_cast<std::size_t>(d_), 0.0);
        for (std::int64_t c2 = all_chunk_off_[b]; c2 < all_chunk_off_[b + 1]; ++c2)
          for (int j = 0; j < d_; ++j) tot[j] += h[c2 * d_ + j];
        (second ? m[b].m2 : m[b].mean) = std::move(tot);
      }
    };
    pass(nullptr, false);
    std::vector<double> means(std::size_t(B) * d_);
    for (std::int64_t b = 0; b < B; ++b) {
      m[b].count = rows(b);
      for (auto& v : m[b].mean) v /= double(rows(b));
      std::copy(m[b].mean.begin(), m[b].mean.end(), means.begin() + b * d_);
    }
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(centers.get(), means.data(), means.size() * 8, cudaMemcpyHostToDevice, stream_));
    pass(centers.get(), true);
    return m;
  }

  // Problem b alone: a single CUDA backend on its rows of the batch's device matrix (no
  // copy of the rows), with the batch's operand precision. Kept until another is asked for.
  core::Backend& problem(std::int64_t b) override {
    DeviceGuard g(opt_.device_id);
    if (single_ && single_b_ == b) return *single_;
    single_.reset();
    single_b_ = -1;
    CudaOptions o;
    o.device_id = opt_.device_id;
    o.precision = op_ == Operand::fp16   ? Precision::fp16
                  : op_ == Operand::bf16 ? Precision::bf16
                  : op_ == Operand::tf32 ? Precision::tf32
                                         : Precision::fp32;
    o.certify = opt_.certify;
    o.cascade = opt_.cascade;
    auto be = make_cuda_backend(o);
    const MatrixView xb = MatrixView::raw(static_cast<const char*>(xv_.x) +
                                              std::size_t(row_begin_[b]) * std::size_t(xv_.stride) * dtype_size(xv_.dtype),
                                          xv_.dtype, rows(b), d_, xv_.stride, Location::cuda, opt_.device_id);
    be->attach(xb, has_weights_[b] ? w_ + row_begin_[b] : nullptr, metric_);
    single_ = std::move(be);
    single_b_ = b;
    return *single_;
  }

  // The rows and weights of problem b for init 'random', without a backend of its own.
  core::Backend& problem_rows(std::int64_t b) override {
    rows_view_ = std::make_unique<ProblemRowsView>(xv_, xnorm_.get(), has_weights_[b] ? w_ : nullptr, row_begin_[b],
                                                   rows(b), metric_, opt_.device_id, stream_);
    return *rows_view_;
  }

  // ---- centroids ------------------------------------------------------------------------
  void set_centroids(const std::vector<std::int64_t>& active, const std::vector<const float*>& c,
                     const std::vector<std::int64_t>& k) override {
    DeviceGuard g(opt_.device_id);
    if (active != layout_.active || k != layout_.k) build_layout(active, k);
    const std::size_t m = active.size();
    const auto& koff = layout_.koff;
    auto bytes = [&](std::size_t a) { return std::size_t(k[a]) * d_ * sizeof(float); };
    // The driver hands back the centroids update_centroids() computed: already on the device
    // with their operands (the byte compare makes skipping the upload safe).
    if (next_valid_) {
      std::atomic<bool> differ{false};
      host_over_problems(m, bytes, [&](std::size_t a) {
        if (!differ && std::memcmp(c[a], h_next_.get() + koff[a] * d_, bytes(a)) != 0) differ = true;
      });
      next_valid_ = false;
      if (!differ) {
        std::swap(main_, next_);
        ++main_gen_;
        return;
      }
    }
    ++main_gen_;  // before anything can fail: main_ is being changed
    h_stage_.ensure(std::max<std::size_t>(std::size_t(layout_.k_total) * d_, 1), "pinned staging of the centroids");
    size_set(main_, op_, true);
    // The whole set is 65 MB at B = 500, K = 256, D = 128: staged and sent in pieces.
    upload_via_staging(
        m, bytes, [&](std::size_t a) { return c[a]; }, reinterpret_cast<unsigned char*>(h_stage_.get()),
        reinterpret_cast<unsigned char*>(main_.c32.get()), opt_.device_id, stream_);
    build_operands(main_, main_.c32.get());
    unsigned ovf = 0;
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(&ovf, main_.overflow.get(), 4, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    FLASHKM_CHECK(ovf == 0, invalid_argument, "centroids exceed the fp16 range (|c| > 65504); use bf16 or auto");
  }

  void assign(const std::vector<std::int64_t>& which, bool labels_only, std::vector<core::AssignStats>& out) override {
    (void)labels_only;  // the CUDA assign does nothing extra for a following update
    DeviceGuard g(opt_.device_id);
    FLASHKM_ASSERT(!layout_.active.empty(), "assign() before set_centroids()");
    ensure_subset(which);
    ensure_scratch();
    const std::int64_t m = static_cast<std::int64_t>(layout_.active.size());
    pstats_.ensure(std::size_t(4 * m), "per-problem assign statistics");
    FLASHKM_CUDA_CHECK(cudaMemsetAsync(counters_.get(), 0, kNumCounters * sizeof(unsigned long long), stream_));
    FLASHKM_CUDA_CHECK(cudaMemsetAsync(pstats_.get(), 0, 4 * m * sizeof(unsigned long long), stream_));
    AssignParams p = params_for(main_, opt_.certify);
    p.problem_stats = pstats_.get();
    // A cascade after a tensor-core level 1: candidates or SIMT (CertifyCascade::fp64, like an
    // fp32 level 1: every flagged row to the full fp64 re-check, one flat list).
    const bool cascade = opt_.certify && main_.op != Operand::fp32 && opt_.cascade != CertifyCascade::fp64;
    if (cascade) {
      pcounts_.ensure(std::size_t(m), "per-problem flagged counts");
      FLASHKM_CUDA_CHECK(cudaMemsetAsync(pcounts_.get(), 0, m * sizeof(unsigned long long), stream_));
      p.problem_counts = pcounts_.get();
    }
    if (main_.op == Operand::fp32) launch_simt_assign(p, stream_);
    else launch_flash_assign(p, main_.op, tile_, stream_);
    // Levels 2 and 3 read the data as given (never the 16-bit operand copy of large-d fp32 data).
    AssignParams pr = p;
    pr.x = xv_.x;
    pr.x_dtype = xv_.dtype;
    pr.x_stride = xv_.stride;
    cand_chunks_ = 0;
    if (cascade && candidate_cascade(opt_.cascade, tile_, main_.op, d_)) {
      settle_candidates(p, pr, m);  // levels 2-3 and the re-check of their overflow
    } else if (cascade) {
      ensure_cascade_set();
      AssignParams p2 = params_for(cas_, true);
      p2.row_map = p.flagged;
      p2.n_dev = pcounts_.get();
      p2.flagged = p.flagged + n_total_;  // the second half of the per-row scratch
      p2.counters = counters_.get() + kFlagged2;
      p2.problem_stats = pstats_.get() + 2 * m;
      launch_simt_assign(p2, stream_);
      pr.flagged = p2.flagged;
      pr.counters = p2.counters;
      pr.problem_stats = p2.problem_stats;
      launch_recheck(pr, main_.c32.get(), stream_);
    } else {
      launch_recheck(pr, main_.c32.get(), stream_);  // fp32 level 1 (or uncertified: nothing)
    }
    // Inertia per listed problem: chunk sums of w * dist, each problem's chunks in order.
    const std::size_t nw = which.size();
    part_.ensure(std::max<std::size_t>(sub_n_chunks_, 1), "reduction parts");
    seg_out_.ensure(std::max<std::size_t>(nw, 1), "per-problem sums");
    launch_chunk_weighted_sums(dist_.get(), w_, d_sub_chunks_.get(), sub_n_chunks_, part_.get(), stream_);
    launch_segment_sums(part_.get(), d_sub_off_.get(), static_cast<std::int64_t>(nw), seg_out_.get(), stream_);
    std::vector<unsigned long long> ps(std::size_t(4 * m));
    std::vector<double> inertia(nw);
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(ps.data(), pstats_.get(), ps.size() * 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(inertia.data(), seg_out_.get(), nw * 8, cudaMemcpyDeviceToHost, stream_));
    std::vector<unsigned long long> hc(static_cast<std::size_t>(cand_chunks_ * kCandSlots));
    if (!hc.empty())
      FLASHKM_CUDA_CHECK(cudaMemcpyAsync(hc.data(), cand_ctr_.get(), hc.size() * 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    out.assign(nw, core::AssignStats{});
    for (std::size_t i = 0; i < nw; ++i) {
      const std::int64_t a = sub_slots_[i];
      out[i].inertia = inertia[i];
      out[i].n_rechecked = static_cast<std::int64_t>(ps[2 * a]);
      out[i].n_rechecked_fp64 = static_cast<std::int64_t>(cascade ? ps[2 * m + 2 * a] : ps[2 * a]);
      out[i].n_changed = static_cast<std::int64_t>(ps[2 * a + 1] + ps[2 * m + 2 * a + 1]);
    }
    // Candidate pairs are counted per chunk, not per problem: the batch's total on its first.
    for (std::size_t at = kCandPairs; at < hc.size() && nw > 0; at += kCandSlots)
      out[0].n_candidates += static_cast<std::int64_t>(hc[at]);
  }

  /// The candidate cascade (certify_candidates.hpp) after level 1 (p; pr: x as given) over
  /// the m active problems: the host reads their flagged counts (the one host wait), then
  /// runs levels 2-3 over chunks of tiles of the problems' flagged regions (the list's
  /// region of problem a starts at its row_begin, as level 1 wrote it). Per-problem counts
  /// go to the level-2/3 half of pstats_ (rows re-checked against every centroid, label
  /// changes), as the SIMT cascade's; the chunks' counters stay in cand_ctr_ (cand_chunks_).
  void settle_candidates(const AssignParams& p, const AssignParams& pr, std::int64_t m) {
    std::vector<unsigned long long> counts(static_cast<std::size_t>(m));
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(counts.data(), pcounts_.get(), m * 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::int64_t total = 0;
    for (const auto c : counts) total += static_cast<std::int64_t>(c);
    if (total == 0) return;
    FLASHKM_CHECK(n_total_ < (std::int64_t(1) << 31), invalid_argument,
                  "certified batched fit: candidate lists index rows in 32 bits (", n_total_, " rows)");
    CandidateWork w;
    w.sizes = candidate_sizes(total);
    // The problems' flagged regions as problems of their own (n = the count), in tiles of the
    // level 1 kernel's height (flash_rows_), cut into chunks of at most chunk_rows rows (one tile at least).
    std::vector<ProblemDesc> desc = layout_.desc_op;
    std::vector<ProblemTile> tiles;
    std::vector<std::int64_t> chunk_tile{0};  // first tile of each chunk
    std::int64_t in_chunk = 0;
    for (std::int64_t a = 0; a < m; ++a) {
      desc[a].n = static_cast<std::int64_t>(counts[a]);
      for (std::int64_t r = 0; r < desc[a].n; r += flash_rows_) {
        const std::int64_t rows = std::min<std::int64_t>(flash_rows_, desc[a].n - r);
        if (in_chunk > 0 && in_chunk + rows > w.sizes.chunk_rows) {
          chunk_tile.push_back(static_cast<std::int64_t>(tiles.size()));
          in_chunk = 0;
        }
        tiles.push_back(ProblemTile{r, static_cast<std::int32_t>(a), 0});
        in_chunk += rows;
      }
    }
    chunk_tile.push_back(static_cast<std::int64_t>(tiles.size()));
    w.sizes.chunks = static_cast<std::int64_t>(chunk_tile.size()) - 1;
    upload(d_desc_cand_, desc, "problem table (candidate level)", stream_);
    upload(t_cand_, tiles, "row tiles (candidate level)", stream_);
    cand_pairs_.ensure(std::size_t(w.sizes.capacity), "candidate pairs");
    cand_scores_.ensure(std::size_t(w.sizes.capacity), "candidate fp64 scores");
    cand_ctr_.ensure(std::size_t(w.sizes.chunks * kCandSlots), "candidate counters");
    FLASHKM_CUDA_CHECK(cudaMemsetAsync(cand_ctr_.get(), 0, w.sizes.chunks * kCandSlots * 8, stream_));
    w.list = p.flagged;
    w.keys = reinterpret_cast<unsigned long long*>(p.flagged + n_total_);  // the second half of the scratch
    w.pairs = cand_pairs_.get();
    w.scores = cand_scores_.get();
    w.ctr = cand_ctr_.get();
    for (std::int64_t c = 0; c < w.sizes.chunks; ++c) {
      CandidateRows rows;
      rows.problems = d_desc_cand_.get();
      rows.tiles = t_cand_.get() + chunk_tile[c];
      rows.n_tiles = chunk_tile[c + 1] - chunk_tile[c];
      rows.tile_rows = flash_rows_;
      rows.problem_stats = pstats_.get() + 2 * m;
      launch_candidate_chunk(p, main_.op, tile_, pr, main_.c32.get(), rows, w, w.ctr + c * kCandSlots, stream_);
    }
    cand_chunks_ = w.sizes.chunks;
  }

  // The update on the device for every active problem at once (the single backend's sort-
  // inverse update over K_total packed clusters); per-problem shifts; new operands prepared
  // into next_. A problem with an empty cluster is updated by problem(b) instead.
  void update_centroids(Metric metric, const std::vector<const float*>& current, const std::vector<float*>& next,
                        const std::vector<double*>& weight, std::vector<double>& shift) override {
    DeviceGuard g(opt_.device_id);
    FLASHKM_ASSERT(metric == metric_, "update with another metric than attach() gave");
    const std::size_t m = layout_.active.size();
    update_on_device(/*centroids_to_host=*/true);
    const auto& koff = layout_.koff;
    std::vector<char> empty(m, 0);
    for (std::size_t a = 0; a < m; ++a)
      for (std::int64_t j = koff[a]; j < koff[a + 1] && !empty[a]; ++j) empty[a] = !(h_cw_.get()[j] > 0);
    shift.assign(m, 0.0);
    auto bytes = [&](std::size_t a) { return std::size_t(koff[a + 1] - koff[a]) * d_ * sizeof(float); };
    host_over_problems(m, bytes, [&](std::size_t a) {
      if (empty[a]) return;
      std::memcpy(next[a], h_next_.get() + koff[a] * d_, bytes(a));
      std::memcpy(weight[a], h_cw_.get() + koff[a], std::size_t(koff[a + 1] - koff[a]) * sizeof(double));
      shift[a] = h_shift_.get()[a];
    });
    bool repaired = false;
    for (std::size_t a = 0; a < m; ++a) {
      if (!empty[a]) continue;
      // The problem alone: same labels (assign of the same centroids), then the single
      // backend's update, which falls back to the core's host path and repairs the cluster.
      const std::int64_t b = layout_.active[a], k = koff[a + 1] - koff[a];
      core::for_problem(b, [&] {
        core::Backend& one = problem(b);
        one.set_centroids(current[a], k);
        one.assign();
        one.update_centroids(k, metric_, current[a], next[a], weight[a], &shift[a]);
      });
      repaired = true;
    }
    // fp16 overflow of a mean cannot happen for data inside the fp16 range, but if it does,
    // set_centroids() prepares them again and reports it.
    next_valid_ = !repaired && *h_ovf_.get() == 0;
  }

  // The update with the new centroids left on the device as the current set (the single
  // backend's update_centroids_kept, for every active problem): no K_total x D copy to the
  // host and no compare on the next set_centroids. Any empty cluster or fp16 overflow: false,
  // nothing changed (main_ is untouched), and the driver runs update_centroids().
  bool update_centroids_kept(Metric metric, const std::vector<double*>& weight, std::vector<double>& shift) override {
    DeviceGuard g(opt_.device_id);
    FLASHKM_ASSERT(metric == metric_, "update with another metric than attach() gave");
    update_on_device(/*centroids_to_host=*/false);
    const std::size_t m = layout_.active.size();
    const auto& koff = layout_.koff;
    if (*h_ovf_.get() != 0) return false;
    for (std::int64_t j = 0; j < layout_.k_total; ++j)
      if (!(h_cw_.get()[j] > 0)) return false;
    shift.assign(m, 0.0);
    for (std::size_t a = 0; a < m; ++a) {
      std::memcpy(weight[a], h_cw_.get() + koff[a], std::size_t(koff[a + 1] - koff[a]) * sizeof(double));
      shift[a] = h_shift_.get()[a];
    }
    std::swap(main_, next_);
    next_valid_ = false;
    ++main_gen_;
    return true;
  }

  void copy_centroids(const std::vector<float*>& out) override {
    DeviceGuard g(opt_.device_id);
    FLASHKM_ASSERT(!layout_.active.empty() && out.size() == layout_.active.size(), "copy_centroids() of another set");
    const std::int64_t nc = layout_.k_total;
    h_stage_.ensure(std::max<std::size_t>(std::size_t(nc) * d_, 1), "pinned staging of the centroids");
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(h_stage_.get(), main_.c32.get(), nc * d_ * 4, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    const auto& koff = layout_.koff;
    auto bytes = [&](std::size_t a) { return std::size_t(koff[a + 1] - koff[a]) * d_ * sizeof(float); };
    host_over_problems(out.size(), bytes, [&](std::size_t a) { std::memcpy(out[a], h_stage_.get() + koff[a] * d_, bytes(a)); });
  }

  void exact_inertia(std::vector<double>& out) override {
    DeviceGuard g(opt_.device_id);
    const auto n_chunks = static_cast<std::int64_t>(layout_.chunks.size());
    part_.ensure(std::max<std::size_t>(layout_.chunks.size(), 1), "reduction parts");
    launch_chunk_exact_inertia(xv_, w_, labels_.get(), main_.c32.get(), d_desc_op_.get(), metric_, d_chunks_.get(),
                               n_chunks, part_.get(), stream_);
    std::vector<double> h(layout_.chunks.size());
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(h.data(), part_.get(), h.size() * 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    const std::size_t m = layout_.active.size();
    out.assign(m, 0.0);
    for (std::size_t a = 0; a < m; ++a) {
      double t = 0;
      for (std::int64_t c = layout_.chunk_off[a]; c < layout_.chunk_off[a + 1]; ++c) t += h[c];
      out[a] = t;
    }
  }

  void cluster_weights(const std::vector<double*>& weight) override {
    DeviceGuard g(opt_.device_id);
    sort_reduce(false);
    const std::int64_t nc = layout_.k_total;
    std::vector<double> h(static_cast<std::size_t>(nc));
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(h.data(), cw_.get(), nc * 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    const auto& koff = layout_.koff;
    for (std::size_t a = 0; a < layout_.active.size(); ++a)
      std::copy(h.begin() + koff[a], h.begin() + koff[a + 1], weight[a]);
  }

  void copy_labels(std::int64_t b, std::int32_t* out) override {
    DeviceGuard g(opt_.device_id);
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(out, labels_.get() + row_begin_[b], rows(b) * 4, cudaMemcpyDefault, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

 private:
  /// The first invalid value in problem order (within a problem: non-finite value, bad
  /// weight, zero row for cosine, weights summing to zero: the single backend's order).
  void report_first_bad(const long long st[4], const std::vector<double>& wsum) {
    constexpr long long kNone = std::numeric_limits<long long>::max();
    auto problem_of = [&](long long row) {
      return static_cast<std::int64_t>(std::upper_bound(row_begin_.begin(), row_begin_.end(), std::int64_t(row)) -
                                       row_begin_.begin()) - 1;
    };
    std::int64_t best_b = problems(), best_kind = 4;
    auto consider = [&](std::int64_t b, std::int64_t kind) {
      if (b < best_b || (b == best_b && kind < best_kind)) best_b = b, best_kind = kind;
    };
    if (st[0] != kNone) consider(problem_of(st[0]), 0);
    if (st[1] != kNone) consider(problem_of(st[1]), 1);
    if (metric_ == Metric::cosine && st[2] != kNone) consider(problem_of(st[2]), 2);
    for (std::int64_t b = 0; b < problems(); ++b)
      if (has_weights_[b] && !(wsum[b] > 0)) {
        consider(b, 3);
        break;
      }
    if (best_kind == 4) return;
    const std::int64_t b = best_b, r0 = row_begin_[b];
    core::for_problem(b, [&] {
      if (best_kind == 0) {
        const std::int64_t i = st[0];
        int j = 0;
        while (j < d_ && std::isfinite(device_element(xv_, i, j))) ++j;
        if (j < d_) FLASHKM_FAIL(invalid_argument, "input contains NaN or infinity: first at row ", i - r0, ", column ", j);
        FLASHKM_FAIL(invalid_argument, "row ", i - r0, " has a squared norm that overflows (values too large)");
      }
      if (best_kind == 1) {
        float wv = 0;
        FLASHKM_CUDA_CHECK(cudaMemcpy(&wv, w_ + st[1], sizeof(float), cudaMemcpyDeviceToHost));
        FLASHKM_FAIL(invalid_argument, "sample_weight must be finite and >= 0: row ", st[1] - r0, " has ", wv);
      }
      if (best_kind == 2)
        FLASHKM_FAIL(invalid_argument, "metric 'cosine' needs non-zero rows: row ", st[2] - r0, " is all zeros");
      FLASHKM_FAIL(invalid_argument, "sample_weight sums to zero: at least one weight must be > 0");
    });
  }

  /// The active set's packing: cluster offsets, the problem tables of both tile widths, and
  /// the row chunks of the active problems (update keys, exact inertia).
  void build_layout(const std::vector<std::int64_t>& active, const std::vector<std::int64_t>& k) {
    Layout& L = layout_;
    L.active = active;
    L.k = k;
    const std::size_t m = active.size();
    FLASHKM_CHECK(m < (std::size_t(1) << 31), invalid_argument, "too many problems in one batch for the CUDA backend");
    L.koff.assign(1, 0);
    for (std::size_t a = 0; a < m; ++a) {
      FLASHKM_CHECK(k[a] >= 1 && k[a] < (1 << 24), invalid_argument, "problem ", active[a], ": k = ", k[a],
                    " must be in [1, 2^24) on the CUDA backend");
      L.koff.push_back(L.koff.back() + k[a]);
    }
    L.k_total = L.koff.back();
    FLASHKM_CHECK(L.k_total < (std::int64_t(1) << 31), invalid_argument,
                  "the CUDA backend sorts by cluster as int32: the batch's clusters in all must be < 2^31, got ",
                  L.k_total);
    auto descs = [&](int bn, std::vector<ProblemDesc>& out, std::int64_t& kp_total) {
      out.resize(m);
      kp_total = 0;
      for (std::size_t a = 0; a < m; ++a) {
        const std::int64_t b = active[a];
        ProblemDesc& pd = out[a];
        pd.row_begin = row_begin_[b];
        pd.n = rows(b);
        pd.c_row = kp_total;
        pd.c32_row = L.koff[a];
        pd.k = static_cast<int>(k[a]);
        pd.kp = static_cast<int>(round_up(k[a], bn));
        kp_total += pd.kp;
      }
    };
    descs(op_ == Operand::fp32 ? kSimtBN : tile_bn(tile_), L.desc_op, L.kp_total_op);
    descs(kSimtBN, L.desc_simt, L.kp_total_simt);
    upload(d_desc_op_, L.desc_op, "problem table", stream_);
    upload(d_desc_simt_, L.desc_simt, "problem table (fp32 operands)", stream_);
    upload(d_koff_, L.koff, "cluster offsets per problem", stream_);
    cut_chunks(active, row_begin_, L.chunks, L.chunk_off);
    upload(d_chunks_, L.chunks, "row chunks of the active problems", stream_);
    L.rows_total = 0;
    for (const std::int64_t b : active) L.rows_total += rows(b);
    // The update's sort keys. Cluster-major keys (koff[a] + label) take ceil(log2 K_total)
    // bits: B500 K256 is 17 bits, three radix passes. Label-major keys (label << slot_bits |
    // slot) sorted on the label bits alone (stable) put each cluster's rows in row order as
    // well, and the full keys come out non-decreasing (within a label, the rows arrive slot
    // by slot): one pass at K256. The clusters are then the keys v, some of them no cluster
    // (slot >= m or label >= k_slot: no rows, cluster_of -1); used where that saves bits and
    // the key space stays within 2 K_total. The sums are the same bits either way (the same
    // rows in the same order, the same pieces).
    auto bits_for = [](std::int64_t v) {
      int b = 0;
      while ((std::int64_t(1) << b) < v) ++b;
      return b;
    };
    const std::int64_t k_max = m ? *std::max_element(k.begin(), k.end()) : 1;
    const int full_bits = std::max(1, bits_for(L.k_total)), slot_bits = bits_for(std::int64_t(m)),
              label_bits = std::max(1, bits_for(k_max));
    L.slot_bits = -1;
    L.n_keys = L.k_total;
    L.begin_bit = 0;
    L.end_bit = full_bits;
    if (label_bits < full_bits && (k_max << slot_bits) <= 2 * L.k_total &&
        (k_max << slot_bits) <= (std::int64_t(1) << 31)) {
      L.slot_bits = slot_bits;
      L.n_keys = k_max << slot_bits;
      L.begin_bit = slot_bits;
      L.end_bit = slot_bits + label_bits;
    }
    // Each cluster's piece height: its problem's, as alone (the pieces fix the sums' order),
    // per key. ceil(c / R) <= c / R + 1 per cluster, one item at least: at most
    // sum n_b / R_b + n_keys work items (a key of no cluster has no rows: one item).
    std::vector<std::int64_t> r_of(m);
    L.max_items = L.n_keys;
    L.max_big_pieces = 0;
    for (std::size_t a = 0; a < m; ++a) {
      r_of[a] = piece_rows_for(rows(active[a]), d_);
      L.max_items += rows(active[a]) / r_of[a];
      L.max_big_pieces += max_big_pieces(rows(active[a]), r_of[a]);
    }
    std::vector<std::int32_t> prows(static_cast<std::size_t>(L.n_keys), 1);
    if (L.slot_bits < 0) {
      for (std::size_t a = 0; a < m; ++a)
        std::fill(prows.begin() + L.koff[a], prows.begin() + L.koff[a + 1], static_cast<std::int32_t>(r_of[a]));
    } else {
      std::vector<std::int32_t> cluster_of(static_cast<std::size_t>(L.n_keys), -1);
      const std::int64_t mask = (std::int64_t(1) << L.slot_bits) - 1;
      for (std::int64_t v = 0; v < L.n_keys; ++v) {
        const std::int64_t a = v & mask, label = v >> L.slot_bits;
        if (a >= std::int64_t(m)) continue;
        prows[v] = static_cast<std::int32_t>(r_of[a]);
        if (label < k[a]) cluster_of[v] = static_cast<std::int32_t>(L.koff[a] + label);
      }
      upload(d_cluster_of_, cluster_of, "cluster of each sort key", stream_);
    }
    upload(d_piece_rows_, prows, "piece rows per sort key", stream_);
    ++layout_gen_;
    sub_which_.clear();
    next_valid_ = false;
    cas_gen_ = ~std::uint64_t(0);
  }

  /// Tile tables (both tile heights) and row chunks of the problems one assign() covers.
  void ensure_subset(const std::vector<std::int64_t>& which) {
    if (which == sub_which_ && sub_gen_ == layout_gen_) return;
    std::vector<std::int64_t> slot_of(static_cast<std::size_t>(problems()), -1);
    for (std::size_t a = 0; a < layout_.active.size(); ++a) slot_of[layout_.active[a]] = static_cast<std::int64_t>(a);
    sub_slots_.clear();
    std::vector<ProblemTile> tf, ts;
    for (const std::int64_t b : which) {
      FLASHKM_ASSERT(b >= 0 && b < problems() && slot_of[b] >= 0, "assign() of a problem outside the active set");
      const std::int64_t a = slot_of[b];
      sub_slots_.push_back(a);
      for (std::int64_t r = 0; r < rows(b); r += flash_rows_) tf.push_back(ProblemTile{r, static_cast<std::int32_t>(a), 0});
      for (std::int64_t r = 0; r < rows(b); r += kSimtBM) ts.push_back(ProblemTile{r, static_cast<std::int32_t>(a), 0});
    }
    // The tensor-core kernel takes flash_rows_-row tiles (its config's BM), the SIMT kernel
    // (fp32 level and the cascade's level 2) kSimtBM-row tiles.
    upload(t_flash_, tf, "row tiles", stream_);
    upload(t_simt_, ts, "row tiles (fp32 level)", stream_);
    n_flash_ = static_cast<std::int64_t>(tf.size());
    n_simt_ = static_cast<std::int64_t>(ts.size());
    std::vector<ProblemChunk> chunks;
    std::vector<std::int64_t> off;
    cut_chunks(which, row_begin_, chunks, off);
    upload(d_sub_chunks_, chunks, "row chunks of the assigned problems", stream_);
    upload(d_sub_off_, off, "chunk offsets of the assigned problems", stream_);
    sub_n_chunks_ = static_cast<std::int64_t>(chunks.size());
    sub_which_ = which;
    sub_gen_ = layout_gen_;
  }

  static std::size_t set_bytes(const RaggedSet& s) {
    return s.c32.bytes() + s.c_op.bytes() + s.cterm.bytes() + s.cmax_bits.bytes() + s.dcmax_bits.bytes();
  }

  void size_set(RaggedSet& cs, Operand op, bool own_c32) {
    const bool simt = op == Operand::fp32;
    cs.op = op;
    cs.dp = static_cast<int>(round_up(d_, simt ? kSimtBK : kChunkD));
    cs.kp_total = simt ? layout_.kp_total_simt : layout_.kp_total_op;
    const std::size_t m = layout_.active.size(), esz = static_cast<std::size_t>(operand_bytes(op));
    if (own_c32) cs.c32.ensure(std::size_t(layout_.k_total) * d_, "centroids");
    cs.c_op.ensure(std::size_t(cs.kp_total) * cs.dp * esz, "centroid operands");
    cs.cterm.ensure(std::size_t(cs.kp_total), "centroid norms");
    cs.cmax_bits.ensure(m, "centroid max norm");
    cs.dcmax_bits.ensure(m, "centroid max rounding error");
    cs.overflow.ensure(1, "overflow flag");
  }

  const ProblemDesc* desc_dev(Operand op) const {
    return op == Operand::fp32 ? d_desc_simt_.get() : d_desc_op_.get();
  }

  void build_operands(RaggedSet& cs, const float* c32) {
    const std::size_t m = layout_.active.size();
    FLASHKM_CUDA_CHECK(cudaMemsetAsync(cs.cmax_bits.get(), 0, m * 4, stream_));
    FLASHKM_CUDA_CHECK(cudaMemsetAsync(cs.dcmax_bits.get(), 0, m * 4, stream_));
    FLASHKM_CUDA_CHECK(cudaMemsetAsync(cs.overflow.get(), 0, 4, stream_));
    launch_prepare_centroids_ragged(c32, desc_dev(cs.op), static_cast<int>(m), cs.kp_total, d_, cs.dp,
                                    static_cast<int>(cs.op), metric_ == Metric::l2, cs.c_op.get(), cs.cterm.get(),
                                    cs.cmax_bits.get(), cs.dcmax_bits.get(), cs.overflow.get(), stream_);
  }

  void ensure_cascade_set() {
    if (cas_gen_ == main_gen_) return;
    size_set(cas_, Operand::fp32, false);
    build_operands(cas_, main_.c32.get());  // fp32 operands cannot overflow: the flag is not read
    cas_gen_ = main_gen_;
  }

  void ensure_scratch() {
    // The flagged lists (int64 per row, two levels) and the update's sort buffers share it.
    scratch_.ensure(std::size_t(n_total_) * 2, "per-row scratch (flagged rows / sort buffers)");
  }

  AssignParams params_for(const RaggedSet& cs, bool certify) {
    AssignParams p{};
    const bool use_op_copy = cs.op != Operand::fp32 && xop_.get() != nullptr;
    p.x = use_op_copy ? static_cast<const void*>(xop_.get()) : xv_.x;
    p.x_dtype = use_op_copy ? (cs.op == Operand::fp16 ? DType::f16 : DType::bf16) : xv_.dtype;
    p.x_stride = use_op_copy ? cs.dp : xv_.stride;
    p.x_zero_padded = use_op_copy;  // launch_convert_rows writes zeros from d to dp
    p.d = d_;
    p.batch = static_cast<int>(layout_.active.size());
    p.xnorm = xnorm_.get();
    p.c = cs.c_op.get();
    p.cterm = cs.cterm.get();
    p.cmax = reinterpret_cast<const float*>(cs.cmax_bits.get());
    p.dcmax = reinterpret_cast<const float*>(cs.dcmax_bits.get());
    p.dp = cs.dp;
    p.alpha = metric_ == Metric::l2 ? -2.0f : -1.0f;
    p.metric = metric_;
    p.labels = labels_.get();
    p.dist = dist_.get();
    p.certify = certify;
    p.flagged = scratch_.get();
    p.counters = counters_.get();
    p.problems = desc_dev(cs.op);
    const bool simt = cs.op == Operand::fp32;
    p.tiles = simt ? t_simt_.get() : t_flash_.get();
    p.n_tiles = simt ? n_simt_ : n_flash_;
    p.tile_rows = simt ? kSimtBM : flash_rows_;
    p.c_rows_total = cs.kp_total;
    p.x_rows = n_total_;  // every problem's rows are rows of x (the wgmma kernel's rows tensor map)
    if (certify) {
      const CertConstants k = cert_constants(cs.op, xv_.dtype, metric_, cs.dp, d_);
      p.cert_a = k.a;
      p.cert_c = k.c;
      p.cert_eta = k.eta;
      p.cert_b = k.b;
    }
    return p;
  }

  /// The device half of an update of every active problem: sums (sort_reduce), new
  /// centroids into next_ (finish_update, operands), per-problem shifts; then the cluster
  /// weights, shifts and overflow flag (and the new fp32 centroids: centroids_to_host) in
  /// pinned staging, after one synchronisation.
  void update_on_device(bool centroids_to_host) {
    const std::size_t m = layout_.active.size();
    const std::int64_t nc = layout_.k_total;
    next_valid_ = false;
    sort_reduce(true);
    size_set(next_, op_, true);
    shift_part_.ensure(std::size_t(nc), "update shift parts");
    seg_out_.ensure(std::max<std::size_t>(m, 1), "per-problem sums");
    FLASHKM_CUDA_CHECK(cudaMemsetAsync(counters_.get() + kEmpty, 0, sizeof(unsigned long long), stream_));
    launch_finish_update(sums_dev_.get(), cw_.get(), main_.c32.get(), nc, d_, metric_ == Metric::cosine,
                         next_.c32.get(), shift_part_.get(), counters_.get() + kEmpty, stream_);
    launch_segment_sums(shift_part_.get(), d_koff_.get(), static_cast<std::int64_t>(m), seg_out_.get(), stream_);
    build_operands(next_, next_.c32.get());
    h_cw_.ensure(std::size_t(nc), "pinned staging of the cluster weights");
    h_shift_.ensure(std::max<std::size_t>(m, 1), "pinned staging of the shifts");
    h_ovf_.ensure(1, "pinned staging of the overflow flag");
    if (centroids_to_host) {
      h_next_.ensure(std::size_t(nc) * d_, "pinned staging of the new centroids");
      FLASHKM_CUDA_CHECK(cudaMemcpyAsync(h_next_.get(), next_.c32.get(), nc * d_ * 4, cudaMemcpyDeviceToHost, stream_));
    }
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(h_cw_.get(), cw_.get(), nc * 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(h_shift_.get(), seg_out_.get(), m * 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(h_ovf_.get(), next_.overflow.get(), 4, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  /// The single backend's sort_reduce over the active problems' rows: keys koff[a] + label
  /// (rows of a cluster in row order), each cluster cut into pieces of its problem's
  /// piece_rows_for(n_b, d) (as alone), fp64 sums in order -> sums_dev_ [K_total x d]
  /// (with_x) and cw_ [K_total].
  void sort_reduce(bool with_x) {
    const Layout& L = layout_;
    const std::int64_t nc = L.k_total, nk = L.n_keys, rows = L.rows_total;
    ensure_scratch();
    std::int32_t* keys = reinterpret_cast<std::int32_t*>(scratch_.get());
    std::int32_t* vals = keys + n_total_;
    keys_alt_.ensure(std::size_t(n_total_), "sort keys");
    vals_alt_.ensure(std::size_t(n_total_), "sort values");
    launch_chunk_keys(labels_.get(), d_desc_op_.get(), d_chunks_.get(), static_cast<std::int64_t>(L.chunks.size()),
                      L.slot_bits, keys, vals, stream_);
    cub::DoubleBuffer<std::int32_t> dk(keys, keys_alt_.get()), dv(vals, vals_alt_.get());
    row_off_.ensure(std::size_t(nk + 1), "cluster row offsets");
    std::size_t t_sort = 0;
    FLASHKM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, t_sort, dk, dv, static_cast<int>(rows), L.begin_bit,
                                                       L.end_bit, stream_));
    const std::size_t t_scan = update_scan_bytes(nk);
    cub_temp_.ensure(std::max(t_sort, t_scan), "radix sort / scan workspace");
    FLASHKM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(cub_temp_.get(), t_sort, dk, dv, static_cast<int>(rows),
                                                       L.begin_bit, L.end_bit, stream_));
    // From here on the clusters are the sort keys v (cluster c itself with cluster-major keys).
    launch_cluster_offsets(dk.Current(), rows, nk, row_off_.get(), stream_);
    const UpdateWorkspace ws = upd_.prepare(nk, L.max_items, L.max_big_pieces, d_, cub_temp_.get(), t_scan);
    sums_dev_.ensure(with_x ? std::size_t(nc) * d_ : 1, "cluster sums");
    cw_.ensure(std::size_t(nc), "cluster weights");
    launch_update_sums(xv_, w_, xnorm_.get(), metric_ == Metric::cosine, with_x, dv.Current(), row_off_.get(), nk, 0,
                       d_piece_rows_.get(), L.slot_bits < 0 ? nullptr : d_cluster_of_.get(), ws, sums_dev_.get(),
                       cw_.get(), stream_);
  }

  struct Layout {
    std::vector<std::int64_t> active, k;  // problems of the active set, their K
    std::vector<std::int64_t> koff;       // [m + 1] first packed centroid of each
    std::int64_t k_total = 0;
    std::vector<ProblemDesc> desc_op, desc_simt;  // for the main operand's tile width / for fp32 (64)
    std::int64_t kp_total_op = 0, kp_total_simt = 0;
    std::vector<ProblemChunk> chunks;         // row chunks of the active problems (slot = position)
    std::vector<std::int64_t> chunk_off;  // [m + 1]
    std::int64_t rows_total = 0;
    std::int64_t max_items = 0;           // bound on the update's work items
    std::int64_t max_big_pieces = 0;      // bound on the pieces of its big clusters
    int slot_bits = -1;                   // label-major sort keys (>= 0) or cluster-major (-1)
    std::int64_t n_keys = 0;              // the key space: K_total, or k_max << slot_bits
    int begin_bit = 0, end_bit = 1;       // the bits the radix sort sorts on
  };

  CudaOptions opt_;
  int sm_count_ = 0;
  cudaStream_t stream_ = nullptr;
  int d_ = 0;
  Metric metric_ = Metric::l2;
  std::vector<std::int64_t> row_begin_;  // [B + 1]
  std::int64_t n_total_ = 0;
  XView xv_{};
  const float* w_ = nullptr;
  std::vector<char> has_weights_;
  float max_abs_ = 0;
  Operand op_ = Operand::fp16;
  TileConfig tile_ = TileConfig::resident_128x128;
  int cc_ = 0;           ///< compute capability, 10*major + minor
  int flash_rows_ = kFlashBM;  ///< rows per tile of the tensor-core config (flash_tile_rows)

  DeviceBuffer<unsigned char> xown_, xop_, cub_temp_;
  DeviceBuffer<float> w_own_, xnorm_, dist_;
  DeviceBuffer<std::int32_t> labels_, keys_alt_, vals_alt_, row_off_, d_piece_rows_, d_cluster_of_;
  DeviceBuffer<std::int64_t> scratch_, d_koff_, d_sub_off_;
  DeviceBuffer<unsigned long long> counters_, pstats_, pcounts_;
  DeviceBuffer<double> part_, sums_dev_, cw_, shift_part_, seg_out_;
  UpdateBuffers upd_;  // the update's work items and big clusters' piece sums
  DeviceBuffer<ProblemDesc> d_desc_op_, d_desc_simt_;
  DeviceBuffer<ProblemTile> t_flash_, t_simt_;
  // The candidate cascade (certify_candidates.hpp): its problem and tile tables (rebuilt
  // per assign from the flagged counts) and bounded workspace.
  DeviceBuffer<ProblemDesc> d_desc_cand_;
  DeviceBuffer<ProblemTile> t_cand_;
  DeviceBuffer<CandidatePair> cand_pairs_;
  DeviceBuffer<double> cand_scores_;
  DeviceBuffer<unsigned long long> cand_ctr_;
  std::int64_t cand_chunks_ = 0;  // chunks the last assign ran (their counters in cand_ctr_)
  DeviceBuffer<ProblemChunk> d_chunks_, d_all_chunks_, d_sub_chunks_;
  std::vector<ProblemChunk> all_chunks_;
  std::vector<std::int64_t> all_chunk_off_;

  Layout layout_;
  std::uint64_t layout_gen_ = 0, sub_gen_ = ~std::uint64_t(0);
  std::vector<std::int64_t> sub_which_, sub_slots_;
  std::int64_t n_flash_ = 0, n_simt_ = 0, sub_n_chunks_ = 0;

  // main_: the centroids assign() uses; next_: those update_centroids() computed, valid
  // (next_valid_) until set_centroids() takes them or others; cas_: fp32 operands of main_
  // for the cascade's second level (no c32 of its own), valid while cas_gen_ == main_gen_.
  RaggedSet main_, next_, cas_;
  bool next_valid_ = false;
  std::uint64_t main_gen_ = 0, cas_gen_ = ~std::uint64_t(0);
  PinnedBuffer<float> h_next_, h_stage_;
  PinnedBuffer<double> h_cw_, h_shift_;
  PinnedBuffer<unsigned> h_ovf_;

  std::unique_ptr<core::Backend> single_;  // problem(single_b_) alone
  std::unique_ptr<core::Backend> rows_view_;  // problem_rows(): the last one asked for
  std::int64_t single_b_ = -1;
};

}  // namespace

std::unique_ptr<core::BatchedBackend> make_cuda_batched_backend(const CudaOptions& options) {
  return std::make_unique<CudaBatchedBackend>(options);
}

std::size_t batched_device_bytes_held(const core::BatchedBackend& backend) {
  const auto* b = dynamic_cast<const CudaBatchedBackend*>(&backend);
  return b ? b->bytes_held() : 0;
}

}  // namespace flashkm::cuda

namespace flashkm::core {

std::unique_ptr<BatchedBackend> make_cuda_batched_backend(int device_id, Precision precision, bool certify) {
  cuda::CudaOptions o;
  o.device_id = device_id;
  o.precision = precision;
  o.certify = certify;
  return cuda::make_cuda_batched_backend(o);
}

}  // namespace flashkm::core
