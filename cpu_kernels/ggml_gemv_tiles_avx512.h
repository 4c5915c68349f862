// What the AVX-512 tile kernels share (cpu_kernels/ggml_gemv_tiles_avx512.cpp and its GFNI
// variants, ggml_gemv_tiles_gfni_avx512.cpp), and the Q2_K kernel, whose plane unpacking each
// compiles its own way. Included only by files built for AVX-512. Everything is in an unnamed
// namespace on purpose: each file compiles it under its own target flags, and the linker must not
// pick one file's copy (with GFNI instructions) for the other.
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
inline void load_lines(const uint8_t* c, const uint8_t* end, __m512i* l) {
  for (int k = 0; k < N; ++k) {
    tile_prefetch_line(c + 64 * k, end);
    l[k] = _mm512_loadu_si512(c + 64 * k);
  }
}

// The GF(2) affine matrix (vgf2p8affineqb) that moves bits 2j, 2j + 1 of each byte to bits 0, 1
// and clears the rest: one instruction for a shift and a mask. Result bit i is row 7 - i.
constexpr int64_t pick_bit_pair(int j) {
  return int64_t((uint64_t(1) << (2 * j)) << 56 | (uint64_t(1) << (2 * j + 1)) << 48);
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

// Q2_K, per group of 16 values: one 64-byte load holds the 16 rows' codes as four 2-bit planes;
// each plane is one vpdpbusd per token with the 4 activation codes it holds. Plane 0 is a mask;
// planes 1-3 a shift and a mask each, or with Gfni one vgf2p8affineqb each (one op for two; with
// the vpdpwssd below, 0.745 -> 0.79 of RAM bandwidth on the 2-core VM). The group's scales (low
// nibbles) and mins (high nibbles) one vpdpwssd each per 16 rows.
template <int NT, bool Gfni>
void tile_q2k(const uint8_t* tile, const Q8Act* a, int64_t blocks, float* out, const uint8_t* end) {
  const __m512i low2 = _mm512_set1_epi8(0x03), low4 = _mm512_set1_epi32(0x0F), high4 = _mm512_set1_epi32(0xF0);
  const __m512i pick1 = _mm512_set1_epi64(pick_bit_pair(1)), pick2 = _mm512_set1_epi64(pick_bit_pair(2)),
                pick3 = _mm512_set1_epi64(pick_bit_pair(3));
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* tb = tile + b * Q2KTile::bytes;
    for (int64_t o = 0; o < Q2KTile::codes; o += 64) tile_prefetch_line(tb + o, end);  // d, dmin, scale/min bytes
    __m512i isum[NT], msum[NT];
    for (int t = 0; t < NT; ++t) isum[t] = msum[t] = _mm512_setzero_si512();
    for (int g = 0; g < 16; ++g) {
      const uint8_t* c = tb + Q2KTile::codes + 64 * g;
      tile_prefetch_line(c, end);
      const __m512i v = _mm512_loadu_si512(c);
      const __m512i q0 = _mm512_and_si512(v, low2);
      __m512i q1, q2, q3;
      if constexpr (Gfni) {  // a shift and a mask in one instruction
        q1 = _mm512_gf2p8affine_epi64_epi8(v, pick1, 0);
        q2 = _mm512_gf2p8affine_epi64_epi8(v, pick2, 0);
        q3 = _mm512_gf2p8affine_epi64_epi8(v, pick3, 0);
      } else {
        q1 = _mm512_and_si512(_mm512_srli_epi16(v, 2), low2);
        q2 = _mm512_and_si512(_mm512_srli_epi16(v, 4), low2);
        q3 = _mm512_and_si512(_mm512_srli_epi16(v, 6), low2);
      }
      // Scale and min as int32 lanes with a zero high word, so one vpdpwssd applies each (a
      // group's sum fits in int16: |16 x 3 x 127| < 2^15); the min stays in place (16 x, undone
      // at the block's end): a mask, not a shift, which only port 0 runs.
      const __m512i w = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tb + Q2KTile::scm + 16 * g)));
      const __m512i sc = _mm512_and_si512(w, low4), mn = _mm512_and_si512(w, high4);
      for (int t = 0; t < NT; ++t) {
        const int8_t* xq = a[t].q + 256 * b + 16 * g;
        isum[t] = _mm512_dpwssd_epi32(isum[t], group_dot(q0, q1, q2, q3, xq), sc);
        // The group's sum in the low word, the next group's in the high one (mn's high word is 0;
        // quantise_acts keeps a spare sum after the last).
        msum[t] = _mm512_dpwssd_epi32(msum[t], mn, bcast4(a[t].bsum + 16 * b + g));
      }
    }
    kquant_block_end<NT>(tb, 1.0f, 1.0f / 16.0f, isum, msum, a, b, acc);
  }
  for (int t = 0; t < NT; ++t) _mm512_storeu_ps(out + 16 * t, acc[t]);
}

}  // namespace

}  // namespace mt::cpu::ggml_gemv_detail
