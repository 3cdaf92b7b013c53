// AVX-512 instantiation (compiled with -mavx512f ...; selected only when cpuid reports it).
// 32 zmm registers: 12 rows x 2 vectors of 16 = 24 accumulators + 2 panel vectors + 1 broadcast.
#define FLASHKM_ISA avx512
#include "cpu/kernel_impl.hpp"

namespace flashkm::cpu {
const KernelTable& kernels_avx512() {
  static const KernelTable table = avx512::AssignKernel<16, 12, 2>::table("avx512");
  return table;
}
}  // namespace flashkm::cpu
