// FlashAssign for Hopper (sm_90a): the host side — tensor maps, the dispatch over the D-chunk
// count, whether the build and device can run it. The kernel, its design and its launchers
// are in flash_assign_sm90_kernel.cuh; each chunk count is compiled in its own generated
// translation unit (flash_assign_sm90_instance.cu.in), declared extern here.
#include "cuda/flash_assign_sm90_kernel.cuh"

namespace flashkm::cuda {
namespace sm90 {

#define FLASHKM_SM90_EXTERN(KDC)                                                                            \
  extern template void launch_chunks<KDC>(const AssignParams&, Operand, const CUtensorMap&, cudaStream_t); \
  extern template cudaError_t kernel_attributes<KDC>(cudaFuncAttributes*);
FLASHKM_SM90_EXTERN(1) FLASHKM_SM90_EXTERN(2) FLASHKM_SM90_EXTERN(3) FLASHKM_SM90_EXTERN(4)
FLASHKM_SM90_EXTERN(5) FLASHKM_SM90_EXTERN(6) FLASHKM_SM90_EXTERN(7) FLASHKM_SM90_EXTERN(8)
FLASHKM_SM90_EXTERN(9) FLASHKM_SM90_EXTERN(10) FLASHKM_SM90_EXTERN(11) FLASHKM_SM90_EXTERN(12)
#undef FLASHKM_SM90_EXTERN

namespace {
/// cuTensorMapEncodeTiled through the runtime's driver entry point (no -lcuda).
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q{};
    FLASHKM_CUDA_CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q));
    FLASHKM_CHECK(q == cudaDriverEntryPointSuccess && f != nullptr, device_unavailable,
                  "the CUDA driver has no cuTensorMapEncodeTiled (needed by the wgmma FlashAssign kernel)");
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

/// 2-D b16 tensor map [rows x cols] (row stride `stride` elements), boxes [box_rows x 64
/// cols] in the 128-byte swizzle; reads past rows or cols fill zeros.
CUtensorMap b16_tensor_map(const void* base, Operand op, std::uint64_t rows, std::uint64_t cols, std::uint64_t stride,
                           int box_rows) {
  CUtensorMap m;
  const cuuint64_t dims[2] = {cuuint64_t(cols), cuuint64_t(rows)};
  const cuuint64_t strides[1] = {cuuint64_t(stride) * 2};
  const cuuint32_t box[2] = {64, cuuint32_t(box_rows)};
  const cuuint32_t elem_strides[2] = {1, 1};
  const CUresult r = tensor_map_encoder()(
      &m, op == Operand::fp16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2,
      const_cast<void*>(base), dims, strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
      CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  FLASHKM_CHECK(r == CUDA_SUCCESS, internal, "cuTensorMapEncodeTiled failed (CUresult ", int(r), ")");
  return m;
}

/// Tensor map of the centroid operands [B*kp x dp]: one box = one D chunk of one centroid tile.
CUtensorMap centroid_tensor_map(const AssignParams& p, Operand op) {
  const std::uint64_t rows = p.problems ? std::uint64_t(p.c_rows_total) : std::uint64_t(p.batch) * std::uint64_t(p.kp);
  FLASHKM_ASSERT(rows < (std::uint64_t(1) << 31), "wgmma FlashAssign: B*kp centroid rows exceed the TMA coordinate range");
  return b16_tensor_map(p.c, op, rows, std::uint64_t(p.dp), std::uint64_t(p.dp), 128);
}

}  // namespace

/// Tensor map of the rows [rows of x x d] when TMA can read them as they are (the operand
/// type, 16-byte rows and base, every problem's row 0 a row of the map), and the RowsMode.
/// Columns past d and rows past x's end read as zeros; rows past a problem's end (the next
/// problem's) are multiplied but never written (finish's row < n).
CUtensorMap rows_tensor_map(const AssignParams& p, Operand op, int bm, int& mode) {
  mode = kRowsByConsumers;
  const DType want = op == Operand::fp16 ? DType::f16 : DType::bf16;
  if (p.x_dtype != want || p.x_stride % 8 != 0 || p.x_stride < p.d || (reinterpret_cast<std::uintptr_t>(p.x) & 15) != 0)
    return CUtensorMap{};
  constexpr std::uint64_t kMaxRow = 0x7fffffff;  // TMA coordinates are int32
  std::uint64_t rows = 0;
  if (p.problems) {  // ragged: problem b's row 0 is row problems[b].row_begin of x
    if (p.x_rows > 0) {
      rows = std::uint64_t(p.x_rows);
      mode = kRowsTma;
    } else {
      rows = kMaxRow;  // x's end unknown: only tiles inside their problem (tma_row)
      mode = kRowsTmaInProblem;
    }
  } else {  // equal problems: problem b's row 0 is row b * x_batch / x_stride
    if (p.batch > 1 && p.x_batch % p.x_stride != 0) return CUtensorMap{};
    rows = std::uint64_t(p.batch - 1) * std::uint64_t(p.x_batch / p.x_stride) + std::uint64_t(p.n);
    mode = kRowsTma;
  }
  if (mode == kRowsTma && rows + std::uint64_t(bm) > kMaxRow) {
    mode = kRowsByConsumers;
    return CUtensorMap{};
  }
  return b16_tensor_map(p.x, op, rows, std::uint64_t(p.d), std::uint64_t(p.x_stride), bm);
}

void dispatch(const AssignParams& p, Operand op, const CUtensorMap& cmap, cudaStream_t s) {
  static_assert(kSm90MaxChunks == 12, "one case per chunk count below (and in CMakeLists.txt)");
  switch (p.dp / kChunkD) {
    case 1: return launch_chunks<1>(p, op, cmap, s);
    case 2: return launch_chunks<2>(p, op, cmap, s);
    case 3: return launch_chunks<3>(p, op, cmap, s);
    case 4: return launch_chunks<4>(p, op, cmap, s);
    case 5: return launch_chunks<5>(p, op, cmap, s);
    case 6: return launch_chunks<6>(p, op, cmap, s);
    case 7: return launch_chunks<7>(p, op, cmap, s);
    case 8: return launch_chunks<8>(p, op, cmap, s);
    case 9: return launch_chunks<9>(p, op, cmap, s);
    case 10: return launch_chunks<10>(p, op, cmap, s);
    case 11: return launch_chunks<11>(p, op, cmap, s);
    default: return launch_chunks<12>(p, op, cmap, s);
  }
}

}  // namespace sm90

