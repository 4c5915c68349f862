// GGUF block GEMV row dots, AVX2 + FMA (cpu_kernels/ggml_gemv.h): the AVX-512 file's math on
// 8-lane vectors.
#include <immintrin.h>

#include <cstring>

#include "cpu_kernels/ggml_dequant.h"  // ggml_k4_scales
#include "cpu_kernels/ggml_gemv.h"
#include "runtime/core/ggml_types.h"

namespace mt::cpu::ggml_gemv_detail {

namespace {

inline float f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Bytes 0..7 and 8..15 of v, unsigned, as 8 floats each.
inline __m256 u8lo(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v)); }
inline __m256 u8hi(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(v, 8))); }

// sum over 16 codes (bytes of v) times x[0..16).
inline __m256 dot16(__m128i v, const float* x) {
  return _mm256_fmadd_ps(u8hi(v), _mm256_loadu_ps(x + 8), _mm256_mul_ps(u8lo(v), _mm256_loadu_ps(x)));
}

float dot_q8_0(const uint8_t* row, const float* x, int64_t blocks) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = row + b * 34;
    const float* xb = x + b * 32;
    __m256 s = _mm256_setzero_ps();
    for (int k = 0; k < 4; ++k) {
      const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(blk + 2 + 8 * k));
      s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), _mm256_loadu_ps(xb + 8 * k), s);
    }
    acc = _mm256_fmadd_ps(s, _mm256_set1_ps(f16(blk)), acc);
  }
  return hsum(acc);
}


float dot_q4_k(const uint8_t* row, const float* x, int64_t blocks) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = row + b * 144;
    const float* xb = x + b * 256;
    const float d = f16(blk), dmin = f16(blk + 2);
    int sc[8], m[8];
    ggml_k4_scales(blk + 4, sc, m);
    const uint8_t* qs = blk + 16;
    for (int c = 0; c < 4; ++c) {
      const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * c));
      const __m256i nib[2] = {_mm256_and_si256(bytes, low4), _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4)};
      for (int h = 0; h < 2; ++h) {
        const int g = 2 * c + h;
        const float* xs = xb + 64 * c + 32 * h;
        const __m256 s = _mm256_add_ps(dot16(_mm256_castsi256_si128(nib[h]), xs),
                                       dot16(_mm256_extracti128_si256(nib[h], 1), xs + 16));
        acc = _mm256_fmadd_ps(s, _mm256_set1_ps(d * float(sc[g])), acc);
        const __m256 xsum = _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(xs), _mm256_loadu_ps(xs + 8)),
                                          _mm256_add_ps(_mm256_loadu_ps(xs + 16), _mm256_loadu_ps(xs + 24)));
        accm = _mm256_fmadd_ps(xsum, _mm256_set1_ps(dmin * float(m[g])), accm);
      }
    }
  }
  return hsum(acc) - hsum(accm);
}

float dot_q6_k(const uint8_t* row, const float* x, int64_t blocks) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), low2 = _mm256_set1_epi8(0x03), k32 = _mm256_set1_epi8(32);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = row + b * 210;
    const uint8_t* ql = blk;
    const uint8_t* qh = blk + 128;
    const auto* sc = reinterpret_cast<const int8_t*>(blk + 192);
    const float d = f16(blk + 208);
    const float* xb = x + b * 256;
    for (int h = 0; h < 2; ++h) {
      const __m256i hbits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh + 32 * h));
      for (int j = 0; j < 4; ++j) {
        __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 64 * h + 32 * (j % 2)));
        if (j >= 2) lo = _mm256_srli_epi16(lo, 4);
        lo = _mm256_and_si256(lo, low4);
        const __m256i hi = _mm256_and_si256(_mm256_srl_epi16(hbits, _mm_cvtsi32_si128(2 * j)), low2);
        // 0..63 less 32, as signed bytes (exact): widened with sign below.
        const __m256i q = _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)), k32);
        const float* xs = xb + 128 * h + 32 * j;
        const int g = 8 * h + 2 * j;
        for (int half = 0; half < 2; ++half) {
          const __m128i v = half ? _mm256_extracti128_si256(q, 1) : _mm256_castsi256_si128(q);
          const __m256 s = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v, 8))),
                                           _mm256_loadu_ps(xs + 16 * half + 8),
                                           _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)),
                                                         _mm256_loadu_ps(xs + 16 * half)));
          acc = _mm256_fmadd_ps(s, _mm256_set1_ps(d * float(sc[g + half])), acc);
        }
      }
    }
  }
  return hsum(acc);
}

