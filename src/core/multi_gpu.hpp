// The multi-GPU fit behind fit() when Params::device_ids lists several GPUs.
#pragma once

#include <memory>

#include "core/communicator.hpp"
#include "flashkm/kmeans.hpp"

namespace flashkm::core {

/// Rows sharded over params.device_ids (>= 1 id; contiguous ranges, as even as possible),
/// one host thread per GPU, each running one rank of fit_distributed on its GPU's CUDA
/// backend over an NCCL communicator; rank 0's model is returned and args.labels filled in
/// row order. Defined in src/cuda/multi_gpu_fit.cpp; without CUDA or NCCL it throws
/// device_unavailable (src/cuda_disabled/multi_gpu_disabled.cpp).
Model fit_multi_gpu(const MatrixView& x, const Params& params, const FitArgs& args);

/// The NCCL communicator of one process of a distributed GPU fit whose ranks are processes
/// (mpirun): rank 0 creates the NCCL unique id, `bootstrap` (the MPI communicator) broadcasts
/// it, and every rank joins on CUDA device `device`. Collective: every rank of `bootstrap`
/// calls it. Throws device_unavailable without CUDA or NCCL.
std::unique_ptr<Communicator> nccl_communicator_over(Communicator& bootstrap, int device);

}  // namespace flashkm::core
