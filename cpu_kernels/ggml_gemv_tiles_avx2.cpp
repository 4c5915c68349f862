// Tile GEMV on AVX2 (cpu_kernels/ggml_gemv_tiles.h; the layout: runtime/core/ggml_tiles.h), for
// CPUs without AVX-512 VNNI (Zen 3 and older), for every tiled type.
//   Q4_K: the 16 rows as two halves of 8 lanes (bytes 0-31 and 32-63 of each 64-byte line). Each
//   half's nibbles go through vpmaddubsw against 4 activation codes (int16 pairs of products),
//   summed in int16 over the sub-block's 4 lines (at most 4 x 2 x 2 x 15 x 127 = 30480 < 2^15),
//   then one vpmaddwd by the sub-block's scale (in both halves of each lane) per 8 rows. The mins
//   as the AVX-512 kernel's: one vpmaddwd of (m[2p][r], m[2p+1][r]) by two sub-blocks' sums.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "cpu_kernels/ggml_gemv.h"
#include "cpu_kernels/ggml_gemv_tiles.h"
#include "runtime/core/ggml_tiles.h"
#include "runtime/core/ggml_types.h"

namespace mt::cpu::ggml_gemv_detail {

namespace {

using Q2KTile = ggml_tile_layout::Q2K;
using Q3KTile = ggml_tile_layout::Q3K;
using Q4KTile = ggml_tile_layout::Q4K;
using Q5KTile = ggml_tile_layout::Q5K;
using Q6KTile = ggml_tile_layout::Q6K;
using Q80Tile = ggml_tile_layout::Q80;

inline __m256i bcast4(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}
// 16 bytes (one per row of a tile) in both 128-bit halves of a vector: one vbroadcasti128, a load.
inline __m256i bcast16(const void* p) { return _mm256_broadcastsi128_si256(_mm_loadu_si128(static_cast<const __m128i*>(p))); }

// vpshufb controls that spread a bcast16 of the rows' bytes over the 8 lanes of half h (rows
// 8h..8h+7; row 8h + 4L + k in dword k of 128-bit lane L), a lane's four bytes taken as `pattern`:
// kRow is the row's byte, kZero a zero. One vpshufb then puts a row's scale in its lane, against
// 3-4 ops (widen, mask, shift, or) from the bytes.
inline constexpr uint8_t kRow = 0, kZero = 0x80;
inline __m256i spread_rows(int half, const uint8_t (&pattern)[4]) {
  alignas(32) uint8_t c[32];
  for (int L = 0; L < 2; ++L)
    for (int k = 0; k < 4; ++k)
      for (int i = 0; i < 4; ++i) c[16 * L + 4 * k + i] = pattern[i] == kZero ? kZero : uint8_t(8 * half + 4 * L + k);
  return _mm256_load_si256(reinterpret_cast<const __m256i*>(c));
}
// (byte, 0, byte, 0): an unsigned byte as int16 in both halves of its lane, so one vpmaddwd scales
// both of a lane's int16 sums by it.
inline constexpr uint8_t kPairPattern[4] = {kRow, kZero, kRow, kZero};
// The byte in all four: vpsraw 8 then gives a signed byte as int16 in both halves.
inline constexpr uint8_t kFourPattern[4] = {kRow, kRow, kRow, kRow};

// A K-quant tile block's end (Q2_K, Q4_K, Q5_K; the same d and dmin places): acc += isum · d · d_x
// · d_scale − msum · dmin · d_x · m_scale, 8 rows per half.
static_assert(Q5KTile::d == Q4KTile::d && Q5KTile::dmin == Q4KTile::dmin && Q5KTile::m == Q4KTile::m &&
              Q2KTile::d == Q4KTile::d && Q2KTile::dmin == Q4KTile::dmin);
template <int NT>
inline void kquant_block_end(const uint8_t* tb, float d_scale, float m_scale, const Q8Act* a, int64_t b,
                             const __m256i (*isum)[2], const __m256i (*msum)[2], __m256 (*acc)[2]) {
  for (int half = 0; half < 2; ++half) {
    const __m256 d = _mm256_mul_ps(
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tb + Q4KTile::d + 16 * half))), _mm256_set1_ps(d_scale));
    const __m256 dmin = _mm256_mul_ps(
        _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tb + Q4KTile::dmin + 16 * half))),
        _mm256_set1_ps(m_scale));
    for (int t = 0; t < NT; ++t) {
      const __m256 dx = _mm256_set1_ps(a[t].d[b]);
      acc[t][half] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t][half]), _mm256_mul_ps(d, dx), acc[t][half]);
      acc[t][half] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum[t][half]), _mm256_mul_ps(dmin, dx), acc[t][half]);
    }
  }
}

