// Byte counts on the command line: "1048576", "512M", "4G", "1.5GiB".
#pragma once

#include <cstdint>
#include <string>

namespace flashkm::cli {

/// Bytes of a size with an optional binary suffix K, M, G, T (KiB ... TiB; "B", "iB" and
/// lower case accepted). Throws Error(invalid_argument) naming the text otherwise.
std::int64_t parse_byte_size(const std::string& text);

}  // namespace flashkm::cli
