// The model file format version this build writes and reads (docs/FORMAT.md).
#pragma once

#include <cstdint>

namespace flashkm::core {
inline constexpr std::uint32_t kModelFormatVersion = 1;
}  // namespace flashkm::core
