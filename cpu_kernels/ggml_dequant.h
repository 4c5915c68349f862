// Decoding GGUF tensors (ggml's block formats) to fp32: the reference, scalar and exact. It
// computes each value as ggml's reference dequantisation does (gguf-py's NumPy code is the
// same arithmetic): an fp32 product of the block's scale and the code, less the block's min
// where the format has one, rounded after each operation (no fused multiply-add). The test
// holds it to gguf-py's output bit for bit.
#pragma once

#include <cstdint>

namespace mt::cpu {

// Whether ggml_dequantize decodes this GgmlType id: F32, F16, BF16, Q8_0, Q2_K..Q6_K.
bool ggml_can_dequantize(uint32_t type);
// n values (a whole number of the type's blocks) from src into dst.
void ggml_dequantize(uint32_t type, const uint8_t* src, int64_t n, float* dst);

}  // namespace mt::cpu
