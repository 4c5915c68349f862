// Tile GEMV on AVX-512 VNNI (cpu_kernels/ggml_gemv_tiles.h; the layout: runtime/core/ggml_tiles.h).
// GCC 12 warns inside its own AVX-512 intrinsics (the self-initialised `__Y` of
// _mm512_undefined_*, GCC bug 105593, fixed in 13): a false positive, silenced for this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "cpu_kernels/ggml_gemv.h"
#include "cpu_kernels/ggml_gemv_tiles.h"
#include "cpu_kernels/ggml_gemv_tiles_avx512.h"
#include "runtime/core/ggml_tiles.h"
#include "runtime/core/ggml_types.h"

namespace mt::cpu::ggml_gemv_detail {

namespace {

// The mins of a Q4_K or Q5_K tile block, two sub-blocks per vpdpwssd: lanes (m[2p][r], m[2p+1][r])
// · (bsum32[2p], bsum32[2p+1]).
template <int NT>
inline void k4_mins(const uint8_t* tb, const Q8Act* a, int64_t b, __m512i* msum) {
  for (int p = 0; p < 4; ++p) {
    const __m512i mw = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tb + Q4KTile::m + 32 * p)));
    for (int t = 0; t < NT; ++t) msum[t] = _mm512_dpwssd_epi32(msum[t], mw, bcast4(a[t].bsum32 + 8 * b + 2 * p));
  }
}

template <int NT>
void tile_q4k(const uint8_t* tile, const Q8Act* a, int64_t blocks, float* out, TileStream pf) {
  const __m512i low4 = _mm512_set1_epi8(0x0F), high4 = _mm512_set1_epi8(char(0xF0));
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* tb = tile + b * Q4KTile::bytes;
    for (int64_t o = 0; o < Q4KTile::codes; o += 64) tile_prefetch_line(tb + o, pf);  // d, dmin, scales, mins
    __m512i isum[NT], msum[NT];
    for (int t = 0; t < NT; ++t) isum[t] = msum[t] = _mm512_setzero_si512();
    for (int j = 0; j < 8; ++j) {
      // The high nibbles stay in place: their chain sums 16 x their products, and one shift of
      // the low chain per sub-block (not one per 64 bytes) lines the two up (shifts share port 0
      // with vpdpbusd on AVX-512).
      __m512i sj[NT], sk[NT];
      for (int t = 0; t < NT; ++t) sj[t] = sk[t] = _mm512_setzero_si512();
      for (int h = 0; h < 4; ++h) {
        const uint8_t* c = tb + Q4KTile::codes + (4 * j + h) * 64;
        tile_prefetch_line(c, pf);
        const __m512i v = _mm512_loadu_si512(c);
        const __m512i lo = _mm512_and_si512(v, low4), hi = _mm512_and_si512(v, high4);
        for (int t = 0; t < NT; ++t) {
          const int8_t* xq = a[t].q + 256 * b + 32 * j + 8 * h;
          sj[t] = _mm512_dpbusd_epi32(sj[t], lo, bcast4(xq));
          sk[t] = _mm512_dpbusd_epi32(sk[t], hi, bcast4(xq + 4));
        }
      }
      const __m512i sc = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tb + Q4KTile::sc + 16 * j)));
      for (int t = 0; t < NT; ++t) isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(_mm512_add_epi32(_mm512_slli_epi32(sj[t], 4), sk[t]), sc));
    }
    k4_mins<NT>(tb, a, b, msum);
    kquant_block_end<NT>(tb, 1.0f / 16.0f, 1.0f, isum, msum, a, b, acc);  // isum is 16 x (the high-nibble trick)
  }
  for (int t = 0; t < NT; ++t) _mm512_storeu_ps(out + 16 * t, acc[t]);
}

