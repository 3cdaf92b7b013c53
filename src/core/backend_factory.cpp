#include "core/backend.hpp"

namespace flashkm::core {

std::unique_ptr<Backend> make_backend(Device device, int device_id, int n_threads, Precision precision,
                                      bool certify) {
  if (device == Device::cuda) return make_cuda_backend(device_id, precision, certify);
  return make_cpu_backend(n_threads);
}

}  // namespace flashkm::core
