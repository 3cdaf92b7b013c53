// Built instead of src/cuda/ when CUDA is off: asking for the CUDA backend is an error,
// never a silent fallback to the CPU.
#include "core/backend.hpp"
#include "core/batched_backend.hpp"
#include "flashkm/error.hpp"

namespace flashkm::core {

bool cuda_backend_built() noexcept { return false; }
bool cuda_device_present() noexcept { return false; }

std::unique_ptr<Backend> make_cuda_backend(int, Precision, bool) {
  FLASHKM_FAIL(device_unavailable,
               "device 'cuda' requested, but this flashkm was built without CUDA "
               "(configure with -DFLASHKM_CUDA=ON on a machine with nvcc)");
}

std::unique_ptr<BatchedBackend> make_cuda_batched_backend(int, Precision, bool) {
  FLASHKM_FAIL(device_unavailable,
               "device 'cuda' requested, but this flashkm was built without CUDA "
               "(configure with -DFLASHKM_CUDA=ON on a machine with nvcc)");
}

}  // namespace flashkm::core
