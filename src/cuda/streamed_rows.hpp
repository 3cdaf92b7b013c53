// Data larger than the GPU (docs/CUDA.md, "Data larger than the GPU"): host rows streamed to
// the device in chunks, and the Lloyd update's per-cluster sums formed chunk by chunk with
// the same bits as the resident sort-and-pieces update.
//
// RowStream executes a core::DeviceStreamPlan. A pass visits every chunk of rows in order:
// chunks of the resident prefix point into the backend's device copy; streamed chunks are
// copied into one of `slots` device buffers on a copy stream, the compute stream waits for
// the copy (event) and the slot is refilled only after the compute stream has passed the
// work enqueued on it (event), so copies of the next chunks overlap the kernels of this one.
// Pinned (page-locked) input is copied directly (cudaMemcpy2DAsync); pageable or mapped
// input, and float64 input (converted to fp32 on the host, round to nearest: the bits the
// resident path's device conversion gives), goes through a ring of two pinned staging
// buffers that host threads fill while the device copies the previous one.
//
// ChunkedClusterSums forms what the resident update (sort by label, pieces of R consecutive
// rows of a cluster, each summed in row order, pieces added in order) forms,
// one chunk at a time: a piece cut by a chunk boundary continues its chains in the next
// chunk (launch_piece_sums' resume), completed pieces are added in order into per-cluster
// totals, and the open piece of each cluster is added last. Every fp64 addition happens in
// the same order on the same operands, so the sums equal the resident update's bitwise.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/device_stream_plan.hpp"
#include "cuda/cuda_check.hpp"
#include "cuda/kernels.cuh"
#include "flashkm/types.hpp"

namespace flashkm::cuda {

/// Rows [r0, r0 + rows) of the data, readable on the device as `x` (x.n = x.n_per = rows,
/// contiguous rows of the device dtype; x.x is null in a pass that asked for no data).
struct RowChunk {
  std::int64_t index = 0;  ///< the chunk's index in the pass (core::DeviceStreamPlan::chunk)
  std::int64_t r0 = 0, rows = 0;
  XView x{};
};

class RowStream {
 public:
  /// x: host data (any dtype; float64 is staged as fp32). compute: the backend's stream.
  RowStream(const MatrixView& x, const core::DeviceStreamPlan& plan, cudaStream_t compute);
  ~RowStream();
  RowStream(const RowStream&) = delete;
  RowStream& operator=(const RowStream&) = delete;

  DType device_dtype() const { return dtype_; }
  /// Device bytes of one row.
  std::int64_t row_bytes() const { return row_bytes_; }
  /// The input is page-locked: streamed chunks are copied from it directly (no staging).
  bool direct() const { return direct_; }
  const core::DeviceStreamPlan& plan() const { return plan_; }
  std::int64_t bytes_copied() const { return bytes_copied_; }
  std::int64_t passes() const { return passes_; }  ///< passes that read the rows

  /// Copy rows [r0, r0 + rows) into dst (device, contiguous rows of the device dtype) and
  /// wait for it (the resident prefix, once per fit; a gather's rows).
  void upload(std::int64_t r0, std::int64_t rows, void* dst);
  /// Rows by index into host memory, as fp32 (any input dtype; exact conversion, float64
  /// rounded to nearest). For gather_rows: a few rows, read where they are.
  void host_rows_f32(const std::int64_t* idx, std::int64_t m, float* out) const;

