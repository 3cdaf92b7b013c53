// Portable instantiation (SSE2 on x86-64, NEON on ARM): 4 lanes, 4 rows x 2 vectors.
// Compiled without FMA contraction, so its scores may differ from the FMA levels in the
// last bit; labels agree outside near-ties.
#define FLASHKM_ISA generic
#include "cpu/kernel_impl.hpp"

namespace flashkm::cpu {
const KernelTable& kernels_generic() {
  static const KernelTable table = generic::AssignKernel<4, 4, 2>::table("generic");
  return table;
}
}  // namespace flashkm::cpu