// The end of a Q4_K or Q5_K tile block: the mins, one vpmaddwd of (m[2p][r], m[2p+1][r]) by two
// sub-blocks' activation sums, then kquant_block_end.
template <int NT>
inline void k4_block_end(const uint8_t* tb, const Q8Act* a, int64_t b, const __m256i (*isum)[2], __m256 (*acc)[2]) {
  __m256i msum[NT][2];
  for (int t = 0; t < NT; ++t) msum[t][0] = msum[t][1] = _mm256_setzero_si256();
  for (int p = 0; p < 4; ++p)
    for (int half = 0; half < 2; ++half) {
      const __m256i mw = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tb + Q4KTile::m + 32 * p + 16 * half)));
      for (int t = 0; t < NT; ++t)
        msum[t][half] = _mm256_add_epi32(msum[t][half], _mm256_madd_epi16(mw, bcast4(a[t].bsum32 + 8 * b + 2 * p)));
    }
  kquant_block_end<NT>(tb, 1.0f, 1.0f, a, b, isum, msum, acc);
}

template <int NT>
void tile_q4k(const uint8_t* tile, const Q8Act* a, int64_t blocks, float* out, TileStream pf) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m256i pair[2] = {spread_rows(0, kPairPattern), spread_rows(1, kPairPattern)};
  __m256 acc[NT][2];
  for (int t = 0; t < NT; ++t) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* tb = tile + b * Q4KTile::bytes;
    for (int64_t o = 0; o < Q4KTile::codes; o += 64) tile_prefetch_line(tb + o, pf);  // d, dmin, scales, mins
    __m256i isum[NT][2];
    for (int t = 0; t < NT; ++t) isum[t][0] = isum[t][1] = _mm256_setzero_si256();
    for (int j = 0; j < 8; ++j) {
      __m256i s16[NT][2];
      for (int t = 0; t < NT; ++t) s16[t][0] = s16[t][1] = _mm256_setzero_si256();
      for (int h = 0; h < 4; ++h) {
        const uint8_t* c = tb + Q4KTile::codes + (4 * j + h) * 64;
        tile_prefetch_line(c, pf);
        for (int half = 0; half < 2; ++half) {
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 32 * half));
          const __m256i lo = _mm256_and_si256(v, low4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
          for (int t = 0; t < NT; ++t) {
            const int8_t* xq = a[t].q + 256 * b + 32 * j + 8 * h;
            const __m256i p = _mm256_add_epi16(_mm256_maddubs_epi16(lo, bcast4(xq)), _mm256_maddubs_epi16(hi, bcast4(xq + 4)));
            s16[t][half] = _mm256_add_epi16(s16[t][half], p);
          }
        }
      }
      const __m256i sc = bcast16(tb + Q4KTile::sc + 16 * j);
      const __m256i sp[2] = {_mm256_shuffle_epi8(sc, pair[0]), _mm256_shuffle_epi8(sc, pair[1])};
      for (int t = 0; t < NT; ++t)
        for (int half = 0; half < 2; ++half)
          isum[t][half] = _mm256_add_epi32(isum[t][half], _mm256_madd_epi16(s16[t][half], sp[half]));
    }
    k4_block_end<NT>(tb, a, b, isum, acc);
  }
  for (int t = 0; t < NT; ++t)
    for (int half = 0; half < 2; ++half) _mm256_storeu_ps(out + 16 * t + 8 * half, acc[t][half]);
}

// The mins of a Q2_K tile block, two groups per vpmaddwd: lanes (16 m[2p][r], 16 m[2p+1][r]) (the
// high nibbles masked in place) by the two groups' activation sums.
template <int NT>
inline void q2k_mins(const uint8_t* tb, const Q8Act* a, int64_t b, __m256i (*msum)[2]) {
  const __m128i high4 = _mm_set1_epi8(char(0xF0));
  for (int p = 0; p < 8; ++p) {
    const uint8_t* m = tb + Q2KTile::scm + 32 * p;
    const __m128i g0 = _mm_and_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(m)), high4);
    const __m128i g1 = _mm_and_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(m + 16)), high4);
    const __m256i mw[2] = {_mm256_cvtepu8_epi16(_mm_unpacklo_epi8(g0, g1)), _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(g0, g1))};
    for (int t = 0; t < NT; ++t)
      for (int half = 0; half < 2; ++half)
        msum[t][half] = _mm256_add_epi32(msum[t][half], _mm256_madd_epi16(mw[half], bcast4(a[t].bsum + 16 * b + 2 * p)));
  }
}

