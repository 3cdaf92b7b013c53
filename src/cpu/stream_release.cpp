#include "cpu/stream_release.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <string>

#include "flashkm/error.hpp"

namespace flashkm::cpu {
namespace {

constexpr std::int64_t kMiB = std::int64_t{1} << 20;

std::int64_t page_size() {
  static const std::int64_t p = ::sysconf(_SC_PAGESIZE);
  return p;
}

/// One past the last byte of rows [0, end): never past the data (a strided view's last row
/// ends before its stride does), so that a page rounded up from it still lies in the mapping.
std::uintptr_t rows_end(const MatrixView& x, std::int64_t end) {
  return reinterpret_cast<std::uintptr_t>(x.row(end - 1)) + static_cast<std::uintptr_t>(x.cols) * dtype_size(x.dtype);
}

}  // namespace

std::int64_t physical_memory_bytes() {
  return static_cast<std::int64_t>(::sysconf(_SC_PHYS_PAGES)) * page_size();
}

StreamPlan plan_stream(const MatrixView& x, std::int64_t budget, std::int64_t state_bytes, int threads) {
  StreamPlan plan;
  const bool explicit_budget = budget > 0;
  plan.budget = explicit_budget ? budget : physical_memory_bytes() / 2;
  // A window per reading thread in flight, one more being read ahead: windows are at least
  // 1 MiB (one madvise per MiB is noise) and at most 64 MiB (finer release, same speed).
  const bool mapped = x.mapped_file && x.where == Location::host;
  const std::int64_t min_data = mapped ? 2 * (threads + 1) * kMiB : 0;
  if (explicit_budget)
    FLASHKM_CHECK(state_bytes + min_data <= plan.budget, out_of_memory, "max_memory ", plan.budget,
                  " bytes is too small: ", x.rows, " rows need ", state_bytes, " bytes of per-row state",
                  mapped ? ", plus at least " : "", mapped ? std::to_string(min_data) + " bytes of data windows" : "");
  if (!mapped) return plan;
  const std::int64_t row_bytes = x.stride() * static_cast<std::int64_t>(dtype_size(x.dtype));
  const std::int64_t data_bytes = x.rows * row_bytes;
  const std::int64_t left = plan.budget - state_bytes;
  if (data_bytes <= left) return plan;  // it fits: keep every page mapped (no re-faults)
  plan.release = true;
  const std::int64_t window_bytes = std::clamp<std::int64_t>(left / (2 * (threads + 1)), kMiB, 64 * kMiB);
  plan.window_rows = std::max<std::int64_t>(1, window_bytes / row_bytes);
  return plan;
}

void advise_sequential(const MatrixView& x, const StreamPlan& plan) {
  if (!plan.release) return;
  const auto start = reinterpret_cast<std::uintptr_t>(x.row(0)) / page_size() * page_size();
  const auto end = rows_end(x, x.rows);
  // Advice only: a kernel that refuses it reads the same bytes, so the result is not checked.
  (void)::madvise(reinterpret_cast<void*>(start), end - start, MADV_SEQUENTIAL);
}

PassRelease::PassRelease(const MatrixView& x, const StreamPlan& plan, int readers) : x_(x) {
  if (!plan.release) return;
  window_rows_ = plan.window_rows;
  windows_ = (x.rows + window_rows_ - 1) / window_rows_;
  remaining_ = std::make_unique<std::atomic<std::int64_t>[]>(static_cast<std::size_t>(windows_));
  for (std::int64_t w = 0; w < windows_; ++w)
    remaining_[w].store(readers * (std::min(x.rows, (w + 1) * window_rows_) - w * window_rows_),
                        std::memory_order_relaxed);
}

void PassRelease::count(std::int64_t begin, std::int64_t rows) {
  const std::int64_t end = begin + rows;
  for (std::int64_t w = begin / window_rows_; w * window_rows_ < end; ++w) {
    const std::int64_t n = std::min(end, (w + 1) * window_rows_) - std::max(begin, w * window_rows_);
    if (remaining_[w].fetch_sub(n, std::memory_order_acq_rel) == n) drop(w);
  }
}

void PassRelease::drop(std::int64_t w) const {
  // Whole pages, rounded outwards: a page shared with a neighbouring window that is still
  // being read is simply faulted in again from the file (the mapping is read-only, so
  // MADV_DONTNEED never loses data; this is why only mapped_file data is released).
  const std::int64_t p = page_size();
  const auto first = reinterpret_cast<std::uintptr_t>(x_.row(w * window_rows_)) / p * p;
  const auto last = (rows_end(x_, std::min(x_.rows, (w + 1) * window_rows_)) + p - 1) / p * p;
  (void)::madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
}

}  // namespace flashkm::cpu
