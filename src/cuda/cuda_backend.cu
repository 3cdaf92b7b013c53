// The CUDA backend: core::Backend on one GPU. Kernels live in flash_assign.cu and
// kernels.cu; this file owns memory, chooses precision and tiles, and orders the launches.
//
// Memory (sized once per fit, never N x K): per row labels, best distance and |x|^2
// (12 B), two flagged-row lists (certification cascade) that share 16 B per row with the
// sort buffers of accumulate(), the centroids in fp32 and operand form (twice: the current
// set and the one update_centroids() prepared for the next iteration; a third, fp32-operand
// copy for the cascade's second level), and O(N / 256 + K) piece sums of D + 1 doubles.
//
// Certified assign() is a cascade (docs/CUDA.md): tensor cores flag the rows their bound
// cannot settle. With one problem the same kernel (wgmma or mma.sync, any tensor-core
// operand) re-runs the flagged rows and lists their candidate centroids, whose fp64 scores
// settle them (certify_candidates.hpp; the host reads the flagged count once per assign, or
// per streamed chunk). Elsewhere (CudaOptions::batch > 1, CertifyCascade::simt) the exact-fp32
// SIMT kernel re-runs those rows in place with its own, much tighter bound, and only what
// it cannot settle reaches the fp64 re-check, with no host wait between the levels (each
// reads the previous level's count on the device).
//
// A Lloyd iteration costs two host synchronisations: assign() (its statistics) and
// update_centroids() (K weights, the shift and the new fp32 centroids come back; sums stay).
//
// Host data larger than the device budget (set_memory_budget, FLASHKM_CUDA_MEMORY_BUDGET,
// the device's free memory) is streamed (core::DeviceStreamPlan, streamed_rows.hpp): a
// resident prefix of rows stays on the device, the rest is copied in chunks on every pass,
// and every op that reads rows runs the same kernels chunk by chunk (for_rows: the resident
// case is one chunk of all rows). The update's sums are then formed chunk by chunk in the
// resident update's order (ChunkedClusterSums), fused into assign()'s pass: one pass over
// the data per Lloyd iteration, the same bits as the resident fit (docs/CUDA.md).
#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <system_error>
#include <thread>
#include <vector>

#include "core/backend.hpp"
#include "core/device_stream_plan.hpp"
#include "cuda/cuda_backend.hpp"
#include "cuda/host_split.hpp"
#include "cuda/host_upload.hpp"
#include "cuda/certify.hpp"
#include "cuda/certify_candidates.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/flash_assign.hpp"
#include "cuda/kernels.cuh"
#include "cuda/streamed_rows.hpp"

namespace flashkm::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  if (err == cudaErrorMemoryAllocation) {
    (void)cudaGetLastError();
    FLASHKM_FAIL(out_of_memory, "CUDA out of memory in ", what);
  }
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver || err == cudaErrorInvalidDevice) {
    (void)cudaGetLastError();
    FLASHKM_FAIL(device_unavailable, "CUDA device unavailable: ", cudaGetErrorString(err), " (", what, ")");
  }
  FLASHKM_FAIL(internal, "CUDA error ", cudaGetErrorName(err), ": ", cudaGetErrorString(err), " in ", what, " at ",
               file, ":", line);
}

[[noreturn]] void throw_cuda_oom(std::size_t bytes, const char* what) {
  std::size_t free_b = 0, total_b = 0;
  (void)cudaMemGetInfo(&free_b, &total_b);
  (void)cudaGetLastError();
  FLASHKM_FAIL(out_of_memory, "CUDA out of memory: ", what, " needs ", bytes, " bytes (", free_b,
               " bytes free of ", total_b, ")");
}

