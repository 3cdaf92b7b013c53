// Portable fixed-width SIMD vectors (GCC/Clang vector extensions). The kernels are written
// once against Simd<W>; each ISA translation unit (kernels_avx512.cpp, kernels_avx2.cpp,
// kernels_generic.cpp) compiles them with its own -m flags, so the compiler emits that ISA's
// instructions (vfmadd, vminps, blends) without intrinsics in the kernel source.
// Included only from kernel_impl.hpp, inside the per-ISA namespace FLASHKM_ISA, so that
// the inline functions of different ISA translation units never merge at link time (ODR).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#ifndef FLASHKM_ISA
#error "define FLASHKM_ISA (the per-ISA namespace) before including cpu/simd.hpp"
#endif

namespace flashkm::cpu::FLASHKM_ISA {

template <int W>
struct Simd;
#if !defined(__SSE__)
typedef float Simd4Float __attribute__((vector_size(16)));
#endif

#define FLASHKM_DEFINE_SIMD(LANES, SET1_PS)                                         \
  template <>                                                                       \
  struct Simd<LANES> {                                                              \
    static constexpr int lanes = LANES;                                             \
    typedef float F __attribute__((vector_size(LANES * 4)));                        \
    typedef std::int32_t I __attribute__((vector_size(LANES * 4)));                 \
    static F load(const float* p) { F v; std::memcpy(&v, p, sizeof v); return v; }  \
    static I load(const std::int32_t* p) { I v; std::memcpy(&v, p, sizeof v); return v; } \
    static void store(float* p, F v) { std::memcpy(p, &v, sizeof v); }             \
    static void store(std::int32_t* p, I v) { std::memcpy(p, &v, sizeof v); }      \
    /* the ISA's set1 (one vbroadcastss from memory in the inner loop); F{} + x   */ \
    /* would keep an add (x + 0.0f is not an identity for -0.0f) and a lane loop */ \
    /* becomes a chain of inserts */                                                 \
    static F splat(float x) { return (F)SET1_PS(x); }                                \
    static I splat(std::int32_t x) { I v; for (int l = 0; l < LANES; ++l) v[l] = x; return v; } \
    static I iota() { I v; for (int l = 0; l < LANES; ++l) v[l] = l; return v; }   \
  };

#if defined(__AVX512F__)
FLASHKM_DEFINE_SIMD(16, _mm512_set1_ps)
#endif
#if defined(__AVX__)
FLASHKM_DEFINE_SIMD(8, _mm256_set1_ps)
#else
// 8 lanes without AVX (the generic level's k-means++ trial kernel): GCC splits the vectors
// into halves.
typedef float Simd8Float __attribute__((vector_size(32)));
inline Simd8Float simd8_set1(float x) { return Simd8Float{x, x, x, x, x, x, x, x}; }
FLASHKM_DEFINE_SIMD(8, simd8_set1)
#endif
#if defined(__SSE__)
FLASHKM_DEFINE_SIMD(4, _mm_set1_ps)
#else
inline Simd4Float simd4_set1(float x) { return Simd4Float{x, x, x, x}; }
FLASHKM_DEFINE_SIMD(4, simd4_set1)
#endif
#undef FLASHKM_DEFINE_SIMD

}  // namespace flashkm::cpu::FLASHKM_ISA
