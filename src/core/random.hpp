// Randomness that is the same on every platform and thread count: splitmix64 for
// counter-based uniforms (usable on device too) and a small xoshiro256** stream for the driver.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define FLASHKM_HD __host__ __device__
#else
#define FLASHKM_HD
#endif

namespace flashkm::core {

FLASHKM_HD inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

/// Uniform in [0, 1) from (seed, stream, index), independent of evaluation order.
FLASHKM_HD inline double counter_uniform(std::uint64_t seed, std::uint64_t stream, std::uint64_t index) {
  std::uint64_t h = splitmix64(seed ^ splitmix64(stream ^ splitmix64(index)));
  return static_cast<double>(h >> 11) * 0x1.0p-53;
}

/// Sequential generator for the driver (host only).
class Rng {
 public:
  explicit Rng(std::uint64_t seed) {
    std::uint64_t x = seed;
    for (auto& w : s_) { x = splitmix64(x); w = x; }
  }
  std::uint64_t next() {
    const std::uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const std::uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0]; s_[3] ^= s_[1]; s_[1] ^= s_[2]; s_[0] ^= s_[3];
    s_[2] ^= t; s_[3] = rotl(s_[3], 45);
    return result;
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }  ///< [0, 1)
  std::uint64_t below(std::uint64_t n) { return static_cast<std::uint64_t>(uniform() * static_cast<double>(n)) % n; }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::uint64_t s_[4];
};

}  // namespace flashkm::core
