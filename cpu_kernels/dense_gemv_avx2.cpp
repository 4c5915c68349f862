// AVX2 dense GEMV rows (compiled with -mavx2 -mfma -mf16c; entered only after the CPU check).
// A group of rows at a time (F32: 4, or 8 for one token; F16, BF16: 2), each 8-wide column chunk
// decoded once for every token; the last cols % 8 columns in scalar code. The AVX-512 level runs
// these for F16 and BF16 with one or two tokens (dense_gemv_avx512.cpp).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "cpu_kernels/dense_gemv.h"
#include "runtime/core/dtype.h"

namespace mt::cpu::gemv_detail {

namespace {

template <DType D>
inline __m256 load8(const WeightView& w, int64_t r, int64_t j) {
  if constexpr (D == DType::F32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(w.data) + r * w.cols + j);
  } else if constexpr (D == DType::BF16) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(w.data) + r * w.cols + j));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  } else {  // F16
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(reinterpret_cast<const uint16_t*>(w.data) + r * w.cols + j));
    return _mm256_cvtph_ps(h);
  }
}

template <DType D>
inline float load1(const WeightView& w, int64_t r, int64_t j) {
  const int64_t i = r * w.cols + j;
  if constexpr (D == DType::F32) {
    float f;
    std::memcpy(&f, w.data + i * 4, 4);
    return f;
  } else {  // BF16, F16
    uint16_t h;
    std::memcpy(&h, w.data + i * 2, 2);
    return D == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
  }
}

inline float hsum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

// R rows from r, N tokens: each 8-wide chunk of every row decoded once, into every token's sum.
// 16-bit types, one token: C = 2 chunks a step into two sums per row, so that a 2-row group still
// keeps four FMA chains in flight.
template <DType D, int N, int R>
void row_group(const WeightView& w, int64_t r, const float* x, float* y, int64_t ldy) {
  constexpr bool narrow = D != DType::F32;
  constexpr int C = narrow && N == 1 ? 2 : 1;
  const int64_t K = w.cols, K8 = K / 8 * 8, KC = K / (8 * C) * (8 * C);
  constexpr int64_t es = D == DType::F32 ? 4 : 2;  // bytes per weight
  __m256 acc[R][N][C];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < N; ++t)
      for (int c = 0; c < C; ++c) acc[i][t][c] = _mm256_setzero_ps();
  const uint8_t* row0 = w.data + r * K * es;
  const RowPrefetch<R, narrow> prefetch(K * es);
  // C chunks a step, then single chunks to K8 into the first sums. A row's chunk at a time, x
  // reloaded from L1: 16 ymm registers hold 8 sums but not 8 chunks. (Written out twice, not as
  // a lambda over acc: that made GCC 12 keep the sums on the stack.)
  int64_t j = 0;
  for (; j < KC; j += 8 * C) {
    if (j * es % 64 == 0) prefetch(row0 + j * es, j * es);
    for (int c = 0; c < C; ++c)
      for (int i = 0; i < R; ++i) {
        const __m256 wv = load8<D>(w, r + i, j + 8 * c);
        for (int t = 0; t < N; ++t) acc[i][t][c] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + t * K + j + 8 * c), acc[i][t][c]);
      }
  }
  for (; j < K8; j += 8)
    for (int i = 0; i < R; ++i) {
      const __m256 wv = load8<D>(w, r + i, j);
      for (int t = 0; t < N; ++t) acc[i][t][0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + t * K + j), acc[i][t][0]);
    }
  for (int t = 0; t < N; ++t)
    for (int i = 0; i < R; ++i) {
      __m256 sum = acc[i][t][0];
      for (int c = 1; c < C; ++c) sum = _mm256_add_ps(sum, acc[i][t][c]);
      float s = hsum(sum);
      for (int64_t k = K8; k < K; ++k) s += load1<D>(w, r + i, k) * x[t * K + k];
      y[t * ldy + r + i] = s;
    }
}

template <DType D, int N>
void rows_n(const WeightView& w, int64_t r0, int64_t r1, const float* x, float* y, int64_t ldy) {
  int64_t r = r0;
  if constexpr (D == DType::F32) {
    if constexpr (N == 1)  // one token: 8 rows' streams at once
      for (; r + 8 <= r1; r += 8) row_group<D, N, 8>(w, r, x, y, ldy);
    for (; r + 4 <= r1; r += 4) row_group<D, N, 4>(w, r, x, y, ldy);
  } else {
    for (; r + 2 <= r1; r += 2) row_group<D, N, 2>(w, r, x, y, ldy);
  }
  for (; r < r1; ++r) row_group<D, N, 1>(w, r, x, y, ldy);
}

// FP8 e4m3 codes as fp32 * 2^-8 (as in the AVX-512 file: shift left 8, arithmetic right 1, clear
// bit 14 gives the fp16 s,0eeee,mmm).
inline __m256 fp8_unscaled(const uint8_t* p) {
  uint64_t b8;
  std::memcpy(&b8, p, 8);
  const __m128i v = _mm_cvtepu8_epi16(_mm_cvtsi64_si128(static_cast<long long>(b8)));
  const __m128i h = _mm_and_si128(_mm_srai_epi16(_mm_slli_epi16(v, 8), 1), _mm_set1_epi16(int16_t(0xBFFF)));
  return _mm256_cvtph_ps(h);
}

