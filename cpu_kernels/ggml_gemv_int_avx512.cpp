// The GGUF block GEMV's Int8 path on AVX-512 VNNI (cpu_kernels/ggml_gemv.h). Level 2 requires
// VNNI (cpu_isa_level), so no further check.
//   Q8_0: 8 blocks per step in zmm (k_q8_0), vpdpbusd (|w| x signed x, 4 products per int32).
//   K-quants: 512-bit kernels of their own. A weight block's 32 code bytes that hold two groups
//   (low and high nibbles, or two 2-bit planes) are broadcast to both 256-bit halves and shifted
//   by a different count per half (vpsrlvw), so one zmm holds 64 codes in the activations' own
//   order; vpmaddubsw multiplies them by 64 activation codes, vpdpwssd multiplies the int16 pair
//   sums by their group scales (vpermw spreads a block's 16 scales over the lanes) and
//   accumulates in int32. A block's sum is then one exact int32 vector, scaled once in fp32.
//   Q5_K's fifth bit and Q3_K's third bit are set from a byte test mask (vptestmb) with a masked add.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "cpu_kernels/ggml_gemv.h"
#include "runtime/core/ggml_types.h"

namespace mt::cpu::ggml_gemv_detail {

namespace int_avx512 {

inline __m256i dot_u8s8(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_epi32(acc, u, s); }
inline __m256i madd_acc(__m256i acc, __m256i p, __m256i s) { return _mm256_dpwssd_epi32(acc, p, s); }

#include "cpu_kernels/ggml_gemv_int_body.h"

// 32 bytes at p in both halves of a zmm (one load).
inline __m512i both_halves(const uint8_t* p) { return _mm512_broadcast_i64x4(load256(p)); }
inline __m512i load512(const void* p) { return _mm512_loadu_si512(p); }

// int16 shift counts: a in the low half, b in the high half.
inline __m512i counts(int a, int b) {
  return _mm512_inserti64x4(_mm512_set1_epi16(short(a)), _mm256_set1_epi16(short(b)), 1);
}
// vpermw indices: lanes of 32 / n int16 each take scale g0, g0 + 1, ... (n = 2: two groups of
// 32 values; n = 4: four groups of 16).
inline __m512i scale_index(int g0, int n) {
  alignas(64) int16_t idx[32];
  for (int i = 0; i < 32; ++i) idx[i] = int16_t(g0 + i / (32 / n));
  return _mm512_load_si512(idx);
}
// Bytes of the low half = lo, of the high half = hi.
inline __m512i bytes2(int lo, int hi) {
  return _mm512_inserti64x4(_mm512_set1_epi8(char(lo)), _mm256_set1_epi8(char(hi)), 1);
}

inline float hsum16(__m512 v) {
  return hsum8(_mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1)));
}

