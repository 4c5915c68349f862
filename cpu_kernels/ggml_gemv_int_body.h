// The Int8 path's row dots of the GGUF block GEMV (cpu_kernels/ggml_gemv.h), included once per
// instruction set by ggml_gemv_avx2.cpp and ggml_gemv_avx512.cpp, each inside a namespace of its
// own and compiled with its own flags. No include guard on purpose. The includer defines, on
// 256-bit vectors:
//   dot_u8s8(acc, u, s):  acc + per int32 lane the sum of 4 products u8 x s8 (never saturating
//                         for |u| <= 128, |s| <= 127);
//   madd_acc(acc, p, s):  acc + per int32 lane p0*s0 + p1*s1 of int16 pairs.
// Every kernel runs NT tokens (1..kMaxTokens) against each weight block decoded once.
//
// Per weight block the codes come out of their bytes by 16-bit shifts and byte masks (each byte's
// bits stay in that byte once masked), then vpmaddubsw multiplies them (unsigned, at most 63) by
// the activation codes (signed, |q| <= 127): at most 2 * 63 * 127 = 16002 per int16 pair, so it
// never saturates. The (sub-)block scales multiply those pairs as int16 into int32 (madd_acc),
// so a block's sum is one exact int32 (at most 256 * 63 * 127 * 128 < 2^31), scaled once by the
// block's fp16 scale times the activation block's scale. Offsets (Q3_K's 4, Q6_K's 32) and mins
// are Σ scale[g] * bsum[g]: the codes' sums per 16, from the quantisation.

inline float f16_scale(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// Software prefetch of the block kPrefetch bytes ahead, one per cache line it may touch.
template <int64_t kBytes>
inline void prefetch_ahead(const uint8_t* blk, const uint8_t* stream_end) {
  const uint8_t* p = blk + kPrefetch;
  if (p + kBytes > stream_end) return;
  for (int64_t o = 0; o < kBytes; o += 64) _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T0);
}

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline __m128i load128(const void* p) { return _mm_loadu_si128(static_cast<const __m128i*>(p)); }

inline float hsum4(__m128 s) {
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float hsum8(__m256 v) { return hsum4(_mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1))); }

// A block's 16 int16 scales (or Q4_K's 8 scales and 8 mins) as int32 words holding the scale in
// both halves, stored so that a scale vector is a broadcast load (no shuffle port): vpunpck*wd
// leave them in the order T0..3, T8..11, T4..7, T12..15 (table_pos).
struct ScaleTable {
  alignas(32) int32_t w[16];
};
inline void scale_table(__m256i s16, ScaleTable& t) {
  _mm256_store_si256(reinterpret_cast<__m256i*>(t.w), _mm256_unpacklo_epi16(s16, s16));
  _mm256_store_si256(reinterpret_cast<__m256i*>(t.w + 8), _mm256_unpackhi_epi16(s16, s16));
}
constexpr int table_pos(int g) { return (g & 3) | ((g & 4) << 1) | ((g & 8) >> 1); }
// All 16 int16 lanes = scale g.
inline __m256i scale_all(const ScaleTable& t, int g) { return _mm256_set1_epi32(t.w[table_pos(g)]); }
// int16 lanes 0..7 = scale g, lanes 8..15 = scale g + 1: two groups of 16 values, against
// vpmaddubsw's pairs of a 32-byte run (bytes 0..15 group g, 16..31 group g + 1).
inline __m256i scale_pair(const ScaleTable& t, int g) {
  return _mm256_blend_epi32(scale_all(t, g), scale_all(t, g + 1), 0xF0);
}

// Q4_K / Q5_K's 12 scale bytes -> int16 [sc0..sc7, m0..m7] (ggml_k4_scales, four bytes at a time).
inline __m256i k4_scales16(const uint8_t* s) {
  uint32_t u[3];
  std::memcpy(u, s, 12);
  const uint32_t sc_lo = u[0] & 0x3f3f3f3f, sc_hi = (u[2] & 0x0f0f0f0f) | ((u[0] >> 2) & 0x30303030);
  const uint32_t m_lo = u[1] & 0x3f3f3f3f, m_hi = ((u[2] >> 4) & 0x0f0f0f0f) | ((u[1] >> 2) & 0x30303030);
  return _mm256_cvtepu8_epi16(_mm_setr_epi32(int(sc_lo), int(sc_hi), int(m_lo), int(m_hi)));
}

