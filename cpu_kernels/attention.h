// Attention operators of the DeepSeek V3 family on the CPU: MLA in the absorbed (latent)
// form for one query head, and the V3.2 lightning-indexer score. fp32 in, fp32 accumulation.
#pragma once

#include <cstdint>

#include "runtime/backend/backend.h"

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

// V3.2 lightning-indexer scores of one query against n_keys cached index keys [n_keys, dim]:
//   out[s] = sum_h head_weight[h] * scale * ReLU(q[h] . key[s])     (q is [heads, dim])
void indexer_scores(const float* q, const float* head_weight, const float* keys, int64_t heads, int64_t dim,
                    int64_t n_keys, float scale, float* out);

}  // namespace mt::cpu
