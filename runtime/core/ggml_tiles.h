// Lossless row-interleaved tiles of a GGUF tensor's blocks, for decode GEMV at RAM speed
// (cpu_kernels/ggml_gemv_tiles.h runs them; a GGUF's Q2_K..Q6_K and Q8_0 matrices are loaded as
// tiles when the CPU backend has the kernel, runtime/model/gguf_tiles.h).
//
// A GGUF block keeps one row's codes and scales together, so a one-token product must unpack
// nibbles and spread 8-16 sub-block scales over the vector lanes for every block of every row;
// measured on a 2-core AVX-512 VM, that caps the native-layout kernels at 0.70-0.78 of RAM
// bandwidth even when their arithmetic is cut by 40% (docs/benchmarks.md). A tile holds 16 rows'
// blocks interleaved so that the 16 rows sit in the 16 int32 lanes (the store's own q4/q8 layout):
// each code byte feeds vpdpbusd with a broadcast activation, and each scale is one vector op per
// 16 rows. Every code, scale and min of the GGUF blocks is kept as it is (tiles -> blocks gives the
// same bytes back), so a tile computes exactly what its blocks compute.
//
// Q4_K tile, per 256-value block b of 16 rows (2368 bytes against 16 x 144 = 2304):
//   d[16] f16 | dmin[16] f16 | sc[8][16] u8 (sub-block j, row r) | m pairs [4][16][2] u8
//   ((m[2p][r], m[2p+1][r]) adjacent, so a vpdpwssd takes two sub-blocks' mins at once) |
//   codes [8 sub-blocks][4 quarters][16 rows][4 bytes]: byte i of row r's dword holds values
//   32j + 8h + i (low nibble) and 32j + 8h + 4 + i (high nibble).
// Q8_0 tile, per 32-value block of 16 rows (544 bytes, as 16 x 34): d[16] f16 | codes [8 quarters
//   of 4 values][16 rows][4 bytes] as unsigned bytes q + 128 (q ^ 0x80), for vpdpbusd.
// Q2_K tile, per 256-value block of 16 rows (1344 bytes, as 16 x 84): d[16], dmin[16] f16 |
//   the scale/min bytes [16 groups][16 rows] as stored | codes [16 groups][16 rows][4 bytes], byte
//   i of a row's dword holding the 2-bit codes of values 16g + i, +4, +8, +12 at bits 0, 2, 4, 6.
// Q6_K tile, per 256-value block of 16 rows (3360 bytes, as 16 x 210): d[16] f16 | the int8
//   scales [16 groups][16 rows] | codes [16 groups][3 lines][16 rows][4 bytes]: the 6-bit codes as
//   stored (0..63, the value q - 32). Byte i of a row's dword in line L holds the code of value
//   16g + 4L + i in bits 0-5 and bits 2L, 2L+1 of the code of value 16g + 12 + i in bits 6-7, so
//   three of each group's four code planes are one mask each.
// Q3_K tile, per 256-value block of 16 rows (1760 bytes, as 16 x 110): d[16] f16 | the 6-bit
//   scales as stored (0..63, the scale s - 32): low nibbles [2 k][4 c][16 rows] (groups 8k + 2c
//   and 8k + 2c + 1 in the low and high nibble), high bit pairs [4 c][16 rows] (bits 2m, 2m + 1:
//   group 8 (m / 2) + 2c + m % 2) | codes [8 group pairs][3 lines][16 rows][4 bytes], the 3-bit
//   codes as stored (0..7, the value q - 4): byte i of a row's dword in line L holds, for pair p,
//   the code of value 32p + 4L + i in bits 0-2 and of 32p + 16 + 4L + i in bits 4-6, and bit L of
//   the codes of 32p + 12 + i and 32p + 28 + i in bits 3 and 7.
// Q5_K tile, per 256-value block of 16 rows (2880 bytes against 16 x 176 = 2816): Q4_K's d, dmin,
//   scales and min pairs | codes [8 sub-blocks][5 lines][16 rows][4 bytes], the 5-bit codes as
//   stored: byte i of a row's dword in line L holds the code of value 32j + 4L + i in bits 0-4,
//   and bits 5-7 of the five lines hold the codes of values 32j + 20 + i, + 24, + 28 (15 bits:
//   line 0 bits 0-2 of the first, line 1 its bits 3-4 and bit 0 of the second, line 2 that one's
//   bits 1-3, line 3 its bit 4 and bits 0-1 of the third, line 4 that one's bits 2-4).
// Tiles of a matrix follow each other: tile t = rows 16t..16t+15, blocks in order.
#pragma once

