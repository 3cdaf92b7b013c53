// Streamed rows and chunked update sums (see streamed_rows.hpp).
#include "cuda/streamed_rows.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include <algorithm>
#include <cstring>
#include <system_error>
#include <thread>
#include <vector>

#include "cuda/device_helpers.cuh"
#include "cuda/host_split.hpp"
#include "flashkm/error.hpp"

namespace flashkm::cuda {
namespace {

static_assert(core::kStreamRowGranule % kRowChunk == 0, "chunk boundaries must fall on reduction chunks");

using detail::blocks_for;

/// Whether [p, p + bytes) is page-locked host memory (cudaMallocHost or cudaHostRegister).
bool page_locked(const void* p, std::size_t bytes) {
  auto locked = [](const void* q) {
    cudaPointerAttributes a{};
    const cudaError_t err = cudaPointerGetAttributes(&a, q);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      return false;
    }
    return a.type == cudaMemoryTypeHost;
  };
  return locked(p) && locked(static_cast<const char*>(p) + bytes - 1);
}

// ---- chunked update kernels -----------------------------------------------------------------
// Cluster c's rows in this chunk are sorted positions [row_off[c], row_off[c+1]); before the
// chunk, base[c] of its rows were seen. Its rows of rank r (within the cluster, over all
// rows) belong to piece r / R: a segment is the part of one piece inside this chunk.
__global__ void seg_counts_kernel(const std::int32_t* row_off, const std::int64_t* base, std::int64_t nc, int R,
                                  std::int64_t* nseg) {
  const std::int64_t c = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c > nc) return;
  if (c == nc) {
    nseg[c] = 0;
    return;
  }
  const std::int64_t cnt = row_off[c + 1] - row_off[c], b = base[c];
  nseg[c] = cnt == 0 ? 0 : (b + cnt - 1) / R - b / R + 1;
}

__global__ void fill_segments_kernel(const std::int32_t* row_off, const std::int64_t* base,
                                     const std::int64_t* seg_first, std::int64_t nc, int R, Piece* segs,
                                     unsigned char* resume, unsigned char* complete) {
  const std::int64_t c = std::int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= nc) return;
  const std::int64_t cnt = row_off[c + 1] - row_off[c], b = base[c], pos0 = row_off[c];
  std::int64_t s = seg_first[c];
  for (std::int64_t lo = b; lo < b + cnt; ++s) {
    const std::int64_t piece_end = (lo / R + 1) * R;
    const std::int64_t hi = piece_end < b + cnt ? piece_end : b + cnt;
    segs[s] = Piece{pos0 + (lo - b), pos0 + (hi - b)};
    resume[s] = lo % R != 0;    // continues a piece an earlier chunk began
    complete[s] = hi % R == 0;  // the piece has all its R rows
    lo = hi;
  }
}

// The open piece's chains (stored by the previous chunk) seed this chunk's first segment.
__global__ void seed_open_kernel(const std::int32_t* row_off, const std::int64_t* base, const std::int64_t* seg_first,
                                 int R, int d1, const double* open, double* psums) {
  const std::int64_t c = blockIdx.x;
  if (row_off[c + 1] == row_off[c] || base[c] % R == 0) return;
  const std::int64_t s = seg_first[c];
  for (int j = threadIdx.x; j < d1; j += blockDim.x) psums[s * d1 + j] = open[c * d1 + j];
}

// Completed pieces are added to the totals in piece order (as combine_pieces adds them); the
// last segment, if its piece is not complete, becomes the open piece.
__global__ void fold_kernel(const std::int32_t* row_off, const std::int64_t* seg_first, int d1,
                            const double* psums, const unsigned char* complete, double* total, double* open,
                            std::int64_t* base) {
  const std::int64_t c = blockIdx.x;
  const std::int64_t s0 = seg_first[c], s1 = seg_first[c + 1];
  if (s0 == s1) return;
  for (int j = threadIdx.x; j < d1; j += blockDim.x) {
    double t = total[c * d1 + j];
    for (std::int64_t s = s0; s < s1; ++s) {
      if (complete[s]) t += psums[s * d1 + j];
      else open[c * d1 + j] = psums[s * d1 + j];  // only the last segment can be incomplete
    }
    total[c * d1 + j] = t;
  }
  if (threadIdx.x == 0) base[c] += row_off[c + 1] - row_off[c];  // nothing in this launch reads base
}

__global__ void finish_sums_kernel(const double* total, const double* open, const std::int64_t* base, int R, int d1,
                                   bool with_x, double* sums, double* weights) {
  const std::int64_t c = blockIdx.x;
  const bool has_open = base[c] % R != 0;
  const int d = d1 - 1;
  for (int j = threadIdx.x; j < d1; j += blockDim.x) {
    double t = total[c * d1 + j];
    if (has_open) t += open[c * d1 + j];
    if (j < d) {
      if (with_x) sums[c * d + j] = t;
    } else {
      weights[c] = t;
    }
  }
}

}  // namespace