float dot_q5_k(const uint8_t* row, const float* x, int64_t blocks) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(0x01);
  __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = row + b * 176;
    const float* xb = x + b * 256;
    const float d = f16(blk), dmin = f16(blk + 2);
    int sc[8], m[8];
    ggml_k4_scales(blk + 4, sc, m);
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16));
    const uint8_t* qs = blk + 48;
    for (int c = 0; c < 4; ++c) {
      const __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + 32 * c));
      const __m256i nib[2] = {_mm256_and_si256(bytes, low4), _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4)};
      for (int h = 0; h < 2; ++h) {
        const int g = 2 * c + h;
        const __m256i fifth = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(g)), one);
        const __m256i q = _mm256_or_si256(nib[h], _mm256_slli_epi16(fifth, 4));
        const float* xs = xb + 32 * g;
        const __m256 s = _mm256_add_ps(dot16(_mm256_castsi256_si128(q), xs), dot16(_mm256_extracti128_si256(q, 1), xs + 16));
        acc = _mm256_fmadd_ps(s, _mm256_set1_ps(d * float(sc[g])), acc);
        const __m256 xsum = _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(xs), _mm256_loadu_ps(xs + 8)),
                                          _mm256_add_ps(_mm256_loadu_ps(xs + 16), _mm256_loadu_ps(xs + 24)));
        accm = _mm256_fmadd_ps(xsum, _mm256_set1_ps(dmin * float(m[g])), accm);
      }
    }
  }
  return hsum(acc) - hsum(accm);
}

float dot_q3_k(const uint8_t* row, const float* x, int64_t blocks) {
  const __m256i low2 = _mm256_set1_epi8(0x03), one = _mm256_set1_epi8(0x01), k4 = _mm256_set1_epi8(4);
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = row + b * 110;
    const uint8_t* s = blk + 96;
    const float d = f16(blk + 108);
    const float* xb = x + b * 256;
    float dl[16];
    for (int g = 0; g < 16; ++g)
      dl[g] = d * float((((s[g % 8] >> (4 * (g / 8))) & 15) | (((s[8 + g % 4] >> (2 * (g / 4))) & 3) << 4)) - 32);
    const __m256i hm = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk));
    for (int h = 0; h < 2; ++h) {
      const __m256i qs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 32 + 32 * h));
      for (int j = 0; j < 4; ++j) {
        const __m256i ql = _mm256_and_si256(_mm256_srl_epi16(qs, _mm_cvtsi32_si128(2 * j)), low2);
        const __m256i hb = _mm256_and_si256(_mm256_srl_epi16(hm, _mm_cvtsi32_si128(4 * h + j)), one);
        // 0..7 less 4, as signed bytes (exact): widened with sign below.
        const __m256i q = _mm256_sub_epi8(_mm256_or_si256(ql, _mm256_slli_epi16(hb, 2)), k4);
        const float* xs = xb + 128 * h + 32 * j;
        const int g = 8 * h + 2 * j;
        for (int half = 0; half < 2; ++half) {
          const __m128i v = half ? _mm256_extracti128_si256(q, 1) : _mm256_castsi256_si128(q);
          const __m256 sdot = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(v, 8))),
                                              _mm256_loadu_ps(xs + 16 * half + 8),
                                              _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)),
                                                            _mm256_loadu_ps(xs + 16 * half)));
          acc = _mm256_fmadd_ps(sdot, _mm256_set1_ps(dl[g + half]), acc);
        }
      }
    }
  }
  return hsum(acc);
}

float dot_q2_k(const uint8_t* row, const float* x, int64_t blocks) {
  const __m256i low2 = _mm256_set1_epi8(0x03);
  __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = row + b * 84;
    const uint8_t* sc = blk;
    const float d = f16(blk + 80), dmin = f16(blk + 82);
    const float* xb = x + b * 256;
    for (int h = 0; h < 2; ++h) {
      const __m256i qs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16 + 32 * h));
      for (int j = 0; j < 4; ++j) {
        const __m256i q = _mm256_and_si256(_mm256_srl_epi16(qs, _mm_cvtsi32_si128(2 * j)), low2);
        const float* xs = xb + 128 * h + 32 * j;
        const int g = 8 * h + 2 * j;
        for (int half = 0; half < 2; ++half) {
          const __m128i v = half ? _mm256_extracti128_si256(q, 1) : _mm256_castsi256_si128(q);
          const float* xh = xs + 16 * half;
          const int gg = g + half;
          acc = _mm256_fmadd_ps(dot16(v, xh), _mm256_set1_ps(d * float(sc[gg] & 15)), acc);
          accm = _mm256_fmadd_ps(_mm256_add_ps(_mm256_loadu_ps(xh), _mm256_loadu_ps(xh + 8)),
                                 _mm256_set1_ps(dmin * float(sc[gg] >> 4)), accm);
        }
      }
    }
  }
  return hsum(acc) - hsum(accm);
}

}  // namespace

RowDot avx2_row_dot(uint32_t type) {
  switch (GgmlType(type)) {
    case GgmlType::Q8_0: return dot_q8_0;
    case GgmlType::Q4_K: return dot_q4_k;
    case GgmlType::Q6_K: return dot_q6_k;
    case GgmlType::Q5_K: return dot_q5_k;
    case GgmlType::Q3_K: return dot_q3_k;
    case GgmlType::Q2_K: return dot_q2_k;
    default: return nullptr;
  }
}

}  // namespace mt::cpu::ggml_gemv_detail
