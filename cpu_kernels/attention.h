// Attention operators of the DeepSeek V3 family on the CPU: MLA in the absorbed (latent)
// form for one query head, and the V3.2 lightning-indexer score. fp32 in, fp32 accumulation.
#pragma once

#include <cstdint>

#include "runtime/backend/backend.h"
#include "runtime/core/weight_view.h"

namespace mt::cpu {

using mt::MlaHeadDims;  // runtime/backend/backend.h

// One query head over the cached keys `keys[0..n_keys)` (positions into the caches):
//   q~ = W_UK^T q_nope;  s_i = scale * (q~ . c_kv[k_i] + q_rope . k_rope[k_i]);  P = softmax(s)
//   out = W_UV (sum_i P_i c_kv[k_i])
// w_uk is [nope, latent] and w_uv is [v, latent] (this head's rows of kv_b_proj, fp32);
// latent_cache is [*, latent] and rope_cache [*, rope], row-major. scratch holds at least
// 2*latent + n_keys floats. Equal to the naive form that expands per-head K and V.
void mla_attend_head(const float* q_nope, const float* q_rope, const float* w_uk, const float* w_uv,
                     const float* latent_cache, const float* rope_cache, const int32_t* keys, int64_t n_keys,
                     const MlaHeadDims& d, float scale, float* out, float* scratch);

// The same, compiled for AVX2 / AVX-512 (call only where the CPU has them); MlaHeadFn picks.
void mla_attend_head_avx2(const float* q_nope, const float* q_rope, const float* w_uk, const float* w_uv,
                          const float* latent_cache, const float* rope_cache, const int32_t* keys, int64_t n_keys,
                          const MlaHeadDims& d, float scale, float* out, float* scratch);
void mla_attend_head_avx512(const float* q_nope, const float* q_rope, const float* w_uk, const float* w_uv,
                            const float* latent_cache, const float* rope_cache, const int32_t* keys, int64_t n_keys,
                            const MlaHeadDims& d, float scale, float* out, float* scratch);
// One query head straight from kv_b as stored (F32, BF16, F16, or F8_E4M3 with a scale block a
// multiple of 16; this head's rows start at row0: W_UK then W_UV), each row decoded into a
// buffer in L1 as it is used: a single query reads the head's weights once, at their stored
// size, and never materialises them in fp32. scratch: 3*latent + n_keys floats. Equal to
// mla_attend_head on the decoded rows, bit for bit.
void mla_attend_head_stored_avx2(const float* q_nope, const float* q_rope, const WeightView& kv_b, int64_t row0,
                                 const float* latent_cache, const float* rope_cache, const int32_t* keys, int64_t n_keys,
                                 const MlaHeadDims& d, float scale, float* out, float* scratch);
void mla_attend_head_stored_avx512(const float* q_nope, const float* q_rope, const WeightView& kv_b, int64_t row0,
                                   const float* latent_cache, const float* rope_cache, const int32_t* keys,
                                   int64_t n_keys, const MlaHeadDims& d, float scale, float* out, float* scratch);
using MlaHeadFn = decltype(&mla_attend_head);
// isa_level (already clamped to the CPU's): 0 baseline, 1 AVX2, 2 AVX-512.
inline MlaHeadFn mla_head_for(int isa_level) {
  return isa_level >= 2 ? mla_attend_head_avx512 : isa_level == 1 ? mla_attend_head_avx2 : mla_attend_head;
}

// V3.2 lightning-indexer scores of one query against n_keys cached index keys [n_keys, dim]:
//   out[s] = sum_h head_weight[h] * scale * ReLU(q[h] . key[s])     (q is [heads, dim])
void indexer_scores(const float* q, const float* head_weight, const float* keys, int64_t heads, int64_t dim,
                    int64_t n_keys, float scale, float* out);

}  // namespace mt::cpu
