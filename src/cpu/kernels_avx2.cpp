// AVX2 + FMA instantiation. 16 ymm registers: 6 rows x 2 vectors of 8 = 12 accumulators
// + 2 panel vectors + 1 broadcast (the classic 6x16 Haswell sgemm tile).
#define FLASHKM_ISA avx2
#include "cpu/kernel_impl.hpp"

namespace flashkm::cpu {
const KernelTable& kernels_avx2() {
  static const KernelTable table = avx2::AssignKernel<8, 6, 2>::table("avx2");
  return table;
}
}  // namespace flashkm::cpu