// Q3_K's 12 scale bytes -> int16 signed scales of the 16 groups (-32..31).
inline __m256i k3_scales16(const uint8_t* s) {
  uint32_t u[3];
  std::memcpy(u, s, 12);
  const uint32_t w0 = (u[0] & 0x0f0f0f0f) | ((u[2] << 4) & 0x30303030);
  const uint32_t w1 = (u[1] & 0x0f0f0f0f) | ((u[2] << 2) & 0x30303030);
  const uint32_t w2 = ((u[0] >> 4) & 0x0f0f0f0f) | (u[2] & 0x30303030);
  const uint32_t w3 = ((u[1] >> 4) & 0x0f0f0f0f) | ((u[2] >> 2) & 0x30303030);
  return _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm_setr_epi32(int(w0), int(w1), int(w2), int(w3))),
                          _mm256_set1_epi16(32));
}

// Q8_0 [d f16][32 x int8] against 32-value activation blocks: |w| (unsigned) times x with w's
// sign, so vpmaddubsw cannot saturate (128 * 127 * 2 < 32768). 8 blocks per step: their scales
// d_w · d_x are formed at once (fp16 gathered through a small buffer), each block's taken by a
// vpermps; leftover blocks one by one.
template <int NT>
void int_q8_0(const uint8_t* row, const Q8Act* a, int64_t blocks, float* out, const uint8_t* stream_end) {
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  int64_t b = 0;
  for (; b + 8 <= blocks; b += 8) {
    const uint8_t* blk = row + b * 34;
    prefetch_ahead<8 * 34>(blk, stream_end);
    alignas(16) uint16_t h[8];
    for (int i = 0; i < 8; ++i) std::memcpy(&h[i], blk + 34 * i, 2);
    const __m256 dw = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(h)));
    __m256 s[NT];
    for (int t = 0; t < NT; ++t) s[t] = _mm256_mul_ps(dw, _mm256_loadu_ps(a[t].d + b));
    for (int i = 0; i < 8; ++i) {
      const __m256i wq = load256(blk + 34 * i + 2);
      const __m256i aw = _mm256_abs_epi8(wq);  // -128 gives 0x80: 128 unsigned
      const __m256i pick = _mm256_set1_epi32(i);
      for (int t = 0; t < NT; ++t) {
        const __m256i xs = _mm256_sign_epi8(load256(a[t].q + 32 * (b + i)), wq);
        const __m256i p = dot_u8s8(_mm256_setzero_si256(), aw, xs);
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_permutevar8x32_ps(s[t], pick), acc[t]);
      }
    }
  }
  for (; b < blocks; ++b) {
    const uint8_t* blk = row + b * 34;
    const __m256i wq = load256(blk + 2);
    const __m256i aw = _mm256_abs_epi8(wq);
    const float dw = f16_scale(blk);
    for (int t = 0; t < NT; ++t) {
      const __m256i xs = _mm256_sign_epi8(load256(a[t].q + 32 * b), wq);
      const __m256i p = dot_u8s8(_mm256_setzero_si256(), aw, xs);
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * a[t].d[b]), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum8(acc[t]);
}

