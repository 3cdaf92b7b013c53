// A data matrix read from a file, and the loader that picks the reader by file extension.
#pragma once

#include <memory>
#include <string>

#include "flashkm/types.hpp"

namespace flashkm::io {

/// `view` points into storage that `storage` keeps alive: the file mapping itself (zero
/// copy: .npy, .fvecs) or a converted buffer (.bvecs). Copying a LoadedMatrix shares it.
struct LoadedMatrix {
  MatrixView view;
  std::shared_ptr<const void> storage;
  std::string format;      ///< "npy", "fvecs" or "bvecs"
  std::string file_dtype;  ///< element type as stored in the file, e.g. "float16", "uint8"
};

/// Read a 2-D matrix from `path` by its extension: .npy (float32/float16/float64), .fvecs,
/// .bvecs. Throws Error(unsupported_type) for another extension or element type,
/// Error(format) for a malformed file, Error(io) when it cannot be read.
LoadedMatrix load_matrix(const std::string& path);

/// Rows [begin, begin + count) of m, sharing its storage (no copy). For a memory-mapped file
/// this is a rank's shard in a distributed fit: only the pages of these rows are ever read.
/// Throws Error(invalid_argument) when the range is not inside m.
LoadedMatrix row_range(const LoadedMatrix& m, std::int64_t begin, std::int64_t count);

}  // namespace flashkm::io
