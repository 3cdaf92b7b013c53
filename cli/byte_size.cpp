#include "byte_size.hpp"

#include <cctype>
#include <cmath>
#include <cstdlib>

#include "flashkm/error.hpp"

namespace flashkm::cli {

std::int64_t parse_byte_size(const std::string& text) {
  const char* begin = text.c_str();
  char* end = nullptr;
  const double value = std::strtod(begin, &end);
  std::string unit(end);
  for (auto& ch : unit) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  double scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  else if (unit == "K" || unit == "KB" || unit == "KIB") scale = 0x1p10;
  else if (unit == "M" || unit == "MB" || unit == "MIB") scale = 0x1p20;
  else if (unit == "G" || unit == "GB" || unit == "GIB") scale = 0x1p30;
  else if (unit == "T" || unit == "TB" || unit == "TIB") scale = 0x1p40;
  const double bytes = value * scale;
  FLASHKM_CHECK(end != begin && scale > 0 && std::isfinite(bytes) && bytes >= 1 && bytes < 0x1p62, invalid_argument,
                "'", text, "' is not a byte size (examples: 1073741824, 512M, 4G)");
  return static_cast<std::int64_t>(bytes);
}

}  // namespace flashkm::cli
