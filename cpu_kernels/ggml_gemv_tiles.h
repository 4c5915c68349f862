// Decode-sized products from row-interleaved tiles of GGUF blocks (runtime/core/ggml_tiles.h): y[r] =
// sum_k W[r, k] x[k] for one token or a few, W as tiles of 16 rows. The Int8 path's arithmetic
// (ggml_gemv.h): x quantised once per call to 8-bit blocks of 256, each sub-block's dot an exact
// int32, scaled once per block in fp32, so a tile gives what the Int8 path gives its 16 rows up
// to fp32 rounding of the scaled block sums.
//   Level 2 (AVX-512 VNNI): the 16 rows in the 16 int32 lanes; each 64-byte plane of codes (a
//   mask, or for the codes spread over spare bits a few shifts and bit selects) one vpdpbusd
//   with 4 activation codes broadcast; a group's scales one vpmulld per 16 rows, two groups'
//   mins one vpdpwssd (per type: docs/kernels.md, "GGUF row tiles").
//   Level 1 and 0: the tile is unpacked to its GGUF blocks and run by ggml_gemv_tokens.
#pragma once

#include <cstdint>

namespace mt::cpu {

// rows (a multiple of kTileRows) x cols of `type` as tiles at w (tile t = rows 16t..16t+15),
// n tokens: x [n][cols], y [n][rows]. isa_level clamped to this CPU's; type ggml_tile_supported.
void ggml_gemv_tiles(uint32_t type, const uint8_t* w, int64_t rows, int64_t cols, int64_t n, const float* x, float* y,
                     int isa_level);

namespace ggml_gemv_detail {
struct Q8Act;
// Bytes ahead each tile line is prefetched, within a thread's run of tiles: 4 KB measured a little
// better than the row kernels' 2 KB (2-core VM: 0.82-0.87 of RAM bandwidth against 0.80-0.82),
// 1 KB worse (0.74).
inline constexpr int64_t kTilePrefetch = 4096;
// out[t * 16 + r] = row r of the tile dotted with token t, t < nt; prefetching within stream_end.
using TileDot = void (*)(const uint8_t* tile, const Q8Act* a, int64_t blocks, float* out, const uint8_t* stream_end);
TileDot avx512_tile_dot(uint32_t type, int nt);  // nt in 1..kMaxTokens; null: no kernel
}  // namespace ggml_gemv_detail

}  // namespace mt::cpu