bool sm90_wgmma_supported(int cc) {
  if (cc != 90) return false;
  // The build must hold sm_90a machine code for the kernel (not only the sm_80 target's).
  cudaFuncAttributes attr{};
  if (sm90::kernel_attributes<2>(&attr) != cudaSuccess) {
    (void)cudaGetLastError();
    return false;
  }
  return attr.binaryVersion == 90;
}

void launch_flash_assign_sm90(const AssignParams& p, Operand op, cudaStream_t s) {
  if (p.tiles ? p.n_tiles == 0 : (p.n == 0 || p.batch == 0)) return;
  FLASHKM_CHECK(p.dp <= kMaxWgmmaDp && p.dp % kChunkD == 0 && p.kp % 128 == 0, invalid_argument,
                "tile config wgmma_sm90 needs d <= ", kMaxWgmmaDp, " (got padded d ", p.dp, ", padded k ", p.kp, ")");
  FLASHKM_CHECK(p.x_dtype == DType::f32 || p.x_dtype == DType::f16 || p.x_dtype == DType::bf16 ||
                    p.x_dtype == DType::f64,
                invalid_argument, "wgmma FlashAssign: unsupported input dtype ", to_string(p.x_dtype));
  FLASHKM_ASSERT(p.row_map == nullptr || (p.cand_pairs != nullptr && p.n_dev == nullptr && (p.batch == 1 || p.problems)),
                 "wgmma FlashAssign takes a row map only as the cascade's candidate level (host-known counts)");
  FLASHKM_CHECK(op == Operand::fp16 || op == Operand::bf16, internal,
                "launch_flash_assign_sm90: operand must be fp16 or bf16");
  sm90::dispatch(p, op, sm90::centroid_tensor_map(p, op), s);
}

}  // namespace flashkm::cuda
