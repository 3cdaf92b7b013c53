#include "output_set.hpp"

#include <unistd.h>

#include "flashkm/error.hpp"

namespace flashkm::cli {

io::AtomicFile* OutputSet::reserve(const std::string& path) {
  if (path.empty()) return nullptr;
  for (const auto& f : files_)
    FLASHKM_CHECK(f->path() != path, invalid_argument, "output '", path, "' is given twice");
  files_.push_back(std::make_unique<io::AtomicFile>(path));
  return files_.back().get();
}

void OutputSet::commit_all() {
  std::size_t done = 0;
  try {
    for (; done < files_.size(); ++done) files_[done]->commit();
  } catch (...) {
    for (std::size_t i = 0; i < done; ++i) ::unlink(files_[i]->path().c_str());
    throw;
  }
}

}  // namespace flashkm::cli
