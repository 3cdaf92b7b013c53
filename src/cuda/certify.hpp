// The operand choice and the certification bound's constants for one launch (host): shared
// by the single-problem and the batched CUDA backends, so that a problem in a batch gets the
// operands and flags the rows it does alone. Derivation: docs/CUDA.md, "Certification".
#pragma once

#include <cmath>

#include "cuda/flash_assign.hpp"
#include "flashkm/error.hpp"
#include "flashkm/types.hpp"

namespace flashkm::cuda {

/// The operand format for `precision` given the input dtype and max |x| of the data.
/// tf32 only when asked for: 'auto' keeps the 16-bit operands (twice the tensor-core rate;
/// certified labels are exact either way).
inline Operand choose_operand(Precision precision, DType in, float max_abs) {
  switch (precision) {
    case Precision::fp32: return Operand::fp32;
    case Precision::tf32: return Operand::tf32;  // fp32's exponent range: no range check
    case Precision::fp16:
      FLASHKM_CHECK(max_abs <= 65504.0f, invalid_argument, "precision 'fp16': data has |x| up to ", max_abs,
                    ", beyond the fp16 range (use bf16 or auto)");
      return Operand::fp16;
    case Precision::bf16: return Operand::bf16;
    default:
      if (in == DType::f16) return Operand::fp16;
      if (in == DType::bf16) return Operand::bf16;
      // fp16 keeps 3 more bits than bf16; use it when the data sits well inside its
      // normal range (no overflow, little underflow), else bf16 (fp32's exponent range).
      return (max_abs <= 16384.0f && max_abs >= 0x1p-6f) ? Operand::fp16 : Operand::bf16;
  }
}

struct CertConstants {
  float a = 0, c = 0, eta = 0, b = 0;  ///< E(x) = a|x|cmax + c|x|dcmax + eta(|x|+cmax+dcmax) + b cmax^2
};

/// Bound on |computed score - exact score| for a row x (DESIGN.md section 3; derivation in
/// docs/CUDA.md): x rounded to the operand with unit roundoff ux (relative) and etax
/// (absolute: fp16 subnormals; for bf16 and tf32, fp32's, covering tensor cores that flush
/// subnormal operands); the centroids' rounding enters as its exact size,
/// dcmax = max_j |c_j - operand(c_j)| (prepare_centroids; about 0.4 u cmax for fp16,
/// where the previous bound charged u cmax); fp32 accumulation over dp terms; the fp32
/// |c|^2 and the final fma rounded to 2^-24 each.
/// kSafety covers the fp32 evaluation of the bound and accumulation orders we did not
/// model; the measured worst-case ratio error/bound is reported by the GPU tests.
/// Measured on the H200 (2026-11-29, tests/gpu MeasuredErrorUnderBound): worst
/// error/bound 0.27 (d=64), 0.19-0.21 (d=128), 0.07 (d=768) with kSafety = 1.
inline CertConstants cert_constants(Operand op, DType x_dtype, Metric metric, int dp, int d) {
  constexpr double kSafety = 1.25;
  double u = 0, eta = 0;
  if (op == Operand::fp16) { u = 0x1p-11; eta = 0x1p-25; }
  if (op == Operand::bf16) { u = 0x1p-8; eta = 0x1p-126; }
  // tf32: 10 explicit mantissa bits, round to nearest (round_to_tf32), fp32's exponents.
  if (op == Operand::tf32) { u = 0x1p-11; eta = 0x1p-126; }
  // x given in the operand format is exact there: only the centroids are rounded. fp16
  // (11 significant bits, exponents within fp32's) and bf16 (8) are exact in tf32 too.
  const bool x_exact = (op == Operand::fp16 && x_dtype == DType::f16) || (op == Operand::bf16 && x_dtype == DType::bf16) ||
                       (op == Operand::tf32 && (x_dtype == DType::f16 || x_dtype == DType::bf16));
  const double ux = x_exact ? 0.0 : u;
  const double etax = x_exact ? 0.0 : eta;
  // Accumulation: gamma_m = m*t / (1 - m*t). Tensor cores: m = dp terms at t = 2^-23
  // (truncating accumulation; tf32 x tf32 products, 22 bits, are exact in fp32 as b16's are). SIMT kernel: IEEE round-to-nearest fma chains of kSimtBK
  // terms per chunk, chunk sums added in order, so each product passes through at most
  // m = kSimtBK + dp/kSimtBK roundings of t = 2^-24 (Higham, Thm 3.1 and blocked
  // summation): |fl(x.c) - x.c| <= gamma_m |x|.|c|.
  const bool simt = op == Operand::fp32;
  const double t = simt ? 0x1p-24 : 0x1p-23;
  const double m = simt ? double(kSimtBK + dp / kSimtBK) : double(dp);
  const double acc = m * t / (1.0 - m * t);
  const double alpha = metric == Metric::l2 ? 2.0 : 1.0;
  // |x^.c^ - x.c| <= |x^| dcmax + |dx| cmax, |x^| <= (1+ux)|x| + etax sqrt(D),
  // |dx| <= ux|x| + etax sqrt(D); accumulation: acc |x^| (cmax + dcmax).
  CertConstants k;
  k.a = static_cast<float>(kSafety * alpha * (ux * (1 + acc) + acc + 0x1p-23));
  k.c = static_cast<float>(kSafety * alpha * (1 + ux) * (1 + acc));
  k.eta = static_cast<float>(kSafety * alpha * etax * (1 + u) * (1 + acc) * std::sqrt(double(d)));
  k.b = static_cast<float>(metric == Metric::l2 ? kSafety * (0x1p-23 + acc * 0.5) : 0.0);
  return k;
}

}  // namespace flashkm::cuda
