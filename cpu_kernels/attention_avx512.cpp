// cpu::mla_attend_head compiled for AVX512 (the same source, cpu_kernels/mla_head_body.h;
// entered only after the CPU check).
#include <algorithm>

#include "cpu_kernels/attention.h"
#include "cpu_kernels/dense_gemv.h"
#include "cpu_kernels/ops.h"

namespace mt::cpu {

namespace avx512_impl {
#include "cpu_kernels/mla_head_body.h"
}  // namespace avx512_impl

void mla_attend_head_avx512(const float* q_nope, const float* q_rope, const float* w_uk, const float* w_uv,
                        const float* latent_cache, const float* rope_cache, const int32_t* keys, int64_t n_keys,
                        const MlaHeadDims& d, float scale, float* out, float* scratch) {
  avx512_impl::mla_attend_head_body(q_nope, q_rope, w_uk, w_uv, latent_cache, rope_cache, keys, n_keys, d, scale, out,
                                 scratch);
}

void mla_attend_head_stored_avx512(const float* q_nope, const float* q_rope, const WeightView& kv_b, int64_t row0,
                               const float* latent_cache, const float* rope_cache, const int32_t* keys, int64_t n_keys,
                               const MlaHeadDims& d, float scale, float* out, float* scratch) {
  const gemv_detail::DecodeRowsFn decode = gemv_detail::avx512_decode_rows();
  float* row = scratch + 2 * d.latent + n_keys;  // one decoded row, in L1
  avx512_impl::mla_attend_head_rows(
      q_nope, q_rope,
      [&](int64_t j) {
        decode(kv_b, row0 + j, 1, row);
        return static_cast<const float*>(row);
      },
      [&](int64_t i) {
        decode(kv_b, row0 + d.nope + i, 1, row);
        return static_cast<const float*>(row);
      },
      latent_cache, rope_cache, keys, n_keys, d, scale, out, scratch);
}

}  // namespace mt::cpu
