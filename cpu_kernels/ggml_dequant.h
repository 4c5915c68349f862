// Decoding GGUF tensors (ggml's block formats) to fp32: the reference, scalar and exact. It
// computes each value as ggml's reference dequantisation does (gguf-py's NumPy code is the
// same arithmetic): an fp32 product of the block's scale and the code, less the block's min
// where the format has one, rounded after each operation (no fused multiply-add). The test
// holds it to gguf-py's output bit for bit.
#pragma once

#include <cstdint>

namespace mt::cpu {

// Whether ggml_dequantize decodes this GgmlType id: F32, F16, BF16, Q8_0, Q2_K..Q6_K, and the
// legacy Q4_0, Q4_1, Q5_0, Q5_1 (no SIMD GEMV: the scalar path runs them).
bool ggml_can_dequantize(uint32_t type);
// n values (a whole number of the type's blocks) from src into dst.
void ggml_dequantize(uint32_t type, const uint8_t* src, int64_t n, float* dst);

// The 6-bit scales and mins of Q4_K and Q5_K's 8 sub-blocks of 32, packed in the block's 12
// scale bytes `s` (shared by the decoder and the GEMV kernels).
inline void ggml_k4_scales(const uint8_t* s, int* sc, int* m) {
  for (int g = 0; g < 4; ++g) sc[g] = s[g] & 63, m[g] = s[g + 4] & 63;
  for (int g = 4; g < 8; ++g) sc[g] = (s[g + 4] & 15) | ((s[g - 4] >> 6) << 4), m[g] = (s[g + 4] >> 4) | ((s[g] >> 6) << 4);
}

}  // namespace mt::cpu