// Q2_K, per group of 16 values: one 64-byte load holds the 16 rows' codes as four 2-bit planes;
// each plane is one vpdpbusd per token with the 4 activation codes it holds. Plane 0 is a mask;
// planes 1-3 a shift and a mask each. The group's scales (low nibbles) and mins (high nibbles)
// one vpdpwssd each per 16 rows. The form for AVX-512 CPUs without GFNI and VBMI (Cooper Lake);
// the others run ggml_gemv_tiles_gfni_avx512.cpp's.
template <int NT>
void tile_q2k(const uint8_t* tile, const Q8Act* a, int64_t blocks, float* out, TileStream pf) {
  const __m512i low2 = _mm512_set1_epi8(0x03), low4 = _mm512_set1_epi32(0x0F), high4 = _mm512_set1_epi32(0xF0);
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* tb = tile + b * Q2KTile::bytes;
    for (int64_t o = 0; o < Q2KTile::codes; o += 64) tile_prefetch_line(tb + o, pf);  // d, dmin, scale/min bytes
    __m512i isum[NT], msum[NT];
    for (int t = 0; t < NT; ++t) isum[t] = msum[t] = _mm512_setzero_si512();
    for (int g = 0; g < 16; ++g) {
      const uint8_t* c = tb + Q2KTile::codes + 64 * g;
      tile_prefetch_line(c, pf);
      const __m512i v = _mm512_loadu_si512(c);
      const __m512i q0 = _mm512_and_si512(v, low2);
      const __m512i q1 = _mm512_and_si512(_mm512_srli_epi16(v, 2), low2),
                    q2 = _mm512_and_si512(_mm512_srli_epi16(v, 4), low2),
                    q3 = _mm512_and_si512(_mm512_srli_epi16(v, 6), low2);
      // Scale and min as int32 lanes with a zero high word, so one vpdpwssd applies each (a
      // group's sum fits in int16: |16 x 3 x 127| < 2^15); the min stays in place (16 x, undone
      // at the block's end): a mask, not a shift, which only port 0 runs.
      const __m512i w = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tb + Q2KTile::scm + 16 * g)));
      const __m512i sc = _mm512_and_si512(w, low4), mn = _mm512_and_si512(w, high4);
      for (int t = 0; t < NT; ++t) {
        const int8_t* xq = a[t].q + 256 * b + 16 * g;
        isum[t] = _mm512_dpwssd_epi32(isum[t], group_dot(q0, q1, q2, q3, xq), sc);
        msum[t] = _mm512_dpwssd_epi32(msum[t], mn, bcast4(a[t].bsum_w + 16 * b + g));  // the group's activation sum
      }
    }
    kquant_block_end<NT>(tb, 1.0f, 1.0f / 16.0f, isum, msum, a, b, acc);
  }
  for (int t = 0; t < NT; ++t) _mm512_storeu_ps(out + 16 * t, acc[t]);
}

