#include "flashkm/error.hpp"

namespace flashkm {

const char* to_string(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::invalid_argument: return "invalid_argument";
    case ErrorKind::unsupported_type: return "unsupported_type";
    case ErrorKind::io: return "io";
    case ErrorKind::format: return "format";
    case ErrorKind::out_of_memory: return "out_of_memory";
    case ErrorKind::device_unavailable: return "device_unavailable";
    case ErrorKind::interrupted: return "interrupted";
    case ErrorKind::internal: return "internal";
  }
  return "unknown";
}

namespace detail {
void assert_failed(const char* expr, const char* file, int line, const std::string& msg) {
  std::string m = "flashkm internal error: " + msg + " (" + expr + " failed at " + file + ":";
  append(m, line);
  throw Error(ErrorKind::internal, m + ")");
}
}  // namespace detail

}  // namespace flashkm
