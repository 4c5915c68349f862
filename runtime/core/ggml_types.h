// The tensor types of ggml (the GGUF files of llama.cpp): ids, block sizes and bytes per block,
// for every type a GGUF may hold, so that any file's sizes can be checked and planned even
// where moetier has no kernel for a type. Values from ggml's type table (ggml.h, gguf-py's
// GGML_QUANT_SIZES).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

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
// Byte offsets, within one block, of the fp16 scale fields of Q4_0..Q8_0 and Q2_K..Q6_K (empty for
// other types): what a maker of valid random blocks (tests, benchmarks) must keep finite.
std::vector<int> ggml_f16_scale_offsets(uint32_t type);
// Fills `blocks` blocks of `type` at dst with random bytes, then the fp16 scale fields with
// finite N(0, scale_sd) values: valid random weights for tests and benchmarks. Deterministic in seed.
void ggml_fill_random_blocks(uint32_t type, uint8_t* dst, int64_t blocks, uint32_t seed, float scale_sd = 0.05f);

// The 6-bit scales and mins of Q4_K and Q5_K's 8 sub-blocks of 32, packed in the block's 12
// scale bytes `s`.
inline void ggml_k4_scales(const uint8_t* s, int* sc, int* m) {
  for (int g = 0; g < 4; ++g) sc[g] = s[g] & 63, m[g] = s[g + 4] & 63;
  for (int g = 4; g < 8; ++g) sc[g] = (s[g + 4] & 15) | ((s[g - 4] >> 6) << 4), m[g] = (s[g + 4] >> 4) | ((s[g] >> 6) << 4);
}

}  // namespace mt