#include <cstdint>

namespace mt {

inline constexpr int64_t kTileRows = 16;

// Byte offsets inside one tile block of each type (the layouts above), for the packer and the
// kernels alike.
namespace ggml_tile_layout {
struct Q4K {
  static constexpr int64_t d = 0, dmin = 32, sc = 64, m = 192, codes = 320, bytes = codes + 32 * 64;
};
struct Q80 {
  static constexpr int64_t d = 0, codes = 32, bytes = codes + 8 * 64;
};
struct Q2K {
  static constexpr int64_t d = 0, dmin = 32, scm = 64, codes = scm + 256, bytes = codes + 16 * 64;
};
struct Q3K {
  static constexpr int64_t d = 0, slo = 32, shi = slo + 128, codes = shi + 64, bytes = codes + 8 * 3 * 64;
};
struct Q5K {  // d, dmin, sc and m as Q4K's
  static constexpr int64_t d = 0, dmin = 32, sc = 64, m = 192, codes = 320, bytes = codes + 8 * 5 * 64;
};
struct Q6K {
  static constexpr int64_t d = 0, sc = 32, codes = sc + 256, bytes = codes + 16 * 3 * 64;
};
}  // namespace ggml_tile_layout

// Whether `type` has a tile form (Q2_K..Q6_K, Q8_0).
bool ggml_tile_supported(uint32_t type);
// Bytes of one tile block (16 rows of one block); 0 when unsupported.
int64_t ggml_tile_block_bytes(uint32_t type);
// 16 rows of `blocks` blocks each (row r at rows + r * row_bytes) -> one tile. A type without a
// tile form throws std::invalid_argument (here and in the unpackers).
void ggml_tile_pack(uint32_t type, const uint8_t* rows, int64_t row_bytes, int64_t blocks, uint8_t* tile);
// A rows x cols matrix of GGUF blocks (rows back to back; rows a multiple of kTileRows) -> its
// tiles at dst (ggml_tiled_bytes of it). One thread (the loader packs tiles in parallel itself).
void ggml_tile_pack_matrix(uint32_t type, const uint8_t* blocks, int64_t rows, int64_t cols, uint8_t* dst);
// The inverse: one tile -> its 16 rows, byte for byte the GGUF blocks.
void ggml_tile_unpack(uint32_t type, const uint8_t* tile, int64_t blocks, uint8_t* rows, int64_t row_bytes);
// The inverse of ggml_tile_pack_matrix: a matrix's tiles -> its rows of GGUF blocks at dst.
void ggml_tile_unpack_matrix(uint32_t type, const uint8_t* tiles, int64_t rows, int64_t cols, uint8_t* dst);
// Row r (< kTileRows) of one tile -> its `blocks` GGUF blocks at row.
void ggml_tile_unpack_row(uint32_t type, const uint8_t* tile, int64_t blocks, int64_t r, uint8_t* row);
// Bytes of the tiles of a rows x cols matrix (rows a multiple of kTileRows).
inline int64_t ggml_tiled_bytes(uint32_t type, int64_t rows, int64_t cols, int64_t block) {
  return rows / kTileRows * (cols / block) * ggml_tile_block_bytes(type);
}

}  // namespace mt
