// Decode-sized products straight from a GGUF tensor's own blocks: y[r] = sum_k W[r, k] x[k] for
// one token (or a few), W as llama.cpp stores it (rows of blocks, no repacking). Two paths:
//
// Int8 (the default, what the model uses): x is quantised once per call to 8-bit blocks, then
// each weight block is multiplied as bytes and its integer sums scaled in fp32 (as llama.cpp
// does with its Q8_K / Q8_0 activations):
//   - activation blocks: 256 values for the K-quants, 32 for Q8_0; each an fp32 scale
//     d = max|x| / 127 and codes q = round-half-even(x * 127 / max|x|) in -127..127 (x ~= d q),
//     plus the sums of the codes per 16 values (the K-quants' min terms, Q3_K/Q6_K's offsets);
//   - per weight (sub-)block the dot of codes is an exact int32 (vpdpbusd / vpdpwssd on AVX-512
//     VNNI, vpmaddubsw + vpmaddwd on AVX2), scaled once per block by (weight scale) x d;
//   - so y differs from the reference decoder's product by at most sum_k |W[r,k]| d(k) / 2 (the
//     activation rounding), plus fp32 rounding of the scaled block sums.
//   Level 2 (AVX-512 with VNNI: cpu_isa_level() requires it) and level 1 (AVX2) have kernels for
//   Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K. Level 0 and F32/F16/BF16 take the Fp32 path.
// Fp32 (exact): each block decoded in registers and multiplied by the fp32 activations, so y
// equals the reference decoder's (ggml_dequant.h) product to fp32 accumulation error (a K-quant
// row's min term is summed apart, Σ(d·sc)·q·x − Σ(dmin·m)·x, so the two sums may cancel):
//   level 2 (AVX-512) and 1 (AVX2): Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K;
//   level 0 (scalar), and F32/F16/BF16 (whose products are dense_gemv's): a block is decoded
//   to fp32 by the reference decoder, then dotted.
// Rows are split over OpenMP threads (with the activation blocks' quantisation before them).
// Scratch for the quantised activations is allocated per call; no kernel keeps state.
#pragma once

#include <cstdint>
#include <vector>

namespace mt::cpu {

enum class GgmlGemvPath { Int8, Fp32 };

// Whether `type` has a SIMD kernel for `path` at `isa_level` (level 0: whether it is decodable
// at all; it then runs the scalar Fp32 path whatever the path asked).
bool ggml_gemv_has_kernel(uint32_t type, int isa_level, GgmlGemvPath path = GgmlGemvPath::Int8);
// rows x cols of `type` at w (rows back to back; cols a whole number of blocks), x [cols], y [rows].
// isa_level is clamped to this CPU's. The type must be decodable (ggml_can_dequantize); x finite.
void ggml_gemv(uint32_t type, const uint8_t* w, int64_t rows, int64_t cols, const float* x, float* y, int isa_level,
               GgmlGemvPath path = GgmlGemvPath::Int8);
// n tokens: x [n][cols], y [n][rows]. The Int8 kernels take up to 4 tokens per pass over W (each
// weight block decoded once, dotted with every token's codes); more are done 4 at a time. Each
// token's y is what ggml_gemv gives it alone, up to fp32 rounding.
void ggml_gemv_tokens(uint32_t type, const uint8_t* w, int64_t rows, int64_t cols, int64_t n, const float* x,
                      float* y, int isa_level, GgmlGemvPath path = GgmlGemvPath::Int8);

namespace ggml_gemv_detail {

// --- Fp32 path ---
// The dot product of one row (`blocks` blocks at row) with x.
using RowDot = float (*)(const uint8_t* row, const float* x, int64_t blocks);
RowDot avx512_row_dot(uint32_t type);  // null where the type has no kernel
RowDot avx2_row_dot(uint32_t type);

// --- Int8 path ---
inline constexpr int kMaxTokens = 4;  // tokens per pass of the Int8 kernels
// Values per activation block for a weight type: 32 for Q8_0, 256 for the K-quants.
int64_t act_block(uint32_t type);
// One token's quantised activations (row of `cols` values): q [cols] codes, d [cols / block]
// scales, bsum [cols / 16] sums of the codes per 16 (Q2_K, Q3_K, Q6_K), bsum32 [cols / 32] per 32
// (Q4_K, Q5_K's mins); Q8_0 reads neither.
struct Q8Act {
  const int8_t* q = nullptr;
  const float* d = nullptr;
  const int16_t* bsum = nullptr;
  const int16_t* bsum32 = nullptr;
  // Each 16-value group's sum in the low int16 of a dword whose high int16 is 0: one vpmaddwd of
  // it by a lane (s, s) gives s · sum, whatever the scale's lane holds in its high half. Set by
  // quantise_acts for Q2_K, Q3_K and Q6_K only (their tile kernels read it); null otherwise.
  const uint32_t* bsum_w = nullptr;
};
// Quantises `blocks` activation blocks of `block` values (32 or 256) at x into q, d, bsum (each
// at its block's place). Every ISA's version gives bit-identical results.
using QuantFn = void (*)(const float* x, int64_t blocks, int64_t block, int8_t* q, float* d, int16_t* bsum);
void quantize_act_scalar(const float* x, int64_t blocks, int64_t block, int8_t* q, float* d, int16_t* bsum);
void quantize_act_avx2(const float* x, int64_t blocks, int64_t block, int8_t* q, float* d, int16_t* bsum);
// nt (<= kMaxTokens) tokens of `cols` values at x quantised for a weight type: act[t] points
// into the vectors. Per call, in the calling thread; no kernel keeps state.
struct QuantisedActs {
  std::vector<int8_t> q;
  std::vector<float> d;
  std::vector<int16_t> bsum, bsum32;
  std::vector<uint32_t> bsum_w;
  Q8Act act[kMaxTokens];
};
void quantise_acts(uint32_t type, const float* x, int64_t cols, int64_t nt, QuantisedActs& out);
// out[t] = the dot of one row (`blocks` weight blocks at row) with token t's activations, t < nt.
// The kernel prefetches kPrefetch bytes ahead of the block it reads while that stays before
// `stream_end` (the end of the rows the thread streams; the next ones are usually elsewhere).
inline constexpr int64_t kPrefetch = 2048;
using IntRowDot = void (*)(const uint8_t* row, const Q8Act* a, int64_t blocks, float* out, const uint8_t* stream_end);
IntRowDot avx512_int_row_dot(uint32_t type, int nt);  // nt in 1..kMaxTokens; null: no kernel
IntRowDot avx2_int_row_dot(uint32_t type, int nt);

// The Int8 path's model in plain C++ for the tests: the same activation quantisation
// (quantize_act_scalar), each (sub-)block's integer sums exact, scaled and summed in double.
// y[r] the product; mag[r] (when not null) the sum of the absolute values of the scaled terms
// added (the scale of the fp32 rounding a kernel may add).
void int_gemv_model(uint32_t type, const uint8_t* w, int64_t rows, int64_t cols, const float* x, double* y,
                    double* mag);
}  // namespace ggml_gemv_detail

}  // namespace mt::cpu