// Q4_K / Q5_K's 12 scale bytes (from a 16-byte load at s) -> int16 [sc0..sc7, m0..m7].
inline __m256i k4_scales16_vec(const uint8_t* s) {
  const __m128i u = load128(s);  // dwords u0 u1 u2, then 4 bytes of the codes (unused)
  __m128i a = _mm_shuffle_epi32(u, _MM_SHUFFLE(2, 1, 2, 0));  // u0 u2 u1 u2
  a = _mm_and_si128(_mm_srlv_epi32(a, _mm_setr_epi32(0, 0, 0, 4)),
                    _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
  __m128i b = _mm_shuffle_epi32(u, _MM_SHUFFLE(1, 1, 0, 0));  // u0 u0 u1 u1
  b = _mm_and_si128(_mm_srli_epi32(b, 2), _mm_setr_epi32(0, 0x30303030, 0, 0x30303030));
  return _mm256_cvtepu8_epi16(_mm_or_si128(a, b));
}

template <int NT, bool Q5>
void k_q45(const uint8_t* row, const Q8Act* a, int64_t blocks, float* out, const uint8_t* stream_end) {
  constexpr int64_t kBytes = Q5 ? 176 : 144;
  const __m512i low4 = _mm512_set1_epi8(0x0F), shift = counts(0, 4), k16 = _mm512_set1_epi8(16);
  const __m512i sidx[4] = {scale_index(0, 2), scale_index(2, 2), scale_index(4, 2), scale_index(6, 2)};
  __m512i bit[4];
  for (int c = 0; c < 4; ++c) bit[c] = bytes2(1 << (2 * c), 1 << (2 * c + 1));
  __m512 acc[NT];
  __m128 accm[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps(), accm[t] = _mm_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = row + b * kBytes;
    prefetch_ahead<kBytes>(blk, stream_end);
    const __m256i sv = k4_scales16_vec(blk + 4);
    const __m512i sz = _mm512_castsi256_si512(sv);
    const uint8_t* qs = blk + (Q5 ? 48 : 16);
    const __m512i qh = Q5 ? both_halves(blk + 16) : _mm512_setzero_si512();
    __m512i isum[NT];
    for (int t = 0; t < NT; ++t) isum[t] = _mm512_setzero_si512();
    for (int c = 0; c < 4; ++c) {
      __m512i q = _mm512_and_si512(_mm512_srlv_epi16(both_halves(qs + 32 * c), shift), low4);
      if constexpr (Q5) q = _mm512_mask_add_epi8(q, _mm512_test_epi8_mask(qh, bit[c]), q, k16);
      const __m512i s = _mm512_permutexvar_epi16(sidx[c], sz);
      for (int t = 0; t < NT; ++t)
        isum[t] = _mm512_dpwssd_epi32(isum[t], _mm512_maddubs_epi16(q, load512(a[t].q + 256 * b + 64 * c)), s);
    }
    const __m128i mins = _mm256_extracti128_si256(sv, 1);
    const __m128 dd = _mm_cvtph_ps(_mm_cvtsi32_si128(*reinterpret_cast<const int*>(blk)));  // d, dmin
    for (int t = 0; t < NT; ++t) {
      const __m128i mp = _mm_madd_epi16(mins, load128(a[t].bsum32 + 8 * b));
      const __m128 s = _mm_mul_ps(dd, _mm_set1_ps(a[t].d[b]));
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_broadcastss_ps(s), acc[t]);
      accm[t] = _mm_fmadd_ps(_mm_cvtepi32_ps(mp), _mm_shuffle_ps(s, s, 0x55), accm[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum16(acc[t]) - hsum4(accm[t]);
}

template <int NT>
void k_q6(const uint8_t* row, const Q8Act* a, int64_t blocks, float* out, const uint8_t* stream_end) {
  const __m512i low4 = _mm512_set1_epi8(0x0F), hi2 = _mm512_set1_epi8(0x30);
  const __m512i sh_a = counts(4, 2), sh_b = counts(0, 2);  // bits 0-1 / 2-3 up to 4-5; 4-5 / 6-7 to 4-5
  const __m512i sidx[4] = {scale_index(0, 4), scale_index(4, 4), scale_index(8, 4), scale_index(12, 4)};
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = row + b * 210;
    prefetch_ahead<210>(blk, stream_end);
    const __m256i sv = _mm256_cvtepi8_epi16(load128(blk + 192));
    const __m512i sz = _mm512_castsi256_si512(sv);
    __m512i isum[NT];
    for (int t = 0; t < NT; ++t)  // - 32 Σ_g sc[g] bsum[g]
      isum[t] = _mm512_zextsi256_si512(_mm256_sub_epi32(
          _mm256_setzero_si256(), _mm256_slli_epi32(_mm256_madd_epi16(sv, load256(a[t].bsum + 16 * b)), 5)));
    for (int h = 0; h < 2; ++h) {
      const __m512i l = load512(blk + 64 * h), hb = both_halves(blk + 128 + 32 * h);
      const __m512i qa = _mm512_or_si512(_mm512_and_si512(l, low4), _mm512_and_si512(_mm512_sllv_epi16(hb, sh_a), hi2));
      const __m512i qb = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), low4),
                                         _mm512_and_si512(_mm512_srlv_epi16(hb, sh_b), hi2));
      const __m512i sa = _mm512_permutexvar_epi16(sidx[2 * h], sz), sb = _mm512_permutexvar_epi16(sidx[2 * h + 1], sz);
      for (int t = 0; t < NT; ++t) {
        const int8_t* xq = a[t].q + 256 * b + 128 * h;
        isum[t] = _mm512_dpwssd_epi32(isum[t], _mm512_maddubs_epi16(qa, load512(xq)), sa);
        isum[t] = _mm512_dpwssd_epi32(isum[t], _mm512_maddubs_epi16(qb, load512(xq + 64)), sb);
      }
    }
    const float d = f16_scale(blk + 208);
    for (int t = 0; t < NT; ++t)
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_set1_ps(d * a[t].d[b]), acc[t]);
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum16(acc[t]);
}

