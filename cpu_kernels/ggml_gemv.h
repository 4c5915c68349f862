// Decode-sized products straight from a GGUF tensor's own blocks: y[r] = sum_k W[r, k] x[k] for
// one token, W as llama.cpp stores it (rows of blocks, no repacking). Activations stay fp32: each
// block is decoded in registers and multiplied in fp32, so the result equals the reference
// decoder's (ggml_dequant.h) product to within fp32 accumulation error (a K-quant row's min
// term is summed apart, Σ(d·sc)·q·x − Σ(dmin·m)·x, so the two sums may cancel), with no
// activation quantisation.
//   level 2 (AVX-512) and 1 (AVX2): Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K;
//   level 0 (scalar), and F32/F16/BF16 (whose products are dense_gemv's): a block is decoded
//   to fp32 by the reference decoder, then dotted.
// Rows are split over OpenMP threads.
#pragma once

#include <cstdint>

namespace mt::cpu {

// Whether `type` has a SIMD kernel at `isa_level` (level 0: whether it is decodable at all).
bool ggml_gemv_has_kernel(uint32_t type, int isa_level);
// rows x cols of `type` at w (rows back to back; cols a whole number of blocks), x [cols], y [rows].
// isa_level is clamped to this CPU's. The type must be decodable (ggml_can_dequantize).
void ggml_gemv(uint32_t type, const uint8_t* w, int64_t rows, int64_t cols, const float* x, float* y, int isa_level);

namespace ggml_gemv_detail {
// The dot product of one row (`blocks` blocks at row) with x.
using RowDot = float (*)(const uint8_t* row, const float* x, int64_t blocks);
RowDot avx512_row_dot(uint32_t type);  // null where the type has no kernel
RowDot avx2_row_dot(uint32_t type);
}  // namespace ggml_gemv_detail

}  // namespace mt::cpu
