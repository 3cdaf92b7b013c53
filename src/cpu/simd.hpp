// Portable fixed-width SIMD vectors (GCC/Clang vector extensions). The kernels are written
// once against Simd<W>; each ISA translation unit (kernels_avx512.cpp, kernels_avx2.cpp,
// kernels_generic.cpp) compiles them with its own -m flags, so the compiler emits that ISA's
// instructions (vfmadd, vminps, blends) without intrinsics in the kernel source.
// Included only from kernel_impl.hpp, inside the per-ISA namespace FLASHKM_ISA, so that
// the inline functions of different ISA translation units never merge at link time (ODR).
#pragma once

#include <cstdint>
#include <cstring>

#ifndef FLASHKM_ISA
#error "define FLASHKM_ISA (the per-ISA namespace) before including cpu/simd.hpp"
#endif

namespace flashkm::cpu::FLASHKM_ISA {

template <int W>
struct Simd;

#define FLASHKM_DEFINE_SIMD(LANES)                                                  \
  template <>                                                                       \
  struct Simd<LANES> {                                                              \
    static constexpr int lanes = LANES;                                             \
    typedef float F __attribute__((vector_size(LANES * 4)));                        \
    typedef std::int32_t I __attribute__((vector_size(LANES * 4)));                 \
    static F load(const float* p) { F v; std::memcpy(&v, p, sizeof v); return v; }  \
    static I load(const std::int32_t* p) { I v; std::memcpy(&v, p, sizeof v); return v; } \
    static void store(float* p, F v) { std::memcpy(p, &v, sizeof v); }             \
    static void store(std::int32_t* p, I v) { std::memcpy(p, &v, sizeof v); }      \
    static F splat(float x) { return F{} + x; }                                     \
    static I splat(std::int32_t x) { return I{} + x; }                              \
    static I iota() { I v; for (int l = 0; l < LANES; ++l) v[l] = l; return v; }   \
  };

FLASHKM_DEFINE_SIMD(4)
FLASHKM_DEFINE_SIMD(8)
FLASHKM_DEFINE_SIMD(16)
#undef FLASHKM_DEFINE_SIMD

}  // namespace flashkm::cpu::FLASHKM_ISA
