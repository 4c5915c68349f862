// Decoding GGUF tensors (ggml's block formats) to fp32: the reference, scalar and exact. It
// computes each value as ggml's reference dequantisation does (gguf-py's NumPy code is the
// same arithmetic): an fp32 product of the block's scale and the code, less the block's min
// where the format has one, rounded after each operation (no fused multiply-add). The test
// holds it to gguf-py's output bit for bit.
#pragma once

#include <cstdint>

#include "runtime/core/ggml_types.h"

namespace mt::cpu {

// Whether ggml_dequantize decodes this GgmlType id: F32, F16, BF16, Q8_0, Q2_K..Q6_K, and the
// legacy Q4_0, Q4_1, Q5_0, Q5_1 (no SIMD GEMV: the scalar path runs them).
bool ggml_can_dequantize(uint32_t type);
// n values (a whole number of the type's blocks) from src into dst.
void ggml_dequantize(uint32_t type, const uint8_t* src, int64_t n, float* dst);

using mt::ggml_k4_scales;  // runtime/core/ggml_types.h (shared by the decoder, the GEMV kernels, tiles)

}  // namespace mt::cpu
