#include "io/atomic_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "flashkm/error.hpp"

namespace flashkm::io {
namespace {

std::string parent_dir(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

std::string base_name(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// A name no other writer uses: pid + a process-wide counter + time. O_EXCL guarantees it.
std::string temp_name_for(const std::string& path, int attempt) {
  static std::atomic<unsigned> counter{0};
  const auto ticks = std::chrono::steady_clock::now().time_since_epoch().count();
  std::string dir = parent_dir(path);
  // Hidden, and recognisable as ours should a crash leave one behind.
  return (dir == "/" ? "" : dir) + "/." + base_name(path) + ".tmp." + std::to_string(::getpid()) + "." +
         std::to_string(counter.fetch_add(1)) + "." + std::to_string((ticks + attempt) & 0xFFFFFF);
}

}  // namespace

AtomicFile::AtomicFile(std::string path) : path_(std::move(path)) {
  FLASHKM_CHECK(!path_.empty() && path_.back() != '/', io, "invalid output path '", path_, "'");
  struct stat st {};
  if (::stat(path_.c_str(), &st) == 0 && S_ISDIR(st.st_mode))
    FLASHKM_FAIL(io, "cannot write '", path_, "': it is a directory");
  for (int attempt = 0; fd_ < 0; ++attempt) {
    temp_path_ = temp_name_for(path_, attempt);
    // Mode 0666 filtered by the umask, as for any newly created file.
    fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd_ < 0 && !(errno == EEXIST && attempt < 100))
      FLASHKM_FAIL(io, "cannot write '", path_, "': ", std::strerror(errno));
  }
}

AtomicFile::~AtomicFile() {
  if (!committed_) discard();
}

void AtomicFile::discard() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!temp_path_.empty()) ::unlink(temp_path_.c_str());
  temp_path_.clear();
}

void AtomicFile::write(const void* data, std::size_t n) {
  FLASHKM_ASSERT(fd_ >= 0, "write after commit");
  const auto* p = static_cast<const char*>(data);
  while (n > 0) {
    // Linux writes at most ~2 GiB per call; loop for the rest and for interrupted calls.
    const ssize_t w = ::write(fd_, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const int err = w < 0 ? errno : EIO;
      discard();
      FLASHKM_FAIL(io, "cannot write '", path_, "': ", std::strerror(err));
    }
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

void AtomicFile::commit() {
  FLASHKM_ASSERT(fd_ >= 0, "commit twice");
  // fsync before rename: otherwise a crash can leave the new name pointing at empty data.
  if (::fsync(fd_) != 0 || ::close(fd_) != 0) {
    const int err = errno;
    fd_ = -1;
    discard();
    FLASHKM_FAIL(io, "cannot write '", path_, "': ", std::strerror(err));
  }
  fd_ = -1;
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    discard();
    FLASHKM_FAIL(io, "cannot write '", path_, "': ", std::strerror(err));
  }
  committed_ = true;
  // Make the rename itself durable. Failure here is not an error for the caller: the file
  // is complete and in place.
  const int dfd = ::open(parent_dir(path_).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void write_file_atomically(const std::string& path, const void* data, std::size_t n) {
  AtomicFile f(path);
  f.write(data, n);
  f.commit();
}

}  // namespace flashkm::io
