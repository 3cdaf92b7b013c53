// flashkm error type and the two tiers of checks (caller errors vs internal invariants).
#pragma once

#include <charconv>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace flashkm {

/// What went wrong, so bindings can map it to their own exception classes
/// (Python: invalid_argument -> ValueError, unsupported_type -> TypeError,
/// out_of_memory -> MemoryError, io/format -> OSError/ValueError).
enum class ErrorKind {
  invalid_argument,   ///< bad shapes, parameters, NaN/Inf values, weights
  unsupported_type,   ///< a dtype or file layout that flashkm does not read
  io,                 ///< a file cannot be opened, read or written
  format,             ///< a model or data file is truncated, corrupted or of another version
  out_of_memory,      ///< host or device allocation failed; the message names the bytes
  device_unavailable, ///< a device backend was asked for but is not built or not present
  interrupted,        ///< the progress callback asked to stop
  internal,           ///< a broken invariant inside flashkm (a bug)
};

const char* to_string(ErrorKind kind) noexcept;

/// The one exception type flashkm throws. what() is a complete one-line message.
class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

namespace detail {
// Messages are built without iostreams: no locale (a user's global locale would put digit
// separators into the numbers), and nothing but std::to_chars on the error path.
inline void append(std::string& s, const char* v) { s += v ? v : "(null)"; }
inline void append(std::string& s, const std::string& v) { s += v; }
inline void append(std::string& s, std::string_view v) { s += v; }
inline void append(std::string& s, char v) { s += v; }
inline void append(std::string& s, bool v) { s += v ? "true" : "false"; }
template <class T, std::enable_if_t<std::is_arithmetic_v<T>, int> = 0>
void append(std::string& s, T v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  s.append(buf, r.ptr);
}

template <class... Args>
[[noreturn]] void throw_error(ErrorKind kind, const char* file, int line, const Args&... args) {
  std::string message;
  (append(message, args), ...);
  (void)file;
  (void)line;
  throw Error(kind, message);
}
[[noreturn]] void assert_failed(const char* expr, const char* file, int line, const std::string& msg);
}  // namespace detail

}  // namespace flashkm

/// Caller error: throws flashkm::Error(kind, message) when cond is false.
#define FLASHKM_CHECK(cond, kind, ...)                                                      \
  do {                                                                                      \
    if (!(cond)) ::flashkm::detail::throw_error(::flashkm::ErrorKind::kind, __FILE__, __LINE__, \
                                                __VA_ARGS__);                               \
  } while (0)

/// Unconditional caller error.
#define FLASHKM_FAIL(kind, ...) \
  ::flashkm::detail::throw_error(::flashkm::ErrorKind::kind, __FILE__, __LINE__, __VA_ARGS__)

/// Internal invariant: a failure is a flashkm bug, reported as ErrorKind::internal with file:line.
#define FLASHKM_ASSERT(cond, msg)                                                     \
  do {                                                                                \
    if (!(cond)) ::flashkm::detail::assert_failed(#cond, __FILE__, __LINE__, (msg)); \
  } while (0)