// Q3_K's 12 scale bytes (the last 12 of a 16-byte load at s - 4, inside the block) -> int16
// signed scales of the 16 groups.
inline __m256i k3_scales16_vec(const uint8_t* s) {
  const __m128i u = _mm_srli_si128(load128(s - 4), 4);  // dwords u0 u1 u2, 0
  const __m128i lo = _mm_and_si128(_mm_srlv_epi32(_mm_shuffle_epi32(u, _MM_SHUFFLE(1, 0, 1, 0)), _mm_setr_epi32(0, 0, 4, 4)),
                                   _mm_set1_epi32(0x0f0f0f0f));
  const __m128i u2 = _mm_shuffle_epi32(u, _MM_SHUFFLE(2, 2, 2, 2));
  // u2 << 4, u2 << 2, u2, u2 >> 2: each scale's two high bits up to bits 4-5 of its byte.
  const __m128i hi = _mm_and_si128(_mm_blend_epi32(_mm_sllv_epi32(u2, _mm_setr_epi32(4, 2, 0, 0)),
                                                   _mm_srli_epi32(u2, 2), 0x8),
                                   _mm_set1_epi32(0x30303030));
  return _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm_or_si128(lo, hi)), _mm256_set1_epi16(32));
}

template <int NT>
void k_q3(const uint8_t* row, const Q8Act* a, int64_t blocks, float* out, const uint8_t* stream_end) {
  const __m512i low2 = _mm512_set1_epi8(0x03), k4 = _mm512_set1_epi8(4);
  const __m512i sh_a = counts(0, 2), sh_b = counts(4, 6);
  const __m512i sidx[4] = {scale_index(0, 4), scale_index(4, 4), scale_index(8, 4), scale_index(12, 4)};
  __m512i bit[4];  // hmask bit of codes (h, j): 4h + j
  for (int i = 0; i < 4; ++i) bit[i] = bytes2(1 << (2 * i), 1 << (2 * i + 1));
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = row + b * 110;
    prefetch_ahead<110>(blk, stream_end);
    const __m256i sv = k3_scales16_vec(blk + 96);
    const __m512i sz = _mm512_castsi256_si512(sv);
    const __m512i hm = both_halves(blk);
    __m512i isum[NT];
    for (int t = 0; t < NT; ++t)  // - 4 Σ_g sc[g] bsum[g]
      isum[t] = _mm512_zextsi256_si512(_mm256_sub_epi32(
          _mm256_setzero_si256(), _mm256_slli_epi32(_mm256_madd_epi16(sv, load256(a[t].bsum + 16 * b)), 2)));
    for (int h = 0; h < 2; ++h) {
      const __m512i qv = both_halves(blk + 32 + 32 * h);
      __m512i qa = _mm512_and_si512(_mm512_srlv_epi16(qv, sh_a), low2);
      __m512i qb = _mm512_and_si512(_mm512_srlv_epi16(qv, sh_b), low2);
      qa = _mm512_mask_add_epi8(qa, _mm512_test_epi8_mask(hm, bit[2 * h]), qa, k4);
      qb = _mm512_mask_add_epi8(qb, _mm512_test_epi8_mask(hm, bit[2 * h + 1]), qb, k4);
      const __m512i sa = _mm512_permutexvar_epi16(sidx[2 * h], sz), sb = _mm512_permutexvar_epi16(sidx[2 * h + 1], sz);
      for (int t = 0; t < NT; ++t) {
        const int8_t* xq = a[t].q + 256 * b + 128 * h;
        isum[t] = _mm512_dpwssd_epi32(isum[t], _mm512_maddubs_epi16(qa, load512(xq)), sa);
        isum[t] = _mm512_dpwssd_epi32(isum[t], _mm512_maddubs_epi16(qb, load512(xq + 64)), sb);
      }
    }
    const float d = f16_scale(blk + 108);
    for (int t = 0; t < NT; ++t)
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_set1_ps(d * a[t].d[b]), acc[t]);
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum16(acc[t]);
}

