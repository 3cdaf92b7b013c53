// Writing a file so that readers see either the old file or the complete new one, never a
// partial file: write a temporary file in the same directory, fsync it, rename it over the
// target, fsync the directory.
#pragma once

#include <cstddef>
#include <string>

namespace flashkm::io {

class AtomicFile {
 public:
  /// Create the temporary file next to `path` now, so that an unwritable destination is
  /// reported before any expensive work. Throws Error(io) naming the path.
  explicit AtomicFile(std::string path);
  /// Without a successful commit() the temporary file is removed and `path` is untouched.
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  /// Append bytes; throws Error(io) on a short write (disk full, ...).
  void write(const void* data, std::size_t n);
  /// fsync, close and rename over the target. After a failure (Error(io)) the temporary
  /// file is gone and the target untouched.
  void commit();

  const std::string& path() const noexcept { return path_; }
  const std::string& temp_path() const noexcept { return temp_path_; }

 private:
  void discard() noexcept;

  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  bool committed_ = false;
};

/// Write a whole buffer to `path` atomically.
void write_file_atomically(const std::string& path, const void* data, std::size_t n);

}  // namespace flashkm::io