// ---- RowStream ------------------------------------------------------------------------------
RowStream::RowStream(const MatrixView& x, const core::DeviceStreamPlan& plan, cudaStream_t compute)
    : x_(x), plan_(plan), compute_(compute) {
  FLASHKM_ASSERT(x.where == Location::host, "RowStream streams host data");
  FLASHKM_ASSERT(plan.streamed && plan.slots >= 2 && plan.slots <= 4, "RowStream needs a streamed plan of 2-4 slots");
  dtype_ = x.dtype == DType::f64 ? DType::f32 : x.dtype;
  d_ = static_cast<int>(x.cols);
  row_bytes_ = std::int64_t(d_) * static_cast<std::int64_t>(dtype_size(dtype_));
  const std::size_t esz = dtype_size(x.dtype);
  const std::size_t span = std::size_t((x.rows - 1) * x.stride() + x.cols) * esz;
  direct_ = x.dtype == dtype_ && page_locked(x.data, span);
  FLASHKM_CUDA_CHECK(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking));
  for (int s = 0; s < plan_.slots; ++s) {
    FLASHKM_CUDA_CHECK(cudaEventCreateWithFlags(&filled_[s], cudaEventDisableTiming));
    FLASHKM_CUDA_CHECK(cudaEventCreateWithFlags(&slot_free_[s], cudaEventDisableTiming));
  }
  for (auto& e : staged_free_) FLASHKM_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  if (plan_.streamed_rows() > 0)
    slots_.reset(std::size_t(plan_.slots) * std::size_t(plan_.chunk_rows * row_bytes_), "streamed row chunks");
}

RowStream::~RowStream() {
  // Nothing may still read the staging buffers or write the slots when they are freed.
  if (copy_) cudaStreamSynchronize(copy_);
  if (compute_) cudaStreamSynchronize(compute_);
  for (auto* ev : {filled_, slot_free_})
    for (int s = 0; s < 4; ++s)
      if (ev[s]) cudaEventDestroy(ev[s]);
  for (auto e : staged_free_)
    if (e) cudaEventDestroy(e);
  if (copy_) cudaStreamDestroy(copy_);
}

void RowStream::host_rows(void* dst, std::int64_t r0, std::int64_t rows) const {
  const std::int64_t stride = x_.stride();
  const bool contiguous = stride == x_.cols && x_.dtype == dtype_;
  host_split(rows, row_bytes_, std::int64_t(4) << 20, 1, [&](std::int64_t a, std::int64_t b) {
    char* out = static_cast<char*>(dst) + a * row_bytes_;
    if (contiguous) {
      std::memcpy(out, x_.row(r0 + a), std::size_t((b - a) * row_bytes_));
      return;
    }
    for (std::int64_t i = a; i < b; ++i, out += row_bytes_) {
      if (x_.dtype == DType::f64) {
        const double* src = static_cast<const double*>(x_.row(r0 + i));
        float* o = reinterpret_cast<float*>(out);
        for (int j = 0; j < d_; ++j) o[j] = static_cast<float>(src[j]);  // round to nearest, as on the device
      } else {
        std::memcpy(out, x_.row(r0 + i), std::size_t(row_bytes_));
      }
    }
  });
}

void RowStream::host_rows_f32(const std::int64_t* idx, std::int64_t m, float* out) const {
  for (std::int64_t t = 0; t < m; ++t) {
    const void* row = x_.row(idx[t]);
    float* o = out + t * d_;
    for (int j = 0; j < d_; ++j) {
      switch (x_.dtype) {
        case DType::f32: o[j] = static_cast<const float*>(row)[j]; break;
        case DType::f64: o[j] = static_cast<float>(static_cast<const double*>(row)[j]); break;
        case DType::f16: {
          __half h;
          std::memcpy(&h, static_cast<const char*>(row) + 2 * j, 2);
          o[j] = __half2float(h);
          break;
        }
        case DType::bf16: {
          __nv_bfloat16 h;
          std::memcpy(&h, static_cast<const char*>(row) + 2 * j, 2);
          o[j] = __bfloat162float(h);
          break;
        }
      }
    }
  }
}