// Q3_K. Per block, the 16 rows' 6-bit scales of all 16 groups to int8 s - 32 (four vectors, kept
// on the stack). Per pair of groups (three 64-byte lines): group A's codes are bits 0-2 of the
// lines, group B's bits 4-6 (kept in place: B's chain sums 16 x its products), and the two groups'
// last codes are gathered from bits 3 and 7 at once (three shifts, two bit selects). Each plane is
// one vpdpbusd per token; a group's sum times its scale is one vpdpwssd per 16 rows, and so is its
// scale times its activation codes' sum, 4 x which comes off at the block's end (the stored code
// is q + 4).
template <int NT>
void tile_q3k(const uint8_t* tile, const Q8Act* a, int64_t blocks, float* out, TileStream pf) {
  const __m512i low3 = _mm512_set1_epi8(0x07), high3 = _mm512_set1_epi8(0x70), low4 = _mm512_set1_epi8(0x0F),
                low6 = _mm512_set1_epi8(0x3F), bias = _mm512_set1_epi8(32),
                sel11 = _mm512_set1_epi8(0x11), sel33 = _mm512_set1_epi8(0x33);
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  // The int8 scales of each pair of groups (8k + 2c, 8k + 2c + 1) as byte pairs per row: rows 0-7
  // in lane c of pair_lo[k], rows 8-15 in lane c of pair_hi[k], so one widening gives a pair's
  // scales as the int16 pair (s_A, s_B) in each row's lane.
  alignas(64) int8_t pair_lo[2][64], pair_hi[2][64];
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* tb = tile + b * Q3KTile::bytes;
    for (int64_t o = 0; o < Q3KTile::codes; o += 64) tile_prefetch_line(tb + o, pf);  // d, scales
    {
      const __m512i z0 = _mm512_loadu_si512(tb + Q3KTile::slo), z1 = _mm512_loadu_si512(tb + Q3KTile::slo + 64),
                    hi = _mm512_loadu_si512(tb + Q3KTile::shi);
      // Group 8k + 2c + e's bit pair is at bits 4k + 2e of the high byte: each to bits 4-5.
      const __m512i lo[4] = {z0, _mm512_srli_epi16(z0, 4), z1, _mm512_srli_epi16(z1, 4)};
      const __m512i hp[4] = {_mm512_slli_epi16(hi, 4), _mm512_slli_epi16(hi, 2), hi, _mm512_srli_epi16(hi, 2)};
      __m512i sc[4];  // [2k + e], byte 16c + r: the scale of group 8k + 2c + e, row r
      for (int v = 0; v < 4; ++v) sc[v] = _mm512_sub_epi8(_mm512_and_si512(bitselect(low4, lo[v], hp[v]), low6), bias);
      for (int k = 0; k < 2; ++k) {
        _mm512_store_si512(pair_lo[k], _mm512_unpacklo_epi8(sc[2 * k], sc[2 * k + 1]));
        _mm512_store_si512(pair_hi[k], _mm512_unpackhi_epi8(sc[2 * k], sc[2 * k + 1]));
      }
    }
    // isum: the groups' sums of stored codes times their scales; osum: the scales times the
    // activation codes' sums, 4 x which the offset of the stored codes (q + 4) takes off at the end.
    __m512i isum[NT], osum[NT];
    for (int t = 0; t < NT; ++t) isum[t] = osum[t] = _mm512_setzero_si512();
    for (int p = 0; p < 8; ++p) {
      __m512i l[3];
      load_lines<3>(tb + Q3KTile::codes + 192 * p, pf, l);
      const __m512i l0 = l[0], l1 = l[1], l2 = l[2];
      // Bit L of the last codes (bits 3 and 7 of line L) to bits L and 4 + L (16-bit shifts: what
      // a byte takes from its neighbour is not selected or masked off).
      const __m512i u = bitselect(sel33, bitselect(sel11, _mm512_srli_epi16(l0, 3), _mm512_srli_epi16(l1, 2)),
                                  _mm512_srli_epi16(l2, 1));
      const __m512i qa[4] = {_mm512_and_si512(l0, low3), _mm512_and_si512(l1, low3), _mm512_and_si512(l2, low3),
                             _mm512_and_si512(u, low3)};
      const __m512i qb[4] = {_mm512_and_si512(l0, high3), _mm512_and_si512(l1, high3), _mm512_and_si512(l2, high3),
                             _mm512_and_si512(u, high3)};
      // The pair's scales as int16 pairs (s_A, s_B) per row; its two sums of stored codes packed
      // the same way, so one vpdpwssd scales both. Each sum fits in int16 (16 x 7 x 127 < 2^15);
      // group B's is 16 x with its low 4 bits zero, so a shift by 12 puts it in the high word.
      const int k = p / 4, cc = p % 4;
      const __m512i sab = _mm512_cvtepi8_epi16(_mm256_inserti128_si256(
          _mm256_castsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(pair_lo[k] + 16 * cc))),
          _mm_load_si128(reinterpret_cast<const __m128i*>(pair_hi[k] + 16 * cc)), 1));
      for (int t = 0; t < NT; ++t) {
        const int8_t* xq = a[t].q + 256 * b + 32 * p;
        __m512i ga = _mm512_setzero_si512(), gb = _mm512_setzero_si512();
        for (int q = 0; q < 4; ++q) {
          ga = _mm512_dpbusd_epi32(ga, qa[q], bcast4(xq + 4 * q));
          gb = _mm512_dpbusd_epi32(gb, qb[q], bcast4(xq + 16 + 4 * q));
        }
        const __m512i gab = _mm512_mask_blend_epi16(__mmask32(0xAAAAAAAA), ga, _mm512_slli_epi32(gb, 12));
        isum[t] = _mm512_dpwssd_epi32(isum[t], gab, sab);
        // The scales by their groups' activation sums, the two int16 sums adjacent in bsum.
        osum[t] = _mm512_dpwssd_epi32(osum[t], sab, bcast4(a[t].bsum + 16 * b + 2 * p));
      }
    }
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tb + Q3KTile::d)));
    for (int t = 0; t < NT; ++t) {
      const __m512i is = _mm512_sub_epi32(isum[t], _mm512_slli_epi32(osum[t], 2));
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(is), _mm512_mul_ps(d, _mm512_set1_ps(a[t].d[b])), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) _mm512_storeu_ps(out + 16 * t, acc[t]);
}

