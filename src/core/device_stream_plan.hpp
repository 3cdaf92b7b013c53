// How a device backend holds data that may not fit its memory: resident (the data and every
// per-row buffer on the device, as before), or streamed (a resident prefix of rows stays on
// the device, the rest is copied in chunks on every pass). Device-neutral arithmetic, so that
// it is tested on the CPU; the CUDA backend (src/cuda/streamed_rows.*) executes the plan.
// See docs/CUDA.md, "Data larger than the GPU".
#pragma once

#include <cstdint>

namespace flashkm::core {

/// What the plan is made from. Byte counts are per row unless they say otherwise.
struct DeviceStreamInput {
  std::int64_t rows = 0;             ///< N
  std::int64_t x_row_bytes = 0;      ///< one row of x as the kernels read it on the device
  double state_row_bytes = 0;        ///< per-row state both modes keep (labels, distances, norms, ...)
  double resident_row_bytes = 0;     ///< extra per-row state of the resident mode only (sort buffers, piece sums)
  std::int64_t chunk_row_bytes = 0;  ///< extra device bytes per row of a streamed chunk, beyond its data slots
  std::int64_t budget = 0;           ///< device bytes the fit may use (> 0)
  bool can_stream = false;           ///< the data is in host memory and the backend can stream it
  int slots = 3;                     ///< device buffers that streamed chunks rotate through
  std::int64_t max_chunk_bytes = std::int64_t{64} << 20;  ///< data bytes of one chunk at most
  /// Where the budget came from, for the error message.
  const char* budget_source = "Params::max_memory / --max-memory";
};

struct DeviceStreamPlan {
  bool streamed = false;
  std::int64_t rows = 0;           ///< N
  std::int64_t resident_rows = 0;  ///< rows [0, resident_rows) stay on the device (N when not streamed)
  std::int64_t chunk_rows = 0;     ///< rows per chunk (a multiple of kStreamRowGranule); N when not streamed
  int slots = 0;                   ///< device data buffers for streamed chunks
  std::int64_t budget = 0;         ///< the budget it was planned for
  std::int64_t margin = 0;         ///< bytes left for O(K x D) tables and workspaces (budget / 16)
  std::int64_t planned_bytes = 0;  ///< bytes the plan accounts for (<= budget - margin when streamed)

  /// Chunks of a pass: the resident prefix cut into chunk_rows pieces, then the streamed
  /// rows cut the same way. Every chunk but the last starts and ends on a multiple of
  /// kStreamRowGranule, so per-chunk reductions fill whole fixed reduction chunks.
  std::int64_t chunk_count() const;
  struct Chunk {
    std::int64_t begin = 0, rows = 0;
    bool resident = false;
    std::int64_t streamed_index = -1;  ///< index among the streamed chunks (slot rotation), -1 if resident
  };
  Chunk chunk(std::int64_t i) const;
  /// Rows copied to the device per pass.
  std::int64_t streamed_rows() const { return rows - resident_rows; }
};

/// Rows of every chunk boundary: a multiple of the fixed reduction chunk (2048 rows, which
/// is also a multiple of the update's 256-row pieces).
inline constexpr std::int64_t kStreamRowGranule = 2048;

/// The plan for `in`: resident when the data, the per-row state and the margin fit the
/// budget (or the data cannot be streamed); else streamed, with chunks of at most
/// max_chunk_bytes (and at most 1/(2 (slots + 1)) of what the per-row state leaves), and as
/// large a resident prefix as the rest of the budget holds. Throws Error(out_of_memory)
/// naming the bytes when even the per-row state and the smallest chunks do not fit.
DeviceStreamPlan plan_device_stream(const DeviceStreamInput& in);

}  // namespace flashkm::core
