#include "core/device_stream_plan.hpp"

#include <algorithm>
#include <cmath>

#include "flashkm/error.hpp"

namespace flashkm::core {

std::int64_t DeviceStreamPlan::chunk_count() const {
  if (!streamed) return rows > 0 ? 1 : 0;
  const auto pieces = [&](std::int64_t r) { return (r + chunk_rows - 1) / chunk_rows; };
  return pieces(resident_rows) + pieces(rows - resident_rows);
}

DeviceStreamPlan::Chunk DeviceStreamPlan::chunk(std::int64_t i) const {
  Chunk c;
  if (!streamed) {
    c.begin = 0;
    c.rows = rows;
    c.resident = true;
    return c;
  }
  const std::int64_t resident_chunks = (resident_rows + chunk_rows - 1) / chunk_rows;
  if (i < resident_chunks) {
    c.begin = i * chunk_rows;
    c.rows = std::min(chunk_rows, resident_rows - c.begin);
    c.resident = true;
  } else {
    c.streamed_index = i - resident_chunks;
    c.begin = resident_rows + c.streamed_index * chunk_rows;
    c.rows = std::min(chunk_rows, rows - c.begin);
  }
  return c;
}

DeviceStreamPlan plan_device_stream(const DeviceStreamInput& in) {
  FLASHKM_ASSERT(in.rows > 0 && in.x_row_bytes > 0 && in.budget > 0 && in.slots >= 2, "plan_device_stream input");
  constexpr std::int64_t G = kStreamRowGranule;
  DeviceStreamPlan p;
  p.rows = in.rows;
  p.budget = in.budget;
  p.margin = in.budget / 16;
  const auto state = static_cast<std::int64_t>(std::ceil(double(in.rows) * in.state_row_bytes));
  const auto resident_need =
      static_cast<std::int64_t>(std::ceil(double(in.rows) * (double(in.x_row_bytes) + in.resident_row_bytes))) + state;
  if (!in.can_stream || resident_need + p.margin <= in.budget) {
    p.resident_rows = p.chunk_rows = in.rows;
    p.planned_bytes = resident_need;
    return p;
  }
  p.streamed = true;
  p.slots = in.slots;
  const std::int64_t per_chunk_row = std::int64_t(in.slots) * in.x_row_bytes + in.chunk_row_bytes;
  const std::int64_t left = in.budget - p.margin - state;
  const std::int64_t min_stream = G * per_chunk_row;
  FLASHKM_CHECK(left >= min_stream, out_of_memory, "device memory budget of ", in.budget, " bytes is too small for ",
                in.rows, " rows: their per-row state needs ", state, " bytes on the device, streaming the data at least ",
                min_stream, " bytes more (", in.slots, " chunks of ", G, " rows), and ", p.margin,
                " bytes (1/16 of the budget) are kept for centroid tables; give at least ",
                (state + min_stream) * 16 / 15 + 1, " bytes (", in.budget_source, ")");
  // Chunks: at most max_chunk_bytes of data, and at most 1/(2 (slots + 1)) of what is left,
  // so that most of the budget goes to the resident prefix; whole granules, at least one.
  const std::int64_t target = std::min(in.max_chunk_bytes, left / (2 * (in.slots + 1)));
  std::int64_t chunk = std::max<std::int64_t>(1, target / in.x_row_bytes / G) * G;
  chunk = std::min(chunk, (in.rows + G - 1) / G * G);
  while (chunk > G && chunk * per_chunk_row > left) chunk -= G;
  p.chunk_rows = chunk;
  const std::int64_t stream_bytes = chunk * per_chunk_row;
  std::int64_t prefix = (left - stream_bytes) / in.x_row_bytes / G * G;
  if (prefix >= in.rows) prefix = in.rows;  // every row fits beside the chunk buffers: nothing is copied per pass
  p.resident_rows = std::max<std::int64_t>(0, prefix);
  p.planned_bytes = state + stream_bytes + p.resident_rows * in.x_row_bytes;
  return p;
}

}  // namespace flashkm::core
