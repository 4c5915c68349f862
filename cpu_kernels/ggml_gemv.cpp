#include "cpu_kernels/ggml_gemv.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "cpu_kernels/expert_ffn_internal.h"  // cpu_isa_level
#include "cpu_kernels/ggml_dequant.h"
#include "runtime/core/ggml_types.h"

namespace mt::cpu {

namespace {

// The scalar path: each block decoded by the reference decoder, then dotted in fp32.
void rows_scalar(uint32_t type, const GgmlTypeInfo& ti, const uint8_t* w, int64_t r0, int64_t r1, int64_t cols,
                 const float* x, float* y) {
  const int64_t blocks = cols / ti.block, row_bytes = blocks * ti.bytes;
  float tmp[256];
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w + r * row_bytes;
    float acc = 0.0f;
    for (int64_t b = 0; b < blocks; ++b) {
      ggml_dequantize(type, row + b * ti.bytes, ti.block, tmp);
      const float* xb = x + b * ti.block;
      for (int64_t k = 0; k < ti.block; ++k) acc += tmp[k] * xb[k];
    }
    y[r] = acc;
  }
}

}  // namespace

bool ggml_gemv_has_kernel(uint32_t type, int isa_level) {
  if (isa_level >= 2) return ggml_gemv_detail::avx512_row_dot(type) != nullptr;
  if (isa_level == 1) return ggml_gemv_detail::avx2_row_dot(type) != nullptr;
  return ggml_can_dequantize(type);
}

void ggml_gemv(uint32_t type, const uint8_t* w, int64_t rows, int64_t cols, const float* x, float* y, int isa_level) {
  const GgmlTypeInfo* ti = ggml_type_info(type);
  if (!ti || !ggml_can_dequantize(type) || cols % ti->block != 0)
    throw std::invalid_argument("ggml_gemv: " + ggml_type_name(type) + " rows of " + std::to_string(cols));
  const int level = std::min(isa_level, expert_detail::cpu_isa_level());
  ggml_gemv_detail::RowDot dot = level >= 2 ? ggml_gemv_detail::avx512_row_dot(type)
                                 : level == 1 ? ggml_gemv_detail::avx2_row_dot(type)
                                              : nullptr;
  const int64_t blocks = cols / ti->block, row_bytes = blocks * ti->bytes;
  // Chunks of rows big enough that a thread streams, small enough to balance.
  constexpr int64_t kChunk = 16;
  const int64_t chunks = (rows + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(dynamic, 4) if (rows * row_bytes > (int64_t{1} << 18))
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t r0 = c * kChunk, r1 = std::min(rows, r0 + kChunk);
    if (!dot) {
      rows_scalar(type, *ti, w, r0, r1, cols, x, y);
      continue;
    }
    for (int64_t r = r0; r < r1; ++r) y[r] = dot(w + r * row_bytes, x, blocks);
  }
}

}  // namespace mt::cpu
