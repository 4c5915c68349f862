// Tile GEMV kernels for AVX-512 CPUs with GFNI (vgf2p8affineqb: a shift and a mask of each byte
// in one instruction) and VBMI (vpermb: any byte of a vector to any place). Built with -mgfni
// -mavx512vbmi and entered only where the CPU has both (ggml_gemv_tiles.cpp). Of the CPUs at the
// AVX-512 level (which needs BF16), Sapphire Rapids and later and Zen 4 and later have both;
// Cooper Lake has neither and runs ggml_gemv_tiles_avx512.cpp's forms of the same kernels.
// GCC 12 warns inside its own AVX-512 intrinsics (the self-initialised `__Y` of
// _mm512_undefined_*, GCC bug 105593, fixed in 13): a false positive, silenced for this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include "cpu_kernels/ggml_gemv_tiles_avx512.h"
#include "runtime/core/ggml_types.h"

namespace mt::cpu::ggml_gemv_detail {

namespace {

// The GF(2) affine matrix (vgf2p8affineqb) that moves bits 2j, 2j + 1 of each byte to bits 0, 1
// and clears the rest: one instruction for a shift and a mask. Result bit i is row 7 - i.
constexpr int64_t pick_bit_pair(int j) {
  return int64_t((uint64_t(1) << (2 * j)) << 56 | (uint64_t(1) << (2 * j + 1)) << 48);
}

// Q2_K, per pair of groups (two 64-byte lines, 32 values): each line's four 2-bit planes are a
// mask and three vgf2p8affineqb, one vpdpbusd each per token. One vpermb spreads the pair's 32
// scale/min bytes over the lanes as (group 2p's byte, 0, group 2p + 1's byte, 0), so a mask gives
// both groups' scales as an int16 pair and another both mins (16 x, in place): one vpdpwssd of
// the scales by the two groups' sums packed as int16 (each fits: 16 x 3 x 127 < 2^15), one of the
// mins by the groups' activation sums. 11.5 vector ops per line, against 13 one group at a time.
template <int NT>
void tile_q2k(const uint8_t* tile, const Q8Act* a, int64_t blocks, float* out, TileStream pf) {
  const __m512i low2 = _mm512_set1_epi8(0x03), low4 = _mm512_set1_epi8(0x0F), high4 = _mm512_set1_epi8(char(0xF0)),
                low16 = _mm512_set1_epi32(0xFFFF);
  const __m512i pick1 = _mm512_set1_epi64(pick_bit_pair(1)), pick2 = _mm512_set1_epi64(pick_bit_pair(2)),
                pick3 = _mm512_set1_epi64(pick_bit_pair(3));
  // Byte 4r of lane r: row r of group 2p (byte r of the pair's 32); byte 4r + 2: row r of group
  // 2p + 1 (byte 16 + r); the odd bytes zeroed by the mask.
  alignas(64) uint8_t idx[64];
  for (int r = 0; r < 16; ++r) {
    idx[4 * r] = uint8_t(r);
    idx[4 * r + 2] = uint8_t(16 + r);
    idx[4 * r + 1] = idx[4 * r + 3] = 0;
  }
  const __m512i spread = _mm512_load_si512(idx);
  const __mmask64 even = 0x5555555555555555ULL;
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* tb = tile + b * Q2KTile::bytes;
    for (int64_t o = 0; o < Q2KTile::codes; o += 64) tile_prefetch_line(tb + o, pf);  // d, dmin, scale/min bytes
    __m512i isum[NT], msum[NT];
    for (int t = 0; t < NT; ++t) isum[t] = msum[t] = _mm512_setzero_si512();
    for (int p = 0; p < 8; ++p) {
      __m512i l[2];
      load_lines<2>(tb + Q2KTile::codes + 128 * p, pf, l);
      const __m512i sm = _mm512_maskz_permutexvar_epi8(
          even, spread, _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(tb + Q2KTile::scm + 32 * p))));
      const __m512i sc = _mm512_and_si512(sm, low4), mn = _mm512_and_si512(sm, high4);
      __m512i q[2][4];
      for (int k = 0; k < 2; ++k) {
        q[k][0] = _mm512_and_si512(l[k], low2);
        q[k][1] = _mm512_gf2p8affine_epi64_epi8(l[k], pick1, 0);
        q[k][2] = _mm512_gf2p8affine_epi64_epi8(l[k], pick2, 0);
        q[k][3] = _mm512_gf2p8affine_epi64_epi8(l[k], pick3, 0);
      }
      for (int t = 0; t < NT; ++t) {
        const int8_t* xq = a[t].q + 256 * b + 32 * p;
        const __m512i g0 = group_dot(q[0][0], q[0][1], q[0][2], q[0][3], xq);
        const __m512i g1 = group_dot(q[1][0], q[1][1], q[1][2], q[1][3], xq + 16);
        isum[t] = _mm512_dpwssd_epi32(isum[t], bitselect(low16, g0, _mm512_slli_epi32(g1, 16)), sc);
        msum[t] = _mm512_dpwssd_epi32(msum[t], mn, bcast4(a[t].bsum + 16 * b + 2 * p));
      }
    }
    kquant_block_end<NT>(tb, 1.0f, 1.0f / 16.0f, isum, msum, a, b, acc);
  }
  for (int t = 0; t < NT; ++t) _mm512_storeu_ps(out + 16 * t, acc[t]);
}

}  // namespace

TileDot avx512_gfni_tile_dot(uint32_t type, int nt) {
  if (GgmlType(type) != GgmlType::Q2_K) return nullptr;
  switch (nt) {
    case 1: return tile_q2k<1>;
    case 2: return tile_q2k<2>;
    case 3: return tile_q2k<3>;
    case 4: return tile_q2k<4>;
    default: return nullptr;
  }
}

}  // namespace mt::cpu::ggml_gemv_detail