namespace {

// counters_ slots. The cascade's levels count into their own pairs: level 1 (flagged,
// changed), level 2/3 (flagged by fp32 = rows that went to fp64, changed); kEmpty is the
// update's empty-cluster count.
enum : int { kFlagged = 0, kChanged = 1, kEmpty = 2, kFlagged2 = 3, kChanged2 = 4, kNumCounters = 5 };
// Streamed assign: each chunk's counters, then its level-1 flagged count (pcounts), per chunk.
constexpr std::int64_t kChunkSlots = kNumCounters + 1;

// Rows per piece of the update's sums: piece_rows_for() in kernels.cuh (shared with the
// batched backend, whose problems must cut their pieces as they do alone).

std::int64_t round_up(std::int64_t v, std::int64_t m) { return (v + m - 1) / m * m; }

/// Byte ranges of a large host copy or compare over host threads (2 MiB each at least,
/// cache-line-aligned cuts).
template <class Part>
void host_parallel(std::size_t bytes, const Part& part) {
  host_split(static_cast<std::int64_t>(bytes), 1, std::int64_t(2) << 20, 64,
             [&](std::int64_t lo, std::int64_t hi) { part(std::size_t(lo), std::size_t(hi)); });
}

bool host_equal(const void* a, const void* b, std::size_t bytes) {
  std::atomic<bool> differ{false};
  host_parallel(bytes, [&](std::size_t lo, std::size_t hi) {
    if (std::memcmp(static_cast<const char*>(a) + lo, static_cast<const char*>(b) + lo, hi - lo) != 0) differ = true;
  });
  return !differ;
}

void host_copy(void* dst, const void* src, std::size_t bytes) {
  host_parallel(bytes, [&](std::size_t lo, std::size_t hi) {
    std::memcpy(static_cast<char*>(dst) + lo, static_cast<const char*>(src) + lo, hi - lo);
  });
}

/// A set of centroids prepared for one kernel family.
struct CentroidSet {
  int k = 0, kp = 0, dp = 0;
  Operand op = Operand::fp32;
  TileConfig tile = TileConfig::resident_128x128;  // the tensor-core config its operands are laid out for
  DeviceBuffer<float> c32;            // [B][k x d] as given
  DeviceBuffer<unsigned char> c_op;   // [B][kp x dp] operands
  DeviceBuffer<float> cterm;          // [B][kp]
  DeviceBuffer<unsigned> cmax_bits;   // [B] max |c| (float bits)
  DeviceBuffer<unsigned> dcmax_bits;  // [B] max |c - operand(c)| (float bits): the bound's rounding term
  DeviceBuffer<unsigned> overflow;    // [1]
};

class CudaBackend final : public core::Backend {
 public:
  explicit CudaBackend(const CudaOptions& o) : opt_(o) {
    FLASHKM_CHECK(o.batch >= 1, invalid_argument, "batch must be >= 1");
    const DeviceInfo dev = open_device(o);
    sm_count_ = dev.sm_count;
    cc_ = dev.cc;
    DeviceGuard g(o.device_id);
    FLASHKM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  ~CudaBackend() override {
    if (rows_) {  // it waits for the streams that still use its buffers (on this backend's device)
      int prev = 0;
      const bool got = cudaGetDevice(&prev) == cudaSuccess;
      cudaSetDevice(opt_.device_id);
      rows_.reset();
      if (got) cudaSetDevice(prev);
    }
    if (stream_) cudaStreamDestroy(stream_);
  }

  const char* name() const override { return "cuda"; }
  std::int64_t rows() const override { return n_; }
  std::int64_t cols() const override { return d_; }

  std::size_t bytes_held() const {
    return labels_.bytes() + dist_.bytes() + xnorm_.bytes() + scratch_.bytes() + cub_temp_.bytes() +
           part_.bytes() + upd_.bytes() + sums_.bytes() +
           cw_.bytes() + mind_.bytes() + tmp_labels_.bytes() + tmp_dist_.bytes() + xop_.bytes() + xown_.bytes() +
           main_.c32.bytes() + main_.c_op.bytes() + main_.cterm.bytes() + cas_.c_op.bytes() + cas_.cterm.bytes() + pcounts_.bytes() + aux_.c32.bytes() + aux_.c_op.bytes() +
           aux_.cterm.bytes() + next_.c32.bytes() + next_.c_op.bytes() + next_.cterm.bytes() + flags_.bytes() +
           keys_alt_.bytes() + vals_alt_.bytes() + row_off_.bytes() + shift_part_.bytes() +
           csums_.bytes() + chunk_counters_.bytes() + trial_parts_.bytes() + trial_out_.bytes() +
           cand_pairs_.bytes() + cand_scores_.bytes() + cand_ctr_.bytes() +
           (rows_ ? rows_->plan().slots * std::size_t(rows_->plan().chunk_rows * rows_->row_bytes()) *
                        (rows_->plan().streamed_rows() > 0)
                  : 0);
  }

  StreamInfo stream_info() const {
    StreamInfo s;
    s.streamed = plan_.streamed;
    s.rows = n_;
    s.resident_rows = plan_.resident_rows;
    s.chunk_rows = plan_.chunk_rows;
    s.chunks = plan_.chunk_count();
    s.slots = plan_.slots;
    s.budget = plan_.budget;
    s.direct = rows_ && rows_->direct();
    s.bytes_copied = rows_ ? rows_->bytes_copied() : 0;
    s.passes = rows_ ? rows_->passes() : 0;
    return s;
  }

  void set_memory_budget(std::int64_t bytes) override { budget_ = bytes; }

  // ---- attach ---------------------------------------------------------------------------
  void attach(const MatrixView& x, const float* weights, Metric metric) override {
    DeviceGuard g(opt_.device_id);
    FLASHKM_CHECK(x.rows >= 1 && x.cols >= 1, invalid_argument, "x must have at least one row and one column");
    FLASHKM_CHECK(x.cols <= (1 << 20), invalid_argument, "d = ", x.cols, " is too large for the CUDA backend");
    FLASHKM_CHECK(x.rows % opt_.batch == 0, invalid_argument, "rows ", x.rows, " not divisible by batch ", opt_.batch);
    FLASHKM_CHECK(x.rows < (std::int64_t(1) << 31), invalid_argument,
                  "the CUDA backend sorts row indices as int32: N must be < 2^31");
    n_ = x.rows;
    d_ = static_cast<int>(x.cols);
    n_per_ = n_ / opt_.batch;
    metric_ = metric;
    const std::int64_t stride = x.stride();
    const std::size_t esz = dtype_size(x.dtype);
    rows_.reset();
    sums_valid_ = false;
    // Data on the device as given, or copied there once (host input), f64 converted to f32;
    // host data over the device budget is streamed (plan_.streamed).
    plan_ = plan_for(x, weights != nullptr);
    if (x.where == Location::cuda) {
      FLASHKM_CHECK(x.device_id == opt_.device_id, invalid_argument, "x lives on CUDA device ", x.device_id,
                    " but the backend runs on device ", opt_.device_id);
      xv_ = XView{x.data, x.dtype, stride, n_, d_, n_per_};
    } else if (plan_.streamed) {
      // The resident prefix is copied once (float64 converted on the host); the other rows
      // stay where they are and are copied chunk by chunk on every pass.
      rows_ = std::make_unique<RowStream>(x, plan_, stream_);
      xown_.reset(std::size_t(plan_.resident_rows * rows_->row_bytes()), "the resident rows of streamed data");
      rows_->upload(0, plan_.resident_rows, xown_.get());
      xv_ = XView{xown_.get(), rows_->device_dtype(), d_, plan_.resident_rows, d_, plan_.resident_rows};
    } else {
      const std::size_t bytes = std::size_t(n_) * d_ * esz;
      xown_.reset(bytes, "a device copy of the host data");
      FLASHKM_CUDA_CHECK(cudaMemcpy2DAsync(xown_.get(), d_ * esz, x.data, stride * esz, d_ * esz, n_,
                                           cudaMemcpyHostToDevice, stream_));
      xv_ = XView{xown_.get(), x.dtype, d_, n_, d_, n_per_};
    }
    if (x.dtype == DType::f64 && !plan_.streamed) {
      DeviceBuffer<unsigned char> f32(std::size_t(n_) * d_ * 4, "an fp32 copy of float64 data");
      launch_f64_to_f32(static_cast<const double*>(xv_.x), n_, d_, xv_.stride, reinterpret_cast<float*>(f32.get()),
                        stream_);
      FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
      xown_ = std::move(f32);
      xv_ = XView{xown_.get(), DType::f32, d_, n_, d_, n_per_};
    }
    if (weights) {
      w_own_.reset(std::size_t(n_), "sample weights");
      FLASHKM_CUDA_CHECK(cudaMemcpyAsync(w_own_.get(), weights, n_ * sizeof(float), cudaMemcpyDefault, stream_));
      w_ = w_own_.get();
    } else {
      w_ = nullptr;
    }
    xnorm_.reset(std::size_t(n_), "row norms");
    labels_.reset(std::size_t(n_), "labels");
    dist_.reset(std::size_t(n_), "distances");
    FLASHKM_CUDA_CHECK(cudaMemsetAsync(labels_.get(), 0xff, n_ * sizeof(std::int32_t), stream_));
    part_.ensure(std::size_t(n_ / kRowChunk + 2), "reduction parts");
    sums_.ensure(4, "reduction results");
    counters_.ensure(kNumCounters, "counters");

    // Validate (first bad row), |x|^2, max |x|: one status per chunk of rows (one chunk when
    // resident), the first bad row of the first chunk that has one.
    constexpr long long kNone = std::numeric_limits<long long>::max();
    const std::int64_t chunks = plan_.chunk_count();
    DeviceBuffer<long long> status(std::size_t(4 * chunks), "validation status");
    std::vector<long long> hs(static_cast<std::size_t>(4 * chunks));
    for (std::int64_t c = 0; c < chunks; ++c) {
      hs[4 * c] = hs[4 * c + 1] = hs[4 * c + 2] = kNone;
      hs[4 * c + 3] = 0;
    }
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(status.get(), hs.data(), hs.size() * 8, cudaMemcpyHostToDevice, stream_));
    for_rows(true, [&](const RowChunk& ch) {
      launch_validate(ch.x, w_ ? w_ + ch.r0 : nullptr, xnorm_.get() + ch.r0, status.get() + 4 * ch.index, stream_);
    });
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(hs.data(), status.get(), hs.size() * 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    long long st[4] = {kNone, kNone, kNone, 0};
    for (std::int64_t c = 0; c < chunks; ++c) {
      const std::int64_t r0 = plan_.chunk(c).begin;
      for (int q = 0; q < 3; ++q)
        if (st[q] == kNone && hs[4 * c + q] != kNone) st[q] = r0 + hs[4 * c + q];
      // max |x| as float bits: non-negative floats order as their bits do
      st[3] = std::max<long long>(st[3], static_cast<long long>(static_cast<std::uint32_t>(hs[4 * c + 3])));
    }
    if (st[0] != std::numeric_limits<long long>::max()) {
      const std::vector<float> row = host_row(st[0]);
      int j = 0;
      while (j < d_ && std::isfinite(row[j])) ++j;
      // Rows named by their index in the whole data (a distributed fit's shard is offset).
      if (j < d_)
        FLASHKM_FAIL(invalid_argument, "input contains NaN or infinity: first at row ", st[0] + global_row_offset(),
                     ", column ", j);
      FLASHKM_FAIL(invalid_argument, "row ", st[0] + global_row_offset(),
                   " has a squared norm that overflows (values too large)");
    }
    if (st[1] != std::numeric_limits<long long>::max()) {
      float wv = 0;
      FLASHKM_CUDA_CHECK(cudaMemcpy(&wv, w_ + st[1], sizeof(float), cudaMemcpyDeviceToHost));
      FLASHKM_FAIL(invalid_argument, "sample_weight must be finite and >= 0: row ", st[1] + global_row_offset(), " has ",
                   wv);
    }
    if (metric_ == Metric::cosine && st[2] != std::numeric_limits<long long>::max())
      FLASHKM_FAIL(invalid_argument, "metric 'cosine' needs non-zero rows: row ", st[2] + global_row_offset(),
                   " is all zeros");
    std::uint32_t bits = static_cast<std::uint32_t>(st[3]);
    std::memcpy(&max_abs_, &bits, sizeof(float));
    total_weight_ = w_ ? weighted_sum(w_, nullptr) : double(n_);
    FLASHKM_CHECK(total_weight_ > 0, invalid_argument, "sample_weight sums to zero: at least one weight must be > 0");

    choose_precision(x.dtype);
  }

  // Per-feature count, mean and M2 in two passes (column sums, then squared deviations from
  // the mean), chunk sums added on the host in chunk order: deterministic.
  core::FeatureMoments feature_moments() override {
    DeviceGuard g(opt_.device_id);
    const std::int64_t chunks = (n_ + kRowChunk - 1) / kRowChunk;
    DeviceBuffer<double> part(std::size_t(chunks * d_), "column sums");
    DeviceBuffer<double> center(std::size_t(d_), "column means");
    std::vector<double> h(static_cast<std::size_t>(chunks * d_));
    auto pass = [&](const double* c) {
      for_rows(true, [&](const RowChunk& ch) {
        launch_column_sums(ch.x, c, part.get() + (ch.r0 / kRowChunk) * d_, stream_);
      });
      FLASHKM_CUDA_CHECK(cudaMemcpyAsync(h.data(), part.get(), h.size() * 8, cudaMemcpyDeviceToHost, stream_));
      FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
      std::vector<double> tot(static_cast<std::size_t>(d_), 0.0);
      for (std::int64_t c2 = 0; c2 < chunks; ++c2)
        for (int j = 0; j < d_; ++j) tot[j] += h[c2 * d_ + j];
      return tot;
    };
    core::FeatureMoments m;
    m.count = n_;
    m.mean = pass(nullptr);
    for (auto& v : m.mean) v /= double(n_);
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(center.get(), m.mean.data(), d_ * 8, cudaMemcpyHostToDevice, stream_));
    m.m2 = pass(center.get());
    return m;
  }

  // ---- centroids ------------------------------------------------------------------------
  void set_centroids(const float* c, std::int64_t k) override {
    DeviceGuard g(opt_.device_id);
    FLASHKM_CHECK(k >= 1 && k % opt_.batch == 0, invalid_argument, "k = ", k, " must be >= 1 (and a multiple of batch)");
    FLASHKM_CHECK(k / opt_.batch < (1 << 24), invalid_argument, "k must be < 2^24 on the CUDA backend");
    // The Lloyd driver hands back the centroids update_centroids() computed: those are
    // already on the device with their operands. The byte compare (K x D on the host) is
    // what makes skipping the upload safe whatever the caller did in between.
    if (next_valid_ && std::int64_t(next_.k) * opt_.batch == k &&
        host_equal(c, h_next_.get(), std::size_t(k) * d_ * sizeof(float))) {
      std::swap(main_, next_);
      next_valid_ = false;
      k_ = main_.k;
      ++main_gen_;
      return;
    }
    next_valid_ = false;
    ++main_gen_;  // before prepare(): even a failed one has changed main_
    prepare(main_, c, static_cast<int>(k / opt_.batch), op_);
    k_ = main_.k;
  }

