#include "cpu_kernels/attention.h"

#include <algorithm>

#include "cpu_kernels/ops.h"

namespace mt::cpu {

#include "cpu_kernels/mla_head_body.h"

void mla_attend_head(const float* q_nope, const float* q_rope, const float* w_uk, const float* w_uv,
                     const float* latent_cache, const float* rope_cache, const int32_t* keys, int64_t n_keys,
                     const MlaHeadDims& d, float scale, float* out, float* scratch) {
  mla_attend_head_body(q_nope, q_rope, w_uk, w_uv, latent_cache, rope_cache, keys, n_keys, d, scale, out, scratch);
}

void indexer_scores(const float* q, const float* head_weight, const float* keys, int64_t heads, int64_t dim,
                    int64_t n_keys, float scale, float* out) {
  for (int64_t s = 0; s < n_keys; ++s) {
    const float* k = keys + s * dim;
    float acc = 0.0f;
    for (int64_t h = 0; h < heads; ++h) {
      const float* qh = q + h * dim;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < dim; ++j) dot += qh[j] * k[j];
      acc += head_weight[h] * scale * std::max(dot, 0.0f);
    }
    out[s] = acc;
  }
}

}  // namespace mt::cpu