  /// One pass over all rows: body(chunk) for every chunk in row order. The body enqueues
  /// work on the compute stream only and must not wait for it: the streamed chunk's slot is
  /// refilled once the compute stream has passed what the body enqueued. resident: the
  /// device copy of the resident prefix. needs_x false: nothing is copied (bodies that
  /// read only per-row state).
  template <class Body>
  void pass(const XView& resident, bool needs_x, Body&& body) {
    for (std::int64_t i = 0; i < plan_.chunk_count(); ++i) {
      const core::DeviceStreamPlan::Chunk c = plan_.chunk(i);
      RowChunk ch;
      ch.index = i;
      ch.r0 = c.begin;
      ch.rows = c.rows;
      ch.x = XView{nullptr, dtype_, d_, c.rows, d_, c.rows};
      if (c.resident && needs_x) ch.x.x = static_cast<const char*>(resident.x) + c.begin * row_bytes_;
      else if (needs_x) ch.x.x = stage(c);
      const bool staged = !c.resident && needs_x;
      try {
        body(static_cast<const RowChunk&>(ch));
      } catch (...) {
        if (staged) release(c);  // what the body enqueued still guards the slot
        throw;
      }
      if (staged) release(c);
    }
    if (needs_x) ++passes_;
  }

 private:
  /// Enqueue the copy of streamed chunk c into its slot, make the compute stream wait for it.
  const void* stage(const core::DeviceStreamPlan::Chunk& c);
  /// The compute stream's work on c's slot is enqueued: the slot may be refilled after it.
  void release(const core::DeviceStreamPlan::Chunk& c);
  /// Rows [r0, r0 + rows) as contiguous device-dtype rows into host memory (host threads).
  void host_rows(void* dst, std::int64_t r0, std::int64_t rows) const;

  MatrixView x_;
  core::DeviceStreamPlan plan_;
  cudaStream_t compute_ = nullptr, copy_ = nullptr;
  DType dtype_ = DType::f32;
  int d_ = 0;
  std::int64_t row_bytes_ = 0;
  bool direct_ = false;
  std::int64_t bytes_copied_ = 0, passes_ = 0, ring_next_ = 0;
  DeviceBuffer<unsigned char> slots_;        // [slots][chunk_rows x row_bytes]
  PinnedBuffer<unsigned char> ring_[2];      // staging (not direct)
  cudaEvent_t filled_[4] = {}, slot_free_[4] = {}, staged_free_[2] = {};
};

/// The resident update's per-cluster sums, formed chunk by chunk (see the file comment).
class ChunkedClusterSums {
 public:
  /// Start the sums of nc clusters over rows of d features (with_x false: weights only) in
  /// pieces of piece_rows rows of a cluster (the resident update's piece_rows_for(N, d): the
  /// same pieces, so the same bits), chunks of at most max_rows rows. Asynchronous on s.
  void begin(std::int64_t nc, int d, bool with_x, std::int64_t piece_rows, std::int64_t max_rows, cudaStream_t s);
  /// Add the next chunk's rows (all chunks in row order): labels [rows] in [0, nc), x the
  /// chunk's rows (ignored when !with_x), w and xnorm offset to the chunk (w may be null).
  /// scratch: at least 4 * rows int32 of device memory the chunk may overwrite.
  void add(const std::int32_t* labels, const XView& x, std::int64_t rows, const float* w, const float* xnorm,
           bool cosine, std::int32_t* scratch, cudaStream_t s);
  /// sums [nc x d] (with_x) and weights [nc]: the resident update's values, bitwise.
  void finish(double* sums, double* weights, cudaStream_t s);
  std::size_t bytes() const {
    return total_.bytes() + open_.bytes() + base_.bytes() + row_off_.bytes() + nseg_.bytes() + seg_first_.bytes() +
           segs_.bytes() + resume_.bytes() + complete_.bytes() + psums_.bytes() + cub_temp_.bytes();
  }

 private:
  std::int64_t nc_ = 0, cap_ = 0, R_ = 1;
  int d_ = 0, d1_ = 1;  // layout width: d + 1 with x, 1 for weights only
  bool with_x_ = true;
  DeviceBuffer<double> total_, open_, psums_;
  DeviceBuffer<std::int64_t> base_, nseg_, seg_first_;
  DeviceBuffer<std::int32_t> row_off_;
  DeviceBuffer<Piece> segs_;
  DeviceBuffer<unsigned char> resume_, complete_, cub_temp_;
};

}  // namespace flashkm::cuda
