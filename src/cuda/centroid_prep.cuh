// One padded centroid row of an operand set, prepared by one warp: the operand copy, |c|^2
// (cterm), and the certification bound's max |c| and max rounding error. Shared by the
// equal-sized (kernels.cu) and the ragged (batched_kernels.cu) preparation, so that a
// problem's operands are the same bits in a batch and alone.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/tf32_round.hpp"

namespace flashkm::cuda {

/// Row `row` of the operand array c_op [. x dp] (op = Operand: 0 fp16, 1 bf16, 2 fp32, 3 tf32:
/// fp32 storage holding the value rounded to tf32) and cterm from
/// src [d] (real) or zeros (padding past k: cterm +inf). cmax_bits / dcmax_bits point at the
/// problem's entries (atomicMax of float bits, rounded up). Every lane of the warp calls it.
__device__ __forceinline__ void prepare_centroid_row(const float* src, bool real, std::int64_t row, int lane, int d,
                                                     int dp, int op, bool l2, void* c_op, float* cterm,
                                                     unsigned* cmax_bits, unsigned* dcmax_bits, unsigned* overflow) {
  double s = 0, ds = 0;  // |c|^2 and |c - operand(c)|^2 (the rounding error, for the bound)
  float mx = 0;
  for (int c = lane; c < dp; c += 32) {
    const float v = (real && c < d) ? src[c] : 0.0f;
    s = fma(double(v), double(v), s);
    mx = fmaxf(mx, fabsf(v));
    const std::int64_t o = row * dp + c;
    float r = v;  // the operand as the kernel will read it
    if (op == 0) {
      const __half h = __float2half_rn(v);
      static_cast<__half*>(c_op)[o] = h;
      r = __half2float(h);
    } else if (op == 1) {
      const __nv_bfloat16 h = __float2bfloat16_rn(v);
      static_cast<__nv_bfloat16*>(c_op)[o] = h;
      r = __bfloat162float(h);
    } else if (op == 3) {
      r = round_to_tf32(v);
      static_cast<float*>(c_op)[o] = r;
    } else {
      static_cast<float*>(c_op)[o] = v;
    }
    const double e = double(v) - double(r);  // exact: both are floats within a factor 2 (or r = 0)
    ds = fma(e, e, ds);
  }
  for (int o = 16; o > 0; o >>= 1) {
    s += __shfl_down_sync(0xffffffffu, s, o);
    ds += __shfl_down_sync(0xffffffffu, ds, o);
    mx = fmaxf(mx, __shfl_down_sync(0xffffffffu, mx, o));
  }
  if (lane == 0) {
    cterm[row] = real ? (l2 ? static_cast<float>(s) : 0.0f) : INFINITY;
    if (real) {
      atomicMax(cmax_bits, __float_as_uint(__double2float_ru(sqrt(s))));
      atomicMax(dcmax_bits, __float_as_uint(__double2float_ru(sqrt(ds))));
      if (op == 0 && mx > 65504.0f) atomicOr(overflow, 1u);
    }
  }
}

}  // namespace flashkm::cuda