template <int NT>
void k_q2(const uint8_t* row, const Q8Act* a, int64_t blocks, float* out, const uint8_t* stream_end) {
  const __m512i low2 = _mm512_set1_epi8(0x03);
  const __m128i low4 = _mm_set1_epi8(0x0F);
  const __m512i sh_a = counts(0, 2), sh_b = counts(4, 6);
  const __m512i sidx[4] = {scale_index(0, 4), scale_index(4, 4), scale_index(8, 4), scale_index(12, 4)};
  __m512 acc[NT];
  __m256 accm[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps(), accm[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = row + b * 84;
    prefetch_ahead<84>(blk, stream_end);
    const __m128i sb = load128(blk);
    const __m512i sz = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_and_si128(sb, low4)));
    const __m256i mv = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sb, 4), low4));
    __m512i isum[NT];
    for (int t = 0; t < NT; ++t) isum[t] = _mm512_setzero_si512();
    for (int h = 0; h < 2; ++h) {
      const __m512i qv = both_halves(blk + 16 + 32 * h);
      const __m512i qa = _mm512_and_si512(_mm512_srlv_epi16(qv, sh_a), low2);
      const __m512i qb = _mm512_and_si512(_mm512_srlv_epi16(qv, sh_b), low2);
      const __m512i sa = _mm512_permutexvar_epi16(sidx[2 * h], sz), sbv = _mm512_permutexvar_epi16(sidx[2 * h + 1], sz);
      for (int t = 0; t < NT; ++t) {
        const int8_t* xq = a[t].q + 256 * b + 128 * h;
        isum[t] = _mm512_dpwssd_epi32(isum[t], _mm512_maddubs_epi16(qa, load512(xq)), sa);
        isum[t] = _mm512_dpwssd_epi32(isum[t], _mm512_maddubs_epi16(qb, load512(xq + 64)), sbv);
      }
    }
    const float d = f16_scale(blk + 80), dmin = f16_scale(blk + 82);
    for (int t = 0; t < NT; ++t) {
      const __m256i mp = _mm256_madd_epi16(mv, load256(a[t].bsum + 16 * b));
      const float dx = a[t].d[b];
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_set1_ps(d * dx), acc[t]);
      accm[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mp), _mm256_set1_ps(dmin * dx), accm[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum16(acc[t]) - hsum8(accm[t]);
}

// Q8_0 [d f16][32 x int8], 8 blocks per step: two blocks per zmm, |w| times x with w's sign
// (negated under the sign-bit mask) in vpdpbusd, so lanes 0..7 hold block 2p's partial sums and
// 8..15 block 2p + 1's; the 8 blocks' scales d_w · d_x are formed at once (fp16 gathered through
// a small buffer) and spread to the lanes by vpermps. Leftover blocks take the 256-bit kernel.
template <int NT>
void k_q8_0(const uint8_t* row, const Q8Act* a, int64_t blocks, float* out, const uint8_t* stream_end) {
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  const __m512i pair[4] = {scale_index(0, 2), scale_index(2, 2), scale_index(4, 2), scale_index(6, 2)};
  int64_t b = 0;
  for (; b + 8 <= blocks; b += 8) {
    const uint8_t* blk = row + b * 34;
    prefetch_ahead<8 * 34>(blk, stream_end);
    alignas(16) uint16_t h[8];
    for (int i = 0; i < 8; ++i) std::memcpy(&h[i], blk + 34 * i, 2);
    const __m256 dw = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(h)));
    __m512 s[NT];
    for (int t = 0; t < NT; ++t) s[t] = _mm512_castps256_ps512(_mm256_mul_ps(dw, _mm256_loadu_ps(a[t].d + b)));
    for (int p = 0; p < 4; ++p) {
      const uint8_t* bp = blk + 68 * p;
      const __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(load256(bp + 2)), load256(bp + 36), 1);
      const __m512i aw = _mm512_abs_epi8(w);  // -128 gives 0x80: 128 unsigned
      const __mmask64 neg = _mm512_movepi8_mask(w);
      for (int t = 0; t < NT; ++t) {
        const __m512i xv = load512(a[t].q + 32 * (b + 2 * p));
        const __m512i xs = _mm512_mask_sub_epi8(xv, neg, _mm512_setzero_si512(), xv);
        const __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), aw, xs);
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_permutexvar_ps(pair[p], s[t]), acc[t]);
      }
    }
  }
  float rest[NT];
  for (int t = 0; t < NT; ++t) rest[t] = 0.0f;
  if (b < blocks) {
    Q8Act tail[NT];
    for (int t = 0; t < NT; ++t) tail[t] = Q8Act{a[t].q + 32 * b, a[t].d + b, nullptr, nullptr};
    int_q8_0<NT>(row + b * 34, tail, blocks - b, rest, stream_end);
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum16(acc[t]) + rest[t];
}

template <int NT>
IntRowDot kernel(uint32_t type) {
  switch (GgmlType(type)) {
    case GgmlType::Q8_0: return k_q8_0<NT>;
    case GgmlType::Q2_K: return k_q2<NT>;
    case GgmlType::Q3_K: return k_q3<NT>;
    case GgmlType::Q4_K: return k_q45<NT, false>;
    case GgmlType::Q5_K: return k_q45<NT, true>;
    case GgmlType::Q6_K: return k_q6<NT>;
    default: return nullptr;
  }
}

}  // namespace int_avx512

IntRowDot avx512_int_row_dot(uint32_t type, int nt) {
  switch (nt) {
    case 1: return int_avx512::kernel<1>(type);
    case 2: return int_avx512::kernel<2>(type);
    case 3: return int_avx512::kernel<3>(type);
    case 4: return int_avx512::kernel<4>(type);
    default: return nullptr;
  }
}

}  // namespace mt::cpu::ggml_gemv_detail
