// Test helpers for files: a scratch directory removed at the end of the test, and whole-file
// reads and writes of raw bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace flashkm::test {

/// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  /// path() + "/" + name
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  /// Names of the entries in the directory (hidden ones included), sorted.
  std::vector<std::string> entries() const;

 private:
  std::string path_;
};

void write_bytes(const std::string& path, const std::vector<std::uint8_t>& bytes);
void write_bytes(const std::string& path, const void* data, std::size_t n);
std::vector<std::uint8_t> read_bytes(const std::string& path);
bool file_exists(const std::string& path);

/// Bytes of a .npy file written by hand (independently of flashkm's writer): version
/// major.0, the given header dict text, and the data bytes. The header is padded to 64.
std::vector<std::uint8_t> make_npy(const std::string& dict, const void* data, std::size_t data_bytes, int major = 1);

}  // namespace flashkm::test
