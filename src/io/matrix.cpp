#include "io/matrix.hpp"

#include "flashkm/error.hpp"
#include "io/npy.hpp"
#include "io/vecs.hpp"

namespace flashkm::io {
namespace {
bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

LoadedMatrix load_matrix(const std::string& path) {
  if (ends_with(path, ".npy")) return load_npy(path, NpyRank::matrix);
  if (ends_with(path, ".fvecs")) return load_fvecs(path);
  if (ends_with(path, ".bvecs")) return load_bvecs(path);
  FLASHKM_FAIL(unsupported_type, "cannot read '", path,
               "': unknown data file type (expected a .npy, .fvecs or .bvecs file)");
}

LoadedMatrix row_range(const LoadedMatrix& m, std::int64_t begin, std::int64_t count) {
  FLASHKM_CHECK(begin >= 0 && count >= 0 && begin + count <= m.view.rows, invalid_argument, "rows [", begin, ", ",
                begin + count, ") are not inside the ", m.view.rows, " rows of the matrix");
  LoadedMatrix out = m;
  out.view.rows = count;
  if (count > 0) out.view.data = m.view.row(begin);  // row() of a 0-row range may point past the end
  return out;
}

}  // namespace flashkm::io
