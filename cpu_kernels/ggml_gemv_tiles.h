// Decode-sized products from row-interleaved tiles of GGUF blocks (runtime/core/ggml_tiles.h): y[r] =
// sum_k W[r, k] x[k] for one token or a few, W as tiles of 16 rows. The Int8 path's arithmetic
// (ggml_gemv.h): x quantised once per call to 8-bit blocks of 256, each sub-block's dot an exact
// int32, scaled once per block in fp32, so a tile gives what the Int8 path gives its 16 rows up
// to fp32 rounding of the scaled block sums.
//   Level 2 (AVX-512 VNNI): the 16 rows in the 16 int32 lanes; each 64-byte plane of codes (a
//   mask, or for the codes spread over spare bits a few shifts and bit selects) one vpdpbusd
//   with 4 activation codes broadcast; a group's scales one vpmulld per 16 rows (one vpdpwssd
//   where its sum fits in int16: Q2_K, Q3_K), mins by vpdpwssd; on a CPU with GFNI and VBMI,
//   Q2_K's planes one vgf2p8affineqb each and a pair of groups' scales and mins one vpermb (per
//   type: docs/kernels.md, "GGUF row tiles").
//   Level 1 (AVX2): every tiled type with vpmaddubsw and vpmaddwd, 8 rows a vector
//   (ggml_gemv_tiles_avx2.cpp).
//   Otherwise (level 0) the tile is unpacked to its GGUF blocks
//   and run by ggml_gemv_tokens: correct, but slower than the blocks themselves.
#pragma once

#include <cstdint>

namespace mt::cpu {

// Whether `type`'s tiles have a kernel of their own at isa_level (clamped to this CPU's), so that
// tiling its matrices pays: every tiled type at levels 1 and 2.
bool ggml_gemv_tiles_native(uint32_t type, int isa_level);

// Software prefetch of the tile stream (ggml_gemv_detail::tile_prefetch_line) or the hardware
// prefetchers alone. The two distances were what the Intel VM needed: without them Q2_K read at
// 0.42 of RAM bandwidth. On AMD Zen 4 they still pay for the slow kernels but cost the fast ones:
// AVX-512 Q4_K-Q8_0 (per-core compute 42-64 GB/s there) read 6-14% faster on the hardware
// prefetchers alone and AVX2 Q8_0 (52 GB/s) 0-12%, while Q2_K (23-31 GB/s) lost 14-19% without
// them (two runs of paired rounds of `bench gguf --tile-prefetch both`, docs/benchmarks.md).
// Auto: off for those fast kernels on AMD CPUs, on everywhere else.
enum class TilePrefetch { Auto, On, Off };
// Whether Auto prefetches in software for `type` at isa_level (1 AVX2, 2 AVX-512) on this CPU.
bool tile_prefetch_auto_on(uint32_t type, int isa_level);

// rows (a multiple of kTileRows) x cols of `type` as tiles at w (tile t = rows 16t..16t+15),
// n tokens: x [n][cols], y [n][rows]. isa_level clamped to this CPU's; type ggml_tile_supported.
// allow_gfni false keeps level 2 off the GFNI/VBMI kernels where the CPU has them (to test the
// path of AVX-512 CPUs without). The prefetch policy changes timing only, never the result.
void ggml_gemv_tiles(uint32_t type, const uint8_t* w, int64_t rows, int64_t cols, int64_t n, const float* x, float* y,
                     int isa_level, bool allow_gfni = true, TilePrefetch prefetch = TilePrefetch::Auto);

namespace ggml_gemv_detail {
struct Q8Act;
// Bytes ahead each tile line is prefetched, within a thread's run of tiles, at two distances: to L1
// 2 KB ahead and to L2 8 KB ahead. The hardware prefetchers of the 2-core VM ran far behind (no
// software prefetch: 0.42 of RAM bandwidth for Q2_K); one distance to L1 was best at 4 KB (Q4_K
// 0.79, Q2_K 0.71), and the L2 prefetch on top took Q4_K to 0.93 and Q2_K to 0.77
// (docs/benchmarks.md). The L1 fill buffers are few; the far prefetch to L2 keeps more misses
// in flight while the near one hides the L2 latency.
inline constexpr int64_t kTilePrefetchL1 = 2048;
inline constexpr int64_t kTilePrefetchL2 = 8192;
// The line at p prefetched at both distances while they stay before `end`. Always inlined: the
// AVX2 and AVX-512 kernel files build it under different flags, and no out-of-line copy of
// either should serve the other.
[[gnu::always_inline]] inline void tile_prefetch_line(const uint8_t* p, const uint8_t* end) {
  if (p + kTilePrefetchL2 < end) __builtin_prefetch(p + kTilePrefetchL2, 0, 2);
  if (p + kTilePrefetchL1 < end) __builtin_prefetch(p + kTilePrefetchL1, 0, 3);
}
// out[t * 16 + r] = row r of the tile dotted with token t, t < nt; prefetching within stream_end.
using TileDot = void (*)(const uint8_t* tile, const Q8Act* a, int64_t blocks, float* out, const uint8_t* stream_end);
// nt in 1..kMaxTokens; null: no kernel. gfni: the CPU has GFNI and VBMI (Q2_K then runs its form for them).
TileDot avx512_tile_dot(uint32_t type, int nt, bool gfni);
TileDot avx512_gfni_tile_dot(uint32_t type, int nt);  // null where the type has no GFNI/VBMI form
TileDot avx2_tile_dot(uint32_t type, int nt);          // null where the type has no AVX2 form
}  // namespace ggml_gemv_detail

}  // namespace mt::cpu
