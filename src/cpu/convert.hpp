// Element conversion to fp32 for packing rows (every input dtype is computed in fp32).
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>

#include "flashkm/types.hpp"

namespace flashkm::cpu {

/// IEEE binary16 -> binary32, exact (subnormals, inf and NaN payloads included). Written
/// without branches or loops (selects only) so that conversion loops over a row vectorise:
/// fp16 input would otherwise convert at scalar speed, which dominates at small K.
inline float half_to_float(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t em = h & 0x7FFFu;  // exponent and mantissa
  // Normal numbers: mantissa into place, exponent rebiased from 15 to 127; Inf and NaN
  // (exponent 31) need a second rebias to land on 255.
  std::uint32_t bits = (em << 13) + (112u << 23) + static_cast<std::uint32_t>(em >= 0x7C00u) * (112u << 23);
  // Zero and subnormals: the value is em * 2^-24, exact in fp32 (em < 2^10). Masks, not
  // ternaries: GCC keeps a ternary as control flow here and the loop stays scalar.
  const std::uint32_t sub_bits = std::bit_cast<std::uint32_t>(static_cast<float>(static_cast<std::int32_t>(em)) * 0x1p-24f);
  const std::uint32_t is_sub = 0u - static_cast<std::uint32_t>(em < 0x0400u);
  bits = (sub_bits & is_sub) | (bits & ~is_sub);
  return std::bit_cast<float>(bits | sign);
}

inline float bf16_to_float(std::uint16_t b) {
  const std::uint32_t bits = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

/// Element j of row i as double, exactly as given (fp64 input keeps its precision).
inline double element(const MatrixView& x, std::int64_t i, std::int64_t j) {
  const void* p = x.row(i);
  switch (x.dtype) {
    case DType::f32: return static_cast<const float*>(p)[j];
    case DType::f64: return static_cast<const double*>(p)[j];
    case DType::f16: return half_to_float(static_cast<const std::uint16_t*>(p)[j]);
    case DType::bf16: return bf16_to_float(static_cast<const std::uint16_t*>(p)[j]);
  }
  return 0;
}

/// Row i of x converted to T (float or double) into out[0, cols); fp64 input keeps its
/// precision when T is double. One loop per dtype, so that each one vectorises.
template <class T>
inline void load_row(const MatrixView& x, std::int64_t i, T* out) {
  const void* p = x.row(i);
  const std::int64_t d = x.cols;
  switch (x.dtype) {
    case DType::f32: {
      const auto* s = static_cast<const float*>(p);
      for (std::int64_t j = 0; j < d; ++j) out[j] = static_cast<T>(s[j]);
      break;
    }
    case DType::f64: {
      const auto* s = static_cast<const double*>(p);
      for (std::int64_t j = 0; j < d; ++j) out[j] = static_cast<T>(s[j]);
      break;
    }
    case DType::f16: {
      const auto* s = static_cast<const std::uint16_t*>(p);
      for (std::int64_t j = 0; j < d; ++j) out[j] = half_to_float(s[j]);
      break;
    }
    case DType::bf16: {
      const auto* s = static_cast<const std::uint16_t*>(p);
      for (std::int64_t j = 0; j < d; ++j) out[j] = bf16_to_float(s[j]);
      break;
    }
  }
}

/// acc[0, cols) += scale * row i, in fp64.
inline void add_scaled_row(const MatrixView& x, std::int64_t i, double scale, double* acc, double* scratch) {
  if (x.dtype == DType::f32) {
    const auto* s = static_cast<const float*>(x.row(i));
    for (std::int64_t j = 0; j < x.cols; ++j) acc[j] += scale * double(s[j]);
    return;
  }
  load_row(x, i, scratch);
  for (std::int64_t j = 0; j < x.cols; ++j) acc[j] += scale * scratch[j];
}

}  // namespace flashkm::cpu
