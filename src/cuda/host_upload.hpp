// Host arrays to the device through pinned staging, the host's copies and the DMA overlapped.
// A cudaMemcpyAsync from pageable memory ran at ~6 GB/s on the H200 host, plus ~1.3 ms for
// the first copy of a set (bench/results/gpu_2026-11-30-h200-session7.md: the first
// set_centroids of N1M K8k took ~1.9 ms for 4 MB); a pinned copy runs at ~55 GB/s.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <vector>

#include "cuda/cuda_check.hpp"
#include "cuda/host_split.hpp"

namespace flashkm::cuda {

/// Pieces of at least this many bytes go to the device as soon as they are staged.
inline constexpr std::size_t kUploadPiece = std::size_t(1) << 20;

/// Copies m host arrays (src(a), bytes(a) bytes each) to dst on the device, packed back to
/// back in order, through `stage` (pinned, at least the total bytes): host threads
/// (host_over_ranges) each stage their arrays and send every ~kUploadPiece bytes on `s`
/// as soon as they are staged. Worker threads make `device` current themselves and report a
/// CUDA error instead of throwing; it is thrown here. Returns when every copy is issued, not
/// finished: the caller synchronises `s` before it reuses `stage`.
template <class Bytes, class Src>
void upload_via_staging(std::size_t m, const Bytes& bytes, const Src& src, unsigned char* stage, unsigned char* dst,
                        int device, cudaStream_t s) {
  std::vector<std::size_t> off(m + 1, 0);
  for (std::size_t a = 0; a < m; ++a) off[a + 1] = off[a] + bytes(a);
  std::atomic<int> error{int(cudaSuccess)};
  host_over_ranges(m, bytes, [&](std::size_t lo, std::size_t hi) {
    cudaError_t e = cudaSetDevice(device);
    std::size_t a0 = lo;
    for (std::size_t a = lo; a < hi && e == cudaSuccess; ++a) {
      std::memcpy(stage + off[a], src(a), bytes(a));
      if (off[a + 1] - off[a0] >= kUploadPiece || a + 1 == hi) {
        e = cudaMemcpyAsync(dst + off[a0], stage + off[a0], off[a + 1] - off[a0], cudaMemcpyHostToDevice, s);
        a0 = a + 1;
      }
    }
    int expected = int(cudaSuccess);
    if (e != cudaSuccess) error.compare_exchange_strong(expected, int(e));
  });
  FLASHKM_CUDA_CHECK(static_cast<cudaError_t>(error.load()));
}

/// One host array of `bytes` bytes (cut into kUploadPiece pieces for the threads).
inline void upload_via_staging(const void* src, std::size_t bytes, unsigned char* stage, unsigned char* dst, int device,
                               cudaStream_t s) {
  const std::size_t pieces = (bytes + kUploadPiece - 1) / kUploadPiece;
  const auto* from = static_cast<const unsigned char*>(src);
  upload_via_staging(
      pieces, [&](std::size_t a) { return std::min(kUploadPiece, bytes - a * kUploadPiece); },
      [&](std::size_t a) { return from + a * kUploadPiece; }, stage, dst, device, s);
}

/// Whether p is ordinary (pageable) host memory: neither device, managed nor page-locked.
inline bool is_pageable_host(const void* p) {
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;  // let the plain copy decide (and report)
  }
  return attr.type == cudaMemoryTypeUnregistered;
}

}  // namespace flashkm::cuda
