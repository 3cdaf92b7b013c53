// TEXMEX .fvecs / .bvecs files (the ANN_SIFT1M/1B layout): every vector is stored as an
// int32 dimension d followed by d elements (float32 for fvecs, uint8 for bvecs).
#pragma once

#include <string>

#include "io/matrix.hpp"

namespace flashkm::io {

/// Zero copy: a float32 view into the mapping with row_stride = D + 1 (the next row's
/// dimension word is skipped), starting one int after the file start.
/// Throws Error(format) when the file is empty, truncated, or the dimensions differ.
LoadedMatrix load_fvecs(const std::string& path);

/// uint8 elements converted to float32 in an owned buffer (flashkm computes in fp32).
LoadedMatrix load_bvecs(const std::string& path);

}  // namespace flashkm::io