// Q4_K [d][dmin][scales 12][qs 128] and Q5_K (the same plus qh 32 before qs, the fifth bit of
// group g in bit g): groups of 32, group 2c + nibble in byte 32c + i.
template <int NT, bool Q5>
void int_q45_k(const uint8_t* row, const Q8Act* a, int64_t blocks, float* out, const uint8_t* stream_end) {
  constexpr int64_t kBytes = Q5 ? 176 : 144;
  const __m256i low4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(0x01);
  __m256 acc[NT];
  __m128 accm[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps(), accm[t] = _mm_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = row + b * kBytes;
    prefetch_ahead<kBytes>(blk, stream_end);
    const float d = f16_scale(blk), dmin = f16_scale(blk + 2);
    const __m256i sv = k4_scales16(blk + 4);
    ScaleTable st;
    scale_table(sv, st);
    const uint8_t* qs = blk + (Q5 ? 48 : 16);
    __m256i qh = Q5 ? load256(blk + 16) : _mm256_setzero_si256();
    __m256i isum[NT];
    for (int t = 0; t < NT; ++t) isum[t] = _mm256_setzero_si256();
    for (int c = 0; c < 4; ++c) {
      const __m256i bytes = load256(qs + 32 * c);
      __m256i lo = _mm256_and_si256(bytes, low4), hi = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), low4);
      if constexpr (Q5) {
        lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(qh, one), 4));
        hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 1), one), 4));
        qh = _mm256_srli_epi16(qh, 2);
      }
      const __m256i slo = scale_all(st, 2 * c), shi = scale_all(st, 2 * c + 1);
      for (int t = 0; t < NT; ++t) {
        const int8_t* xq = a[t].q + 256 * b + 64 * c;
        isum[t] = madd_acc(isum[t], _mm256_maddubs_epi16(lo, load256(xq)), slo);
        isum[t] = madd_acc(isum[t], _mm256_maddubs_epi16(hi, load256(xq + 32)), shi);
      }
    }
    const __m128i mins = _mm256_extracti128_si256(sv, 1);  // m0..m7
    for (int t = 0; t < NT; ++t) {
      const __m128i mp = _mm_madd_epi16(mins, load128(a[t].bsum32 + 8 * b));
      const float dx = a[t].d[b];
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_set1_ps(d * dx), acc[t]);
      accm[t] = _mm_fmadd_ps(_mm_cvtepi32_ps(mp), _mm_set1_ps(dmin * dx), accm[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum8(acc[t]) - hsum4(accm[t]);
}

// Q6_K [ql 128][qh 64][scales 16 x int8][d]: 6-bit codes, less 32; groups of 16.
template <int NT>
void int_q6_k(const uint8_t* row, const Q8Act* a, int64_t blocks, float* out, const uint8_t* stream_end) {
  const __m256i low4 = _mm256_set1_epi8(0x0F), hi2 = _mm256_set1_epi8(0x30);
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = row + b * 210;
    prefetch_ahead<210>(blk, stream_end);
    const __m256i sv = _mm256_cvtepi8_epi16(load128(blk + 192));
    ScaleTable st;
    scale_table(sv, st);
    __m256i isum[NT];
    for (int t = 0; t < NT; ++t)  // - 32 Σ_g sc[g] bsum[g]
      isum[t] = _mm256_sub_epi32(_mm256_setzero_si256(),
                                 _mm256_slli_epi32(_mm256_madd_epi16(sv, load256(a[t].bsum + 16 * b)), 5));
    for (int h = 0; h < 2; ++h) {
      const __m256i l0 = load256(blk + 64 * h), l1 = load256(blk + 64 * h + 32);
      const __m256i hb = load256(blk + 128 + 32 * h);
      for (int j = 0; j < 4; ++j) {
        const __m256i l = j % 2 ? l1 : l0;
        const __m256i lo = _mm256_and_si256(j < 2 ? l : _mm256_srli_epi16(l, 4), low4);
        // Bits 2j, 2j + 1 of each qh byte moved to bits 4, 5 (16-bit shifts: the mask keeps
        // only bits that stayed in their byte).
        const __m256i hs = j == 0 ? _mm256_slli_epi16(hb, 4) : j == 1 ? _mm256_slli_epi16(hb, 2)
                           : j == 2 ? hb : _mm256_srli_epi16(hb, 2);
        const __m256i q = _mm256_or_si256(lo, _mm256_and_si256(hs, hi2));
        const __m256i sp = scale_pair(st, 8 * h + 2 * j);
        for (int t = 0; t < NT; ++t)
          isum[t] = madd_acc(isum[t], _mm256_maddubs_epi16(q, load256(a[t].q + 256 * b + 128 * h + 32 * j)), sp);
      }
    }
    const float d = f16_scale(blk + 208);
    for (int t = 0; t < NT; ++t)
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_set1_ps(d * a[t].d[b]), acc[t]);
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum8(acc[t]);
}

