// Raw PTX wrappers for the Hopper (sm_90a) instructions of the wgmma FlashAssign kernel
// (flash_assign_sm90.cu): mbarriers, the bulk tensor copy (TMA), wgmma with shared-memory
// matrix descriptors, register reallocation. Named by shape/type as in CuTe's
// arch/mma_sm90_gmma.hpp. Built into the sm_90a target only: every other target (sm_80)
// compiles these to a trap, and the host never launches the kernel there
// (sm90_wgmma_supported()).
#pragma once

#include <cuda.h>  // CUtensorMap (a type only: nothing here links the driver library)

#include <cstdint>

#include "cuda/mma_sm80.cuh"  // smem_u32

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FLASHKM_SM90A_ENABLED 1
#endif

namespace flashkm::cuda::arch {

// ---- mbarrier ---------------------------------------------------------------------------
__device__ __forceinline__ void mbar_init(std::uint64_t* bar, unsigned count) {
#if defined(FLASHKM_SM90A_ENABLED)
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count) : "memory");
#else
  __trap();
#endif
}
/// Makes the initialised barriers visible to the async proxy (TMA) and the other threads.
__device__ __forceinline__ void fence_barrier_init() {
#if defined(FLASHKM_SM90A_ENABLED)
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void mbar_arrive(std::uint64_t* bar) {
#if defined(FLASHKM_SM90A_ENABLED)
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_u32(bar)) : "memory");
#endif
}
/// Arrive and add `bytes` to the transaction count the phase waits for (TMA completes them).
__device__ __forceinline__ void mbar_arrive_expect_tx(std::uint64_t* bar, unsigned bytes) {
#if defined(FLASHKM_SM90A_ENABLED)
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(bytes) : "memory");
#endif
}
/// Spin until the phase of parity `parity` has completed.
__device__ __forceinline__ void mbar_wait(std::uint64_t* bar, unsigned parity) {
#if defined(FLASHKM_SM90A_ENABLED)
  const std::uint32_t addr = smem_u32(bar);
  std::uint32_t done = 0;
  do {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(addr), "r"(parity)
        : "memory");
  } while (!done);
#else
  __trap();
#endif
}

// ---- bulk tensor copy (TMA) ---------------------------------------------------------------
/// 2-D tile at coordinates (c0 innermost, c1) of `map` into shared memory; completes as
/// transaction bytes on `bar`.
__device__ __forceinline__ void SM90_TMA_LOAD_2D(void* dst, const CUtensorMap* map, std::uint64_t* bar, int c0, int c1) {
#if defined(FLASHKM_SM90A_ENABLED)
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];\n" ::"r"(
          smem_u32(dst)),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(smem_u32(bar)), "r"(c0), "r"(c1)
      : "memory");
#else
  __trap();
#endif
}
__device__ __forceinline__ void prefetch_tma_descriptor(const CUtensorMap* map) {
#if defined(FLASHKM_SM90A_ENABLED)
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<std::uint64_t>(map)) : "memory");
#endif
}
/// Orders this thread's ordinary shared-memory stores before later async-proxy reads (wgmma).
__device__ __forceinline__ void fence_proxy_async_smem() {
#if defined(FLASHKM_SM90A_ENABLED)
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
/// Pulls the line holding `p` into L1 (a hint: no value, no fault).
__device__ __forceinline__ void prefetch_l1(const void* p) {
  asm volatile("prefetch.global.L1 [%0];\n" ::"l"(p));
}
/// Named barrier over `threads` threads (a multiple of 32): wait, or only arrive.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// ---- register reallocation ----------------------------------------------------------------
template <int N>
__device__ __forceinline__ void setmaxnreg_inc() {
#if defined(FLASHKM_SM90A_ENABLED)
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() {
#if defined(FLASHKM_SM90A_ENABLED)
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}

// ---- wgmma --------------------------------------------------------------------------------
/// Shared-memory matrix descriptor of a K-major tile in the 128-byte swizzle: rows of 128 B
/// (64 b16 elements), 8-row groups 1024 B apart (SBO), the tile 1024-byte aligned. Advancing
/// K by 16 elements inside the 128-byte row adds 32 B (2 in the start field).
__device__ __forceinline__ std::uint64_t gmma_desc_sw128(const void* smem) {
  const std::uint64_t start = (smem_u32(smem) & 0x3FFFFu) >> 4;
  const std::uint64_t lbo = 1;           // unused for swizzled K-major layouts
  const std::uint64_t sbo = 1024 >> 4;   // 8 rows x 128 B
  return start | (lbo << 16) | (sbo << 32) | (std::uint64_t(1) << 62);  // layout type 1: 128B swizzle
}
__device__ __forceinline__ void wgmma_fence() {
#if defined(FLASHKM_SM90A_ENABLED)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#if defined(FLASHKM_SM90A_ENABLED)
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#if defined(FLASHKM_SM90A_ENABLED)
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
/// Keeps the compiler from moving accesses to an accumulator across wgmma issue/wait
/// (the asm statements above do not name the accumulator registers).
__device__ __forceinline__ void fence_operand(float& r) { asm volatile("" : "+f"(r)::"memory"); }

/// D(64x128, fp32 regs) (+)= A(64x16, smem desc) * B(16x128, smem desc), f16 operands, both K-major.
/// scale_d = 0 overwrites D (first k-step of a tile), 1 accumulates.
__device__ __forceinline__ void SM90_64x128x16_F32F16F16_SS(float (&d)[64], std::uint64_t desc_a, std::uint64_t desc_b, int scale_d) {
#if defined(FLASHKM_SM90A_ENABLED)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
#else
  __trap();
#endif
}

/// D(64x128, fp32 regs) (+)= A(64x16, smem desc) * B(16x128, smem desc), bf16 operands, both K-major.
/// scale_d = 0 overwrites D (first k-step of a tile), 1 accumulates.
__device__ __forceinline__ void SM90_64x128x16_F32BF16BF16_SS(float (&d)[64], std::uint64_t desc_a, std::uint64_t desc_b, int scale_d) {
#if defined(FLASHKM_SM90A_ENABLED)
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
#else
  __trap();
#endif
}

/// The operand-type -> instruction map used by the kernel.
template <class T> struct Wgmma64x128;
template <> struct Wgmma64x128<__half> {
  __device__ __forceinline__ static void run(float (&d)[64], std::uint64_t a, std::uint64_t b, int scale_d) {
    SM90_64x128x16_F32F16F16_SS(d, a, b, scale_d);
  }
};
template <> struct Wgmma64x128<__nv_bfloat16> {
  __device__ __forceinline__ static void run(float (&d)[64], std::uint64_t a, std::uint64_t b, int scale_d) {
    SM90_64x128x16_F32BF16BF16_SS(d, a, b, scale_d);
  }
};

}  // namespace flashkm::cuda::arch
