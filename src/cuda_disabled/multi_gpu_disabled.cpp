// Built instead of src/cuda/multi_gpu_fit.cpp when CUDA or NCCL is off: a multi-GPU
// request is an error naming what is missing, never a silent single-device fit.
#include "core/multi_gpu.hpp"
#include "flashkm/error.hpp"

namespace flashkm::core {

Model fit_multi_gpu(const MatrixView&, const Params& params, const FitArgs&) {
#ifdef FLASHKM_WITH_CUDA
  FLASHKM_FAIL(device_unavailable, "device_ids lists ", params.device_ids.size(),
               " GPUs, but this flashkm was built without NCCL (multi-GPU needs it: configure with "
               "-DFLASHKM_NCCL=ON where nccl.h and libnccl are found)");
#else
  FLASHKM_FAIL(device_unavailable, "device_ids lists ", params.device_ids.size(),
               " GPUs, but this flashkm was built without CUDA (configure with -DFLASHKM_CUDA=ON on a "
               "machine with nvcc and NCCL)");
#endif
}

std::unique_ptr<Communicator> nccl_communicator_over(Communicator& bootstrap, int device) {
  (void)bootstrap;
  FLASHKM_FAIL(device_unavailable, "a distributed GPU fit (CUDA device ", device,
               ") needs NCCL, but this flashkm was built without ",
#ifdef FLASHKM_WITH_CUDA
               "NCCL (configure with -DFLASHKM_NCCL=ON where nccl.h and libnccl are found)"
#else
               "CUDA (configure with -DFLASHKM_CUDA=ON on a machine with nvcc and NCCL)"
#endif
  );
}

}  // namespace flashkm::core