// Q2_K, per group of 16 values (one 64-byte line), per half of 8 rows: plane 0 (values i) a mask
// of the line and plane 2 (values 8 + i) a mask of the line shifted by 4; planes 1 and 3 masked in
// place in the same two (4 x). So the vpmaddubsw sums of the two kinds are A and 4B, and 4A + 4B
// (at most 4 x 4 x 2 x 3 x 127 = 12192 < 2^15) takes one shift; then one vpmaddwd by the group's
// scale (spread over the lanes by one vpshufb). The mins once per block (q2k_mins).
template <int NT>
void tile_q2k(const uint8_t* tile, const Q8Act* a, int64_t blocks, float* out, TileStream pf) {
  const __m256i m03 = _mm256_set1_epi8(0x03), m0c = _mm256_set1_epi8(0x0C), low4 = _mm256_set1_epi8(0x0F);
  const __m256i pair[2] = {spread_rows(0, kPairPattern), spread_rows(1, kPairPattern)};
  __m256 acc[NT][2];
  for (int t = 0; t < NT; ++t) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* tb = tile + b * Q2KTile::bytes;
    for (int64_t o = 0; o < Q2KTile::codes; o += 64) tile_prefetch_line(tb + o, pf);  // d, dmin, scale/min bytes
    __m256i isum[NT][2], msum[NT][2];
    for (int t = 0; t < NT; ++t) isum[t][0] = isum[t][1] = msum[t][0] = msum[t][1] = _mm256_setzero_si256();
    for (int g = 0; g < 16; ++g) {
      const uint8_t* c = tb + Q2KTile::codes + 64 * g;
      tile_prefetch_line(c, pf);
      const __m256i sc = _mm256_and_si256(bcast16(tb + Q2KTile::scm + 16 * g), low4);
      for (int half = 0; half < 2; ++half) {
        const __m256i sp = _mm256_shuffle_epi8(sc, pair[half]);
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 32 * half));
        const __m256i w = _mm256_srli_epi16(v, 4);  // a byte's bits 4-7 to 0-3; what comes from its neighbour is masked off
        const __m256i q0 = _mm256_and_si256(v, m03), q1 = _mm256_and_si256(v, m0c), q2 = _mm256_and_si256(w, m03),
                      q3 = _mm256_and_si256(w, m0c);
        for (int t = 0; t < NT; ++t) {
          const int8_t* xq = a[t].q + 256 * b + 16 * g;
          const __m256i p1 = _mm256_add_epi16(_mm256_maddubs_epi16(q0, bcast4(xq)), _mm256_maddubs_epi16(q2, bcast4(xq + 8)));
          const __m256i p4 = _mm256_add_epi16(_mm256_maddubs_epi16(q1, bcast4(xq + 4)), _mm256_maddubs_epi16(q3, bcast4(xq + 12)));
          const __m256i s16 = _mm256_add_epi16(_mm256_slli_epi16(p1, 2), p4);  // 4 x the group's sum
          isum[t][half] = _mm256_add_epi32(isum[t][half], _mm256_madd_epi16(s16, sp));
        }
      }
    }
    q2k_mins<NT>(tb, a, b, msum);
    kquant_block_end<NT>(tb, 0.25f, 1.0f / 16.0f, a, b, isum, msum, acc);
  }
  for (int t = 0; t < NT; ++t)
    for (int half = 0; half < 2; ++half) _mm256_storeu_ps(out + 16 * t + 8 * half, acc[t][half]);
}

