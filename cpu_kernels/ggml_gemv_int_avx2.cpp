// The GGUF block GEMV's Int8 path on AVX2 (cpu_kernels/ggml_gemv.h): the row dots of
// ggml_gemv_int_body.h with vpmaddubsw + vpmaddwd, and the activation quantiser every SIMD
// level uses (bit-identical to quantize_act_scalar).
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "cpu_kernels/ggml_gemv.h"
#include "runtime/core/ggml_types.h"

namespace mt::cpu::ggml_gemv_detail {

namespace int_avx2 {

inline __m256i dot_u8s8(__m256i acc, __m256i u, __m256i s) {
  return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
}
inline __m256i madd_acc(__m256i acc, __m256i p, __m256i s) { return _mm256_add_epi32(acc, _mm256_madd_epi16(p, s)); }

#include "cpu_kernels/ggml_gemv_int_body.h"

}  // namespace int_avx2

IntRowDot avx2_int_row_dot(uint32_t type, int nt) { return int_avx2::int_kernel_for(type, nt); }

void quantize_act_avx2(const float* x, int64_t blocks, int64_t block, int8_t* q, float* d, int16_t* bsum) {
  const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7), bias = _mm256_set1_epi8(char(0x80));
  for (int64_t b = 0; b < blocks; ++b) {
    const float* xb = x + b * block;
    int8_t* qb = q + b * block;
    int16_t* sb = bsum + b * block / 16;
    __m256 mx = _mm256_setzero_ps();
    for (int64_t k = 0; k < block; k += 8) mx = _mm256_max_ps(mx, _mm256_and_ps(_mm256_loadu_ps(xb + k), absmask));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    const float amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)));
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    d[b] = amax / 127.0f;
    const __m256 vid = _mm256_set1_ps(id);
    for (int64_t k = 0; k < block; k += 32) {
      __m256i i[4];
      for (int j = 0; j < 4; ++j) i[j] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + k + 8 * j), vid));
      // packs work per 128-bit half: dwords come out as 0lo 1lo 2lo 3lo 0hi 1hi 2hi 3hi.
      const __m256i p = _mm256_permutevar8x32_epi32(
          _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3])), order);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qb + k), p);
      // Sums of 8 codes + 128 each in the four 64-bit lanes.
      alignas(32) uint64_t s[4];
      _mm256_store_si256(reinterpret_cast<__m256i*>(s), _mm256_sad_epu8(_mm256_xor_si256(p, bias), _mm256_setzero_si256()));
      sb[k / 16] = static_cast<int16_t>(int64_t(s[0] + s[1]) - 16 * 128);
      sb[k / 16 + 1] = static_cast<int16_t>(int64_t(s[2] + s[3]) - 16 * 128);
    }
  }
}

}  // namespace mt::cpu::ggml_gemv_detail
