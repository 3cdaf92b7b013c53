// Raw PTX wrappers for the tensor-core and async-copy instructions the kernels use, named by
// shape, types and layout as in CuTe's arch/mma_sm80.hpp. Guarded by architecture: built
// for sm_80 and sm_90a only (CMakeLists.txt); any other target traps.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define FLASHKM_SM80_ENABLED 1
#endif

namespace flashkm::cuda::arch {

__device__ __forceinline__ std::uint32_t smem_u32(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

/// cp.async 16 bytes global -> shared, bypassing L1; bytes past src_bytes are zero-filled.
__device__ __forceinline__ void cp_async_cg_16(void* smem, const void* gmem, int src_bytes) {
#if defined(FLASHKM_SM80_ENABLED)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)), "l"(gmem), "r"(src_bytes));
#else
  __trap();
#endif
}
/// cp.async 8 bytes global -> shared (through L1: .cg takes only 16-byte copies).
__device__ __forceinline__ void cp_async_ca_8(void* smem, const void* gmem) {
#if defined(FLASHKM_SM80_ENABLED)
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8;\n" ::"r"(smem_u32(smem)), "l"(gmem));
#else
  __trap();
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(FLASHKM_SM80_ENABLED)
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(FLASHKM_SM80_ENABLED)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

/// ldmatrix.x4: four 8x8 b16 matrices; lane l supplies the row address of matrix l/8.
__device__ __forceinline__ void SM75_U32x4_LDSM_N(std::uint32_t (&r)[4], const void* smem) {
#if defined(FLASHKM_SM80_ENABLED)
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(smem)));
#else
  __trap();
#endif
}

/// D = A(16x16, row) * B(16x8, col) + C, fp16 operands, fp32 accumulators.
__device__ __forceinline__ void SM80_16x8x16_F32F16F16F32_TN(float (&d)[4], const std::uint32_t (&a)[4],
                                                             std::uint32_t b0, std::uint32_t b1) {
#if defined(FLASHKM_SM80_ENABLED)
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();
#endif
}

/// D = A(16x16, row) * B(16x8, col) + C, bf16 operands, fp32 accumulators.
__device__ __forceinline__ void SM80_16x8x16_F32BF16BF16F32_TN(float (&d)[4], const std::uint32_t (&a)[4],
                                                               std::uint32_t b0, std::uint32_t b1) {
#if defined(FLASHKM_SM80_ENABLED)
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();
#endif
}

/// D = A(16x8, row) * B(8x8, col) + C, tf32 operands (fp32 registers whose 13 low mantissa
/// bits the tensor cores ignore: round first, tf32_round.hpp), fp32 accumulators. Fragments
/// (PTX ISA, m16n8k8 .tf32; g = lane / 4, q = lane % 4): a0 (g, q), a1 (g+8, q), a2 (g, q+4),
/// a3 (g+8, q+4); b0 (k q, n g), b1 (k q+4, n g); accumulators as in m16n8k16.
__device__ __forceinline__ void SM80_16x8x8_F32TF32TF32F32_TN(float (&d)[4], const std::uint32_t (&a)[4],
                                                              std::uint32_t b0, std::uint32_t b1) {
#if defined(FLASHKM_SM80_ENABLED)
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();
#endif
}

/// The operand-type -> instruction map used by the kernel traits.
template <class T> struct Mma16816;
template <> struct Mma16816<__half> {
  __device__ __forceinline__ static void run(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                             std::uint32_t b1) {
    SM80_16x8x16_F32F16F16F32_TN(d, a, b0, b1);
  }
};
template <> struct Mma16816<__nv_bfloat16> {
  __device__ __forceinline__ static void run(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                             std::uint32_t b1) {
    SM80_16x8x16_F32BF16BF16F32_TN(d, a, b0, b1);
  }
};

}  // namespace flashkm::cuda::arch