// Q3_K. Per block, the 16 rows' 6-bit scales of all 16 groups to int8 s - 32 (as the AVX-512
// kernel, on the stack). Per pair of groups (three 64-byte lines), per half of 8 rows: group A's
// codes are bits 0-2 of the lines, group B's bits 4-6, and both groups' last codes gathered from
// bits 3 and 7 (shifts, masks, ors); each group's four planes' vpmaddubsw summed in int16 (at most
// 4 x 2 x 7 x 127 = 7112), one vpmaddwd by its scale, and one of the scale by its activation sum,
// 4 x which comes off at the block's end (the stored code is q + 4).
template <int NT>
void tile_q3k(const uint8_t* tile, const Q8Act* a, int64_t blocks, float* out, TileStream pf) {
  const auto bits = [](int v) { return _mm256_set1_epi8(char(v)); };
  const __m256i low3 = bits(0x07), low4 = bits(0x0F), b45 = bits(0x30), bias = bits(32), m11 = bits(0x11),
                m22 = bits(0x22), m44 = bits(0x44);
  const __m256i four[2] = {spread_rows(0, kFourPattern), spread_rows(1, kFourPattern)};
  __m256 acc[NT][2];
  for (int t = 0; t < NT; ++t) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
  alignas(32) int8_t sc8[4][64];  // [2k + e][16c + r]: the scale of group 8k + 2c + e, row r
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* tb = tile + b * Q3KTile::bytes;
    for (int64_t o = 0; o < Q3KTile::codes; o += 64) tile_prefetch_line(tb + o, pf);  // d, scales
    for (int h = 0; h < 2; ++h) {  // the scales' bytes are independent: two halves of 32
      const auto ld = [&](int64_t off) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tb + off + 32 * h)); };
      const __m256i z0 = ld(Q3KTile::slo), z1 = ld(Q3KTile::slo + 64), hi = ld(Q3KTile::shi);
      // Group 8k + 2c + e's bit pair is at bits 4k + 2e of the high byte: each to bits 4-5.
      const __m256i lo[4] = {z0, _mm256_srli_epi16(z0, 4), z1, _mm256_srli_epi16(z1, 4)};
      const __m256i hp[4] = {_mm256_slli_epi16(hi, 4), _mm256_slli_epi16(hi, 2), hi, _mm256_srli_epi16(hi, 2)};
      for (int v = 0; v < 4; ++v)
        _mm256_store_si256(reinterpret_cast<__m256i*>(sc8[v] + 32 * h),
                           _mm256_sub_epi8(_mm256_or_si256(_mm256_and_si256(lo[v], low4), _mm256_and_si256(hp[v], b45)), bias));
    }
    __m256i isum[NT][2], osum[NT][2];
    for (int t = 0; t < NT; ++t) isum[t][0] = isum[t][1] = osum[t][0] = osum[t][1] = _mm256_setzero_si256();
    for (int p = 0; p < 8; ++p) {
      const uint8_t* c = tb + Q3KTile::codes + 192 * p;
      for (int L = 0; L < 3; ++L) tile_prefetch_line(c + 64 * L, pf);
      const int k = p / 4, cc = p % 4;
      for (int half = 0; half < 2; ++half) {
        __m256i l[3];
        for (int L = 0; L < 3; ++L) l[L] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 64 * L + 32 * half));
        // Bit L of the last codes (bits 3 and 7 of line L) to bits L and 4 + L (16-bit shifts: what a
        // byte takes from its neighbour is masked off).
        const __m256i u = _mm256_or_si256(
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l[0], 3), m11), _mm256_and_si256(_mm256_srli_epi16(l[1], 2), m22)),
            _mm256_and_si256(_mm256_srli_epi16(l[2], 1), m44));
        const __m256i qa[4] = {_mm256_and_si256(l[0], low3), _mm256_and_si256(l[1], low3), _mm256_and_si256(l[2], low3),
                               _mm256_and_si256(u, low3)};
        const __m256i qb[4] = {_mm256_and_si256(_mm256_srli_epi16(l[0], 4), low3),
                               _mm256_and_si256(_mm256_srli_epi16(l[1], 4), low3),
                               _mm256_and_si256(_mm256_srli_epi16(l[2], 4), low3), _mm256_and_si256(_mm256_srli_epi16(u, 4), low3)};
        // The int8 scales as int16 in both halves of their rows' lanes.
        const auto scales = [&](int v) { return _mm256_srai_epi16(_mm256_shuffle_epi8(bcast16(sc8[v] + 16 * cc), four[half]), 8); };
        const __m256i pa = scales(2 * k), pb = scales(2 * k + 1);
        for (int t = 0; t < NT; ++t) {
          const int8_t* xq = a[t].q + 256 * b + 32 * p;
          __m256i sa = _mm256_setzero_si256(), sb = _mm256_setzero_si256();
          for (int q = 0; q < 4; ++q) {
            sa = _mm256_add_epi16(sa, _mm256_maddubs_epi16(qa[q], bcast4(xq + 4 * q)));
            sb = _mm256_add_epi16(sb, _mm256_maddubs_epi16(qb[q], bcast4(xq + 16 + 4 * q)));
          }
          isum[t][half] = _mm256_add_epi32(isum[t][half], _mm256_add_epi32(_mm256_madd_epi16(sa, pa), _mm256_madd_epi16(sb, pb)));
          // Each scale by its group's activation sum (bsum_w's high words are 0).
          const uint32_t* bw = a[t].bsum_w + 16 * b + 2 * p;
          osum[t][half] = _mm256_add_epi32(osum[t][half], _mm256_add_epi32(_mm256_madd_epi16(pa, bcast4(bw)),
                                                                            _mm256_madd_epi16(pb, bcast4(bw + 1))));
        }
      }
    }
    for (int half = 0; half < 2; ++half) {
      const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tb + Q3KTile::d + 16 * half)));
      for (int t = 0; t < NT; ++t) {
        const __m256i is = _mm256_sub_epi32(isum[t][half], _mm256_slli_epi32(osum[t][half], 2));
        acc[t][half] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(d, _mm256_set1_ps(a[t].d[b])), acc[t][half]);
      }
    }
  }
  for (int t = 0; t < NT; ++t)
    for (int half = 0; half < 2; ++half) _mm256_storeu_ps(out + 16 * t + 8 * half, acc[t][half]);
}