void RowStream::upload(std::int64_t r0, std::int64_t rows, void* dst) {
  if (rows <= 0) return;
  const std::size_t esz = dtype_size(x_.dtype);
  if (x_.dtype == dtype_ && (direct_ || x_.stride() == x_.cols)) {
    // Pinned: one asynchronous 2D copy. Pageable contiguous: the driver stages it.
    FLASHKM_CUDA_CHECK(cudaMemcpy2DAsync(dst, std::size_t(row_bytes_), x_.row(r0), std::size_t(x_.stride()) * esz,
                                         std::size_t(row_bytes_), std::size_t(rows), cudaMemcpyHostToDevice, compute_));
    FLASHKM_CUDA_CHECK(cudaStreamSynchronize(compute_));
    bytes_copied_ += rows * row_bytes_;
    return;
  }
  // Strided pageable or float64: through the pinned ring, converted on the host.
  const std::int64_t piece = std::max<std::int64_t>(1, plan_.chunk_rows);
  for (auto& r : ring_) r.ensure(std::size_t(piece * row_bytes_), "pinned staging of streamed rows");
  for (std::int64_t done = 0; done < rows; done += piece) {
    const std::int64_t n = std::min(piece, rows - done);
    const int q = static_cast<int>(ring_next_++ % 2);
    FLASHKM_CUDA_CHECK(cudaEventSynchronize(staged_free_[q]));
    host_rows(ring_[q].get(), r0 + done, n);
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(static_cast<char*>(dst) + done * row_bytes_, ring_[q].get(),
                                       std::size_t(n * row_bytes_), cudaMemcpyHostToDevice, compute_));
    FLASHKM_CUDA_CHECK(cudaEventRecord(staged_free_[q], compute_));
  }
  FLASHKM_CUDA_CHECK(cudaStreamSynchronize(compute_));
  bytes_copied_ += rows * row_bytes_;
}

const void* RowStream::stage(const core::DeviceStreamPlan::Chunk& c) {
  const int slot = static_cast<int>(c.streamed_index % plan_.slots);
  char* dst = reinterpret_cast<char*>(slots_.get()) + std::size_t(slot) * std::size_t(plan_.chunk_rows * row_bytes_);
  const std::size_t bytes = std::size_t(c.rows * row_bytes_);
  // The slot's previous chunk: the compute stream must be past its work before we overwrite it.
  FLASHKM_CUDA_CHECK(cudaStreamWaitEvent(copy_, slot_free_[slot], 0));
  if (direct_ && x_.stride() == x_.cols) {
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(dst, x_.row(c.begin), bytes, cudaMemcpyHostToDevice, copy_));
  } else if (direct_) {
    const std::size_t esz = dtype_size(x_.dtype);
    FLASHKM_CUDA_CHECK(cudaMemcpy2DAsync(dst, std::size_t(row_bytes_), x_.row(c.begin), std::size_t(x_.stride()) * esz,
                                         std::size_t(row_bytes_), std::size_t(c.rows), cudaMemcpyHostToDevice, copy_));
  } else {
    for (auto& r : ring_) r.ensure(std::size_t(plan_.chunk_rows * row_bytes_), "pinned staging of streamed rows");
    // Ring buffer q was last read by the copy two chunks ago: wait for that copy (host side),
    // fill it on host threads, copy it. The device copies the previous chunk meanwhile.
    const int q = static_cast<int>(ring_next_++ % 2);
    FLASHKM_CUDA_CHECK(cudaEventSynchronize(staged_free_[q]));
    host_rows(ring_[q].get(), c.begin, c.rows);
    FLASHKM_CUDA_CHECK(cudaMemcpyAsync(dst, ring_[q].get(), bytes, cudaMemcpyHostToDevice, copy_));
    FLASHKM_CUDA_CHECK(cudaEventRecord(staged_free_[q], copy_));
  }
  FLASHKM_CUDA_CHECK(cudaEventRecord(filled_[slot], copy_));
  FLASHKM_CUDA_CHECK(cudaStreamWaitEvent(compute_, filled_[slot], 0));
  bytes_copied_ += static_cast<std::int64_t>(bytes);
  return dst;
}

void RowStream::release(const core::DeviceStreamPlan::Chunk& c) {
  const int slot = static_cast<int>(c.streamed_index % plan_.slots);
  FLASHKM_CUDA_CHECK(cudaEventRecord(slot_free_[slot], compute_));
}

