// flashkm info MODEL: the model header as JSON on stdout.
#include <sys/stat.h>

#include <cstdio>

#include "commands.hpp"
#include "flashkm/model.hpp"
#include "report.hpp"

namespace flashkm::cli {

int run_info(const InfoOptions& o) {
  const Model model = Model::load(o.model);
  struct stat st {};
  ::stat(o.model.c_str(), &st);
  std::fputs(model_info_json(model, o.model, static_cast<std::uint64_t>(st.st_size)).c_str(), stdout);
  return 0;
}

}  // namespace flashkm::cli
