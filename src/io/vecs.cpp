#include "io/vecs.hpp"

#include <cstdint>
#include <memory>
#include <vector>

#include "flashkm/error.hpp"
#include "io/byte_io.hpp"
#include "io/mapped_file.hpp"

namespace flashkm::io {
namespace {

struct VecsLayout {
  std::int64_t rows = 0;
  std::int64_t dim = 0;
  std::size_t record_bytes = 0;  ///< 4 + dim * element size
};

// Check the whole file: a first dimension that is positive, a size that is a whole number
// of records, and the same dimension word in front of every record.
VecsLayout check_vecs(const MappedFile& file, std::size_t elem_size, const char* kind) {
  const std::string& path = file.path();
  FLASHKM_CHECK(file.size() >= 4, format, "cannot read '", path, "': ", file.size() == 0 ? "empty " : "truncated ",
                kind, " file");
  const std::int32_t d = load_le<std::int32_t>(file.data());
  FLASHKM_CHECK(d > 0, format, "cannot read '", path, "': invalid dimension ", d, " in the first ", kind, " record");
  VecsLayout l;
  l.dim = d;
  l.record_bytes = 4 + static_cast<std::size_t>(d) * elem_size;
  FLASHKM_CHECK(file.size() % l.record_bytes == 0, format, "cannot read '", path, "': size ", file.size(),
                " bytes is not a multiple of the ", kind, " record size ", l.record_bytes, " (dimension ", d,
                "): the file is truncated or its records differ in dimension");
  l.rows = static_cast<std::int64_t>(file.size() / l.record_bytes);
  for (std::int64_t i = 1; i < l.rows; ++i) {
    const std::int32_t di = load_le<std::int32_t>(file.data() + static_cast<std::size_t>(i) * l.record_bytes);
    FLASHKM_CHECK(di == d, format, "cannot read '", path, "': record ", i, " has dimension ", di,
                  ", the first has ", d);
  }
  return l;
}

}  // namespace

LoadedMatrix load_fvecs(const std::string& path) {
  auto file = MappedFile::open(path);
  const VecsLayout l = check_vecs(*file, sizeof(float), "fvecs");
  LoadedMatrix m;
  // Records are 4 + 4*d bytes, so every row start is 4-byte aligned in the page-aligned map.
  m.view = MatrixView::raw(file->data() + 4, DType::f32, l.rows, l.dim, l.dim + 1);
  m.view.mapped_file = true;
  m.storage = file;
  m.format = "fvecs";
  m.file_dtype = "float32";
  return m;
}

LoadedMatrix load_bvecs(const std::string& path) {
  auto file = MappedFile::open(path);
  const VecsLayout l = check_vecs(*file, 1, "bvecs");
  auto buf = std::make_shared<std::vector<float>>(static_cast<std::size_t>(l.rows * l.dim));
  for (std::int64_t i = 0; i < l.rows; ++i) {
    const std::uint8_t* src = file->data() + static_cast<std::size_t>(i) * l.record_bytes + 4;
    float* dst = buf->data() + i * l.dim;
    for (std::int64_t j = 0; j < l.dim; ++j) dst[j] = static_cast<float>(src[j]);
  }
  LoadedMatrix m;
  m.view = MatrixView::raw(buf->data(), DType::f32, l.rows, l.dim);
  m.storage = buf;
  m.format = "bvecs";
  m.file_dtype = "uint8";
  return m;
}

}  // namespace flashkm::io
