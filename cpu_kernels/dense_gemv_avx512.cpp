// AVX-512 dense GEMV rows (compiled with -mavx512f/bw/...; entered only after the CPU check).
// A group of weight rows at a time (4, or 8 for one token of F32), each 16-wide column chunk
// decoded to fp32 once and multiplied into every token's accumulator: the weights stream once per
// call whatever the token count. One or two tokens of F16 and BF16 run the AVX2 rows instead.
#include <immintrin.h>

// GCC 12 false positive: the intrinsics' undefined pass-through operands (as in the other
// *_avx512.cpp files).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <algorithm>
#include <cstring>

#include "cpu_kernels/dense_gemv.h"

namespace mt::cpu::gemv_detail {

namespace {

// 16 weights of row r at column j as fp32 (mask: the valid lanes).
template <DType D>
inline __m512 load16(const WeightView& w, int64_t r, int64_t j, __mmask16 m) {
  if constexpr (D == DType::F32) {
    return _mm512_maskz_loadu_ps(m, reinterpret_cast<const float*>(w.data) + r * w.cols + j);
  } else if constexpr (D == DType::BF16) {
    const __m256i h = _mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t*>(w.data) + r * w.cols + j);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  } else {  // F16
    const __m256i h = _mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t*>(w.data) + r * w.cols + j);
    return _mm512_cvtph_ps(h);
  }
}

// 16 whole weights: a plain load (the masked form, for the last chunk only, cost the stream from
// RAM and 20-30% in cache).
template <DType D>
inline __m512 load16(const WeightView& w, int64_t r, int64_t j) {
  if constexpr (D == DType::F32) {
    return _mm512_loadu_ps(reinterpret_cast<const float*>(w.data) + r * w.cols + j);
  } else {
    const auto* p = reinterpret_cast<const uint16_t*>(w.data) + r * w.cols + j;
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    if constexpr (D == DType::BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    else return _mm512_cvtph_ps(h);
  }
}

// R rows from r, N tokens: each 16-wide chunk of every row decoded once, into every token's sum.
template <DType D, int N, int R>
void row_group(const WeightView& w, int64_t r, const float* x, float* y, int64_t ldy) {
  const int64_t K = w.cols, K16 = K / 16 * 16;
  constexpr int64_t es = D == DType::F32 ? 4 : 2;  // bytes per weight
  __m512 acc[R][N];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < N; ++t) acc[i][t] = _mm512_setzero_ps();
  const uint8_t* row0 = w.data + r * K * es;
  const RowPrefetch<R> prefetch(K * es);
  // Whole chunks, then the masked last one (written out twice, not as a lambda over acc: that
  // made GCC 12 keep the sums on the stack).
  for (int64_t j = 0; j < K16; j += 16) {
    if (j * es % 64 == 0) prefetch(row0 + j * es, j * es);
    __m512 wv[R];
    for (int i = 0; i < R; ++i) wv[i] = load16<D>(w, r + i, j);
    for (int t = 0; t < N; ++t) {
      const __m512 xv = _mm512_loadu_ps(x + t * K + j);
      for (int i = 0; i < R; ++i) acc[i][t] = _mm512_fmadd_ps(wv[i], xv, acc[i][t]);
    }
  }
  if (K16 < K) {
    const __mmask16 m = __mmask16((1u << (K - K16)) - 1);
    __m512 wv[R];
    for (int i = 0; i < R; ++i) wv[i] = load16<D>(w, r + i, K16, m);
    for (int t = 0; t < N; ++t) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + t * K + K16);
      for (int i = 0; i < R; ++i) acc[i][t] = _mm512_fmadd_ps(wv[i], xv, acc[i][t]);
    }
  }
  for (int t = 0; t < N; ++t)
    for (int i = 0; i < R; ++i) y[t * ldy + r + i] = _mm512_reduce_add_ps(acc[i][t]);
}

template <DType D, int N>
void rows_n(const WeightView& w, int64_t r0, int64_t r1, const float* x, float* y, int64_t ldy) {
  int64_t r = r0;
  if constexpr (N == 1)  // one token: 8 rows' streams at once (the registers allow it)
    for (; r + 8 <= r1; r += 8) row_group<D, N, 8>(w, r, x, y, ldy);
  for (; r + 4 <= r1; r += 4) row_group<D, N, 4>(w, r, x, y, ldy);
  for (; r < r1; ++r) row_group<D, N, 1>(w, r, x, y, ldy);
}