// Q5_K, per sub-block of 32 (five 64-byte lines), per half of 8 rows: codes 0-19 a 5-bit mask of
// their line, codes 20-31 gathered from the lines' bits 5-7 (shifts, masks, ors). Four planes'
// vpmaddubsw per int16 sum (at most 4 x 2 x 31 x 127 = 31496 < 2^15), each sum one vpmaddwd by
// the sub-block's scale; the mins as Q4_K's.
template <int NT>
void tile_q5k(const uint8_t* tile, const Q8Act* a, int64_t blocks, float* out, TileStream pf) {
  const __m256i low5 = _mm256_set1_epi8(0x1F);
  const auto bits = [](int v) { return _mm256_set1_epi8(char(v)); };
  const __m256i m01 = bits(0x01), m03 = bits(0x03), m07 = bits(0x07), m0e = bits(0x0E), m10 = bits(0x10),
                m18 = bits(0x18), m1c = bits(0x1C);
  const __m256i pair[2] = {spread_rows(0, kPairPattern), spread_rows(1, kPairPattern)};
  __m256 acc[NT][2];
  for (int t = 0; t < NT; ++t) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* tb = tile + b * Q5KTile::bytes;
    for (int64_t o = 0; o < Q5KTile::codes; o += 64) tile_prefetch_line(tb + o, pf);  // d, dmin, scales, mins
    __m256i isum[NT][2];
    for (int t = 0; t < NT; ++t) isum[t][0] = isum[t][1] = _mm256_setzero_si256();
    for (int j = 0; j < 8; ++j) {
      const uint8_t* c = tb + Q5KTile::codes + 320 * j;
      for (int L = 0; L < 5; ++L) tile_prefetch_line(c + 64 * L, pf);
      const __m256i sc = bcast16(tb + Q5KTile::sc + 16 * j);
      for (int half = 0; half < 2; ++half) {
        const __m256i sp = _mm256_shuffle_epi8(sc, pair[half]);
        __m256i l[5];
        for (int L = 0; L < 5; ++L) l[L] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 64 * L + 32 * half));
        // 16-bit shifts: what a byte takes from its neighbour is masked off.
        const auto part = [](__m256i v, int shift, __m256i mask) { return _mm256_and_si256(_mm256_srli_epi16(v, shift), mask); };
        const __m256i q5 = _mm256_or_si256(part(l[0], 5, m07), part(l[1], 2, m18));
        const __m256i q6 = _mm256_or_si256(_mm256_or_si256(part(l[1], 7, m01), part(l[2], 4, m0e)), part(l[3], 1, m10));
        const __m256i q7 = _mm256_or_si256(part(l[3], 6, m03), part(l[4], 3, m1c));
        const __m256i q[8] = {_mm256_and_si256(l[0], low5), _mm256_and_si256(l[1], low5), _mm256_and_si256(l[2], low5),
                              _mm256_and_si256(l[3], low5), _mm256_and_si256(l[4], low5), q5, q6, q7};
        for (int t = 0; t < NT; ++t) {
          const int8_t* xq = a[t].q + 256 * b + 32 * j;
          __m256i s16[2];
          for (int k = 0; k < 2; ++k)
            s16[k] = _mm256_add_epi16(
                _mm256_add_epi16(_mm256_maddubs_epi16(q[4 * k], bcast4(xq + 16 * k)),
                                 _mm256_maddubs_epi16(q[4 * k + 1], bcast4(xq + 16 * k + 4))),
                _mm256_add_epi16(_mm256_maddubs_epi16(q[4 * k + 2], bcast4(xq + 16 * k + 8)),
                                 _mm256_maddubs_epi16(q[4 * k + 3], bcast4(xq + 16 * k + 12))));
          isum[t][half] = _mm256_add_epi32(isum[t][half],
                                           _mm256_add_epi32(_mm256_madd_epi16(s16[0], sp), _mm256_madd_epi16(s16[1], sp)));
        }
      }
    }
    k4_block_end<NT>(tb, a, b, isum, acc);
  }
  for (int t = 0; t < NT; ++t)
    for (int half = 0; half < 2; ++half) _mm256_storeu_ps(out + 16 * t + 8 * half, acc[t][half]);
}

