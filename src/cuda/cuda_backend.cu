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
// cannot settle; the exact-fp32 SIMT kernel re-runs those rows in place with its own, much
// tighter bound; only what it cannot settle reaches the fp64 re-check. No host wait between
// the levels: each reads the previous level's count on the device.
//
// A Lloyd iteration costs two host synchronisations: assign() (its statistics) and
// update_centroids() (K weights, the shift and the new fp32 centroids come back; sums stay).
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

#include "core/backend.hpp"
#include "cuda/cuda_backend.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/flash_assign.hpp"
#include "cuda/kernels.cuh"

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

constexpr std::int64_t kPieceRows = 256;  // rows per piece of a cluster (sort_reduce): short chains, many pieces

std::int64_t round_up(std::int64_t v, std::int64_t m) { return (v + m - 1) / m * m; }

/// part(begin, end) over [0, bytes), split across up to 8 host threads when large. One core
/// moves K x D centroids at ~7 GB/s (measured: a 16 MB compare took 2.3 ms per iteration on
/// the H200 host), which is most of an iteration for batched problems.
template <class Part>
void host_parallel(std::size_t bytes, const Part& part) {
  constexpr std::size_t kMinBytesPerThread = std::size_t(2) << 20;
  const std::size_t hw = std::max(1u, std::thread::hardware_concurrency());
  const std::size_t t = std::min<std::size_t>({hw, 8, bytes / kMinBytesPerThread});
  if (t <= 1) return part(std::size_t(0), bytes);
  const auto chunk = static_cast<std::size_t>(round_up(static_cast<std::int64_t>((bytes + t - 1) / t), 64));
  std::vector<std::thread> pool;
  for (std::size_t b = chunk; b < bytes; b += chunk) {
    try {
      pool.emplace_back(part, b, std::min(bytes, b + chunk));
    } catch (const std::system_error&) {  // no thread to be had: do that part here
      part(b, std::min(bytes, b + chunk));
    }
  }
  part(std::size_t(0), std::min(bytes, chunk));
  for (auto& th : pool) th.join();
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
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess || count == 0) {
      (void)cudaGetLastError();
      FLASHKM_FAIL(device_unavailable, "device 'cuda' requested, but no CUDA device is present (",
                   err == cudaSuccess ? "no devices" : cudaGetErrorString(err), ")");
    }
    FLASHKM_CHECK(o.device_id >= 0 && o.device_id < count, device_unavailable, "CUDA device ", o.device_id,
                  " requested, but only ", count, " present");
    FLASHKM_CHECK(o.batch >= 1, invalid_argument, "batch must be >= 1");
    FLASHKM_CHECK(o.precision != Precision::tf32, invalid_argument,
                  "precision 'tf32' is not implemented on the CUDA backend yet (use fp32, fp16, bf16 or auto)");
    DeviceGuard g(o.device_id);
    FLASHKM_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, o.device_id));
    int cc_major = 0, cc_minor = 0;
    FLASHKM_CUDA_CHECK(cudaDeviceGetAttribute(&cc_major, cudaDevAttrComputeCapabilityMajor, o.device_id));
    FLASHKM_CUDA_CHECK(cudaDeviceGetAttribute(&cc_minor, cudaDevAttrComputeCapabilityMinor, o.device_id));
    cc_ = 10 * cc_major + cc_minor;
    FLASHKM_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  ~CudaBackend() override {
    if (stream_) cudaStreamDestroy(stream_);
  }

  const char* name() const override { return "cuda"; }
  std::int64_t rows() const override { return n_; }
  std::int64_t cols() const override { return d_; }

  std::size_t bytes_held() const {
    return labels_.bytes() + dist_.bytes() + xnorm_.bytes() + scratch_.bytes() + cub_temp_.bytes() +
           part_.bytes() + pieces_.bytes() + first_.bytes() + psums_.bytes() + sums_.bytes() +
           cw_.bytes() + mind_.bytes() + tmp_labels_.bytes() + tmp_dist_.bytes() + xop_.bytes() + xown_.bytes() +
           main_.c32.bytes() + main_.c_op.bytes() + main_.cterm.bytes() + cas_.c_op.bytes() + cas_.cterm.bytes() + pcounts_.bytes() + aux_.c32.bytes() + aux_.c_op.bytes() +
           aux_.cterm.bytes() + next_.c32.bytes() + next_.c_op.bytes() + next_.cterm.bytes() + flags_.bytes() +
           keys_alt_.bytes() + vals_alt_.bytes() + row_off_.bytes() + npieces_.bytes() + shift_part_.bytes();
  }

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
    // Data on the device as given, or copied there once (host input), f64 converted to f32.
    if (x.where == Location::cuda) {
      FLASHKM_CHECK(x.device_id == opt_.device_id, invalid_argument, "x lives on CUDA device ", x.device_id,
                    " but the backend runs on device ", opt_.device_id);
      xv_ = XView{x.data, x.dtype, stride, n_, d_, n_per_};
    } else {
      const std::size_t bytes = std::size_t(n_) * d_ * esz;
      xown_.reset(bytes, "a device copy of the host data");
      FLASHKM_CUDA_CHECK(cudaMemcpy2DAsync(xown_.get(), d_ * esz, x.data, stride * esz, d_ * esz, n_,
                                           cudaMemcpyHostToDevice, stream_));
      xv_ = XView{xown_.get(), x.dtype, d_, n_, d_, n_per_};
    }
    if (x.dtype == DType::f64) {
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

    // Validate (first bad row), |x|^2, max |x|.
    DeviceBuffer<long long> status(4, "validation status");
    const long long init[4] = {std::numeric_limits<long long>::max(), std::numeric_limits<long long>::max(),
                               std::numeric_limits<long long>::max(), 0};
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(status.get(), init, sizeof(init), cudaMemcpyHostToDevice, stream_));
    launch_validate(xv_, w_, xnorm_.get(), status.get(), stream_);
    long long st[4];
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(st, status.get(), sizeof(st), cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (st[0] != std::numeric_limits<long long>::max()) {
      std::vector<float> row(static_cast<std::size_t>(d_));
      for (int j = 0; j < d_; ++j) row[j] = host_element(st[0], j);
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
      launch_column_sums(xv_, c, part.get(), stream_);
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

  core::AssignStats assign() override {
    DeviceGuard g(opt_.device_id);
    FLASHKM_ASSERT(k_ > 0, "assign() before set_centroids()");
    mind_.release();  // initialisation is over
    ensure_scratch();
    AssignParams p = params_for(main_, labels_.get(), dist_.get(), opt_.certify);
    FLASHKM_CUDA_CHECK(cudaMemsetAsync(counters_.get(), 0, kNumCounters * sizeof(unsigned long long), stream_));
    const bool cascade = opt_.certify && cascade_applies();
    if (cascade) {
      // Level 1 lists its flagged rows per problem (region b of the list, count b in
      // pcounts_) so that level 2's tiles hold one problem's rows.
      pcounts_.ensure(std::size_t(opt_.batch), "per-problem flagged counts");
      FLASHKM_CUDA_CHECK(cudaMemsetAsync(pcounts_.get(), 0, opt_.batch * sizeof(unsigned long long), stream_));
      p.problem_counts = pcounts_.get();
    }
    run_assign(main_, p);
    // Levels 2 and 3 read the data as given (never the 16-bit operand copy of large-d fp32 data).
    AssignParams pr = p;
    pr.x = xv_.x;
    pr.x_dtype = xv_.dtype;
    pr.x_stride = xv_.stride;
    pr.x_batch = n_per_ * xv_.stride;
    if (cascade) {
      // Level 2: the exact-fp32 SIMT kernel over level 1's flagged rows, in place (row_map),
      // certified with the fp32 bound; its flagged rows go to the second list (one list:
      // the fp64 re-check takes any problem's row).
      ensure_cascade_set();
      AssignParams p2 = params_for(cas_, labels_.get(), dist_.get(), true);
      p2.row_map = p.flagged;
      p2.n_dev = pcounts_.get();
      p2.flagged = p.flagged + n_;  // the second half of the per-row scratch
      p2.counters = counters_.get() + kFlagged2;
      launch_simt_assign(p2, stream_);
      pr.flagged = p2.flagged;
      pr.counters = p2.counters;
    }
    // Level 3 (level 2 when there is no cascade): fp64 against all centroids.
    launch_recheck(pr, main_.c32.get(), stream_);
    launch_weighted_sum(dist_.get(), w_, n_, part_.get(), sums_.get(), stream_);
    struct {
      unsigned long long c[kNumCounters];
      double inertia;
    } h{};
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(h.c, counters_.get(), sizeof(h.c), cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(&h.inertia, sums_.get(), 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    core::AssignStats st;
    st.inertia = h.inertia;
    st.n_rechecked = static_cast<std::int64_t>(h.c[kFlagged]);
    st.n_rechecked_fp64 = static_cast<std::int64_t>(cascade ? h.c[kFlagged2] : h.c[kFlagged]);
    st.n_changed = static_cast<std::int64_t>(h.c[kChanged] + h.c[kChanged2]);
    return st;
  }

  void accumulate(double* sums, double* cluster_weight) override {
    DeviceGuard g(opt_.device_id);
    FLASHKM_ASSERT(k_ > 0, "accumulate() before set_centroids()");
    const std::int64_t nc = std::int64_t(opt_.batch) * k_;
    sort_reduce(labels_.get(), k_, true);
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
    out->sums = sums_dev_.get();
    out->weights = cw_.get();
    out->device = opt_.device_id;
    out->stream = stream_;
    return true;
  }

  std::int64_t finish_update_from_sums(std::int64_t k, Metric metric, const float* current, float* next,
                                       double* cluster_weight, double* shift) override {
    DeviceGuard g(opt_.device_id);
    const std::int64_t nc = std::int64_t(opt_.batch) * k_;
    FLASHKM_ASSERT(k_ > 0 && k == nc, "finish_update_from_sums() for other centroids than set_centroids() gave");
    FLASHKM_ASSERT(metric == metric_, "finish_update_from_sums() with another metric than attach() gave");
    (void)current;  // it is main_.c32 on the device (the contract: the centroids set_centroids() got)
    next_valid_ = false;  // next_ and h_next_ are rewritten below
    size_set(next_, k_, op_);
    shift_part_.ensure(std::size_t(nc), "update shift parts");
    FLASHKM_CUDA_CHECK(cudaMemsetAsync(counters_.get() + kEmpty, 0, sizeof(unsigned long long), stream_));
    launch_finish_update(sums_dev_.get(), cw_.get(), main_.c32.get(), nc, d_, metric_ == Metric::cosine,
                         next_.c32.get(), shift_part_.get(), counters_.get() + kEmpty, stream_);
    launch_sum_parts(shift_part_.get(), nc, sums_.get() + 1, stream_);
    build_operands(next_);
    h_next_.ensure(std::size_t(nc) * d_, "pinned staging of the new centroids");
    h_cw_.ensure(std::size_t(nc), "pinned staging of the cluster weights");
    h_misc_.ensure(1, "pinned staging of the update results");
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(h_next_.get(), next_.c32.get(), nc * d_ * 4, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(h_cw_.get(), cw_.get(), nc * 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(&h_misc_.get()->shift, sums_.get() + 1, 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(&h_misc_.get()->n_empty, counters_.get() + kEmpty, 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(&h_misc_.get()->overflow, next_.overflow.get(), 4, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    const UpdateResults r = *h_misc_.get();
    // next_ was written, but it is only used once next_valid_ says so: returning here
    // leaves the backend as the host path expects it (main_ and the labels untouched).
    if (r.n_empty > 0) return static_cast<std::int64_t>(r.n_empty);
    host_copy(next, h_next_.get(), std::size_t(nc) * d_ * sizeof(float));
    std::memcpy(cluster_weight, h_cw_.get(), std::size_t(nc) * sizeof(double));
    *shift = r.shift;
    // fp16 overflow of a mean cannot happen for data inside the fp16 range, but if it does,
    // set_centroids() prepares them again and reports it.
    next_valid_ = r.overflow == 0;
    return 0;
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
    launch_gather(xv_, xnorm_.get(), metric_ == Metric::cosine, labels_.get(), w_, di.get(), m, rows.get(), lab.get(),
                  wo.get(), stream_);
    if (rows_out) FLASHKM_CUDA_CHECK(cudaMemcpyAsync(rows_out, rows.get(), m * d_ * 4, cudaMemcpyDeviceToHost, stream_));
    if (labels_out) FLASHKM_CUDA_CHECK(cudaMemcpyAsync(labels_out, lab.get(), m * 4, cudaMemcpyDeviceToHost, stream_));
    if (weights_out) FLASHKM_CUDA_CHECK(cudaMemcpyAsync(weights_out, wo.get(), m * 4, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
  }

  double exact_inertia() override {
    DeviceGuard g(opt_.device_id);
    FLASHKM_ASSERT(k_ > 0, "exact_inertia() before set_centroids()");
    const std::int64_t chunks = (n_ + kRowChunk - 1) / kRowChunk;
    launch_exact_inertia(xv_, w_, labels_.get(), main_.c32.get(), k_, metric_, part_.get(), stream_);
    std::vector<double> h(static_cast<std::size_t>(chunks));
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(h.data(), part_.get(), chunks * 8, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    double t = 0;
    for (double v : h) t += v;
    return t;
  }

  void cluster_weights(double* out) override {
    DeviceGuard g(opt_.device_id);
    sort_reduce(labels_.get(), k_, false);
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
    if (on_device) {
      launch_all_distances(xv_, xnorm_.get(), main_.c32.get(), k_, metric_, 0, n_, out, stream_);
    } else {
      const std::int64_t rows = std::max<std::int64_t>(1, (std::int64_t(64) << 20) / (4 * std::int64_t(k_)));
      DeviceBuffer<float> tmp(std::size_t(std::min(rows, n_)) * k_, "a block of the distance matrix");
      for (std::int64_t r0 = 0; r0 < n_; r0 += rows) {
        const std::int64_t r = std::min(rows, n_ - r0);
        launch_all_distances(xv_, xnorm_.get(), main_.c32.get(), k_, metric_, r0, r, tmp.get(), stream_);
        FLASHKM_CUDA_CHECK(cudaMemcpyAsync(out + r0 * k_, tmp.get(), r * k_ * 4, cudaMemcpyDeviceToHost, stream_));
      }
    }
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
    for (std::int64_t j = 0; j < m; ++j) {
      aux_distances(cand + j * d_, 1);
      launch_min_into(tmp_dist_.get(), mind_.get(), n_, stream_);
      potentials[j] = weighted_sum(tmp_dist_.get(), w_);
    }
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
    sort_reduce(tmp_labels_.get(), static_cast<int>(m), false);
    copy_weights_out(m, out);
  }

 private:
  float host_element(std::int64_t i, int j) {
    const std::size_t esz = dtype_size(xv_.dtype);
    unsigned char buf[8] = {};
    FLASHKM_CUDA_CHECK(cudaMemcpy(buf, static_cast<const char*>(xv_.x) + (i * xv_.stride + j) * esz, esz,
                                  cudaMemcpyDeviceToHost));
    switch (xv_.dtype) {
      case DType::f32: { float v; std::memcpy(&v, buf, 4); return v; }
      case DType::f64: { double v; std::memcpy(&v, buf, 8); return float(v); }
      case DType::f16: { __half v; std::memcpy(&v, buf, 2); return __half2float(v); }
      case DType::bf16: { __nv_bfloat16 v; std::memcpy(&v, buf, 2); return __bfloat162float(v); }
    }
    return 0;
  }

  void choose_precision(DType in) {
    switch (opt_.precision) {
      case Precision::fp32: op_ = Operand::fp32; break;
      case Precision::fp16:
        FLASHKM_CHECK(max_abs_ <= 65504.0f, invalid_argument, "precision 'fp16': data has |x| up to ", max_abs_,
                      ", beyond the fp16 range (use bf16 or auto)");
        op_ = Operand::fp16;
        break;
      case Precision::bf16: op_ = Operand::bf16; break;
      default:
        if (in == DType::f16) op_ = Operand::fp16;
        else if (in == DType::bf16) op_ = Operand::bf16;
        // fp16 keeps 3 more bits than bf16; use it when the data sits well inside its
        // normal range (no overflow, little underflow), else bf16 (fp32's exponent range).
        else op_ = (max_abs_ <= 16384.0f && max_abs_ >= 0x1p-6f) ? Operand::fp16 : Operand::bf16;
        break;
    }
    if (op_ != Operand::fp32) {
      const int dp = static_cast<int>(round_up(d_, kChunkD));
      tile_ = opt_.tile != TileConfig::automatic ? opt_.tile : choose_tile(n_per_, 0, d_, sm_count_, cc_);
      FLASHKM_CHECK(tile_ != TileConfig::wgmma_sm90 || sm90_wgmma_supported(cc_), invalid_argument,
                    "tile config wgmma_sm90 needs a compute capability 9.0 device and an sm_90a build (device has ",
                    cc_ / 10, ".", cc_ % 10, ")");
      FLASHKM_CHECK(tile_ != TileConfig::wgmma_sm90 || dp <= 256, invalid_argument,
                    "tile config wgmma_sm90 needs d <= 256 (d = ", d_, ")");
      AssignParams probe{};
      probe.x = xv_.x;
      probe.x_dtype = xv_.dtype;
      probe.x_stride = xv_.stride;
      probe.x_batch = n_per_ * xv_.stride;
      probe.d = d_;
      if (tile_streams_x(tile_) && !x_streamable(probe, op_)) {
        // Streamed (large-D) tiles read x as aligned 16-bit operands: convert once.
        xop_.reset(std::size_t(n_) * dp * 2, "a 16-bit operand copy of the data (large d)");
        launch_convert_rows(xv_, op_ == Operand::fp16 ? 0 : 1, dp, xop_.get(), stream_);
        FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
      }
    }
  }

  /// Shape and allocate a centroid set of k centroids per problem for `op`.
  void size_set(CentroidSet& cs, int k, Operand op, bool own_c32 = true) {
    const int bn = op == Operand::fp32 ? kSimtBN : tile_bn(tile_);
    cs.k = k;
    cs.op = op;
    cs.kp = static_cast<int>(round_up(k, bn));
    cs.dp = static_cast<int>(round_up(d_, op == Operand::fp32 ? kSimtBK : kChunkD));
    const int B = opt_.batch;
    const std::size_t esz = op == Operand::fp32 ? 4 : 2;
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
    FLASHKM_CUDA_CHECK(
        cudaMemcpyAsync(cs.c32.get(), c, std::size_t(opt_.batch) * k * d_ * 4, cudaMemcpyDefault, stream_));
    build_operands(cs);
    unsigned ovf = 0;
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(&ovf, cs.overflow.get(), 4, cudaMemcpyDeviceToHost, stream_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(stream_));
    FLASHKM_CHECK(ovf == 0, invalid_argument, "centroids exceed the fp16 range (|c| > 65504); use bf16 or auto");
  }

  /// The cascade needs a tensor-core first level (an fp32 first level is already the
  /// SIMT kernel).
  bool cascade_applies() const { return main_.op != Operand::fp32; }

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
    scratch_.ensure(std::size_t(n_) * 2, "per-row scratch (flagged rows / sort buffers)");
  }

  AssignParams params_for(const CentroidSet& cs, std::int32_t* labels, float* dist, bool certify) {
    AssignParams p{};
    const bool use_op_copy = cs.op != Operand::fp32 && xop_.get() != nullptr;
    p.x = use_op_copy ? static_cast<const void*>(xop_.get()) : xv_.x;
    p.x_dtype = use_op_copy ? (cs.op == Operand::fp16 ? DType::f16 : DType::bf16) : xv_.dtype;
    p.x_stride = use_op_copy ? cs.dp : xv_.stride;
    p.x_batch = n_per_ * p.x_stride;
    p.n = n_per_;
    p.d = d_;
    p.batch = opt_.batch;
    p.xnorm = xnorm_.get();
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
      // Bound on |computed score - exact score| for a row x (DESIGN.md section 3; derivation
      // in docs/CUDA.md): x rounded to the operand with unit roundoff ux (relative) and etax
      // (absolute, fp16 subnormals); the centroids' rounding enters as its exact size,
      // dcmax = max_j |c_j - operand(c_j)| (prepare_centroids; about 0.4 u cmax for fp16,
      // where the previous bound charged u cmax); fp32 accumulation over dp terms; the fp32
      // |c|^2 and the final fma rounded to 2^-24 each.
      // kSafety covers the fp32 evaluation of the bound and accumulation orders we did not
      // model; the measured worst-case ratio error/bound is reported by the GPU tests.
      // Measured on the H200 (2026-11-29, tests/gpu MeasuredErrorUnderBound): worst
      // error/bound 0.27 (d=64), 0.19-0.21 (d=128), 0.07 (d=768) with kSafety = 1.
      constexpr double kSafety = 1.25;
      double u = 0, eta = 0;
      if (cs.op == Operand::fp16) { u = 0x1p-11; eta = 0x1p-25; }
      if (cs.op == Operand::bf16) { u = 0x1p-8; eta = 0x1p-126; }
      // x given in the operand format is exact there: only the centroids are rounded.
      const bool x_exact = (cs.op == Operand::fp16 && xv_.dtype == DType::f16) ||
                           (cs.op == Operand::bf16 && xv_.dtype == DType::bf16);
      const double ux = x_exact ? 0.0 : u;
      const double etax = x_exact ? 0.0 : eta;
      // Accumulation: gamma_m = m*t / (1 - m*t). Tensor cores: m = dp terms at t = 2^-23
      // (truncating accumulation). SIMT kernel: IEEE round-to-nearest fma chains of kSimtBK
      // terms per chunk, chunk sums added in order, so each product passes through at most
      // m = kSimtBK + dp/kSimtBK roundings of t = 2^-24 (Higham, Thm 3.1 and blocked
      // summation): |fl(x.c) - x.c| <= gamma_m |x|.|c|.
      const bool simt = cs.op == Operand::fp32;
      const double t = simt ? 0x1p-24 : 0x1p-23;
      const double m = simt ? double(kSimtBK + cs.dp / kSimtBK) : double(cs.dp);
      const double acc = m * t / (1.0 - m * t);
      const double alpha = metric_ == Metric::l2 ? 2.0 : 1.0;
      // |x^.c^ - x.c| <= |x^| dcmax + |dx| cmax, |x^| <= (1+ux)|x| + etax sqrt(D),
      // |dx| <= ux|x| + etax sqrt(D); accumulation: acc |x^| (cmax + dcmax).
      p.cert_a = static_cast<float>(kSafety * alpha * (ux * (1 + acc) + acc + 0x1p-23));
      p.cert_c = static_cast<float>(kSafety * alpha * (1 + ux) * (1 + acc));
      p.cert_eta = static_cast<float>(kSafety * alpha * etax * (1 + u) * (1 + acc) * std::sqrt(double(d_)));
      p.cert_b = static_cast<float>(metric_ == Metric::l2 ? kSafety * (0x1p-23 + acc * 0.5) : 0.0);
    }
    return p;
  }

  void run_assign(const CentroidSet& cs, const AssignParams& p) {
    if (cs.op == Operand::fp32) launch_simt_assign(p, stream_);
    else launch_flash_assign(p, cs.op, tile_, stream_);
  }

  /// Nearest of m given centroids (exact fp32 path, uncertified) -> tmp_labels_, tmp_dist_.
  void aux_distances(const float* c, std::int64_t m) {
    FLASHKM_ASSERT(opt_.batch == 1, "initialisation support is for unbatched backends");
    tmp_labels_.ensure(std::size_t(n_), "temporary labels");
    tmp_dist_.ensure(std::size_t(n_), "temporary distances");
    ensure_scratch();
    prepare(aux_, c, static_cast<int>(m), Operand::fp32);
    AssignParams p = params_for(aux_, tmp_labels_.get(), tmp_dist_.get(), false);
    launch_simt_assign(p, stream_);
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
    sort_reduce(labels_.get(), k_, true);
  }

  /// Stable sort of rows by (problem, label), then per-cluster sums in row order over
  /// fixed pieces of kPieceRows, combined in order: sums_dev_ [B*k x d] (with_x) and cw_
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
    npieces_.ensure(std::size_t(nc + 1), "pieces per cluster");
    first_.ensure(std::size_t(nc + 1), "update piece offsets");
    // One workspace for the sort and the scan (they run one after another on the stream).
    std::size_t t_sort = 0, t_scan = 0;
    FLASHKM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, t_sort, dk, dv, static_cast<int>(n_), 0, bits, stream_));
    FLASHKM_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, t_scan, npieces_.get(), first_.get(), nc + 1, stream_));
    cub_temp_.ensure(std::max(t_sort, t_scan), "radix sort / scan workspace");
    FLASHKM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(cub_temp_.get(), t_sort, dk, dv, static_cast<int>(n_), 0, bits, stream_));
    // Cluster extents from the sorted keys (no histogram atomics), then pieces per cluster.
    launch_cluster_offsets(dk.Current(), n_, nc, row_off_.get(), stream_);
    launch_piece_counts(row_off_.get(), nc, static_cast<int>(kPieceRows), npieces_.get(), stream_);
    FLASHKM_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(cub_temp_.get(), t_scan, npieces_.get(), first_.get(), nc + 1, stream_));
    FLASHKM_CUDA_LAUNCH_CHECK();
    // ceil(c / R) <= c / R + 1 per cluster: at most n / R + nc pieces in all.
    const std::int64_t max_pieces = n_ / kPieceRows + nc;
    pieces_.ensure(std::size_t(max_pieces), "update pieces");
    psums_.ensure(std::size_t(max_pieces) * (d_ + 1), "update piece sums");
    sums_dev_.ensure(with_x ? std::size_t(nc) * d_ : 1, "cluster sums");
    cw_.ensure(std::size_t(nc), "cluster weights");
    launch_fill_pieces(row_off_.get(), first_.get(), nc, static_cast<int>(kPieceRows), pieces_.get(), stream_);
    launch_piece_sums(xv_, w_, xnorm_.get(), metric_ == Metric::cosine, with_x, dv.Current(), pieces_.get(),
                      first_.get() + nc, max_pieces, psums_.get(), stream_);
    launch_combine_pieces(psums_.get(), first_.get(), nc, d_, with_x, sums_dev_.get(), cw_.get(), stream_);
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
  DeviceBuffer<std::int64_t> scratch_, first_, npieces_;
  DeviceBuffer<unsigned char> cub_temp_, flags_;
  DeviceBuffer<unsigned long long> counters_, pcounts_;
  DeviceBuffer<double> part_, sums_, psums_, sums_dev_, cw_, shift_part_;
  DeviceBuffer<Piece> pieces_;
  // main_: the centroids assign() uses; next_: those update_centroids() computed, prepared
  // and valid (next_valid_) until set_centroids() takes them or other centroids.
  CentroidSet main_, aux_, next_;
  bool next_valid_ = false;
  // cas_: fp32 operands of main_ for the cascade (no c32 of its own), valid while
  // cas_gen_ == main_gen_ (main_gen_ counts every change of main_).
  CentroidSet cas_;
  std::uint64_t main_gen_ = 0, cas_gen_ = ~std::uint64_t(0);
  struct UpdateResults {
    double shift;
    unsigned long long n_empty;
    unsigned overflow;
  };
  PinnedBuffer<float> h_next_;  // the host copy of next_.c32 (set_centroids compares with it)
  PinnedBuffer<double> h_cw_;
  PinnedBuffer<UpdateResults> h_misc_;
};

}  // namespace

std::unique_ptr<core::Backend> make_cuda_backend(const CudaOptions& options) {
  return std::make_unique<CudaBackend>(options);
}

std::size_t device_bytes_held(const core::Backend& backend) {
  const auto* b = dynamic_cast<const CudaBackend*>(&backend);
  return b ? b->bytes_held() : 0;
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