  core::AssignStats assign() override { return assign_pass(/*for_update=*/true); }
  // Streamed data: the same pass without the update's sums (they would be a second read of
  // every chunk's rows for nothing). Resident: assign() itself, as before.
  core::AssignStats assign_labels() override { return assign_pass(/*for_update=*/false); }

  core::AssignStats assign_pass(bool for_update) {
    DeviceGuard g(opt_.device_id);
    FLASHKM_ASSERT(k_ > 0, "assign() before set_centroids()");
    mind_.release();  // initialisation is over
    sums_valid_ = false;  // the labels change
    const Settle how = settle_mode();
    const bool fuse = for_update && plan_.streamed;
    std::vector<unsigned long long> h;
    cand_chunks_ = 0;
    for (auto& v : cand_acc_) v = 0;
    if (!plan_.streamed) {
      ensure_scratch();
      FLASHKM_CUDA_CHECK(cudaMemsetAsync(counters_.get(), 0, kNumCounters * sizeof(unsigned long long), stream_));
      if (how == Settle::simt) {
        // Level 1 lists its flagged rows per problem (region b of the list, count b in
        // pcounts_) so that level 2's tiles hold one problem's rows.
        pcounts_.ensure(std::size_t(opt_.batch), "per-problem flagged counts");
        FLASHKM_CUDA_CHECK(cudaMemsetAsync(pcounts_.get(), 0, opt_.batch * sizeof(unsigned long long), stream_));
      }
      for_rows(true, [&](const RowChunk& ch) { assign_rows(ch, counters_.get(), pcounts_.get()); });
      h.resize(kNumCounters);
    } else {
      // Streamed: the O(N) arrays of the initialisations go (the plan counted them, but the
      // chunks' work is better off without them), each chunk counts into its own slots (its
      // flagged lists start at 0), and with for_update the chunk's rows, whose labels are
      // final once its cascade ran, are added to the update's sums before the slot is refilled.
      tmp_labels_.release();
      tmp_dist_.release();
      flags_.release();
      ensure_scratch();
      const std::int64_t chunks = plan_.chunk_count();
      chunk_counters_.ensure(std::size_t(chunks * kChunkSlots), "per-chunk counters");
      FLASHKM_CUDA_CHECK(cudaMemsetAsync(chunk_counters_.get(), 0, chunks * kChunkSlots * sizeof(unsigned long long), stream_));
      if (fuse) {
        sums_dev_.ensure(std::size_t(k_) * d_, "cluster sums");
        cw_.ensure(std::size_t(k_), "cluster weights");
        csums_.begin(k_, d_, true, piece_rows_for(n_, d_), plan_.chunk_rows, stream_);
      }
      for_rows(true, [&](const RowChunk& ch) {
        unsigned long long* c = chunk_counters_.get() + ch.index * kChunkSlots;
        assign_rows(ch, c, c + kNumCounters);
        if (fuse)
          csums_.add(labels_.get() + ch.r0, ch.x, ch.rows, w_ ? w_ + ch.r0 : nullptr, xnorm_.get() + ch.r0,
                     metric_ == Metric::cosine, reinterpret_cast<std::int32_t*>(scratch_.get()), stream_);
      });
      if (fuse) csums_.finish(sums_dev_.get(), cw_.get(), stream_);
      h.resize(static_cast<std::size_t>(chunks * kChunkSlots));
    }
    launch_weighted_sum(dist_.get(), w_, n_, part_.get(), sums_.get(), stream_);
    double inertia = 0;
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(h.data(), plan_.streamed ? chunk_counters_.get() : counters_.get(),
                                       h.size() * sizeof(unsigned long long), cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(&inertia, sums_.get(), 8, cudaMemcpyDeviceToHost, stream_));
    std::vector<unsigned long long> hc(static_cast<std::size_t>(cand_chunks_ * kCandSlots));
    if (!hc.empty())
      FLASHKM_CUDA_CHECK(cudaMemcpyAsync(hc.data(), cand_ctr_.get(), hc.size() * 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    unsigned long long c[kNumCounters] = {};
    const std::size_t stride = plan_.streamed ? kChunkSlots : kNumCounters;
    for (std::size_t at = 0; at < h.size(); at += stride)
      for (int q = 0; q < kNumCounters; ++q) c[q] += h[at + q];  // integer counts: any order
    sums_valid_ = fuse;
    core::AssignStats st;
    st.inertia = inertia;
    // Candidate levels: per chunk of flagged rows (rows re-checked against every centroid,
    // label changes, pairs found).
    add_candidate_counts(hc);
    const unsigned long long* cand = cand_acc_;
    st.n_rechecked = static_cast<std::int64_t>(c[kFlagged]);
    st.n_rechecked_fp64 = static_cast<std::int64_t>(how == Settle::simt         ? c[kFlagged2]
                                                    : how == Settle::candidates ? cand[kCandFp64Rows]
                                                                                : c[kFlagged]);
    st.n_candidates = static_cast<std::int64_t>(cand[kCandPairs]);
    st.n_changed = static_cast<std::int64_t>(c[kChanged] + c[kChanged2] + cand[kCandChanged]);
    return st;
  }

  /// The certified assign of one chunk of rows (all rows when resident): counters [kNumCounters]
  /// and pcounts (per-problem flagged counts of level 1) zeroed by the caller. Asynchronous.
  void assign_rows(const RowChunk& ch, unsigned long long* counters, unsigned long long* pcounts) {
    const Settle how = settle_mode();
    if (plan_.streamed && xop_.get() != nullptr && main_.op != Operand::fp32)  // large-d fp32: this chunk's operands
      launch_convert_rows(ch.x, main_.op == Operand::fp16 ? 0 : 1, main_.dp, xop_.get(), stream_);
    AssignParams p = params_for(main_, labels_.get() + ch.r0, dist_.get() + ch.r0, opt_.certify, &ch);
    p.counters = counters;
    if (how == Settle::simt) p.problem_counts = pcounts;
    run_assign(main_, p);
    // Levels 2 and 3 read the data as given (never the 16-bit operand copy of large-d fp32 data).
    AssignParams pr = p;
    pr.x = ch.x.x;
    pr.x_dtype = ch.x.dtype;
    pr.x_stride = ch.x.stride;
    pr.x_batch = ch.x.n_per * ch.x.stride;
    if (how == Settle::candidates) return settle_candidates(p, pr, counters, ch.rows);
    if (how == Settle::simt) {
      // Level 2: the exact-fp32 SIMT kernel over level 1's flagged rows, in place (row_map),
      // certified with the fp32 bound; its flagged rows go to the second list (one list:
      // the fp64 re-check takes any problem's row).
      ensure_cascade_set();
      AssignParams p2 = params_for(cas_, labels_.get() + ch.r0, dist_.get() + ch.r0, true, &ch);
      p2.row_map = p.flagged;
      p2.n_dev = pcounts;
      p2.flagged = p.flagged + ch.rows;  // the second half of the per-row scratch
      p2.counters = counters + kFlagged2;
      launch_simt_assign(p2, stream_);
      pr.flagged = p2.flagged;
      pr.counters = p2.counters;
    }
    // Level 3 (level 2 when there is no cascade): fp64 against all centroids.
    launch_recheck(pr, main_.c32.get(), stream_);
  }

  void accumulate(double* sums, double* cluster_weight) override {
    DeviceGuard g(opt_.device_id);
    FLASHKM_ASSERT(k_ > 0, "accumulate() before set_centroids()");
    const std::int64_t nc = std::int64_t(opt_.batch) * k_;
    cluster_sums(labels_.get(), k_, true);
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(sums, sums_dev_.get(), nc * d_ * 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(cluster_weight, cw_.get(), nc * 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  // The update on the device: the fp64 sums never leave it. The new centroids also get their
  // operands prepared here (into next_), so the next set_centroids() with these values is a
  // byte compare and a swap. With an empty cluster (rare) the host path of the base class
  // runs instead: relocation needs the farthest rows, and it is exactly the CPU's.
  // The two halves are also the Backend's device_partial_sums / finish_update_from_sums, so
  // that a distributed fit can reduce the sums over the GPUs in between (NCCL).
  std::int64_t update_centroids(std::int64_t k, Metric metric, const float* current, float* next,
                                double* cluster_weight, double* shift) override {
    DeviceGuard g(opt_.device_id);
    update_sums(k, metric);
    if (finish_update_from_sums(k, metric, current, next, cluster_weight, shift) > 0)
      return core::Backend::update_centroids(k, metric, current, next, cluster_weight, shift);
    return 0;
  }

  bool device_partial_sums(std::int64_t k, core::DeviceSums* out) override {
    DeviceGuard g(opt_.device_id);
    update_sums(k, metric_);
    // Complete before returning: an asynchronous failure of the sort or the sums surfaces
    // here, inside the caller's failure-agreement step, not in the reduction that follows.
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    sums_valid_ = false;  // the caller may overwrite them (the reduction over ranks, in place)
    out->sums = sums_dev_.get();
    out->weights = cw_.get();
    out->device = opt_.device_id;
    out->stream = stream_;
    return true;
  }

  std::int64_t finish_update_from_sums(std::int64_t k, Metric metric, const float* current, float* next,
                                       double* cluster_weight, double* shift) override {
    DeviceGuard g(opt_.device_id);
    (void)current;  // it is main_.c32 on the device (the contract: the centroids set_centroids() got)
    const UpdateResults r = finish_on_device(k, metric, /*centroids_to_host=*/true);
    // next_ was written, but it is only used once next_valid_ says so: returning here
    // leaves the backend as the host path expects it (main_ and the labels untouched).
    if (r.n_empty > 0) return static_cast<std::int64_t>(r.n_empty);
    const std::int64_t nc = std::int64_t(opt_.batch) * k_;
    host_copy(next, h_next_.get(), std::size_t(nc) * d_ * sizeof(float));
    std::memcpy(cluster_weight, h_cw_.get(), std::size_t(nc) * sizeof(double));
    *shift = r.shift;
    // fp16 overflow of a mean cannot happen for data inside the fp16 range, but if it does,
    // set_centroids() prepares them again and reports it.
    next_valid_ = r.overflow == 0;
    return 0;
  }

  // The whole update without the K x D round trip: the new centroids (and their operands)
  // become main_ on the device, as set_centroids() would have made them; only the weights
  // and the shift come back. Declines (false, nothing changed) where update_centroids()
  // has more to do: an empty cluster (host repair) or an operand overflow (set_centroids()
  // reports it).
  bool update_centroids_kept(std::int64_t k, Metric metric, double* cluster_weight, double* shift) override {
    DeviceGuard g(opt_.device_id);
    update_sums(k, metric);
    const UpdateResults r = finish_on_device(k, metric, /*centroids_to_host=*/false);
    if (r.n_empty > 0 || r.overflow != 0) return false;
    const std::int64_t nc = std::int64_t(opt_.batch) * k_;
    std::memcpy(cluster_weight, h_cw_.get(), std::size_t(nc) * sizeof(double));
    *shift = r.shift;
    std::swap(main_, next_);
    next_valid_ = false;
    k_ = main_.k;
    ++main_gen_;
    return true;
  }

  void copy_centroids(float* out) override {
    DeviceGuard g(opt_.device_id);
    FLASHKM_ASSERT(k_ > 0, "copy_centroids() before set_centroids()");
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(out, main_.c32.get(), std::size_t(opt_.batch) * k_ * d_ * 4,
                                       cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  void copy_labels(std::int32_t* out) override {
    DeviceGuard g(opt_.device_id);
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(out, labels_.get(), n_ * 4, cudaMemcpyDefault, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void copy_distances(float* out) override {
    DeviceGuard g(opt_.device_id);
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(out, dist_.get(), n_ * 4, cudaMemcpyDefault, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  std::vector<std::int64_t> farthest_rows(std::int64_t m) override {
    std::vector<float> dist(static_cast<std::size_t>(n_)), w(static_cast<std::size_t>(n_));
    copy_distances(dist.data());
    copy_weights(w.data());
    std::vector<std::int64_t> idx;
    idx.reserve(static_cast<std::size_t>(n_));
    for (std::int64_t i = 0; i < n_; ++i)
      if (w[i] > 0) idx.push_back(i);
    m = std::min<std::int64_t>(m, static_cast<std::int64_t>(idx.size()));
    auto farther = [&](std::int64_t a, std::int64_t b) { return dist[a] > dist[b] || (dist[a] == dist[b] && a < b); };
    std::partial_sort(idx.begin(), idx.begin() + m, idx.end(), farther);
    idx.resize(static_cast<std::size_t>(m));
    return idx;
  }

  void gather_rows(const std::int64_t* idx, std::int64_t m, float* rows_out, std::int32_t* labels_out,
                   float* weights_out) override {
    DeviceGuard g(opt_.device_id);
    if (m <= 0) return;
    for (std::int64_t t = 0; t < m; ++t) FLASHKM_ASSERT(idx[t] >= 0 && idx[t] < n_, "gather_rows index out of range");
    DeviceBuffer<std::int64_t> di(std::size_t(m), "gather indices");
    DeviceBuffer<float> rows(rows_out ? std::size_t(m) * d_ : 0, "gathered rows");
    DeviceBuffer<std::int32_t> lab(std::size_t(m), "gathered labels");
    DeviceBuffer<float> wo(std::size_t(m), "gathered weights");
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(di.get(), idx, m * 8, cudaMemcpyHostToDevice, stream_));
    if (plan_.streamed && rows_out) {
      // The rows are read where they are (host memory, exact fp32 conversion) and the kernel
      // does the rest as for resident rows (cosine normalisation, labels, weights).
      std::vector<float> hx(static_cast<std::size_t>(m) * d_);
      rows_->host_rows_f32(idx, m, hx.data());
      DeviceBuffer<float> xc(std::size_t(m) * d_, "gathered rows of streamed data");
      FLASHKM_CUDA_CHECK(cudaMemcpyAsync(xc.get(), hx.data(), hx.size() * 4, cudaMemcpyHostToDevice, stream_));
      launch_gather(XView{xc.get(), DType::f32, d_, m, d_, m}, xnorm_.get(), metric_ == Metric::cosine, labels_.get(),
                    w_, di.get(), m, rows.get(), lab.get(), wo.get(), stream_, /*x_compact=*/true);
      FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));  // before xc and hx go
    } else {
      launch_gather(xv_, xnorm_.get(), metric_ == Metric::cosine, labels_.get(), w_, di.get(), m, rows.get(),
                    lab.get(), wo.get(), stream_);
    }
    if (rows_out) FLASHKM_CUDA_CHECK(cudaMemcpyAsync(rows_out, rows.get(), m * d_ * 4, cudaMemcpyDeviceToHost, stream_));
    if (labels_out) FLASHKM_CUDA_CHECK(cudaMemcpyAsync(labels_out, lab.get(), m * 4, cudaMemcpyDeviceToHost, stream_));
    if (weights_out) FLASHKM_CUDA_CHECK(cudaMemcpyAsync(weights_out, wo.get(), m * 4, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  double exact_inertia() override {
    DeviceGuard g(opt_.device_id);
    FLASHKM_ASSERT(k_ > 0, "exact_inertia() before set_centroids()");
    const std::int64_t chunks = (n_ + kRowChunk - 1) / kRowChunk;
    for_rows(true, [&](const RowChunk& ch) {
      launch_exact_inertia(ch.x, w_ ? w_ + ch.r0 : nullptr, labels_.get() + ch.r0, main_.c32.get(), k_, metric_,
                           part_.get() + ch.r0 / kRowChunk, stream_);
    });
    std::vector<double> h(static_cast<std::size_t>(chunks));
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(h.data(), part_.get(), chunks * 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    double t = 0;
    for (double v : h) t += v;
    return t;
  }

  void cluster_weights(double* out) override {
    DeviceGuard g(opt_.device_id);
    cluster_sums(labels_.get(), k_, false);
    copy_weights_out(std::int64_t(opt_.batch) * k_, out);
  }

  void copy_weights(float* out) override {
    DeviceGuard g(opt_.device_id);
    if (!w_) {
      std::fill(out, out + n_, 1.0f);
      return;
    }
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(out, w_, n_ * 4, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  void all_distances(float* out) override {
    DeviceGuard g(opt_.device_id);
    FLASHKM_ASSERT(opt_.batch == 1, "all_distances is for unbatched backends");
    cudaPointerAttributes attr{};
    const bool on_device = cudaPointerGetAttributes(&attr, out) == cudaSuccess && attr.type == cudaMemoryTypeDevice;
    (void)cudaGetLastError();
    const std::int64_t rows = std::max<std::int64_t>(1, (std::int64_t(64) << 20) / (4 * std::int64_t(k_)));
    DeviceBuffer<float> tmp(on_device ? 0 : std::size_t(std::min(rows, plan_.chunk_rows)) * k_,
                            "a block of the distance matrix");
    for_rows(true, [&](const RowChunk& ch) {
      const float* xn = xnorm_.get() + ch.r0;
      if (on_device) {
        launch_all_distances(ch.x, xn, main_.c32.get(), k_, metric_, 0, ch.rows, out + ch.r0 * k_, stream_);
        return;
      }
      for (std::int64_t r0 = 0; r0 < ch.rows; r0 += rows) {
        const std::int64_t r = std::min(rows, ch.rows - r0);
        launch_all_distances(ch.x, xn, main_.c32.get(), k_, metric_, r0, r, tmp.get(), stream_);
        FLASHKM_CUDA_CHECK(cudaMemcpyAsync(out + (ch.r0 + r0) * k_, tmp.get(), r * k_ * 4, cudaMemcpyDeviceToHost,
                                           stream_));
      }
    });
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  // ---- initialisation support -----------------------------------------------------------
  double mindist_fill(float value) override {
    DeviceGuard g(opt_.device_id);
    mind_.ensure(std::size_t(n_), "min distances");
    launch_fill(mind_.get(), value, n_, stream_);
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return value == 0 ? 0.0 : double(value) * total_weight_;
  }

  double mindist_update(const float* c, std::int64_t m) override {
    DeviceGuard g(opt_.device_id);
    FLASHKM_ASSERT(mind_.get() != nullptr, "mindist_update before mindist_fill");
    aux_distances(c, m);
    launch_min_into(mind_.get(), tmp_dist_.get(), n_, stream_);
    return weighted_sum(mind_.get(), w_);
  }

  void mindist_trial(const float* cand, std::int64_t m, double* potentials) override {
    DeviceGuard g(opt_.device_id);
    FLASHKM_ASSERT(mind_.get() != nullptr, "mindist_trial before mindist_fill");
    if (!plan_.streamed) {
      for (std::int64_t j = 0; j < m; ++j) {
        aux_distances(cand + j * d_, 1);
        launch_min_into(tmp_dist_.get(), mind_.get(), n_, stream_);
        potentials[j] = weighted_sum(tmp_dist_.get(), w_);
      }
      return;
    }
    // Streamed: every candidate in one pass over the rows (chunks outside, candidates
    // inside), each candidate's chunk parts of the weighted sum kept apart and summed at the
    // end: the kernels and reduction of the loop above, so the same bits.
    const std::int64_t parts = (n_ + kRowChunk - 1) / kRowChunk;
    trial_sets_.resize(static_cast<std::size_t>(m));
    for (std::int64_t j = 0; j < m; ++j) prepare(trial_sets_[j], cand + j * d_, 1, Operand::fp32);
    tmp_labels_.ensure(std::size_t(n_), "temporary labels");
    tmp_dist_.ensure(std::size_t(n_), "temporary distances");
    ensure_scratch();
    trial_parts_.ensure(std::size_t(m * parts), "k-means++ trial parts");
    trial_out_.ensure(std::size_t(m), "k-means++ trial potentials");
    for_rows(true, [&](const RowChunk& ch) {
      for (std::int64_t j = 0; j < m; ++j) {
        AssignParams p = params_for(trial_sets_[j], tmp_labels_.get() + ch.r0, tmp_dist_.get() + ch.r0, false, &ch);
        launch_simt_assign(p, stream_);
        launch_min_into(tmp_dist_.get() + ch.r0, mind_.get() + ch.r0, ch.rows, stream_);
        launch_weighted_sum_parts(tmp_dist_.get() + ch.r0, w_ ? w_ + ch.r0 : nullptr, ch.rows,
                                  trial_parts_.get() + j * parts + ch.r0 / kRowChunk, stream_);
      }
    });
    for (std::int64_t j = 0; j < m; ++j) launch_sum_parts(trial_parts_.get() + j * parts, parts, trial_out_.get() + j, stream_);
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(potentials, trial_out_.get(), m * 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  std::vector<std::int64_t> sample_by_mindist(const std::vector<double>& targets) override {
    DeviceGuard g(opt_.device_id);
    const std::int64_t chunks = (n_ + kRowChunk - 1) / kRowChunk;
    launch_sequential_chunk_sums(mind_.get(), w_, n_, part_.get(), stream_);
    std::vector<double> cs(static_cast<std::size_t>(chunks));
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(cs.data(), part_.get(), chunks * 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::vector<std::int64_t> out;
    out.reserve(targets.size());
    std::vector<float> mv(kRowChunk), wv(kRowChunk);
    std::int64_t loaded = -1;
    double before = 0;
    std::int64_t c = 0;
    for (double t : targets) {
      while (c < chunks && before + cs[c] <= t) before += cs[c++];
      std::int64_t pick = n_ - 1;
      if (c < chunks) {
        const std::int64_t b = c * kRowChunk, e = std::min(n_, b + kRowChunk);
        if (loaded != c) {
          FLASHKM_CUDA_CHECK(cudaMemcpy(mv.data(), mind_.get() + b, (e - b) * 4, cudaMemcpyDeviceToHost));
          if (w_) FLASHKM_CUDA_CHECK(cudaMemcpy(wv.data(), w_ + b, (e - b) * 4, cudaMemcpyDeviceToHost));
          loaded = c;
        }
        double run = before;
        for (std::int64_t i = b; i < e; ++i) {
          run += (w_ ? double(wv[i - b]) : 1.0) * double(mv[i - b]);
          if (run > t) {
            pick = i;
            break;
          }
        }
      }
      out.push_back(pick);
    }
    return out;
  }

  std::vector<std::int64_t> sample_bernoulli(double factor, std::uint64_t seed, std::uint64_t round) override {
    DeviceGuard g(opt_.device_id);
    flags_.ensure(std::size_t(n_), "sampling flags");
    launch_bernoulli(mind_.get(), w_, n_, factor, seed, round, global_row_offset(), flags_.get(), stream_);
    std::vector<unsigned char> h(static_cast<std::size_t>(n_));
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(h.data(), flags_.get(), n_, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::vector<std::int64_t> out;
    for (std::int64_t i = 0; i < n_; ++i)
      if (h[i]) out.push_back(i);
    return out;
  }

  void nearest_weights(const float* c, std::int64_t m, double* out) override {
    DeviceGuard g(opt_.device_id);
    aux_distances(c, m);
    cluster_sums(tmp_labels_.get(), static_cast<int>(m), false);
    copy_weights_out(m, out);
  }

 private:
  /// The device memory this backend may plan for: the caller's budget (set_memory_budget),
  /// what FLASHKM_CUDA_MEMORY_BUDGET leaves, and the device's free memory less 1/32 (at most
  /// 1 GiB) for the CUDA runtime's own allocations; the smallest of them.
  std::int64_t device_budget(const char** source) const {
    std::size_t free_b = 0, total_b = 0;
    FLASHKM_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    std::int64_t b = static_cast<std::int64_t>(free_b) -
                     std::min<std::int64_t>(static_cast<std::int64_t>(free_b / 32), std::int64_t(1) << 30);
    *source = "the device's free memory";
    if (budget_ > 0 && budget_ < b) {
      b = budget_;
      *source = "Params::max_memory / --max-memory";
    }
    const std::size_t env = device_budget_left();
    if (env != static_cast<std::size_t>(-1) && static_cast<std::int64_t>(env) < b) {
      b = static_cast<std::int64_t>(env);
      *source = "FLASHKM_CUDA_MEMORY_BUDGET";
    }
    return std::max<std::int64_t>(b, 1);
  }

  /// Resident or streamed (core::plan_device_stream) for data x, from the device bytes each
  /// mode keeps per row. Device data is never streamed (it is already there), nor batched
  /// problems.
  core::DeviceStreamPlan plan_for(const MatrixView& x, bool weighted) const {
    const DType dev = x.dtype == DType::f64 ? DType::f32 : x.dtype;
    // large-d fp32 may need 16-bit operand rows (tf32 operands convert while loading: never)
    const bool op_copy = d_ > 256 && dev == DType::f32 && opt_.precision != Precision::tf32;
    const double dp = static_cast<double>(round_up(d_, kChunkD));
    core::DeviceStreamInput in;
    in.rows = n_;
    in.x_row_bytes = std::int64_t(d_) * static_cast<std::int64_t>(dtype_size(dev));
    // labels, distances, |x|^2 (12), weights (4), the initialisations' min distances, trial
    // labels and distances and sampling flags (13), reduction parts (8 per 2048 rows) and
    // feature_moments' column parts (8 D per 2048 rows).
    in.state_row_bytes = 12.0 + (weighted ? 4.0 : 0.0) + 13.0 + 8.0 / kRowChunk + 8.0 * d_ / kRowChunk;
    // Resident only: the per-row scratch (16: flagged lists / sort keys), the sort's
    // alternate buffers (8), the update's piece sums and pieces, a large-d operand copy, and
    // float64 data on the device before its conversion.
    const double piece_rows = static_cast<double>(piece_rows_for(n_, d_));
    in.resident_row_bytes = 24.0 + (d_ + 1) * 8.0 * (1.0 / piece_rows + 1.0 / (kFusedPieces * piece_rows + 1)) +
                            16.0 / piece_rows +
                            (op_copy ? 2.0 * dp : 0.0) + (x.dtype == DType::f64 ? 8.0 * d_ : 0.0);
    // Per row of a streamed chunk: the scratch (16), the sort workspace (~8), the chunked
    // update's segment sums (D + 1 doubles per piece), an operand copy.
    in.chunk_row_bytes = 24 + static_cast<std::int64_t>(std::ceil((d_ + 1) * 8.0 / piece_rows)) +
                         (op_copy ? static_cast<std::int64_t>(2 * dp) : 0);
    in.budget = device_budget(&in.budget_source);
    in.can_stream = x.where == Location::host && opt_.batch == 1;
    return core::plan_device_stream(in);
  }

  /// body(chunk) for every chunk of rows, in order: the resident data as one chunk, or the
  /// streamed plan's chunks (RowStream::pass). needs_x false: the body reads no rows.
  template <class Body>
  void for_rows(bool needs_x, Body&& body) {
    if (!plan_.streamed) {
      RowChunk ch;
      ch.index = 0;
      ch.r0 = 0;
      ch.rows = n_;
      ch.x = xv_;
      body(static_cast<const RowChunk&>(ch));
      return;
    }
    rows_->pass(xv_, needs_x, body);
  }

  /// Row i as fp32 (an error message's row): from the host data when streamed.
  std::vector<float> host_row(std::int64_t i) {
    std::vector<float> row(static_cast<std::size_t>(d_));
    if (plan_.streamed) rows_->host_rows_f32(&i, 1, row.data());
    else
      for (int j = 0; j < d_; ++j) row[j] = device_element(xv_, i, j);
    return row;
  }

  void choose_precision(DType in) {
    op_ = choose_operand(opt_.precision, in, max_abs_);  // certify.hpp (shared with the batched backend)
    if (op_ == Operand::tf32) {
      // tf32 runs on the mma.sync kernels only, and converts x while loading in every config
      // (no operand copy of x).
      const int dp = static_cast<int>(round_up(d_, kChunkD));
      tile_ = opt_.tile != TileConfig::automatic ? opt_.tile : choose_tile_tf32(d_);
      FLASHKM_CHECK(tile_ != TileConfig::wgmma_sm90, invalid_argument,
                    "tile config wgmma_sm90 takes fp16/bf16 operands; precision 'tf32' runs on the mma.sync "
                    "tile configs (1, 2, 3 or automatic)");
      FLASHKM_CHECK(tile_supports(tile_, op_, dp), invalid_argument,
                    "tile config resident_128x128 with precision 'tf32' needs d <= 128 (d = ", d_,
                    "); use a streamed config or automatic");
    } else if (op_ != Operand::fp32) {
      const int dp = static_cast<int>(round_up(d_, kChunkD));
      tile_ = opt_.tile != TileConfig::automatic ? opt_.tile : choose_tile(n_per_, 0, d_, sm_count_, cc_);
      FLASHKM_CHECK(tile_ != TileConfig::wgmma_sm90 || sm90_wgmma_supported(cc_), invalid_argument,
                    "tile config wgmma_sm90 needs a compute capability 9.0 device and an sm_90a build (device has ",
                    cc_ / 10, ".", cc_ % 10, ")");
      FLASHKM_CHECK(tile_ != TileConfig::wgmma_sm90 || dp <= kMaxWgmmaDp, invalid_argument,
                    "tile config wgmma_sm90 needs d <= ", kMaxWgmmaDp, " (d = ", d_, ")");
      AssignParams probe{};
      probe.x = xv_.x;
      probe.x_dtype = xv_.dtype;
      probe.x_stride = xv_.stride;
      probe.x_batch = n_per_ * xv_.stride;
      probe.d = d_;
      if (tile_streams_x(tile_) && !x_streamable(probe, op_)) {
        // Streamed (large-D) tiles read x as aligned 16-bit operands: convert once.
        if (plan_.streamed) {  // one chunk's operands, converted by assign_rows
          xop_.reset(std::size_t(plan_.chunk_rows) * dp * 2, "a 16-bit operand copy of a chunk of rows (large d)");
          return;
        }
        xop_.reset(std::size_t(n_) * dp * 2, "a 16-bit operand copy of the data (large d)");
        launch_convert_rows(xv_, op_ == Operand::fp16 ? 0 : 1, dp, xop_.get(), stream_);
        FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
      }
    }
  }

  /// Shape and allocate a centroid set of k centroids per problem for `op`.
  void size_set(CentroidSet& cs, int k, Operand op, bool own_c32 = true) {
    // The tile config per set: choose_tile() knows k now (attach() chose with k unknown);
    // a config given in the options applies to every set, and tf32's does not depend on k.
    cs.tile = opt_.tile != TileConfig::automatic || op == Operand::fp32 || op == Operand::tf32
                  ? tile_
                  : choose_tile(n_per_, k, d_, sm_count_, cc_);
    FLASHKM_ASSERT(tile_streams_x(cs.tile) == tile_streams_x(tile_), "a set's tile config reads x unlike attach's");
    const int bn = op == Operand::fp32 ? kSimtBN : tile_bn(cs.tile);
    cs.k = k;
    cs.op = op;
    cs.kp = static_cast<int>(round_up(k, bn));
    cs.dp = static_cast<int>(round_up(d_, op == Operand::fp32 ? kSimtBK : kChunkD));
    const int B = opt_.batch;
    const std::size_t esz = static_cast<std::size_t>(operand_bytes(op));
    if (own_c32) cs.c32.ensure(std::size_t(B) * k * d_, "centroids");
    cs.c_op.ensure(std::size_t(B) * cs.kp * cs.dp * esz, "centroid operands");
    cs.cterm.ensure(std::size_t(B) * cs.kp, "centroid norms");
    cs.cmax_bits.ensure(std::size_t(B), "centroid max norm");
    cs.dcmax_bits.ensure(std::size_t(B), "centroid max rounding error");
    cs.overflow.ensure(1, "overflow flag");
  }

  /// Operands, |c|^2 and max |c| from c32 (default cs.c32; asynchronous; the overflow flag
  /// is left on the device for the caller to read).
  void build_operands(CentroidSet& cs, const float* c32 = nullptr) {
    const int B = opt_.batch;
    FLASHKM_CUDA_CHECK(cudaMemsetAsync(cs.cmax_bits.get(), 0, B * 4, stream_));
    FLASHKM_CUDA_CHECK(cudaMemsetAsync(cs.dcmax_bits.get(), 0, B * 4, stream_));
    FLASHKM_CUDA_CHECK(cudaMemsetAsync(cs.overflow.get(), 0, 4, stream_));
    launch_prepare_centroids(c32 ? c32 : cs.c32.get(), B, cs.k, d_, cs.kp, cs.dp, static_cast<int>(cs.op), metric_ == Metric::l2,
                             cs.c_op.get(), cs.cterm.get(), cs.cmax_bits.get(), cs.dcmax_bits.get(), cs.overflow.get(),
                             stream_);
  }

  /// Copy centroids (host or device memory) and build the operand set for `op`.
  void prepare(CentroidSet& cs, const float* c, int k, Operand op) {
    size_set(cs, k, op);
    const std::size_t bytes = std::size_t(opt_.batch) * k * d_ * 4;
    if (is_pageable_host(c)) {  // the driver's own staging of pageable memory is slow (host_upload.hpp)
      h_upload_.ensure(bytes, "pinned staging of the centroids");
      upload_via_staging(c, bytes, h_upload_.get(), reinterpret_cast<unsigned char*>(cs.c32.get()), opt_.device_id,
                         stream_);
    } else {
      FLASHKM_CUDA_CHECK(cudaMemcpyAsync(cs.c32.get(), c, bytes, cudaMemcpyDefault, stream_));
    }
    build_operands(cs);
    unsigned ovf = 0;
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(&ovf, cs.overflow.get(), 4, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    FLASHKM_CHECK(ovf == 0, invalid_argument, "centroids exceed the fp16 range (|c| > 65504); use bf16 or auto");
  }

  /// How certified assign() settles flagged rows: none (uncertified), fp64 (every flagged
  /// row against all centroids: an fp32 first level is already the SIMT kernel, or asked
  /// for), simt (the fp32 SIMT level first), candidates (certify_candidates.hpp: level 1's
  /// kernel in its candidate mode, every tensor-core config and operand; one problem,
  /// resident or streamed (one host wait per chunk); the equal-sized batch of
  /// CudaOptions::batch keeps the SIMT cascade).
  enum class Settle { none, fp64, simt, candidates };
  Settle settle_mode() const {
    if (!opt_.certify) return Settle::none;
    if (main_.op == Operand::fp32 || opt_.cascade == CertifyCascade::fp64) return Settle::fp64;
    const bool candidates = candidate_cascade(opt_.cascade, main_.tile, main_.op, d_) && opt_.batch == 1;
    return candidates ? Settle::candidates : Settle::simt;
  }

  /// Levels 2-3 of the candidate cascade after level 1 (p; pr: the same with x as given):
  /// the one host wait of a certified assign (level 1's flagged count sizes the candidate
  /// launch and its bounded workspace).
  void settle_candidates(const AssignParams& p, const AssignParams& pr, unsigned long long* counters, std::int64_t rows) {
    h_count_.ensure(1, "pinned flagged count");
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(h_count_.get(), counters + kFlagged, 8, cudaMemcpyDeviceToHost, stream_));
    // Streamed: the previous chunk's candidate counters, before their buffer is reused.
    std::vector<unsigned long long> prev(static_cast<std::size_t>(cand_chunks_ * kCandSlots));
    if (!prev.empty())
      FLASHKM_CUDA_CHECK(cudaMemcpyAsync(prev.data(), cand_ctr_.get(), prev.size() * 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    add_candidate_counts(prev);
    cand_chunks_ = 0;
    const std::int64_t count = static_cast<std::int64_t>(*h_count_.get());
    if (count == 0) return;
    CandidateWork w;
    w.sizes = candidate_sizes(count);
    cand_pairs_.ensure(std::size_t(w.sizes.capacity), "candidate pairs");
    cand_scores_.ensure(std::size_t(w.sizes.capacity), "candidate fp64 scores");
    cand_ctr_.ensure(std::size_t(w.sizes.chunks * kCandSlots), "candidate counters");
    FLASHKM_CUDA_CHECK(cudaMemsetAsync(cand_ctr_.get(), 0, w.sizes.chunks * kCandSlots * 8, stream_));
    w.list = p.flagged;
    // The second half of the per-row scratch (the SIMT cascade's second list) holds the
    // per-row minima (count <= rows entries).
    w.keys = reinterpret_cast<unsigned long long*>(p.flagged + rows);
    w.pairs = cand_pairs_.get();
    w.scores = cand_scores_.get();
    w.ctr = cand_ctr_.get();
    launch_candidate_cascade(p, main_.op, main_.tile, pr, main_.c32.get(), count, w, stream_);
    cand_chunks_ = w.sizes.chunks;
  }

  /// Adds chunks' candidate counters (kCandSlots each, from the host) into cand_acc_.
  void add_candidate_counts(const std::vector<unsigned long long>& h) {
    for (std::size_t at = 0; at < h.size(); at += kCandSlots)
      for (int q = 0; q < kCandSlots; ++q) cand_acc_[q] += h[at + q];
  }

  /// fp32 operands of main_'s centroids for the cascade's second level, rebuilt only after
  /// main_ changed (the build reads main_.c32: no second fp32 copy of the centroids).
  void ensure_cascade_set() {
    if (cas_gen_ == main_gen_) return;
    size_set(cas_, main_.k, Operand::fp32, /*own_c32=*/false);
    build_operands(cas_, main_.c32.get());  // fp32 operands cannot overflow: the flag is not read
    cas_gen_ = main_gen_;
  }

  void ensure_scratch() {
    // The flagged list (int64 per row) and accumulate()'s sort buffers share one arena.
    // Streamed: per row of a chunk (the chunk's flagged lists, then its sort keys and values).
    const std::int64_t rows = plan_.streamed ? plan_.chunk_rows : n_;
    scratch_.ensure(std::size_t(rows) * 2, "per-row scratch (flagged rows / sort buffers)");
  }

  /// Kernel parameters over the rows of `ch` (default: all rows; labels and dist must point
  /// at the chunk's first row). Streamed with an operand copy: the chunk's, converted by
  /// assign_rows.
  AssignParams params_for(const CentroidSet& cs, std::int32_t* labels, float* dist, bool certify,
                          const RowChunk* ch = nullptr) {
    AssignParams p{};
    const XView& xv = ch ? ch->x : xv_;
    const std::int64_t n_per = ch ? ch->x.n_per : n_per_;
    const bool use_op_copy = cs.op != Operand::fp32 && xop_.get() != nullptr;
    p.x = use_op_copy ? static_cast<const void*>(xop_.get()) : xv.x;
    p.x_dtype = use_op_copy ? (cs.op == Operand::fp16 ? DType::f16 : DType::bf16) : xv.dtype;
    p.x_stride = use_op_copy ? cs.dp : xv.stride;
    p.x_zero_padded = use_op_copy;  // launch_convert_rows writes zeros from d to dp
    p.x_batch = n_per * p.x_stride;
    p.n = n_per;
    p.d = d_;
    p.batch = opt_.batch;
    p.xnorm = xnorm_.get() + (ch ? ch->r0 : 0);
    p.c = cs.c_op.get();
    p.cterm = cs.cterm.get();
    p.cmax = reinterpret_cast<const float*>(cs.cmax_bits.get());
    p.dcmax = reinterpret_cast<const float*>(cs.dcmax_bits.get());
    p.k = cs.k;
    p.kp = cs.kp;
    p.dp = cs.dp;
    p.alpha = metric_ == Metric::l2 ? -2.0f : -1.0f;
    p.metric = metric_;
    p.labels = labels;
    p.dist = dist;
    p.certify = certify;
    p.flagged = reinterpret_cast<std::int64_t*>(scratch_.get());
    p.counters = counters_.get();
    if (certify) {
      // The bound's constants (certify.hpp: shared with the batched backend).
      const CertConstants k = cert_constants(cs.op, xv_.dtype, metric_, cs.dp, d_);
      p.cert_a = k.a;
      p.cert_c = k.c;
      p.cert_eta = k.eta;
      p.cert_b = k.b;
    }
    return p;
  }

  void run_assign(const CentroidSet& cs, const AssignParams& p) {
    if (cs.op == Operand::fp32) launch_simt_assign(p, stream_);
    else launch_flash_assign(p, cs.op, cs.tile, stream_);
  }

  /// Nearest of m given centroids (exact fp32 path, uncertified) -> tmp_labels_, tmp_dist_.
  void aux_distances(const float* c, std::int64_t m) {
    FLASHKM_ASSERT(opt_.batch == 1, "initialisation support is for unbatched backends");
    tmp_labels_.ensure(std::size_t(n_), "temporary labels");
    tmp_dist_.ensure(std::size_t(n_), "temporary distances");
    ensure_scratch();
    prepare(aux_, c, static_cast<int>(m), Operand::fp32);
    for_rows(true, [&](const RowChunk& ch) {
      AssignParams p = params_for(aux_, tmp_labels_.get() + ch.r0, tmp_dist_.get() + ch.r0, false, &ch);
      launch_simt_assign(p, stream_);
    });
  }

  double weighted_sum(const float* v, const float* w) {
    launch_weighted_sum(v, w, n_, part_.get(), sums_.get(), stream_);
    double r = 0;
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(&r, sums_.get(), 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return r;
  }

  void copy_weights_out(std::int64_t nc, double* out) {
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(out, cw_.get(), nc * 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  /// The first half of the update: per-cluster sums [B*k x d] and weights of the current
  /// labels into sums_dev_ / cw_ (asynchronous).
  void update_sums(std::int64_t k, Metric metric) {
    FLASHKM_ASSERT(k_ > 0 && k == std::int64_t(opt_.batch) * k_, "update for other centroids than set_centroids() gave");
    FLASHKM_ASSERT(metric == metric_, "update with another metric than attach() gave");
    cluster_sums(labels_.get(), k_, true);
  }

  /// sums_dev_ [B*k x d] (with_x) and cw_ [B*k] of `labels`: sort_reduce over all rows when
  /// resident; when streamed, the sums assign() formed in its pass if they are still those of
  /// these labels, else one pass of ChunkedClusterSums (reading rows only with_x). Asynchronous.
  void cluster_sums(const std::int32_t* labels, int k, bool with_x) {
    if (!plan_.streamed) return sort_reduce(labels, k, with_x);
    if (labels == labels_.get() && sums_valid_ && k == k_) return;  // assign()'s sums (with x: they serve both)
    sums_valid_ = false;  // cw_ (and with_x sums_dev_) are rewritten below
    ensure_scratch();
    sums_dev_.ensure(with_x ? std::size_t(k) * d_ : 1, "cluster sums");
    cw_.ensure(std::size_t(k), "cluster weights");
    csums_.begin(k, d_, with_x, piece_rows_for(n_, d_), plan_.chunk_rows, stream_);
    for_rows(with_x, [&](const RowChunk& ch) {
      csums_.add(labels + ch.r0, ch.x, ch.rows, w_ ? w_ + ch.r0 : nullptr, xnorm_.get() + ch.r0,
                 metric_ == Metric::cosine, reinterpret_cast<std::int32_t*>(scratch_.get()), stream_);
    });
    csums_.finish(sums_dev_.get(), cw_.get(), stream_);
    sums_valid_ = labels == labels_.get() && with_x && k == k_;
  }

  struct UpdateResults {
    double shift;
    unsigned long long n_empty;
    unsigned overflow;
  };
  /// The second half of the update on the device: next_ = the means (finish_update) with
  /// their operands, the shift; the weights, the shift and the flags land in pinned
  /// staging (h_cw_, h_misc_), and the new centroids in h_next_ when asked. Synchronous.
  UpdateResults finish_on_device(std::int64_t k, Metric metric, bool centroids_to_host) {
    const std::int64_t nc = std::int64_t(opt_.batch) * k_;
    FLASHKM_ASSERT(k_ > 0 && k == nc, "an update for other centroids than set_centroids() gave");
    FLASHKM_ASSERT(metric == metric_, "an update with another metric than attach() gave");
    next_valid_ = false;  // next_ and h_next_ are rewritten below
    size_set(next_, k_, op_);
    shift_part_.ensure(std::size_t(nc), "update shift parts");
    FLASHKM_CUDA_CHECK(cudaMemsetAsync(counters_.get() + kEmpty, 0, sizeof(unsigned long long), stream_));
    launch_finish_update(sums_dev_.get(), cw_.get(), main_.c32.get(), nc, d_, metric_ == Metric::cosine,
                         next_.c32.get(), shift_part_.get(), counters_.get() + kEmpty, stream_);
    launch_sum_parts(shift_part_.get(), nc, sums_.get() + 1, stream_);
    build_operands(next_);
    h_cw_.ensure(std::size_t(nc), "pinned staging of the cluster weights");
    h_misc_.ensure(1, "pinned staging of the update results");
    if (centroids_to_host) {
      h_next_.ensure(std::size_t(nc) * d_, "pinned staging of the new centroids");
      FLASHKM_CUDA_CHECK(cudaMemcpyAsync(h_next_.get(), next_.c32.get(), nc * d_ * 4, cudaMemcpyDeviceToHost, stream_));
    }
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(h_cw_.get(), cw_.get(), nc * 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(&h_misc_.get()->shift, sums_.get() + 1, 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(&h_misc_.get()->n_empty, counters_.get() + kEmpty, 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(&h_misc_.get()->overflow, next_.overflow.get(), 4, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    return *h_misc_.get();
  }

  /// Stable sort of rows by (problem, label), then per-cluster sums in row order over
  /// fixed pieces of piece_rows_for(n, d), combined in order: sums_dev_ [B*k x d] (with_x) and cw_
  /// [B*k] on the device. Bitwise reproducible. Asynchronous: the pieces are cut on the
  /// device from the cluster counts (scans), so nothing waits for the host.
  void sort_reduce(const std::int32_t* labels, int k, bool with_x) {
    const std::int64_t nc = std::int64_t(opt_.batch) * k;
    ensure_scratch();
    std::int32_t* keys = reinterpret_cast<std::int32_t*>(scratch_.get());
    std::int32_t* vals = keys + n_;
    keys_alt_.ensure(std::size_t(n_), "sort keys");
    vals_alt_.ensure(std::size_t(n_), "sort values");
    launch_iota_keys(labels, n_, n_per_, k, keys, vals, stream_);
    cub::DoubleBuffer<std::int32_t> dk(keys, keys_alt_.get()), dv(vals, vals_alt_.get());
    int bits = 1;
    while ((std::int64_t(1) << bits) < nc) ++bits;
    row_off_.ensure(std::size_t(nc + 1), "cluster row offsets");
    // One workspace for the sort and the scan (they run one after another on the stream).
    std::size_t t_sort = 0;
    FLASHKM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, t_sort, dk, dv, static_cast<int>(n_), 0, bits, stream_));
    const std::size_t t_scan = update_scan_bytes(nc);
    cub_temp_.ensure(std::max(t_sort, t_scan), "radix sort / scan workspace");
    FLASHKM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(cub_temp_.get(), t_sort, dk, dv, static_cast<int>(n_), 0, bits, stream_));
    // Cluster extents from the sorted keys (no histogram atomics), then the sums.
    launch_cluster_offsets(dk.Current(), n_, nc, row_off_.get(), stream_);
    const std::int64_t piece_rows = piece_rows_for(n_, d_);
    // ceil(c / R) <= c / R + 1 pieces per cluster, one item at least: at most n / R + nc items.
    const UpdateWorkspace ws = upd_.prepare(nc, n_ / piece_rows + nc, max_big_pieces(n_, piece_rows), d_,
                                            cub_temp_.get(), t_scan);
    sums_dev_.ensure(with_x ? std::size_t(nc) * d_ : 1, "cluster sums");
    cw_.ensure(std::size_t(nc), "cluster weights");
    launch_update_sums(xv_, w_, xnorm_.get(), metric_ == Metric::cosine, with_x, dv.Current(), row_off_.get(), nc,
                       static_cast<int>(piece_rows), nullptr, nullptr, ws, sums_dev_.get(), cw_.get(), stream_);
  }

  CudaOptions opt_;
  int sm_count_ = 0;
  int cc_ = 0;  ///< compute capability, 10*major + minor
  cudaStream_t stream_ = nullptr;
  std::int64_t n_ = 0, n_per_ = 0;
  int d_ = 0, k_ = 0;
  Metric metric_ = Metric::l2;
  XView xv_{};
  const float* w_ = nullptr;
  float max_abs_ = 0;
  double total_weight_ = 0;
  Operand op_ = Operand::fp16;
  TileConfig tile_ = TileConfig::resident_128x128;

  DeviceBuffer<unsigned char> xown_, xop_;
  DeviceBuffer<float> w_own_, xnorm_, dist_, mind_, tmp_dist_;
  DeviceBuffer<std::int32_t> labels_, tmp_labels_, keys_alt_, vals_alt_, row_off_;
  DeviceBuffer<std::int64_t> scratch_;
  DeviceBuffer<unsigned char> cub_temp_, flags_;
  DeviceBuffer<unsigned long long> counters_, pcounts_;
  DeviceBuffer<double> part_, sums_, sums_dev_, cw_, shift_part_;
  UpdateBuffers upd_;  // the update's work items and big clusters' piece sums
  // main_: the centroids assign() uses; next_: those update_centroids() computed, prepared
  // and valid (next_valid_) until set_centroids() takes them or other centroids.
  CentroidSet main_, aux_, next_;
  bool next_valid_ = false;
  // cas_: fp32 operands of main_ for the cascade (no c32 of its own), valid while
  // cas_gen_ == main_gen_ (main_gen_ counts every change of main_).
  CentroidSet cas_;
  std::uint64_t main_gen_ = 0, cas_gen_ = ~std::uint64_t(0);
  // Data larger than the device (docs/CUDA.md): the plan, the streamer, the chunked update.
  std::int64_t budget_ = 0;             // set_memory_budget (0: the device's free memory)
  core::DeviceStreamPlan plan_;         // resident (one chunk of all rows) or streamed
  std::unique_ptr<RowStream> rows_;     // when plan_.streamed; xv_ then views the resident prefix
  ChunkedClusterSums csums_;
  bool sums_valid_ = false;             // streamed: sums_dev_ / cw_ are those of labels_ (assign()'s pass)
  DeviceBuffer<unsigned long long> chunk_counters_;  // [chunks x kChunkSlots]
  DeviceBuffer<double> trial_parts_, trial_out_;     // streamed mindist_trial
  std::vector<CentroidSet> trial_sets_;
  PinnedBuffer<float> h_next_;  // the host copy of next_.c32 (set_centroids compares with it)
  PinnedBuffer<unsigned char> h_upload_;  // staging of centroids given in pageable host memory (prepare)
  PinnedBuffer<double> h_cw_;
  PinnedBuffer<UpdateResults> h_misc_;
  // The candidate cascade's bounded workspace (certify_candidates.hpp) and the chunks of
  // flagged rows the last assign ran (their counters, read with the statistics).
  DeviceBuffer<CandidatePair> cand_pairs_;
  DeviceBuffer<double> cand_scores_;
  DeviceBuffer<unsigned long long> cand_ctr_;
  std::int64_t cand_chunks_ = 0;
  unsigned long long cand_acc_[kCandSlots] = {};  // this assign's counts of the chunks already read
  PinnedBuffer<unsigned long long> h_count_;
};

}  // namespace

float device_element(const XView& x, std::int64_t i, int j) {
  const std::size_t esz = dtype_size(x.dtype);
  unsigned char buf[8] = {};
  FLASHKM_CUDA_CHECK(
      cudaMemcpy(buf, static_cast<const char*>(x.x) + (i * x.stride + j) * esz, esz, cudaMemcpyDeviceToHost));
  switch (x.dtype) {
    case DType::f32: { float v; std::memcpy(&v, buf, 4); return v; }
    case DType::f64: { double v; std::memcpy(&v, buf, 8); return float(v); }
    case DType::f16: { __half v; std::memcpy(&v, buf, 2); return __half2float(v); }
    case DType::bf16: { __nv_bfloat16 v; std::memcpy(&v, buf, 2); return __bfloat162float(v); }
  }
  return 0;
}

DeviceInfo open_device(const CudaOptions& o) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    (void)cudaGetLastError();
    FLASHKM_FAIL(device_unavailable, "device 'cuda' requested, but no CUDA device is present (",
                 err == cudaSuccess ? "no devices" : cudaGetErrorString(err), ")");
  }
  FLASHKM_CHECK(o.device_id >= 0 && o.device_id < count, device_unavailable, "CUDA device ", o.device_id,
                " requested, but only ", count, " present");
  DeviceInfo info;
  int cc_major = 0, cc_minor = 0;
  FLASHKM_CUDA_CHECK(cudaDeviceGetAttribute(&info.sm_count, cudaDevAttrMultiProcessorCount, o.device_id));
  FLASHKM_CUDA_CHECK(cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, o.device_id));
  FLASHKM_CUDA_CHECK(cudaDeviceGetAttribute(&cc_minor, cudaDevAttrComputeCapabilityMinor, o.device_id));
  info.cc = 10 * cc_major + cc_minor;
  return info;
}

std::unique_ptr<core::Backend> make_cuda_backend(const CudaOptions& options) {
  return std::make_unique<CudaBackend>(options);
}

std::size_t device_bytes_held(const core::Backend& backend) {
  const auto* b = dynamic_cast<const CudaBackend*>(&backend);
  return b ? b->bytes_held() : 0;
}

StreamInfo stream_info(const core::Backend& backend) {
  const auto* b = dynamic_cast<const CudaBackend*>(&backend);
  return b ? b->stream_info() : StreamInfo{};
}

}  // namespace flashkm::cuda

namespace flashkm::core {

bool cuda_backend_built() noexcept { return true; }

bool cuda_device_present() noexcept {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) (void)cudaGetLastError();
  return err == cudaSuccess && count > 0;
}

std::unique_ptr<Backend> make_cuda_backend(int device_id, Precision precision, bool certify) {
  cuda::CudaOptions o;
  o.device_id = device_id;
  o.precision = precision;
  o.certify = certify;
  return cuda::make_cuda_backend(o);
}

}  // namespace flashkm::core
