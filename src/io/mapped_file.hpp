// A read-only memory mapping of a whole file: the data readers hand out views into it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace flashkm::io {

class MappedFile {
 public:
  /// Map `path` read-only. Throws Error(io) naming the path when it cannot be opened, is a
  /// directory or cannot be mapped. An empty file maps to size() == 0, data() == nullptr.
  /// Shared ownership so that views into the mapping can keep it alive.
  static std::shared_ptr<const MappedFile> open(const std::string& path);

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::uint8_t* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  const std::string& path() const noexcept { return path_; }

 private:
  MappedFile(std::string path, const std::uint8_t* data, std::size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}

  std::string path_;
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace flashkm::io
