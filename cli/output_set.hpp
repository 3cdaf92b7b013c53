// The output files of one command, written all-or-nothing: each is reserved (its temporary
// file created) before the work starts, so that an unwritable path fails fast, and all are
// renamed into place only at the end.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "io/atomic_file.hpp"

namespace flashkm::cli {

class OutputSet {
 public:
  /// Reserve `path` (ignored when empty: an output not asked for). Throws Error(io) when it
  /// cannot be created, Error(invalid_argument) when the same path is reserved twice.
  io::AtomicFile* reserve(const std::string& path);

  /// Rename every reserved file into place. If one rename fails, the outputs already moved
  /// into place by this call are removed again, so that no partial set is left behind.
  void commit_all();

 private:
  std::vector<std::unique_ptr<io::AtomicFile>> files_;
};

}  // namespace flashkm::cli
