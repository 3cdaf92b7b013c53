// Vocabulary types shared by every layer: element types, matrix views, enums.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace flashkm {

/// Element type of an input matrix. Computation is always fp32 or better.
enum class DType : std::uint8_t { f32 = 0, f16 = 1, bf16 = 2, f64 = 3 };

/// Where the memory behind a pointer lives.
enum class Location : std::uint8_t { host = 0, cuda = 1 };

/// Distance used for assignment.
///  l2:            squared Euclidean distance, centroid = weighted mean.
///  cosine:        1 - cos(x, c); centroids are unit vectors (spherical k-means).
///  inner_product: -x.c (maximum inner product); centroid = weighted mean.
enum class Metric : std::uint8_t { l2 = 0, cosine = 1, inner_product = 2 };

/// How the first centroids are chosen.
enum class InitMethod : std::uint8_t { kmeanspp = 0, kmeans_parallel = 1, random = 2, given = 3 };

/// Which backend computes.
enum class Device : std::uint8_t { cpu = 0, cuda = 1 };

/// Operand precision of the distance products on tensor-core devices. The CPU always
/// computes fp32 products. Labels stay exact in every mode where certification is on.
enum class Precision : std::uint8_t { automatic = 0, fp32 = 1, tf32 = 2, fp16 = 3, bf16 = 4 };

std::size_t dtype_size(DType t) noexcept;
const char* to_string(DType t) noexcept;
const char* to_string(Metric m) noexcept;
const char* to_string(InitMethod m) noexcept;
const char* to_string(Device d) noexcept;
const char* to_string(Precision p) noexcept;
/// Parse the names printed by to_string (and the CLI spellings "k-means++", "k-means||").
/// Throw flashkm::Error(invalid_argument) on an unknown name.
Metric parse_metric(const std::string& s);
InitMethod parse_init(const std::string& s);
Device parse_device(const std::string& s);
Precision parse_precision(const std::string& s);

template <class T> struct dtype_of;
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<double> { static constexpr DType value = DType::f64; };

/// A read-only, row-major matrix [rows x cols] with a row stride in elements.
/// The view never owns memory. f16/bf16 data is passed as raw 16-bit words.
struct MatrixView {
  const void* data = nullptr;
  DType dtype = DType::f32;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t row_stride = 0;  ///< elements between row starts; 0 means cols (contiguous)
  Location where = Location::host;
  int device_id = 0;            ///< CUDA device of the memory when where == cuda
  /// The host data is a read-only mapping of a file (io::load_matrix sets it): the CPU
  /// backend may then drop the pages a pass has finished with (they are re-read from the
  /// file), so that data larger than memory streams (docs/ARCHITECTURE.md, "Out of core").
  /// Never set it for other memory: dropped pages of ordinary memory would read as zeros.
  bool mapped_file = false;

  std::int64_t stride() const noexcept { return row_stride == 0 ? cols : row_stride; }
  const void* row(std::int64_t i) const noexcept {
    return static_cast<const char*>(data) +
           static_cast<std::size_t>(i) * static_cast<std::size_t>(stride()) * dtype_size(dtype);
  }

  template <class T>
  static MatrixView of(const T* p, std::int64_t rows, std::int64_t cols, std::int64_t row_stride = 0) {
    return MatrixView{p, dtype_of<T>::value, rows, cols, row_stride, Location::host, 0, false};
  }
  static MatrixView raw(const void* p, DType t, std::int64_t rows, std::int64_t cols,
                        std::int64_t row_stride = 0, Location where = Location::host, int device_id = 0) {
    return MatrixView{p, t, rows, cols, row_stride, where, device_id, false};
  }
};

}  // namespace flashkm
