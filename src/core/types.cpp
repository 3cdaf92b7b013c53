#include "flashkm/types.hpp"

#include "flashkm/error.hpp"

namespace flashkm {

std::size_t dtype_size(DType t) noexcept {
  switch (t) {
    case DType::f32: return 4;
    case DType::f16:
    case DType::bf16: return 2;
    case DType::f64: return 8;
  }
  return 0;
}

const char* to_string(DType t) noexcept {
  switch (t) {
    case DType::f32: return "float32";
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
    case DType::f64: return "float64";
  }
  return "?";
}
const char* to_string(Metric m) noexcept {
  switch (m) {
    case Metric::l2: return "l2";
    case Metric::cosine: return "cosine";
    case Metric::inner_product: return "inner_product";
  }
  return "?";
}
const char* to_string(InitMethod m) noexcept {
  switch (m) {
    case InitMethod::kmeanspp: return "k-means++";
    case InitMethod::kmeans_parallel: return "k-means||";
    case InitMethod::random: return "random";
    case InitMethod::given: return "given";
  }
  return "?";
}
const char* to_string(Device d) noexcept { return d == Device::cpu ? "cpu" : "cuda"; }
const char* to_string(Precision p) noexcept {
  switch (p) {
    case Precision::automatic: return "auto";
    case Precision::fp32: return "fp32";
    case Precision::tf32: return "tf32";
    case Precision::fp16: return "fp16";
    case Precision::bf16: return "bf16";
  }
  return "?";
}

Metric parse_metric(const std::string& s) {
  if (s == "l2" || s == "euclidean" || s == "sqeuclidean") return Metric::l2;
  if (s == "cosine") return Metric::cosine;
  if (s == "inner_product" || s == "ip" || s == "dot") return Metric::inner_product;
  FLASHKM_FAIL(invalid_argument, "unknown metric '", s, "' (expected l2, cosine or inner_product)");
}
InitMethod parse_init(const std::string& s) {
  if (s == "k-means++" || s == "kmeans++") return InitMethod::kmeanspp;
  if (s == "k-means||" || s == "kmeans||") return InitMethod::kmeans_parallel;
  if (s == "random") return InitMethod::random;
  if (s == "given") return InitMethod::given;
  FLASHKM_FAIL(invalid_argument, "unknown init '", s, "' (expected k-means++, k-means||, random or given)");
}
Device parse_device(const std::string& s) {
  if (s == "cpu") return Device::cpu;
  if (s == "cuda" || s == "gpu") return Device::cuda;
  FLASHKM_FAIL(invalid_argument, "unknown device '", s, "' (expected cpu or cuda)");
}
Precision parse_precision(const std::string& s) {
  if (s == "auto" || s == "automatic") return Precision::automatic;
  if (s == "fp32") return Precision::fp32;
  if (s == "tf32") return Precision::tf32;
  if (s == "fp16") return Precision::fp16;
  if (s == "bf16") return Precision::bf16;
  FLASHKM_FAIL(invalid_argument, "unknown precision '", s, "' (expected auto, fp32, tf32, fp16 or bf16)");
}

}  // namespace flashkm
