// Internal entry points of the batched CUDA backend (src/cuda/batched_backend.cu) beyond
// core::make_cuda_batched_backend: for the benchmark. Not a public header.
#pragma once

#include <cstddef>
#include <memory>

#include "core/batched_backend.hpp"
#include "cuda/cuda_backend.hpp"

namespace flashkm::cuda {

/// The batched backend with the options of the single one (CudaOptions::batch and tile
/// are not used: problems come from attach(), tiles from the heuristic).
std::unique_ptr<core::BatchedBackend> make_cuda_batched_backend(const CudaOptions& options);

/// Bytes of device memory the batched backend holds beyond the input data (benchmark).
std::size_t batched_device_bytes_held(const core::BatchedBackend& backend);

}  // namespace flashkm::cuda
