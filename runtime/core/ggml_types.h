// The tensor types of ggml (the GGUF files of llama.cpp): ids, block sizes and bytes per block,
// for every type a GGUF may hold, so that any file's sizes can be checked and planned even
// where moetier has no kernel for a type. Values from ggml's type table (ggml.h, gguf-py's
// GGML_QUANT_SIZES).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/core/dtype.h"

namespace mt {

enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
  I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30, TQ1_0 = 34, TQ2_0 = 35,
};

struct GgmlTypeInfo {
  const char* name;
  int64_t block;  // elements per block (along the innermost dimension)
  int64_t bytes;  // bytes per block
};

// Null for an id this table does not know (a newer ggml type, or a corrupt file).
const GgmlTypeInfo* ggml_type_info(uint32_t type);
// Bytes of one row of `cols` values (a whole number of blocks); 0 for an unknown type.
inline uint64_t ggml_row_bytes(uint32_t type, int64_t cols) {
  const GgmlTypeInfo* t = ggml_type_info(type);
  return t ? uint64_t(cols / t->block) * uint64_t(t->bytes) : 0;
}
// The type's name, or "type N" for an unknown id.
std::string ggml_type_name(uint32_t type);
// The DType a GGUF matrix of a float type (F32, F16, BF16) is as stored; none for block types.
std::optional<DType> ggml_float_dtype(uint32_t type);
// Its inverse: the ggml type id of a float DType (F32, F16, BF16); none for any other DType.
std::optional<uint32_t> ggml_float_type(DType dtype);
// Byte offsets, within one block, of the fp16 scale fields of Q4_0..Q8_0 and Q2_K..Q6_K (empty for
// other types): what a maker of valid random blocks (tests, benchmarks) must keep finite.
std::vector<int> ggml_f16_scale_offsets(uint32_t type);
// Fills `blocks` blocks of `type` at dst with random bytes, then the fp16 scale fields with
// finite N(0, scale_sd) values: valid random weights for tests and benchmarks. F32, F16 and BF16
// get N(0, scale_sd) values throughout. Deterministic in seed.
void ggml_fill_random_blocks(uint32_t type, uint8_t* dst, int64_t blocks, uint32_t seed, float scale_sd = 0.05f);

// The 6-bit scales and mins of Q4_K and Q5_K's 8 sub-blocks of 32, packed in the block's 12
// scale bytes `s`.
inline void ggml_k4_scales(const uint8_t* s, int* sc, int* m) {
  for (int g = 0; g < 4; ++g) sc[g] = s[g] & 63, m[g] = s[g + 4] & 63;
  for (int g = 4; g < 8; ++g) sc[g] = (s[g + 4] & 15) | ((s[g - 4] >> 6) << 4), m[g] = (s[g + 4] >> 4) | ((s[g] >> 6) << 4);
}

// The code of value t (0..255) of a K-quant block at b, as stored (by the layouts of ggml's
// dequantize_row_*): Q2_K 0..3; Q3_K 0..7 (the value is code - 4); Q4_K 0..15; Q5_K 0..31; Q6_K
// 0..63 (the value is code - 32). And Q3_K's 6-bit scale of group g (0..63; the scale is s - 32).
inline int ggml_q2k_code(const uint8_t* b, int t) { return (b[16 + (t / 128) * 32 + t % 32] >> (2 * ((t % 128) / 32))) & 3; }
inline int ggml_q3k_code(const uint8_t* b, int t) {
  return ((b[32 + (t / 128) * 32 + t % 32] >> (2 * ((t % 128) / 32))) & 3) | (((b[t % 32] >> (t / 32)) & 1) << 2);
}
inline int ggml_q3k_scale(const uint8_t* b, int g) {
  return ((b[96 + g % 8] >> (4 * (g / 8))) & 15) | (((b[104 + g % 4] >> (2 * (g / 4))) & 3) << 4);
}
inline int ggml_q4k_code(const uint8_t* b, int t) { return (b[16 + (t / 64) * 32 + t % 32] >> (4 * ((t / 32) % 2))) & 15; }
inline int ggml_q5k_code(const uint8_t* b, int t) {
  return ((b[48 + (t / 64) * 32 + t % 32] >> (4 * ((t / 32) % 2))) & 15) | (((b[16 + t % 32] >> (t / 32)) & 1) << 4);
}
inline int ggml_q6k_code(const uint8_t* b, int t) {
  const int h = t / 128, r = t % 128;
  return ((b[h * 64 + r % 64] >> (4 * (r / 64))) & 15) | (((b[128 + h * 32 + r % 32] >> (2 * (r / 32))) & 3) << 4);
}

}  // namespace mt
