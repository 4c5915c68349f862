// Dense weights in the packed layout (WeightView dtype Q4_PACKED / Q8_PACKED, written by
// `moetier convert --dense q4|q8`): y = x W^T for any number of tokens through the routed-expert
// GEMV kernels (int8 activations, exact int32 group sums, fp32 scales), threads over row tiles.
// The reference backend decodes the same bytes element by element (cpu::dequantize_rows): the
// oracle of tests/unit/test_backend_ops.cpp.
#pragma once

#include <cstdint>
#include <memory>

#include "cpu_kernels/expert_ffn.h"
#include "runtime/core/weight_view.h"

namespace mt::cpu {

// Bytes of a packed matrix of this dtype (packed_matrix_bytes of runtime/core/expert_format.h).
size_t packed_weight_bytes(DType packed, int64_t rows, int64_t cols, int64_t group);
// w [rows, cols] fp32 -> dst (packed_weight_bytes bytes, all written). group divides cols and
// is a multiple of 8 (Q4) or 4 (Q8); throws std::invalid_argument otherwise.
void pack_weight(DType packed, const float* w, int64_t rows, int64_t cols, int64_t group, uint8_t* dst);
// Rows [r0, r0 + n) of a [rows, cols] matrix (fp32 in `w_rows`, n*cols values) packed into their
// places in `dst` (packed_weight_bytes(rows); zero it first), so that a large matrix is packed a
// slab at a time: r0 a multiple of the 16-row tile, n too unless the slab ends the matrix. The
// slabs together give exactly pack_weight's bytes.
void pack_weight_rows(DType packed, const float* w_rows, int64_t r0, int64_t n, int64_t rows, int64_t cols,
                      int64_t group, uint8_t* dst);

// The quantised activations, reused from call to call (no per-token allocation once warm).
class PackedMatmulScratch {
 public:
  PackedMatmulScratch();
  ~PackedMatmulScratch();
  PackedMatmulScratch(PackedMatmulScratch&&) noexcept;
  PackedMatmulScratch& operator=(PackedMatmulScratch&&) noexcept;
  size_t bytes() const;
  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// y[t, r] = sum_k W[r, k] x[t, k]; x [n, cols], y [n, rows]. False (nothing written) when w is
// not a packed view.
bool packed_matmul(const WeightView& w, const float* x, int64_t n, float* y, const ExpertKernelConfig& cfg,
                   PackedMatmulScratch& scratch);

}  // namespace mt::cpu
