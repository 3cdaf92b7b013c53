// Internal entry points of the CUDA backend beyond core::make_cuda_backend: options for
// tuning and benchmarking (tile override, batched problems). Not a public header.
#pragma once

#include <cstdint>
#include <memory>

#include "core/backend.hpp"
#include "cuda/flash_assign.hpp"
#include "cuda/kernels.cuh"

namespace flashkm::cuda {

/// How certified assign() settles the rows its tensor-core level flags (docs/CUDA.md,
/// "Certification"). Every choice gives the float64 argmin outside true ties; they differ in
/// speed, and in the distances of the rows settled below fp64 (simt: fp32 distances).
enum class CertifyCascade : std::uint8_t {
  automatic = 0,   ///< candidates where they apply (tensor-core level 1; CudaOptions::batch == 1), else simt
  candidates = 1,  ///< level 1's kernel over the flagged rows lists the candidate centroids, fp64
                   ///< scores them (where it does not apply: simt)
  simt = 2,        ///< exact-fp32 SIMT kernel over the flagged rows, then fp64 against all centroids
  fp64 = 3,        ///< fp64 against all centroids for every flagged row (the reference)
};

struct CudaOptions {
  int device_id = 0;
  Precision precision = Precision::automatic;
  bool certify = true;
  /// B equal-sized independent problems: attach() takes B*n rows (problem b = rows
  /// [b*n, (b+1)*n)), set_centroids() takes B*k rows (problem b's centroids = rows
  /// [b*k, (b+1)*k)); labels stay per problem (0..k-1), accumulate() returns [B*k x D].
  int batch = 1;
  TileConfig tile = TileConfig::automatic;  ///< override the heuristic (tuning)
  CertifyCascade cascade = CertifyCascade::automatic;  ///< certified mode's levels (tests, benchmarks)
};

std::unique_ptr<core::Backend> make_cuda_backend(const CudaOptions& options);

/// What a backend needs to know of its device, after the checks every CUDA backend makes
/// on its options (a device present and in range, a precision it implements): throws
/// Error(device_unavailable / invalid_argument) with the reason.
struct DeviceInfo {
  int sm_count = 0;
  int cc = 0;  ///< compute capability, 10 * major + minor
};
DeviceInfo open_device(const CudaOptions& options);

/// Element (i, j) of device data x as fp32 (one synchronous copy: for error messages).
float device_element(const XView& x, std::int64_t i, int j);

/// Bytes of device memory the backend holds beyond the input data (for the benchmark).
std::size_t device_bytes_held(const core::Backend& backend);

/// How the backend holds its data (docs/CUDA.md, "Data larger than the GPU"): for tests and
/// the benchmark.
struct StreamInfo {
  bool streamed = false;            ///< rows past resident_rows are copied on every pass
  std::int64_t rows = 0;            ///< N
  std::int64_t resident_rows = 0;   ///< the prefix kept on the device (N when resident)
  std::int64_t chunk_rows = 0;      ///< rows per chunk of a pass
  std::int64_t chunks = 0;          ///< chunks per pass (resident prefix included)
  int slots = 0;                    ///< device buffers the streamed chunks rotate through
  std::int64_t budget = 0;          ///< the device budget the plan was made for, bytes
  bool direct = false;              ///< page-locked input: copied without staging
  std::int64_t bytes_copied = 0;    ///< host-to-device bytes of data so far (prefix included)
  std::int64_t passes = 0;          ///< passes over the data so far
};
StreamInfo stream_info(const core::Backend& backend);

}  // namespace flashkm::cuda