// Q3_K [hmask 32][qs 64][scales 12][d]: 2 low bits in qs, the third in hmask (set: no offset),
// so code = low | hbit << 2 in 0..7, less 4; groups of 16 with 6-bit signed scales.
template <int NT>
void int_q3_k(const uint8_t* row, const Q8Act* a, int64_t blocks, float* out, const uint8_t* stream_end) {
  const __m256i low2 = _mm256_set1_epi8(0x03), one = _mm256_set1_epi8(0x01);
  __m256 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = row + b * 110;
    prefetch_ahead<110>(blk, stream_end);
    const __m256i sv = k3_scales16(blk + 96);
    ScaleTable st;
    scale_table(sv, st);
    __m256i isum[NT];
    for (int t = 0; t < NT; ++t)  // - 4 Σ_g sc[g] bsum[g]
      isum[t] = _mm256_sub_epi32(_mm256_setzero_si256(),
                                 _mm256_slli_epi32(_mm256_madd_epi16(sv, load256(a[t].bsum + 16 * b)), 2));
    __m256i hm = load256(blk);
    for (int h = 0; h < 2; ++h) {
      __m256i qv = load256(blk + 32 + 32 * h);
      for (int j = 0; j < 4; ++j) {
        const __m256i q = _mm256_or_si256(_mm256_and_si256(qv, low2), _mm256_slli_epi16(_mm256_and_si256(hm, one), 2));
        qv = _mm256_srli_epi16(qv, 2);
        hm = _mm256_srli_epi16(hm, 1);
        const __m256i sp = scale_pair(st, 8 * h + 2 * j);
        for (int t = 0; t < NT; ++t)
          isum[t] = madd_acc(isum[t], _mm256_maddubs_epi16(q, load256(a[t].q + 256 * b + 128 * h + 32 * j)), sp);
      }
    }
    const float d = f16_scale(blk + 108);
    for (int t = 0; t < NT; ++t)
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_set1_ps(d * a[t].d[b]), acc[t]);
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum8(acc[t]);
}

// Q2_K [scales 16: low nibble scale, high nibble min][qs 64][d][dmin]: 2-bit codes, groups of 16.
template <int NT>
void int_q2_k(const uint8_t* row, const Q8Act* a, int64_t blocks, float* out, const uint8_t* stream_end) {
  const __m256i low2 = _mm256_set1_epi8(0x03);
  const __m128i low4 = _mm_set1_epi8(0x0F);
  __m256 acc[NT], accm[NT];
  for (int t = 0; t < NT; ++t) acc[t] = accm[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = row + b * 84;
    prefetch_ahead<84>(blk, stream_end);
    const __m128i sb = load128(blk);
    const __m256i sv = _mm256_cvtepu8_epi16(_mm_and_si128(sb, low4));
    const __m256i mv = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(sb, 4), low4));
    ScaleTable st;
    scale_table(sv, st);
    __m256i isum[NT];
    for (int t = 0; t < NT; ++t) isum[t] = _mm256_setzero_si256();
    for (int h = 0; h < 2; ++h) {
      __m256i qv = load256(blk + 16 + 32 * h);
      for (int j = 0; j < 4; ++j) {
        const __m256i q = _mm256_and_si256(qv, low2);
        qv = _mm256_srli_epi16(qv, 2);
        const __m256i sp = scale_pair(st, 8 * h + 2 * j);
        for (int t = 0; t < NT; ++t)
          isum[t] = madd_acc(isum[t], _mm256_maddubs_epi16(q, load256(a[t].q + 256 * b + 128 * h + 32 * j)), sp);
      }
    }
    const float d = f16_scale(blk + 80), dmin = f16_scale(blk + 82);
    for (int t = 0; t < NT; ++t) {
      const __m256i mp = _mm256_madd_epi16(mv, load256(a[t].bsum + 16 * b));
      const float dx = a[t].d[b];
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t]), _mm256_set1_ps(d * dx), acc[t]);
      accm[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mp), _mm256_set1_ps(dmin * dx), accm[t]);
    }
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum8(acc[t]) - hsum8(accm[t]);
}

template <int NT>
IntRowDot int_kernel(uint32_t type) {
  switch (GgmlType(type)) {
    case GgmlType::Q8_0: return int_q8_0<NT>;
    case GgmlType::Q2_K: return int_q2_k<NT>;
    case GgmlType::Q3_K: return int_q3_k<NT>;
    case GgmlType::Q4_K: return int_q45_k<NT, false>;
    case GgmlType::Q5_K: return int_q45_k<NT, true>;
    case GgmlType::Q6_K: return int_q6_k<NT>;
    default: return nullptr;
  }
}

inline IntRowDot int_kernel_for(uint32_t type, int nt) {
  switch (nt) {
    case 1: return int_kernel<1>(type);
    case 2: return int_kernel<2>(type);
    case 3: return int_kernel<3>(type);
    case 4: return int_kernel<4>(type);
    default: return nullptr;
  }
}
