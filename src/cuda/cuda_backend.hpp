// Internal entry points of the CUDA backend beyond core::make_cuda_backend: options for
// tuning and benchmarking (tile override, batched problems). Not a public header.
#pragma once

#include <memory>

#include "core/backend.hpp"
#include "cuda/flash_assign.hpp"

namespace flashkm::cuda {

struct CudaOptions {
  int device_id = 0;
  Precision precision = Precision::automatic;
  bool certify = true;
  /// B equal-sized independent problems: attach() takes B*n rows (problem b = rows
  /// [b*n, (b+1)*n)), set_centroids() takes B*k rows (problem b's centroids = rows
  /// [b*k, (b+1)*k)); labels stay per problem (0..k-1), accumulate() returns [B*k x D].
  int batch = 1;
  TileConfig tile = TileConfig::automatic;  ///< override the heuristic (tuning)
};

std::unique_ptr<core::Backend> make_cuda_backend(const CudaOptions& options);

/// Bytes of device memory the backend holds beyond the input data (for the benchmark).
std::size_t device_bytes_held(const core::Backend& backend);

}  // namespace flashkm::cuda
