// Writes a large .npy of Gaussian-ish blobs piece by piece (never holding it in memory), for
// the out-of-core benchmark (bench/ooc_cpu.sh).
//   make_blobs_npy OUT.npy N D f32|f16 [SEED]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "io/atomic_file.hpp"
#include "io/npy.hpp"

namespace {

// float -> IEEE half, round to nearest even; values below the normal range become zero
// (enough for generated data, which stays well inside it).
std::uint16_t to_half(float f) {
  std::uint32_t b;
  std::memcpy(&b, &f, 4);
  const auto sign = static_cast<std::uint16_t>((b >> 16) & 0x8000u);
  std::uint32_t m = b & 0x7FFFFFFFu;
  if (m < 0x38800000u) return sign;  // |f| < 2^-14
  m += 0x0FFFu + ((m >> 13) & 1u);
  const std::uint32_t exp = (m >> 23) - 127 + 15;
  if (exp >= 31) return static_cast<std::uint16_t>(sign | 0x7C00u);
  return static_cast<std::uint16_t>(sign | (exp << 10) | ((m >> 13) & 0x3FFu));
}

struct Rng {  // xorshift64*: fast, and the file is the same for the same seed
  std::uint64_t s;
  float uniform() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return static_cast<float>((s * 0x2545F4914F6CDD1Dull) >> 40) * 0x1p-24f;
  }
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s OUT.npy N D f32|f16 [SEED]\n", argv[0]);
    return 2;
  }
  const std::string path = argv[1], dtype = argv[4];
  const std::int64_t n = std::atoll(argv[2]), d = std::atoll(argv[3]);
  const bool half = dtype == "f16";
  if (n < 1 || d < 1 || (!half && dtype != "f32")) {
    std::fprintf(stderr, "bad arguments\n");
    return 2;
  }
  Rng rng{argc > 5 ? std::strtoull(argv[5], nullptr, 10) * 2 + 1 : 1};
  constexpr int kCenters = 32;
  std::vector<float> centers(static_cast<std::size_t>(kCenters * d));
  for (auto& c : centers) c = 20.0f * rng.uniform() - 10.0f;

  flashkm::io::AtomicFile out(path);
  const std::int64_t shape[2] = {n, d};
  flashkm::io::write_npy_header(out, half ? "<f2" : "<f4", shape);
  constexpr std::int64_t kRows = 8192;
  std::vector<float> rows(static_cast<std::size_t>(kRows * d));
  std::vector<std::uint16_t> halves(rows.size());
  for (std::int64_t i0 = 0; i0 < n; i0 += kRows) {
    const std::int64_t m = std::min(kRows, n - i0);
    for (std::int64_t r = 0; r < m; ++r) {
      const float* c = centers.data() + ((i0 + r) % kCenters) * d;
      for (std::int64_t j = 0; j < d; ++j)  // sum of 3 uniforms: roughly normal, sigma 1
        rows[r * d + j] = c[j] + 2.0f * (rng.uniform() + rng.uniform() + rng.uniform() - 1.5f);
    }
    if (half) {
      for (std::int64_t t = 0; t < m * d; ++t) halves[t] = to_half(rows[t]);
      out.write(halves.data(), static_cast<std::size_t>(m * d) * 2);
    } else {
      out.write(rows.data(), static_cast<std::size_t>(m * d) * 4);
    }
  }
  out.commit();
  return 0;
}