// FP8 e4m3 codes as fp32 * 2^-8: the byte moved to the top of a 16-bit lane and shifted back
// one arithmetic step gives s,s,eeee,mmm; clearing the second bit leaves the fp16 s,0eeee,mmm.
inline __m512 fp8_unscaled(const uint8_t* p, __mmask16 m) {
  const __m128i b = m == 0xffff ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)) : _mm_maskz_loadu_epi8(m, p);
  const __m256i v = _mm256_cvtepu8_epi16(b);
  const __m256i h = _mm256_and_si256(_mm256_srai_epi16(_mm256_slli_epi16(v, 8), 1), _mm256_set1_epi16(int16_t(0xBFFF)));
  return _mm512_cvtph_ps(h);
}

// FP8 with block scales: products summed per column block without the scale, then scaled once
// per block (a 4-row group never straddles a scale row: blocks are multiples of 16 rows).
template <int N>
void rows_fp8_n(const WeightView& w, int64_t r0, int64_t r1, const float* x, float* y, int64_t ldy) {
  const int64_t K = w.cols, B = w.block, SC = w.scale_cols();
  int64_t r = r0;
  auto scale = [&](int64_t row, int64_t jb) {
    float s;
    std::memcpy(&s, w.scale + (row / B) * SC + jb / B, 4);
    return _mm512_set1_ps(s * 256.0f);
  };
  for (; r + 4 <= r1; r += 4) {
    __m512 acc[4][N] = {};
    const uint8_t* row0 = w.data + r * K;
    const RowPrefetch<4> prefetch(K);
    for (int64_t jb = 0; jb < K; jb += B) {
      __m512 part[4][N] = {};
      const int64_t je = std::min(K, jb + B);
      for (int64_t j = jb; j < je; j += 16) {
        if (j % 64 == 0) prefetch(row0 + j, j);
        const __mmask16 m = je - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (je - j)) - 1);
        const __m512 w0 = fp8_unscaled(row0 + j, m), w1 = fp8_unscaled(row0 + K + j, m),
                     w2 = fp8_unscaled(row0 + 2 * K + j, m), w3 = fp8_unscaled(row0 + 3 * K + j, m);
        for (int t = 0; t < N; ++t) {
          const __m512 xv = _mm512_maskz_loadu_ps(m, x + t * K + j);
          part[0][t] = _mm512_fmadd_ps(w0, xv, part[0][t]);
          part[1][t] = _mm512_fmadd_ps(w1, xv, part[1][t]);
          part[2][t] = _mm512_fmadd_ps(w2, xv, part[2][t]);
          part[3][t] = _mm512_fmadd_ps(w3, xv, part[3][t]);
        }
      }
      const __m512 sv = scale(r, jb);
      for (int i = 0; i < 4; ++i)
        for (int t = 0; t < N; ++t) acc[i][t] = _mm512_fmadd_ps(part[i][t], sv, acc[i][t]);
    }
    for (int t = 0; t < N; ++t)
      for (int i = 0; i < 4; ++i) y[t * ldy + r + i] = _mm512_reduce_add_ps(acc[i][t]);
  }
  for (; r < r1; ++r) {
    __m512 acc[N] = {};
    for (int64_t jb = 0; jb < K; jb += B) {
      __m512 part[N] = {};
      const int64_t je = std::min(K, jb + B);
      for (int64_t j = jb; j < je; j += 16) {
        const __mmask16 m = je - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (je - j)) - 1);
        const __m512 wv = fp8_unscaled(w.data + r * K + j, m);
        for (int t = 0; t < N; ++t) part[t] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x + t * K + j), part[t]);
      }
      const __m512 sv = scale(r, jb);
      for (int t = 0; t < N; ++t) acc[t] = _mm512_fmadd_ps(part[t], sv, acc[t]);
    }
    for (int t = 0; t < N; ++t) y[t * ldy + r] = _mm512_reduce_add_ps(acc[t]);
  }
}

