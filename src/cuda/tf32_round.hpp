// Rounding fp32 to tf32 (10 explicit mantissa bits, fp32's exponent range), written once for
// the device (centroid operands, rows tiles, fragments of streamed rows) and the host (tests).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

namespace flashkm::cuda {

/// v rounded to the nearest tf32 value, ties away from zero (the rounding of
/// cvt.rna.tf32.f32), returned as a float whose 13 low mantissa bits are zero: the tensor
/// cores read exactly this value (they drop the low bits of whatever they are given, i.e.
/// truncate, so unrounded fp32 would double the unit roundoff), and the certification's
/// dcmax is computed from it. Relative error <= 2^-11 (subnormals: absolute <= 2^-137).
/// For finite v below 2^128 (1 - 2^-12) in magnitude; larger values become infinity (data
/// that large is rejected by attach(): its squared norm overflows).
__host__ __device__ __forceinline__ float round_to_tf32(float v) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float((__float_as_uint(v) + 0x1000u) & 0xffffe000u);
#else
  std::uint32_t b;
  std::memcpy(&b, &v, 4);
  b = (b + 0x1000u) & 0xffffe000u;
  float r;
  std::memcpy(&r, &b, 4);
  return r;
#endif
}

}  // namespace flashkm::cuda