// Q5_K, per sub-block of 32 (five 64-byte lines): codes 0-19 are a 5-bit mask of their line, codes
// 20-31 gathered from the lines' bits 5-7 (six shifts, four bit selects); eight vpdpbusd per token,
// the sub-block's scale one vpmulld per 16 rows, the mins as Q4_K's.
template <int NT>
void tile_q5k(const uint8_t* tile, const Q8Act* a, int64_t blocks, float* out, TileStream pf) {
  const __m512i low5 = _mm512_set1_epi8(0x1F), m1 = _mm512_set1_epi8(0x01), m3 = _mm512_set1_epi8(0x03),
                m7 = _mm512_set1_epi8(0x07), m15 = _mm512_set1_epi8(0x0F);
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* tb = tile + b * Q5KTile::bytes;
    for (int64_t o = 0; o < Q5KTile::codes; o += 64) tile_prefetch_line(tb + o, pf);  // d, dmin, scales, mins
    __m512i isum[NT], msum[NT];
    for (int t = 0; t < NT; ++t) isum[t] = msum[t] = _mm512_setzero_si512();
    for (int j = 0; j < 8; ++j) {
      __m512i l[5];
      load_lines<5>(tb + Q5KTile::codes + 320 * j, pf, l);
      // 16-bit shifts: what a byte takes from its neighbour is masked off or not selected.
      const __m512i q5 = _mm512_and_si512(bitselect(m7, _mm512_srli_epi16(l[0], 5), _mm512_srli_epi16(l[1], 2)), low5);
      const __m512i q6 = _mm512_and_si512(
          bitselect(m15, bitselect(m1, _mm512_srli_epi16(l[1], 7), _mm512_srli_epi16(l[2], 4)), _mm512_srli_epi16(l[3], 1)),
          low5);
      const __m512i q7 = _mm512_and_si512(bitselect(m3, _mm512_srli_epi16(l[3], 6), _mm512_srli_epi16(l[4], 3)), low5);
      const __m512i q[8] = {_mm512_and_si512(l[0], low5), _mm512_and_si512(l[1], low5), _mm512_and_si512(l[2], low5),
                            _mm512_and_si512(l[3], low5), _mm512_and_si512(l[4], low5), q5, q6, q7};
      const __m512i sc = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tb + Q5KTile::sc + 16 * j)));
      for (int t = 0; t < NT; ++t) {
        const int8_t* xq = a[t].q + 256 * b + 32 * j;
        __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();  // two chains: half the latency
        for (int k = 0; k < 8; k += 2) {
          s0 = _mm512_dpbusd_epi32(s0, q[k], bcast4(xq + 4 * k));
          s1 = _mm512_dpbusd_epi32(s1, q[k + 1], bcast4(xq + 4 * k + 4));
        }
        isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(_mm512_add_epi32(s0, s1), sc));
      }
    }
    k4_mins<NT>(tb, a, b, msum);
    kquant_block_end<NT>(tb, 1.0f, 1.0f, isum, msum, a, b, acc);
  }
  for (int t = 0; t < NT; ++t) _mm512_storeu_ps(out + 16 * t, acc[t]);
}

// Q8_0: codes stored as q + 128, so each 64-byte quarter is one vpdpbusd per token (two chains),
// less 128 x the block's activation sum (the activation codes' sum per 32, row-independent).
template <int NT>
void tile_q8_0(const uint8_t* tile, const Q8Act* a, int64_t blocks, float* out, TileStream pf) {
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* tb = tile + b * Q80Tile::bytes;
    __m512i sa[NT], sb[NT];
    for (int t = 0; t < NT; ++t) sa[t] = sb[t] = _mm512_setzero_si512();
    for (int c = 0; c < 8; c += 2) {
      const uint8_t* p = tb + Q80Tile::codes + 64 * c;
      tile_prefetch_line(p, pf);
      tile_prefetch_line(p + 64, pf);
      const __m512i v0 = _mm512_loadu_si512(p), v1 = _mm512_loadu_si512(p + 64);
      for (int t = 0; t < NT; ++t) {
        const int8_t* xq = a[t].q + 32 * b + 4 * c;
        sa[t] = _mm512_dpbusd_epi32(sa[t], v0, bcast4(xq));
        sb[t] = _mm512_dpbusd_epi32(sb[t], v1, bcast4(xq + 4));
      }
    }
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tb + Q80Tile::d)));
    for (int t = 0; t < NT; ++t) {
      const __m512i off = _mm512_set1_epi32(128 * int32_t(a[t].bsum32[b]));
      const __m512i s = _mm512_sub_epi32(_mm512_add_epi32(sa[t], sb[t]), off);
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(d, _mm512_set1_ps(a[t].d[b])), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) _mm512_storeu_ps(out + 16 * t, acc[t]);
}

