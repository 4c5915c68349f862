// GGUF block GEMV row dots, AVX-512 (cpu_kernels/ggml_gemv.h). Codes are widened to fp32 in
// registers and multiplied by fp32 activations; a block's (sub-block's) scale multiplies the
// partial dot, its min the activations' sum, as the block's math factors.
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

// The sum of the 16 lanes (GCC 12's _mm512_reduce_add_ps warns of an uninitialised temporary).
inline float hsum(__m512 v) {
  const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 16 bytes (unsigned) widened to 16 floats.
inline __m512 u8x16(__m128i v) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v)); }

float dot_q8_0(const uint8_t* row, const float* x, int64_t blocks) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = row + b * 34;
    const float* xb = x + b * 32;
    const __m512 q0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 2))));
    const __m512 q1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 18))));
    __m512 s = _mm512_mul_ps(q0, _mm512_loadu_ps(xb));
    s = _mm512_fmadd_ps(q1, _mm512_loadu_ps(xb + 16), s);
    acc = _mm512_fmadd_ps(s, _mm512_set1_ps(f16(blk)), acc);
  }
  return hsum(acc);
}

// Q4_K and Q5_K's 6-bit scales and mins of the 8 sub-blocks.

float dot_q4_k(const uint8_t* row, const float* x, int64_t blocks) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  __m512 acc = _mm512_setzero_ps(), accm = _mm512_setzero_ps();
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
        const __m512 x0 = _mm512_loadu_ps(xs), x1 = _mm512_loadu_ps(xs + 16);
        __m512 s = _mm512_mul_ps(u8x16(_mm256_castsi256_si128(nib[h])), x0);
        s = _mm512_fmadd_ps(u8x16(_mm256_extracti128_si256(nib[h], 1)), x1, s);
        acc = _mm512_fmadd_ps(s, _mm512_set1_ps(d * float(sc[g])), acc);
        accm = _mm512_fmadd_ps(_mm512_add_ps(x0, x1), _mm512_set1_ps(dmin * float(m[g])), accm);
      }
    }
  }
  return hsum(acc) - hsum(accm);
}

float dot_q6_k(const uint8_t* row, const float* x, int64_t blocks) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), low2 = _mm256_set1_epi8(0x03);
  const __m512 k32 = _mm512_set1_ps(32.0f);
  __m512 acc = _mm512_setzero_ps();
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
        const __m256i q = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));  // 0..63, less 32 below
        const float* xs = xb + 128 * h + 32 * j;
        const __m512 f0 = _mm512_sub_ps(u8x16(_mm256_castsi256_si128(q)), k32);
        const __m512 f1 = _mm512_sub_ps(u8x16(_mm256_extracti128_si256(q, 1)), k32);
        const int g = 8 * h + 2 * j;
        acc = _mm512_fmadd_ps(_mm512_mul_ps(f0, _mm512_loadu_ps(xs)), _mm512_set1_ps(d * float(sc[g])), acc);
        acc = _mm512_fmadd_ps(_mm512_mul_ps(f1, _mm512_loadu_ps(xs + 16)), _mm512_set1_ps(d * float(sc[g + 1])), acc);
      }
    }
  }
  return hsum(acc);
}

float dot_q5_k(const uint8_t* row, const float* x, int64_t blocks) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(0x01);
  __m512 acc = _mm512_setzero_ps(), accm = _mm512_setzero_ps();
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
        const __m512 x0 = _mm512_loadu_ps(xs), x1 = _mm512_loadu_ps(xs + 16);
        __m512 s = _mm512_mul_ps(u8x16(_mm256_castsi256_si128(q)), x0);
        s = _mm512_fmadd_ps(u8x16(_mm256_extracti128_si256(q, 1)), x1, s);
        acc = _mm512_fmadd_ps(s, _mm512_set1_ps(d * float(sc[g])), acc);
        accm = _mm512_fmadd_ps(_mm512_add_ps(x0, x1), _mm512_set1_ps(dmin * float(m[g])), accm);
      }
    }
  }
  return hsum(acc) - hsum(accm);
}

float dot_q3_k(const uint8_t* row, const float* x, int64_t blocks) {
  const __m256i low2 = _mm256_set1_epi8(0x03), one = _mm256_set1_epi8(0x01);
  const __m512 k4 = _mm512_set1_ps(4.0f);
  __m512 acc = _mm512_setzero_ps();
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
        const __m256i q = _mm256_or_si256(ql, _mm256_slli_epi16(hb, 2));  // 0..7, less 4 below
        const float* xs = xb + 128 * h + 32 * j;
        const int g = 8 * h + 2 * j;
        const __m512 f0 = _mm512_sub_ps(u8x16(_mm256_castsi256_si128(q)), k4);
        const __m512 f1 = _mm512_sub_ps(u8x16(_mm256_extracti128_si256(q, 1)), k4);
        acc = _mm512_fmadd_ps(_mm512_mul_ps(f0, _mm512_loadu_ps(xs)), _mm512_set1_ps(dl[g]), acc);
        acc = _mm512_fmadd_ps(_mm512_mul_ps(f1, _mm512_loadu_ps(xs + 16)), _mm512_set1_ps(dl[g + 1]), acc);
      }
    }
  }
  return hsum(acc);
}

float dot_q2_k(const uint8_t* row, const float* x, int64_t blocks) {
  const __m256i low2 = _mm256_set1_epi8(0x03);
  __m512 acc = _mm512_setzero_ps(), accm = _mm512_setzero_ps();
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
          const __m512 xv = _mm512_loadu_ps(xs + 16 * half);
          const int gg = g + half;
          acc = _mm512_fmadd_ps(_mm512_mul_ps(u8x16(v), xv), _mm512_set1_ps(d * float(sc[gg] & 15)), acc);
          accm = _mm512_fmadd_ps(xv, _mm512_set1_ps(dmin * float(sc[gg] >> 4)), accm);
        }
      }
    }
  }
  return hsum(acc) - hsum(accm);
}

}  // namespace

RowDot avx512_row_dot(uint32_t type) {
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
