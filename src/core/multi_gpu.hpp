// The multi-GPU fit behind fit() when Params::device_ids lists several GPUs.
#pragma once

#include <vector>

#include "flashkm/kmeans.hpp"

namespace flashkm::core {

/// Rows sharded over params.device_ids (>= 1 id; contiguous ranges, as even as possible),
/// one host thread per GPU, each running the plain fit body (fit_attached) over a
/// DistributedBackend of its CUDA backend and its NCCL communicator; rank 0's model is
/// returned and args.labels filled in row order. `given` is the checked init (or empty).
/// Defined in src/cuda/multi_gpu_fit.cpp; without CUDA or NCCL it throws device_unavailable.
Model fit_multi_gpu(const MatrixView& x, const Params& params, const FitArgs& args, const std::vector<float>& given);

}  // namespace flashkm::core