// ---- ChunkedClusterSums -----------------------------------------------------------------------
void ChunkedClusterSums::begin(std::int64_t nc, int d, bool with_x, std::int64_t piece_rows, std::int64_t max_rows,
                               cudaStream_t s) {
  FLASHKM_ASSERT(piece_rows >= 1 && piece_rows < (std::int64_t(1) << 30), "piece rows");
  nc_ = nc;
  R_ = piece_rows;
  d_ = with_x ? d : 0;
  d1_ = d_ + 1;
  with_x_ = with_x;
  // Segments of a chunk: cluster c's cnt rows span at most (cnt - 1) / R + 2 pieces.
  cap_ = max_rows / R_ + 2 * std::min(nc, max_rows) + 1;
  total_.ensure(std::size_t(nc * d1_), "chunked update totals");
  open_.ensure(std::size_t(nc * d1_), "chunked update open pieces");
  base_.ensure(std::size_t(nc), "chunked update cluster counts");
  row_off_.ensure(std::size_t(nc + 1), "chunk cluster offsets");
  nseg_.ensure(std::size_t(nc + 1), "chunk segments per cluster");
  seg_first_.ensure(std::size_t(nc + 1), "chunk segment offsets");
  segs_.ensure(std::size_t(cap_), "chunk segments");
  resume_.ensure(std::size_t(cap_), "chunk segment flags");
  complete_.ensure(std::size_t(cap_), "chunk segment flags");
  psums_.ensure(std::size_t(cap_ * d1_), "chunk segment sums");
  FLASHKM_CUDA_CHECK(cudaMemsetAsync(total_.get(), 0, std::size_t(nc * d1_) * sizeof(double), s));
  FLASHKM_CUDA_CHECK(cudaMemsetAsync(base_.get(), 0, std::size_t(nc) * sizeof(std::int64_t), s));
}

void ChunkedClusterSums::add(const std::int32_t* labels, const XView& x, std::int64_t rows, const float* w,
                             const float* xnorm, bool cosine, std::int32_t* scratch, cudaStream_t s) {
  if (rows == 0) return;
  FLASHKM_ASSERT(rows / R_ + 2 * std::min(nc_, rows) + 1 <= cap_,
                 "chunk larger than ChunkedClusterSums::begin was told");
  std::int32_t* keys = scratch;
  std::int32_t* vals = scratch + rows;
  std::int32_t* keys_alt = scratch + 2 * rows;
  std::int32_t* vals_alt = scratch + 3 * rows;
  launch_iota_keys(labels, rows, rows, static_cast<int>(nc_), keys, vals, s);  // keys = labels, vals = chunk rows
  cub::DoubleBuffer<std::int32_t> dk(keys, keys_alt), dv(vals, vals_alt);
  int bits = 1;
  while ((std::int64_t(1) << bits) < nc_) ++bits;
  std::size_t t_sort = 0, t_scan = 0;
  FLASHKM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, t_sort, dk, dv, static_cast<int>(rows), 0, bits, s));
  FLASHKM_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, t_scan, nseg_.get(), seg_first_.get(), nc_ + 1, s));
  cub_temp_.ensure(std::max(t_sort, t_scan), "chunk sort / scan workspace");
  FLASHKM_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(cub_temp_.get(), t_sort, dk, dv, static_cast<int>(rows), 0, bits, s));
  launch_cluster_offsets(dk.Current(), rows, nc_, row_off_.get(), s);
  const int R = static_cast<int>(R_);
  seg_counts_kernel<<<blocks_for(nc_ + 1, 256), 256, 0, s>>>(row_off_.get(), base_.get(), nc_, R, nseg_.get());
  FLASHKM_CUDA_LAUNCH_CHECK();
  FLASHKM_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(cub_temp_.get(), t_scan, nseg_.get(), seg_first_.get(), nc_ + 1, s));
  fill_segments_kernel<<<blocks_for(nc_, 256), 256, 0, s>>>(row_off_.get(), base_.get(), seg_first_.get(), nc_, R,
                                                             segs_.get(), resume_.get(), complete_.get());
  FLASHKM_CUDA_LAUNCH_CHECK();
  seed_open_kernel<<<static_cast<unsigned>(nc_), 128, 0, s>>>(row_off_.get(), base_.get(), seg_first_.get(), R, d1_,
                                                               open_.get(), psums_.get());
  FLASHKM_CUDA_LAUNCH_CHECK();
  // The resident update's piece-sum kernel, over this chunk's segments (d = 0: weights only).
  XView xv = x;
  if (!with_x_) xv = XView{nullptr, DType::f32, 0, rows, 0, rows};
  launch_piece_sums(xv, w, xnorm, cosine, with_x_, dv.Current(), segs_.get(), seg_first_.get() + nc_, cap_,
                    psums_.get(), s, resume_.get());
  fold_kernel<<<static_cast<unsigned>(nc_), 128, 0, s>>>(row_off_.get(), seg_first_.get(), d1_, psums_.get(),
                                                          complete_.get(), total_.get(), open_.get(), base_.get());
  FLASHKM_CUDA_LAUNCH_CHECK();
}

void ChunkedClusterSums::finish(double* sums, double* weights, cudaStream_t s) {
  finish_sums_kernel<<<static_cast<unsigned>(nc_), 128, 0, s>>>(total_.get(), open_.get(), base_.get(),
                                                                 static_cast<int>(R_), d1_, with_x_, sums,
                                                                 weights);
  FLASHKM_CUDA_LAUNCH_CHECK();
}

}  // namespace flashkm::cuda