// FP8 with block scales: products summed per column block without the scale, then scaled once
// per block (a 4-row group never straddles a scale row); the last K % 8 columns in scalar code.
template <int N>
void rows_fp8_n(const WeightView& w, int64_t r0, int64_t r1, const float* x, float* y, int64_t ldy) {
  const int64_t K = w.cols, B = w.block, SC = w.scale_cols();
  auto scale = [&](int64_t row, int64_t jb) {
    float s;
    std::memcpy(&s, w.scale + (row / B) * SC + jb / B, 4);
    return s;
  };
  auto tail = [&](int64_t row, int t, int64_t jb, int64_t je) {  // scalar columns [jb, je)
    float s = 0.0f;
    for (int64_t j = jb; j < je; ++j) s += fp8e4m3_to_f32(w.data[row * K + j]) * scale(row, j) * x[t * K + j];
    return s;
  };
  const int64_t K8 = K / 8 * 8;
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    __m256 acc[4][N] = {};
    const uint8_t* row0 = w.data + r * K;
    const RowPrefetch<4> prefetch(K);
    for (int64_t jb = 0; jb < K8; jb += B) {
      __m256 part[4][N] = {};
      const int64_t je = std::min(K8, jb + B);
      for (int64_t j = jb; j < je; j += 8) {
        if (j % 64 == 0) prefetch(row0 + j, j);
        const __m256 w0 = fp8_unscaled(row0 + j), w1 = fp8_unscaled(row0 + K + j), w2 = fp8_unscaled(row0 + 2 * K + j),
                     w3 = fp8_unscaled(row0 + 3 * K + j);
        for (int t = 0; t < N; ++t) {
          const __m256 xv = _mm256_loadu_ps(x + t * K + j);
          part[0][t] = _mm256_fmadd_ps(w0, xv, part[0][t]);
          part[1][t] = _mm256_fmadd_ps(w1, xv, part[1][t]);
          part[2][t] = _mm256_fmadd_ps(w2, xv, part[2][t]);
          part[3][t] = _mm256_fmadd_ps(w3, xv, part[3][t]);
        }
      }
      const __m256 sv = _mm256_set1_ps(scale(r, jb) * 256.0f);
      for (int i = 0; i < 4; ++i)
        for (int t = 0; t < N; ++t) acc[i][t] = _mm256_fmadd_ps(part[i][t], sv, acc[i][t]);
    }
    for (int t = 0; t < N; ++t)
      for (int i = 0; i < 4; ++i) y[t * ldy + r + i] = hsum(acc[i][t]) + tail(r + i, t, K8, K);
  }
  for (; r < r1; ++r) {
    __m256 acc[N] = {};
    for (int64_t jb = 0; jb < K8; jb += B) {
      __m256 part[N] = {};
      const int64_t je = std::min(K8, jb + B);
      for (int64_t j = jb; j < je; j += 8) {
        const __m256 wv = fp8_unscaled(w.data + r * K + j);
        for (int t = 0; t < N; ++t) part[t] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + t * K + j), part[t]);
      }
      const __m256 sv = _mm256_set1_ps(scale(r, jb) * 256.0f);
      for (int t = 0; t < N; ++t) acc[t] = _mm256_fmadd_ps(part[t], sv, acc[t]);
    }
    for (int t = 0; t < N; ++t) y[t * ldy + r] = hsum(acc[t]) + tail(r, t, K8, K);
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
  } else {
    switch (n) {
      case 1: return rows_n<D, 1>(w, r0, r1, x, y, ldy);
      case 2: return rows_n<D, 2>(w, r0, r1, x, y, ldy);
      case 3: return rows_n<D, 3>(w, r0, r1, x, y, ldy);
      default: return rows_n<D, 4>(w, r0, r1, x, y, ldy);
    }
  }
}

// Rows decoded to fp32, exactly as cpu::dequantize_rows; the scale looked up once per column
// block; the last K % 8 columns in scalar code.
template <DType D>
void decode_rows_t(const WeightView& w, int64_t r0, int64_t n, float* out) {
  const int64_t K = w.cols, K8 = K / 8 * 8;
  for (int64_t r = r0; r < r0 + n; ++r) {
    float* o = out + (r - r0) * K;
    if constexpr (D == DType::F8_E4M3) {
      const float* srow = w.scale + (r / w.block) * w.scale_cols();
      const uint8_t* row = w.data + r * K;
      for (int64_t jb = 0, b = 0; jb < K; jb += w.block, ++b) {
        float sc;
        std::memcpy(&sc, srow + b, 4);
        const __m256 sv = _mm256_set1_ps(sc * 256.0f);
        const int64_t je = std::min(K, jb + w.block), je8 = std::min(je, K8);
        int64_t j = jb;
        for (; j < je8; j += 8) _mm256_storeu_ps(o + j, _mm256_mul_ps(fp8_unscaled(row + j), sv));
        for (; j < je; ++j) o[j] = fp8e4m3_to_f32(row[j]) * sc;
      }
    } else {
      int64_t j = 0;
      for (; j < K8; j += 8) _mm256_storeu_ps(o + j, load8<D>(w, r, j));
      for (; j < K; ++j) o[j] = load1<D>(w, r, j);
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

DecodeRowsFn avx2_decode_rows() { return decode_rows; }

RowsFn avx2_rows(DType dt) {
  switch (dt) {
    case DType::F32: return rows<DType::F32>;
    case DType::BF16: return rows<DType::BF16>;
    case DType::F16: return rows<DType::F16>;
    case DType::F8_E4M3: return rows<DType::F8_E4M3>;
    default: return nullptr;
  }
}

}  // namespace mt::cpu::gemv_detail
