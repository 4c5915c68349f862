// AVX-512 dense GEMV rows (compiled with -mavx512f/bw/...; entered only after the CPU check).
// Four weight rows at a time, each 16-wide column chunk decoded to fp32 once and multiplied
// into every token's accumulator: the weights stream once per call whatever the token count.
#include <immintrin.h>

// GCC 12 false positive: the intrinsics' undefined pass-through operands (as in the other
// *_avx512.cpp files).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

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
  } else if constexpr (D == DType::F16) {
    const __m256i h = _mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t*>(w.data) + r * w.cols + j);
    return _mm512_cvtph_ps(h);
  } else {  // F8_E4M3: the 7 magnitude bits shifted into an fp16 are the value * 2^-8, exactly
    // (normals and subnormals alike); the sign goes to the fp16 sign bit. Then * 256 * scale.
    const __m128i b = _mm_maskz_loadu_epi8(m, w.data + r * w.cols + j);
    const __m256i v = _mm256_cvtepu8_epi16(b);
    const __m256i mag = _mm256_slli_epi16(_mm256_and_si256(v, _mm256_set1_epi16(0x7f)), 7);
    const __m256i sign = _mm256_slli_epi16(_mm256_and_si256(v, _mm256_set1_epi16(0x80)), 8);
    const __m512 f = _mm512_cvtph_ps(_mm256_or_si256(mag, sign));
    float s;
    std::memcpy(&s, w.scale + (r / w.block) * w.scale_cols() + j / w.block, 4);
    return _mm512_mul_ps(f, _mm512_set1_ps(s * 256.0f));
  }
}

template <DType D, int N>
void rows_n(const WeightView& w, int64_t r0, int64_t r1, const float* x, float* y, int64_t ldy) {
  const int64_t K = w.cols;
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    __m512 acc[4][N] = {};  // value-initialised: all lanes zero
    for (int64_t j = 0; j < K; j += 16) {
      const __mmask16 m = K - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (K - j)) - 1);
      const __m512 w0 = load16<D>(w, r, j, m), w1 = load16<D>(w, r + 1, j, m), w2 = load16<D>(w, r + 2, j, m),
                   w3 = load16<D>(w, r + 3, j, m);
      for (int t = 0; t < N; ++t) {
        const __m512 xv = _mm512_maskz_loadu_ps(m, x + t * K + j);
        acc[0][t] = _mm512_fmadd_ps(w0, xv, acc[0][t]);
        acc[1][t] = _mm512_fmadd_ps(w1, xv, acc[1][t]);
        acc[2][t] = _mm512_fmadd_ps(w2, xv, acc[2][t]);
        acc[3][t] = _mm512_fmadd_ps(w3, xv, acc[3][t]);
      }
    }
    for (int t = 0; t < N; ++t)
      for (int i = 0; i < 4; ++i) y[t * ldy + r + i] = _mm512_reduce_add_ps(acc[i][t]);
  }
  for (; r < r1; ++r) {
    __m512 acc[N] = {};
    for (int64_t j = 0; j < K; j += 16) {
      const __mmask16 m = K - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (K - j)) - 1);
      const __m512 wv = load16<D>(w, r, j, m);
      for (int t = 0; t < N; ++t) acc[t] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x + t * K + j), acc[t]);
    }
    for (int t = 0; t < N; ++t) y[t * ldy + r] = _mm512_reduce_add_ps(acc[t]);
  }
}

template <DType D>
void rows(const WeightView& w, int64_t r0, int64_t r1, const float* x, int64_t n, float* y, int64_t ldy) {
  switch (n) {
    case 1: return rows_n<D, 1>(w, r0, r1, x, y, ldy);
    case 2: return rows_n<D, 2>(w, r0, r1, x, y, ldy);
    case 3: return rows_n<D, 3>(w, r0, r1, x, y, ldy);
    default: return rows_n<D, 4>(w, r0, r1, x, y, ldy);
  }
}

}  // namespace

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
