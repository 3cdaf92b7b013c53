// The optional device memory budget: a process-wide count of the bytes flashkm holds on
// the device, checked against FLASHKM_CUDA_MEMORY_BUDGET before every allocation. It lets
// a service share a GPU with other work, and makes the out-of-memory path testable.
#include <atomic>
#include <cstdlib>

#include "cuda/cuda_check.hpp"

namespace flashkm::cuda {
namespace {

std::atomic<std::size_t> g_reserved{0};

/// Read at every allocation (a getenv is cheap next to a cudaMalloc), so that a change of
/// the variable takes effect for the next fit.
std::size_t budget_bytes() {
  const char* v = std::getenv("FLASHKM_CUDA_MEMORY_BUDGET");
  if (v == nullptr || *v == '\0') return 0;
  char* end = nullptr;
  const unsigned long long b = std::strtoull(v, &end, 10);
  FLASHKM_CHECK(end != v && *end == '\0', invalid_argument, "FLASHKM_CUDA_MEMORY_BUDGET='", v,
                "' is not a number of bytes");
  return static_cast<std::size_t>(b);
}

}  // namespace

void reserve_device_bytes(std::size_t bytes, const char* what) {
  const std::size_t budget = budget_bytes();
  const std::size_t before = g_reserved.fetch_add(bytes);
  if (budget != 0 && before + bytes > budget) {
    g_reserved.fetch_sub(bytes);
    FLASHKM_FAIL(out_of_memory, "CUDA out of memory: ", what, " needs ", bytes, " bytes, over the device memory budget of ",
                 budget, " bytes (FLASHKM_CUDA_MEMORY_BUDGET; ", before, " bytes already held by flashkm)");
  }
}

void release_device_bytes(std::size_t bytes) noexcept { g_reserved.fetch_sub(bytes); }

std::size_t device_budget_left() {
  const std::size_t budget = budget_bytes();
  if (budget == 0) return static_cast<std::size_t>(-1);
  const std::size_t held = g_reserved.load();
  return held >= budget ? 0 : budget - held;
}

}  // namespace flashkm::cuda