// Q6_K, per group of 16 values (three 64-byte lines), per half of 8 rows: codes 0-11 a 6-bit mask
// of their line, codes 12-15 gathered from the lines' top bit pairs (three shifts, masks, ors).
// Two planes' vpmaddubsw per int16 sum (at most 2 x 2 x 63 x 127 = 32004 < 2^15), each sum one
// vpmaddwd by the group's int8 scale; the stored code is q + 32, so 32 x the scale times the
// activation codes' sum over the group comes off at the block's end.
template <int NT>
void tile_q6k(const uint8_t* tile, const Q8Act* a, int64_t blocks, float* out, TileStream pf) {
  const __m256i low6 = _mm256_set1_epi8(0x3F), b01 = _mm256_set1_epi8(0x03), b23 = _mm256_set1_epi8(0x0C),
                b45 = _mm256_set1_epi8(0x30);
  const __m256i four[2] = {spread_rows(0, kFourPattern), spread_rows(1, kFourPattern)};
  __m256 acc[NT][2];
  for (int t = 0; t < NT; ++t) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* tb = tile + b * Q6KTile::bytes;
    for (int64_t o = 0; o < Q6KTile::codes; o += 64) tile_prefetch_line(tb + o, pf);  // d, scales
    __m256i isum[NT][2], osum[NT][2];
    for (int t = 0; t < NT; ++t) isum[t][0] = isum[t][1] = osum[t][0] = osum[t][1] = _mm256_setzero_si256();
    for (int g = 0; g < 16; ++g) {
      const uint8_t* c = tb + Q6KTile::codes + 192 * g;
      for (int L = 0; L < 3; ++L) tile_prefetch_line(c + 64 * L, pf);
      const __m256i sc = bcast16(tb + Q6KTile::sc + 16 * g);
      for (int half = 0; half < 2; ++half) {
        const __m256i sp = _mm256_srai_epi16(_mm256_shuffle_epi8(sc, four[half]), 8);  // the int8 scale as int16, twice
        const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 32 * half));
        const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 64 + 32 * half));
        const __m256i l2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 128 + 32 * half));
        // 16-bit shifts: what a byte takes from its neighbour is masked off.
        const __m256i q3 = _mm256_or_si256(
            _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 6), b01), _mm256_and_si256(_mm256_srli_epi16(l1, 4), b23)),
            _mm256_and_si256(_mm256_srli_epi16(l2, 2), b45));
        const __m256i q0 = _mm256_and_si256(l0, low6), q1 = _mm256_and_si256(l1, low6), q2 = _mm256_and_si256(l2, low6);
        for (int t = 0; t < NT; ++t) {
          const int8_t* xq = a[t].q + 256 * b + 16 * g;
          const __m256i p01 = _mm256_add_epi16(_mm256_maddubs_epi16(q0, bcast4(xq)), _mm256_maddubs_epi16(q1, bcast4(xq + 4)));
          const __m256i p23 =
              _mm256_add_epi16(_mm256_maddubs_epi16(q2, bcast4(xq + 8)), _mm256_maddubs_epi16(q3, bcast4(xq + 12)));
          isum[t][half] = _mm256_add_epi32(isum[t][half],
                                           _mm256_add_epi32(_mm256_madd_epi16(p01, sp), _mm256_madd_epi16(p23, sp)));
          // The scale by the group's activation sum (bsum_w's high word is 0).
          osum[t][half] = _mm256_add_epi32(osum[t][half], _mm256_madd_epi16(sp, bcast4(a[t].bsum_w + 16 * b + g)));
        }
      }
    }
    for (int half = 0; half < 2; ++half) {
      const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tb + Q6KTile::d + 16 * half)));
      for (int t = 0; t < NT; ++t) {
        const __m256i is = _mm256_sub_epi32(isum[t][half], _mm256_slli_epi32(osum[t][half], 5));
        acc[t][half] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(is), _mm256_mul_ps(d, _mm256_set1_ps(a[t].d[b])), acc[t][half]);
      }
    }
  }
  for (int t = 0; t < NT; ++t)
    for (int half = 0; half < 2; ++half) _mm256_storeu_ps(out + 16 * t + 8 * half, acc[t][half]);
}

