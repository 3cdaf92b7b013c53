// CRC-32C (Castagnoli), the checksum of the model file format (docs/FORMAT.md).
#pragma once

#include <cstddef>
#include <cstdint>

namespace flashkm::io {

/// CRC-32C of n bytes, continuing from `crc` (0 to start). Standard parameters: reflected
/// polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF; crc32c("123456789") ==
/// 0xE3069283. Uses the SSE4.2 instruction when the CPU has it, a table otherwise; both give
/// the same value.
std::uint32_t crc32c(const void* data, std::size_t n, std::uint32_t crc = 0) noexcept;

}  // namespace flashkm::io
