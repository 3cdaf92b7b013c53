// CUDA error checking and RAII device memory for the CUDA backend.
//
// Every runtime call goes through FLASHKM_CUDA_CHECK; every launch is followed by
// FLASHKM_CUDA_LAUNCH_CHECK (cudaPeekAtLastError, as CUB's CubDebug and PyTorch's
// C10_CUDA_KERNEL_LAUNCH_CHECK do). Errors become flashkm::Error: an allocation failure is
// ErrorKind::out_of_memory naming the bytes asked for, a missing device is
// ErrorKind::device_unavailable, anything else ErrorKind::internal with file and line.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "flashkm/error.hpp"

namespace flashkm::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line);
[[noreturn]] void throw_cuda_oom(std::size_t bytes, const char* what);

/// The optional device memory budget (memory_budget.cpp): FLASHKM_CUDA_MEMORY_BUDGET, in
/// bytes, caps what flashkm allocates on the device in this process; 0 or unset = none.
/// reserve() throws Error(out_of_memory) naming the bytes when the budget would be passed.
void reserve_device_bytes(std::size_t bytes, const char* what);
void release_device_bytes(std::size_t bytes) noexcept;
/// Bytes the FLASHKM_CUDA_MEMORY_BUDGET leaves (SIZE_MAX when it is not set): the CUDA
/// backend plans its device memory within it (streaming data that does not fit).
std::size_t device_budget_left();

}  // namespace flashkm::cuda

#define FLASHKM_CUDA_CHECK(call)                                                           \
  do {                                                                                     \
    const cudaError_t flashkm_err_ = (call);                                               \
    if (flashkm_err_ != cudaSuccess)                                                       \
      ::flashkm::cuda::throw_cuda_error(flashkm_err_, #call, __FILE__, __LINE__);          \
  } while (0)

#define FLASHKM_CUDA_LAUNCH_CHECK() FLASHKM_CUDA_CHECK(cudaPeekAtLastError())

namespace flashkm::cuda {

/// Owning device allocation of `count` elements of T (uninitialised). Move-only.
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(std::size_t count, const char* what) { reset(count, what); }
  ~DeviceBuffer() { release(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      release();
      p_ = std::exchange(o.p_, nullptr);
      n_ = std::exchange(o.n_, 0);
    }
    return *this;
  }

  /// (Re)allocate for `count` elements; the old contents are dropped.
  void reset(std::size_t count, const char* what) {
    release();
    if (count == 0) return;
    const std::size_t bytes = count * sizeof(T);
    reserve_device_bytes(bytes, what);
    void* p = nullptr;
    const cudaError_t err = cudaMalloc(&p, bytes);
    if (err != cudaSuccess) release_device_bytes(bytes);
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();  // clear the sticky-free error so later calls work
      throw_cuda_oom(bytes, what);
    }
    if (err != cudaSuccess) throw_cuda_error(err, what, __FILE__, __LINE__);
    p_ = static_cast<T*>(p);
    n_ = count;
  }
  /// Grow to at least `count` elements (keeps the allocation when large enough).
  void ensure(std::size_t count, const char* what) {
    if (count > n_) reset(count, what);
  }
  void release() noexcept {
    if (p_) {
      cudaFree(p_);
      release_device_bytes(n_ * sizeof(T));
    }
    p_ = nullptr;
    n_ = 0;
  }
  T* get() const noexcept { return p_; }
  std::size_t size() const noexcept { return n_; }
  std::size_t bytes() const noexcept { return n_ * sizeof(T); }

 private:
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

/// Owning page-locked host allocation (for staging copies). Move-only.
template <class T>
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  ~PinnedBuffer() { release(); }
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  void ensure(std::size_t count, const char* what) {
    if (count <= n_) return;
    release();
    void* p = nullptr;
    const cudaError_t err = cudaMallocHost(&p, count * sizeof(T));
    if (err == cudaErrorMemoryAllocation) {
      (void)cudaGetLastError();
      throw_cuda_oom(count * sizeof(T), what);
    }
    if (err != cudaSuccess) throw_cuda_error(err, what, __FILE__, __LINE__);
    p_ = static_cast<T*>(p);
    n_ = count;
  }
  void release() noexcept {
    if (p_) cudaFreeHost(p_);
    p_ = nullptr;
    n_ = 0;
  }
  T* get() const noexcept { return p_; }

 private:
  T* p_ = nullptr;
  std::size_t n_ = 0;
};

/// RAII device selection: makes `device` current for the scope, restores the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    FLASHKM_CUDA_CHECK(cudaGetDevice(&prev_));
    if (prev_ != device) FLASHKM_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(prev_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int prev_ = 0;
};

}  // namespace flashkm::cuda
