// Run-time choice of the SIMD level (no -march=native anywhere: one binary for every x86-64).
#include <cstdlib>
#include <string>

#include "cpu/kernels.hpp"
#include "flashkm/error.hpp"

namespace flashkm::cpu {

bool cpu_has_avx512() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") && cpu_has_avx2();
#else
  return false;
#endif
}

bool cpu_has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

static const KernelTable& choose() {
  const char* forced = std::getenv("FLASHKM_SIMD");
  const std::string want = forced ? forced : "";
  if (want == "generic") return kernels_generic();
  if (want == "avx2") {
    FLASHKM_CHECK(cpu_has_avx2(), invalid_argument, "FLASHKM_SIMD=avx2 but this CPU lacks AVX2/FMA");
    return kernels_avx2();
  }
  if (want == "avx512") {
    FLASHKM_CHECK(cpu_has_avx512(), invalid_argument, "FLASHKM_SIMD=avx512 but this CPU lacks AVX-512");
    return kernels_avx512();
  }
  FLASHKM_CHECK(want.empty(), invalid_argument, "FLASHKM_SIMD='", want, "' (expected avx512, avx2 or generic)");
  if (cpu_has_avx512()) return kernels_avx512();
  if (cpu_has_avx2()) return kernels_avx2();
  return kernels_generic();
}

const KernelTable& select_kernels() {
  static const KernelTable& table = choose();
  return table;
}

}  // namespace flashkm::cpu
