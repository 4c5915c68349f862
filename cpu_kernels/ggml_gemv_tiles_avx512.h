// What the AVX-512 tile kernels share (cpu_kernels/ggml_gemv_tiles_avx512.cpp and
// ggml_gemv_tiles_gfni_avx512.cpp). Included only by files built for AVX-512. Everything is in an
// unnamed namespace on purpose: each file compiles it under its own target flags, and the linker
// must not pick one file's copy (with GFNI and VBMI instructions) for the other.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "cpu_kernels/ggml_gemv.h"
#include "cpu_kernels/ggml_gemv_tiles.h"
#include "runtime/core/ggml_tiles.h"

namespace mt::cpu::ggml_gemv_detail {

namespace {  // NOLINT(google-build-namespaces): see above

using Q4KTile = ggml_tile_layout::Q4K;
using Q80Tile = ggml_tile_layout::Q80;
using Q2KTile = ggml_tile_layout::Q2K;
using Q3KTile = ggml_tile_layout::Q3K;
using Q5KTile = ggml_tile_layout::Q5K;
using Q6KTile = ggml_tile_layout::Q6K;

inline __m512i bcast4(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// n consecutive 64-byte lines of a tile at c, each prefetched ahead within the thread's run.
template <int N>
inline void load_lines(const uint8_t* c, const TileStream& pf, __m512i* l) {
  for (int k = 0; k < N; ++k) {
    tile_prefetch_line(c + 64 * k, pf);
    l[k] = _mm512_loadu_si512(c + 64 * k);
  }
}

// One 16-value group of 16 rows from its four planes: plane k (byte i of row r's lane holding the
// code of value 4k + i) against activation codes xq[4k..4k+3], as int32 per row.
inline __m512i group_dot(__m512i q0, __m512i q1, __m512i q2, __m512i q3, const int8_t* xq) {
  __m512i s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q0, bcast4(xq));
  s = _mm512_dpbusd_epi32(s, q1, bcast4(xq + 4));
  s = _mm512_dpbusd_epi32(s, q2, bcast4(xq + 8));
  return _mm512_dpbusd_epi32(s, q3, bcast4(xq + 12));
}

// Bits of `a` where `mask` is set, of `b` elsewhere.
inline __m512i bitselect(__m512i mask, __m512i a, __m512i b) { return _mm512_ternarylogic_epi32(a, b, mask, 0xE4); }

// A K-quant tile block's end (Q2_K, Q4_K, Q5_K): acc += isum · (d · d_x · d_scale) − msum · (dmin · d_x · m_scale),
// 16 rows at once, with d[16] and dmin[16] as fp16 at the layouts' d and dmin (the same for both).
static_assert(Q4KTile::d == Q2KTile::d && Q4KTile::dmin == Q2KTile::dmin && Q5KTile::d == Q4KTile::d &&
              Q5KTile::dmin == Q4KTile::dmin && Q5KTile::m == Q4KTile::m);
template <int NT>
inline void kquant_block_end(const uint8_t* tb, float d_scale, float m_scale, const __m512i* isum, const __m512i* msum,
                             const Q8Act* a, int64_t b, __m512* acc) {
  const __m512 d = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tb + Q4KTile::d))),
                                 _mm512_set1_ps(d_scale));
  const __m512 dmin = _mm512_mul_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tb + Q4KTile::dmin))),
                                    _mm512_set1_ps(m_scale));
  for (int t = 0; t < NT; ++t) {
    const __m512 dx = _mm512_set1_ps(a[t].d[b]);
    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(d, dx), acc[t]);
    acc[t] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(msum[t]), _mm512_mul_ps(dmin, dx), acc[t]);
  }
}

}  // namespace

}  // namespace mt::cpu::ggml_gemv_detail
