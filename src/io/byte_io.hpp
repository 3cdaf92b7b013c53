// Little-endian loads and stores for the file formats (model file, .npy, .fvecs).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace flashkm::io {

// Every flashkm file format is little-endian and the data readers hand out views straight
// into the mapped file, which is only correct on a little-endian host.
static_assert(std::endian::native == std::endian::little,
              "flashkm's file formats assume a little-endian host");

/// Read a T stored at p (any alignment).
template <class T>
T load_le(const std::uint8_t* p) noexcept {
  static_assert(std::is_trivially_copyable_v<T>);
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

/// Appends values to a byte buffer, in little-endian order.
class ByteWriter {
 public:
  explicit ByteWriter(std::size_t reserve = 0) { bytes_.reserve(reserve); }

  template <class T>
  void put(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    put_bytes(&v, sizeof(T));
  }
  template <class T>
  void put_array(const T* p, std::size_t n) {
    static_assert(std::is_trivially_copyable_v<T>);
    put_bytes(p, n * sizeof(T));
  }
  void put_bytes(const void* p, std::size_t n) {
    const auto* b = static_cast<const std::uint8_t*>(p);
    bytes_.insert(bytes_.end(), b, b + n);
  }
  /// Overwrite a value already written at byte offset `at` (for fields known only later).
  template <class T>
  void patch(std::size_t at, const T& v) {
    std::memcpy(bytes_.data() + at, &v, sizeof(T));
  }

  std::size_t size() const noexcept { return bytes_.size(); }
  const std::uint8_t* data() const noexcept { return bytes_.data(); }
  std::vector<std::uint8_t> take() { return std::move(bytes_); }

 private:
  std::vector<std::uint8_t> bytes_;
};

}  // namespace flashkm::io