// Q8_0, per 32-value block (eight 64-byte lines), per half of 8 rows: the stored code q + 128 back
// to int8 (xor), then |q| by the activation codes with q's sign (vpsignb) in vpmaddubsw (at most
// 2 x 128 x 127 = 32512 per pair, no saturation) and vpmaddwd by ones to int32; d · d_x per block.
template <int NT>
void tile_q8_0(const uint8_t* tile, const Q8Act* a, int64_t blocks, float* out, TileStream pf) {
  const __m256i bias = _mm256_set1_epi8(char(0x80)), ones = _mm256_set1_epi16(1);
  __m256 acc[NT][2];
  for (int t = 0; t < NT; ++t) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* tb = tile + b * Q80Tile::bytes;
    __m256i s[NT][2];
    for (int t = 0; t < NT; ++t) s[t][0] = s[t][1] = _mm256_setzero_si256();
    for (int c = 0; c < 8; ++c) {
      const uint8_t* p = tb + Q80Tile::codes + 64 * c;
      tile_prefetch_line(p, pf);
      for (int half = 0; half < 2; ++half) {
        const __m256i q = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32 * half)), bias);
        const __m256i mag = _mm256_abs_epi8(q);
        for (int t = 0; t < NT; ++t) {
          const __m256i x = _mm256_sign_epi8(bcast4(a[t].q + 32 * b + 4 * c), q);
          s[t][half] = _mm256_add_epi32(s[t][half], _mm256_madd_epi16(_mm256_maddubs_epi16(mag, x), ones));
        }
      }
    }
    for (int half = 0; half < 2; ++half) {
      const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tb + Q80Tile::d + 16 * half)));
      for (int t = 0; t < NT; ++t)
        acc[t][half] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[t][half]), _mm256_mul_ps(d, _mm256_set1_ps(a[t].d[b])), acc[t][half]);
    }
  }
  for (int t = 0; t < NT; ++t)
    for (int half = 0; half < 2; ++half) _mm256_storeu_ps(out + 16 * t + 8 * half, acc[t][half]);
}

template <int NT>
TileDot kernel(uint32_t type) {
  switch (GgmlType(type)) {
    case GgmlType::Q8_0: return tile_q8_0<NT>;
    case GgmlType::Q2_K: return tile_q2k<NT>;
    case GgmlType::Q3_K: return tile_q3k<NT>;
    case GgmlType::Q4_K: return tile_q4k<NT>;
    case GgmlType::Q5_K: return tile_q5k<NT>;
    case GgmlType::Q6_K: return tile_q6k<NT>;
    default: return nullptr;
  }
}

}  // namespace

TileDot avx2_tile_dot(uint32_t type, int nt) {
  switch (nt) {
    case 1: return kernel<1>(type);
    case 2: return kernel<2>(type);
    case 3: return kernel<3>(type);
    case 4: return kernel<4>(type);
    default: return nullptr;
  }
}

}  // namespace mt::cpu::ggml_gemv_detail
