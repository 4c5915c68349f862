// Tile GEMV on AVX2 (cpu_kernels/ggml_gemv_tiles.h; the layout: runtime/core/ggml_tiles.h), for
// CPUs without AVX-512 VNNI (Zen 3 and older). Q4_K only so far: the other types' tiles are
// unpacked to blocks at this level (ggml_gemv_tiles.cpp).
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

using Q4KTile = ggml_tile_layout::Q4K;

inline void prefetch_line(const uint8_t* p, const uint8_t* end) {
  if (p + kTilePrefetchL2 < end) _mm_prefetch(reinterpret_cast<const char*>(p + kTilePrefetchL2), _MM_HINT_T1);
  if (p + kTilePrefetchL1 < end) _mm_prefetch(reinterpret_cast<const char*>(p + kTilePrefetchL1), _MM_HINT_T0);
}
inline __m256i bcast4(const void* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}
// 8 bytes -> 8 lanes, each holding the byte in both of its int16 halves.
inline __m256i scale_pairs(__m128i bytes8) {
  const __m256i s = _mm256_cvtepu8_epi32(bytes8);
  return _mm256_or_si256(s, _mm256_slli_epi32(s, 16));
}

template <int NT>
void tile_q4k(const uint8_t* tile, const Q8Act* a, int64_t blocks, float* out, const uint8_t* end) {
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  __m256 acc[NT][2];
  for (int t = 0; t < NT; ++t) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* tb = tile + b * Q4KTile::bytes;
    for (int64_t o = 0; o < Q4KTile::codes; o += 64) prefetch_line(tb + o, end);  // d, dmin, scales, mins
    __m256i isum[NT][2], msum[NT][2];
    for (int t = 0; t < NT; ++t) isum[t][0] = isum[t][1] = msum[t][0] = msum[t][1] = _mm256_setzero_si256();
    for (int j = 0; j < 8; ++j) {
      __m256i s16[NT][2];
      for (int t = 0; t < NT; ++t) s16[t][0] = s16[t][1] = _mm256_setzero_si256();
      for (int h = 0; h < 4; ++h) {
        const uint8_t* c = tb + Q4KTile::codes + (4 * j + h) * 64;
        prefetch_line(c, end);
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
      const __m128i sc = _mm_loadu_si128(reinterpret_cast<const __m128i*>(tb + Q4KTile::sc + 16 * j));
      const __m256i sp[2] = {scale_pairs(sc), scale_pairs(_mm_srli_si128(sc, 8))};
      for (int t = 0; t < NT; ++t)
        for (int half = 0; half < 2; ++half)
          isum[t][half] = _mm256_add_epi32(isum[t][half], _mm256_madd_epi16(s16[t][half], sp[half]));
    }
    for (int p = 0; p < 4; ++p)
      for (int half = 0; half < 2; ++half) {
        const __m256i mw = _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tb + Q4KTile::m + 32 * p + 16 * half)));
        for (int t = 0; t < NT; ++t)
          msum[t][half] = _mm256_add_epi32(msum[t][half], _mm256_madd_epi16(mw, bcast4(a[t].bsum32 + 8 * b + 2 * p)));
      }
    for (int half = 0; half < 2; ++half) {
      const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tb + Q4KTile::d + 16 * half)));
      const __m256 dmin = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tb + Q4KTile::dmin + 16 * half)));
      for (int t = 0; t < NT; ++t) {
        const __m256 dx = _mm256_set1_ps(a[t].d[b]);
        acc[t][half] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[t][half]), _mm256_mul_ps(d, dx), acc[t][half]);
        acc[t][half] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(msum[t][half]), _mm256_mul_ps(dmin, dx), acc[t][half]);
      }
    }
  }
  for (int t = 0; t < NT; ++t)
    for (int half = 0; half < 2; ++half) _mm256_storeu_ps(out + 16 * t + 8 * half, acc[t][half]);
}

}  // namespace

TileDot avx2_tile_dot(uint32_t type, int nt) {
  if (GgmlType(type) != GgmlType::Q4_K) return nullptr;
  switch (nt) {
    case 1: return tile_q4k<1>;
    case 2: return tile_q4k<2>;
    case 3: return tile_q4k<3>;
    case 4: return tile_q4k<4>;
    default: return nullptr;
  }
}

}  // namespace mt::cpu::ggml_gemv_detail
