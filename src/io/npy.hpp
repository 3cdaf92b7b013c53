// NumPy .npy files (format versions 1.0, 2.0, 3.0): memory-mapped zero-copy reading of
// float32/float16/float64 C-order arrays, and atomic writing.
// Format reference: numpy/lib/format.py (NEP 1).
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <vector>

#include "io/atomic_file.hpp"
#include "io/matrix.hpp"

namespace flashkm::io {

/// The parsed header of a .npy file.
struct NpyHeader {
  int major = 0, minor = 0;          ///< format version
  std::string descr;                 ///< dtype string, e.g. "<f4"
  bool fortran_order = false;
  std::vector<std::int64_t> shape;
  std::size_t data_offset = 0;       ///< where the array data starts, in bytes from the file start
};

/// Parse and check the header at the start of `bytes` (the whole file, `size` bytes; `name`
/// is used in messages). Checks the magic, version, dict syntax and keys, and that the data
/// size matches the shape and the dtype's item size when the item size is known.
/// Throws Error(format). Does not judge the dtype: see load_npy.
NpyHeader parse_npy_header(const std::uint8_t* bytes, std::size_t size, const std::string& name);

/// Whether the caller wants a 2-D matrix or a 1-D vector (returned as rows = n, cols = 1).
enum class NpyRank { matrix, vector };

/// Map a .npy file and return a view of its data (zero copy; copied only when the data is
/// not aligned to its element size). dtype <f4, <f2 or <f8, C order, exactly the rank asked
/// for; anything else throws Error(unsupported_type) naming the dtype or layout.
LoadedMatrix load_npy(const std::string& path, NpyRank rank = NpyRank::matrix);

/// dtype strings of the element types flashkm writes.
template <class T> struct npy_descr;
template <> struct npy_descr<float> { static constexpr const char* value = "<f4"; };
template <> struct npy_descr<double> { static constexpr const char* value = "<f8"; };
template <> struct npy_descr<std::int32_t> { static constexpr const char* value = "<i4"; };

/// Write the header of a C-order array to an open atomic file; its data must follow, e.g.
/// written in pieces by a generator of data larger than memory.
void write_npy_header(AtomicFile& out, const char* descr, std::span<const std::int64_t> shape);

/// Write header and data of a C-order array to an open atomic file (not committed).
void write_npy(AtomicFile& out, const char* descr, std::size_t item_size, const void* data,
               std::span<const std::int64_t> shape);

template <class T>
void write_npy(AtomicFile& out, const T* data, std::initializer_list<std::int64_t> shape) {
  write_npy(out, npy_descr<T>::value, sizeof(T), data, std::span(shape.begin(), shape.size()));
}

/// Write a .npy file atomically, e.g. save_npy(path, labels, {n}) or save_npy(path, c, {k, d}).
template <class T>
void save_npy(const std::string& path, const T* data, std::initializer_list<std::int64_t> shape) {
  AtomicFile out(path);
  write_npy(out, data, shape);
  out.commit();
}

}  // namespace flashkm::io