template <DType D>
void rows(const WeightView& w, int64_t r0, int64_t r1, const float* x, int64_t n, float* y, int64_t ldy) {
  if constexpr (D == DType::F8_E4M3) {
    switch (n) {
      case 1: return rows_fp8_n<1>(w, r0, r1, x, y, ldy);
      case 2: return rows_fp8_n<2>(w, r0, r1, x, y, ldy);
      case 3: return rows_fp8_n<3>(w, r0, r1, x, y, ldy);
      default: return rows_fp8_n<4>(w, r0, r1, x, y, ldy);
    }
  } else if constexpr (D != DType::F32) {
    // F16 and BF16 for one or two tokens run the AVX2 rows: there the weight stream is the limit,
    // and 8-wide conversions (vcvtph2ps, vpmovzxwd on ymm) in 2-row groups read 0.83-0.99 of RAM
    // bandwidth on the Zen 4 VM, where these 16-wide ones in 8-row groups read 0.70-0.79. Three
    // or four tokens are bound by FMA throughput, which 16 lanes raise on CPUs with full-width
    // units (docs/benchmarks.md, ninth session).
    switch (n) {
      case 1:
      case 2: return avx2_rows(D)(w, r0, r1, x, n, y, ldy);
      case 3: return rows_n<D, 3>(w, r0, r1, x, y, ldy);
      default: return rows_n<D, 4>(w, r0, r1, x, y, ldy);
    }
  } else {
    switch (n) {
      case 1: return rows_n<D, 1>(w, r0, r1, x, y, ldy);
      case 2: return rows_n<D, 2>(w, r0, r1, x, y, ldy);
      case 3: return rows_n<D, 3>(w, r0, r1, x, y, ldy);
      default: return rows_n<D, 4>(w, r0, r1, x, y, ldy);
    }
  }
}

// Rows decoded to fp32, exactly as cpu::dequantize_rows (FP8: code * 2^-8 exact in fp16, times
// scale * 2^8, one rounding: the product the table lookup gives). The scale is looked up once per
// column block (a multiple of 16 columns), not per chunk.
template <DType D>
void decode_rows_t(const WeightView& w, int64_t r0, int64_t n, float* out) {
  const int64_t K = w.cols;
  for (int64_t r = r0; r < r0 + n; ++r) {
    float* o = out + (r - r0) * K;
    if constexpr (D == DType::F8_E4M3) {
      const float* srow = w.scale + (r / w.block) * w.scale_cols();
      const uint8_t* row = w.data + r * K;
      for (int64_t jb = 0, b = 0; jb < K; jb += w.block, ++b) {
        float sc;
        std::memcpy(&sc, srow + b, 4);
        const __m512 sv = _mm512_set1_ps(sc * 256.0f);
        const int64_t je = std::min(K, jb + w.block);
        for (int64_t j = jb; j < je; j += 16) {
          const __mmask16 m = je - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (je - j)) - 1);
          _mm512_mask_storeu_ps(o + j, m, _mm512_mul_ps(fp8_unscaled(row + j, m), sv));
        }
      }
    } else {
      for (int64_t j = 0; j < K; j += 16) {
        const __mmask16 m = K - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (K - j)) - 1);
        _mm512_mask_storeu_ps(o + j, m, load16<D>(w, r, j, m));
      }
    }
  }
}

void decode_rows(const WeightView& w, int64_t r0, int64_t n, float* out) {
  switch (w.dtype) {
    case DType::F32: return decode_rows_t<DType::F32>(w, r0, n, out);
    case DType::BF16: return decode_rows_t<DType::BF16>(w, r0, n, out);
    case DType::F16: return decode_rows_t<DType::F16>(w, r0, n, out);
    default: return decode_rows_t<DType::F8_E4M3>(w, r0, n, out);
  }
}

}  // namespace

DecodeRowsFn avx512_decode_rows() { return decode_rows; }

RowsFn avx512_rows(DType dt) {
  switch (dt) {
    case DType::F32: return rows<DType::F32>;
    case DType::BF16: return rows<DType::BF16>;
    case DType::F16: return rows<DType::F16>;
    case DType::F8_E4M3: return rows<DType::F8_E4M3>;
    default: return nullptr;
  }
}

}  // namespace mt::cpu::gemv_detail
