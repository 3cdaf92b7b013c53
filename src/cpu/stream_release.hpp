// Out-of-core passes over a memory-mapped data file: which windows of rows a pass has
// finished with, and dropping their pages (madvise MADV_DONTNEED) so that the resident part
// of the mapping stays bounded while the per-row state stays in memory. See
// docs/ARCHITECTURE.md, "Out of core (CPU)".
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>

#include "flashkm/types.hpp"

namespace flashkm::cpu {

/// How the CPU backend reads its data.
struct StreamPlan {
  bool release = false;          ///< drop the pages of passed windows (mapped data over budget)
  std::int64_t window_rows = 0;  ///< rows per window when release
  std::int64_t budget = 0;       ///< the memory budget it was planned for, bytes
};

/// Bytes of host memory: the budget used when the caller sets none (half of it).
std::int64_t physical_memory_bytes();

/// The plan for data x under `budget` bytes (0: half the physical memory), given the bytes of
/// per-row state the backend keeps and the threads that read windows at the same time.
/// Only data with x.mapped_file is released, when its bytes exceed what the state leaves of
/// the budget. Throws Error(out_of_memory) when an explicit budget is below the state alone.
StreamPlan plan_stream(const MatrixView& x, std::int64_t budget, std::int64_t state_bytes, int threads);

/// Tell the kernel a released mapping is read front to back (MADV_SEQUENTIAL: larger
/// read-ahead, pages behind the reader are reclaimed first). No-op unless plan.release.
void advise_sequential(const MatrixView& x, const StreamPlan& plan);

/// One pass over the rows. Readers report the rows they have finished with; when all
/// `readers` have finished a window, its pages are dropped (they are re-read from the file
/// by the next pass). Thread-safe; a no-op object unless plan.release.
class PassRelease {
 public:
  PassRelease(const MatrixView& x, const StreamPlan& plan, int readers = 1);
  /// Rows [begin, begin + rows) are done by one reader in this pass.
  void done(std::int64_t begin, std::int64_t rows) {
    if (remaining_) count(begin, rows);
  }

 private:
  void count(std::int64_t begin, std::int64_t rows);
  void drop(std::int64_t window) const;

  const MatrixView& x_;
  std::int64_t window_rows_ = 0, windows_ = 0;
  std::unique_ptr<std::atomic<std::int64_t>[]> remaining_;  // row visits left per window
};

}  // namespace flashkm::cpu