// Q6_K, per group of 16 values (three 64-byte lines): codes 0-11 are a 6-bit mask of their line;
// codes 12-15 are gathered from the lines' top bit pairs (three shifts, two bit selects). Each of
// the four planes is one vpdpbusd per token; the stored code is q + 32, so the group's sum less 32 x
// the activation codes' sum over the group, times the group's int8 scale (one vpmulld per 16 rows).
template <int NT>
void tile_q6k(const uint8_t* tile, const Q8Act* a, int64_t blocks, float* out, TileStream pf) {
  const __m512i low6 = _mm512_set1_epi8(0x3F), low2 = _mm512_set1_epi8(0x03), low4 = _mm512_set1_epi8(0x0F),
                bits45 = _mm512_set1_epi8(0x30);
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* tb = tile + b * Q6KTile::bytes;
    for (int64_t o = 0; o < Q6KTile::codes; o += 64) tile_prefetch_line(tb + o, pf);  // d, scales
    __m512i isum[NT];
    for (int t = 0; t < NT; ++t) isum[t] = _mm512_setzero_si512();
    for (int g = 0; g < 16; ++g) {
      __m512i l[3];
      load_lines<3>(tb + Q6KTile::codes + 192 * g, pf, l);
      const __m512i l0 = l[0], l1 = l[1], l2 = l[2];
      // The fourth plane: bits 6-7 of the lines to bits 0-1, 2-3 and 4-5 (16-bit shifts: what a
      // byte takes from its neighbour is masked off).
      const __m512i q3 = bitselect(low4, bitselect(low2, _mm512_srli_epi16(l0, 6), _mm512_srli_epi16(l1, 4)),
                                   _mm512_and_si512(_mm512_srli_epi16(l2, 2), bits45));
      const __m512i q0 = _mm512_and_si512(l0, low6), q1 = _mm512_and_si512(l1, low6), q2 = _mm512_and_si512(l2, low6);
      const __m512i sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tb + Q6KTile::sc + 16 * g)));
      for (int t = 0; t < NT; ++t) {
        const int8_t* xq = a[t].q + 256 * b + 16 * g;
        const __m512i sg = _mm512_sub_epi32(group_dot(q0, q1, q2, q3, xq),
                                            _mm512_set1_epi32(32 * int32_t(a[t].bsum[16 * b + g])));
        isum[t] = _mm512_add_epi32(isum[t], _mm512_mullo_epi32(sg, sc));
      }
    }
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tb + Q6KTile::d)));
    for (int t = 0; t < NT; ++t)
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[t]), _mm512_mul_ps(d, _mm512_set1_ps(a[t].d[b])), acc[t]);
  }
  for (int t = 0; t < NT; ++t) _mm512_storeu_ps(out + 16 * t, acc[t]);
}

template <int NT>
TileDot kernel(uint32_t type) {
  switch (GgmlType(type)) {
    case GgmlType::Q4_K: return tile_q4k<NT>;
    case GgmlType::Q8_0: return tile_q8_0<NT>;
    case GgmlType::Q2_K: return tile_q2k<NT>;
    case GgmlType::Q3_K: return tile_q3k<NT>;
    case GgmlType::Q5_K: return tile_q5k<NT>;
    case GgmlType::Q6_K: return tile_q6k<NT>;
    default: return nullptr;
  }
}

}  // namespace

TileDot avx512_tile_dot(uint32_t type, int nt, bool gfni) {
  if (gfni)
    if (TileDot k = avx512_gfni_tile_dot(type, nt)) return k;
  switch (nt) {
    case 1: return kernel<1>(type);
    case 2: return kernel<2>(type);
    case 3: return kernel<3>(type);
    case 4: return kernel<4>(type);
    default: return nullptr;
  }
}

}  // namespace mt::cpu::ggml_gemv_detail
