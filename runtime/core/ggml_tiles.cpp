#include "runtime/core/ggml_tiles.h"

#include <cstring>
#include <stdexcept>
#include <string>

#include "runtime/core/ggml_types.h"

namespace mt {

namespace {

using Q4KTile = ggml_tile_layout::Q4K;
using Q80Tile = ggml_tile_layout::Q80;
using Q2KTile = ggml_tile_layout::Q2K;
using Q3KTile = ggml_tile_layout::Q3K;
using Q5KTile = ggml_tile_layout::Q5K;
using Q6KTile = ggml_tile_layout::Q6K;
constexpr int64_t kQ4KBytes = 144, kQ80Bytes = 34, kQ2KBytes = 84, kQ3KBytes = 110, kQ5KBytes = 176, kQ6KBytes = 210;  // the GGUF blocks
static_assert(Q5KTile::d == Q4KTile::d && Q5KTile::dmin == Q4KTile::dmin && Q5KTile::sc == Q4KTile::sc &&
              Q5KTile::m == Q4KTile::m && Q5KTile::codes == Q4KTile::codes);

// Q4_K's 12 scale bytes from 8 six-bit scales and mins (ggml_k4_scales inverted).
void k4_pack_scales(const int* sc, const int* m, uint8_t* s) {
  for (int g = 0; g < 4; ++g) {
    s[g] = uint8_t((sc[g] & 63) | ((sc[g + 4] >> 4) << 6));
    s[g + 4] = uint8_t((m[g] & 63) | ((m[g + 4] >> 4) << 6));
    s[g + 8] = uint8_t((sc[g + 4] & 15) | ((m[g + 4] & 15) << 4));
  }
}


// Q3_K: code t (0..7) into qs (2 bits) and hmask (the third), scale g (0..63) into its 12 packed
// bytes at blk + 96 (low nibbles in bytes 0-7, bit pairs in bytes 8-11): ggml_q3k_code and
// ggml_q3k_scale inverted.
void q3k_set_code(uint8_t* blk, int t, int code) {  // blk's hmask and qs zeroed first
  blk[32 + (t / 128) * 32 + t % 32] |= uint8_t((code & 3) << (2 * ((t % 128) / 32)));
  blk[t % 32] |= uint8_t((code >> 2) << (t / 32));
}
void q3k_set_scale(uint8_t* blk, int g, int s) {  // the 12 scale bytes zeroed first
  blk[96 + g % 8] |= uint8_t((s & 15) << (4 * (g / 8)));
  blk[104 + g % 4] |= uint8_t((s >> 4) << (2 * (g / 4)));
}
// Where group g's scale sits in a Q3_K tile block: its low nibble's byte and shift, its bit pair's.
struct Q3KScaleAt {
  int64_t lo;
  int lo_shift;
  int64_t hi;
  int hi_shift;
};
Q3KScaleAt q3k_scale_at(int g, int64_t r) {
  const int k = g / 8, c = (g % 8) / 2, e = g % 2, m = 2 * k + e;
  return {Q3KTile::slo + (4 * k + c) * 16 + r, 4 * e, Q3KTile::shi + c * 16 + r, 2 * m};
}
int64_t q3k_code_byte(int p, int line, int64_t r, int i) { return Q3KTile::codes + ((3 * p + line) * 16 + r) * 4 + i; }

void q3k_pack(const uint8_t* rows, int64_t row_bytes, int64_t blocks, uint8_t* tile) {
  for (int64_t b = 0; b < blocks; ++b) {
    uint8_t* t = tile + b * Q3KTile::bytes;
    std::memset(t + Q3KTile::slo, 0, Q3KTile::codes - Q3KTile::slo);
    for (int r = 0; r < kTileRows; ++r) {
      const uint8_t* blk = rows + r * row_bytes + b * kQ3KBytes;
      std::memcpy(t + Q3KTile::d + 2 * r, blk + 108, 2);
      for (int g = 0; g < 16; ++g) {
        const int s = ggml_q3k_scale(blk, g);
        const Q3KScaleAt at = q3k_scale_at(g, r);
        t[at.lo] |= uint8_t((s & 15) << at.lo_shift);
        t[at.hi] |= uint8_t((s >> 4) << at.hi_shift);
      }
      for (int p = 0; p < 8; ++p)
        for (int i = 0; i < 4; ++i) {
          const int a3 = ggml_q3k_code(blk, 32 * p + 12 + i), b3 = ggml_q3k_code(blk, 32 * p + 28 + i);
          for (int line = 0; line < 3; ++line)
            t[q3k_code_byte(p, line, r, i)] =
                uint8_t(ggml_q3k_code(blk, 32 * p + 4 * line + i) | (((a3 >> line) & 1) << 3) |
                        (ggml_q3k_code(blk, 32 * p + 16 + 4 * line + i) << 4) | (((b3 >> line) & 1) << 7));
        }
    }
  }
}

void q3k_unpack_row(const uint8_t* tile, int64_t blocks, int64_t r, uint8_t* row) {
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* t = tile + b * Q3KTile::bytes;
    uint8_t* blk = row + b * kQ3KBytes;
    std::memset(blk, 0, 108);
    std::memcpy(blk + 108, t + Q3KTile::d + 2 * r, 2);
    for (int g = 0; g < 16; ++g) {
      const Q3KScaleAt at = q3k_scale_at(g, r);
      q3k_set_scale(blk, g, ((t[at.lo] >> at.lo_shift) & 15) | (((t[at.hi] >> at.hi_shift) & 3) << 4));
    }
    for (int p = 0; p < 8; ++p)
      for (int i = 0; i < 4; ++i) {
        int a3 = 0, b3 = 0;
        for (int line = 0; line < 3; ++line) {
          const int byte = t[q3k_code_byte(p, line, r, i)];
          q3k_set_code(blk, 32 * p + 4 * line + i, byte & 7);
          q3k_set_code(blk, 32 * p + 16 + 4 * line + i, (byte >> 4) & 7);
          a3 |= ((byte >> 3) & 1) << line;
          b3 |= ((byte >> 7) & 1) << line;
        }
        q3k_set_code(blk, 32 * p + 12 + i, a3);
        q3k_set_code(blk, 32 * p + 28 + i, b3);
      }
  }
}

// Q4_K and Q5_K tiles share their header: d, dmin, the 8 scales and the min pairs of each row.
void k4_pack_header(const uint8_t* blk, int r, uint8_t* t) {
  std::memcpy(t + Q4KTile::d + 2 * r, blk, 2);
  std::memcpy(t + Q4KTile::dmin + 2 * r, blk + 2, 2);
  int sc[8], m[8];
  ggml_k4_scales(blk + 4, sc, m);
  for (int j = 0; j < 8; ++j) {
    t[Q4KTile::sc + 16 * j + r] = uint8_t(sc[j]);
    t[Q4KTile::m + 32 * (j / 2) + 2 * r + (j % 2)] = uint8_t(m[j]);
  }
}
void k4_unpack_header(const uint8_t* t, int64_t r, uint8_t* blk) {
  std::memcpy(blk, t + Q4KTile::d + 2 * r, 2);
  std::memcpy(blk + 2, t + Q4KTile::dmin + 2 * r, 2);
  int sc[8], m[8];
  for (int j = 0; j < 8; ++j) sc[j] = t[Q4KTile::sc + 16 * j + r], m[j] = t[Q4KTile::m + 32 * (j / 2) + 2 * r + (j % 2)];
  k4_pack_scales(sc, m, blk + 4);
}

// Q5_K code t (0..31) into the nibble in qs and the fifth bit in qh (ggml_q5k_code inverted).
void q5k_set_code(uint8_t* blk, int t, int code) {  // blk's qh and qs zeroed first
  const int j = t / 32, i = t % 32;
  blk[48 + (j / 2) * 32 + i] |= uint8_t((code & 15) << (4 * (j % 2)));
  blk[16 + i] |= uint8_t((code >> 4) << j);
}
// The three codes of values 20 + i, 24 + i, 28 + i of a sub-block as bits 5-7 of its five lines.
void q5k_spread(int c5, int c6, int c7, int* spare) {
  spare[0] = c5 & 7;
  spare[1] = (c5 >> 3) | ((c6 & 1) << 2);
  spare[2] = (c6 >> 1) & 7;
  spare[3] = (c6 >> 4) | ((c7 & 3) << 1);
  spare[4] = c7 >> 2;
}
void q5k_gather(const int* spare, int* c) {
  c[0] = spare[0] | ((spare[1] & 3) << 3);
  c[1] = (spare[1] >> 2) | (spare[2] << 1) | ((spare[3] & 1) << 4);
  c[2] = (spare[3] >> 1) | (spare[4] << 2);
}
int64_t q5k_code_byte(int j, int line, int64_t r, int i) { return Q5KTile::codes + ((5 * j + line) * 16 + r) * 4 + i; }

void q5k_pack(const uint8_t* rows, int64_t row_bytes, int64_t blocks, uint8_t* tile) {
  for (int64_t b = 0; b < blocks; ++b) {
    uint8_t* t = tile + b * Q5KTile::bytes;
    for (int r = 0; r < kTileRows; ++r) {
      const uint8_t* blk = rows + r * row_bytes + b * kQ5KBytes;
      k4_pack_header(blk, r, t);
      for (int j = 0; j < 8; ++j)
        for (int i = 0; i < 4; ++i) {
          int spare[5];
          q5k_spread(ggml_q5k_code(blk, 32 * j + 20 + i), ggml_q5k_code(blk, 32 * j + 24 + i), ggml_q5k_code(blk, 32 * j + 28 + i), spare);
          for (int line = 0; line < 5; ++line)
            t[q5k_code_byte(j, line, r, i)] = uint8_t(ggml_q5k_code(blk, 32 * j + 4 * line + i) | (spare[line] << 5));
        }
    }
  }
}

void q5k_unpack_row(const uint8_t* tile, int64_t blocks, int64_t r, uint8_t* row) {
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* t = tile + b * Q5KTile::bytes;
    uint8_t* blk = row + b * kQ5KBytes;
    k4_unpack_header(t, r, blk);
    std::memset(blk + 16, 0, 160);
    for (int j = 0; j < 8; ++j)
      for (int i = 0; i < 4; ++i) {
        int spare[5], c[3];
        for (int line = 0; line < 5; ++line) {
          const int byte = t[q5k_code_byte(j, line, r, i)];
          q5k_set_code(blk, 32 * j + 4 * line + i, byte & 31);
          spare[line] = byte >> 5;
        }
        q5k_gather(spare, c);
        for (int k = 0; k < 3; ++k) q5k_set_code(blk, 32 * j + 20 + 4 * k + i, c[k]);
      }
  }
}

// Q6_K code t (0..63) into its low nibble in ql and two high bits in qh (ggml_q6k_code inverted).
void q6k_set_code(uint8_t* blk, int t, int code) {  // blk's ql and qh zeroed first
  const int h = t / 128, r = t % 128;
  blk[h * 64 + r % 64] |= uint8_t((code & 15) << (4 * (r / 64)));
  blk[128 + h * 32 + r % 32] |= uint8_t((code >> 4) << (2 * (r / 32)));
}
// Byte i of row r's dword in line `line` of group g, in a Q6_K tile block.
int64_t q6k_code_byte(int g, int line, int r, int i) { return Q6KTile::codes + ((3 * g + line) * 16 + r) * 4 + i; }

void q6k_pack(const uint8_t* rows, int64_t row_bytes, int64_t blocks, uint8_t* tile) {
  for (int64_t b = 0; b < blocks; ++b) {
    uint8_t* t = tile + b * Q6KTile::bytes;
    for (int r = 0; r < kTileRows; ++r) {
      const uint8_t* blk = rows + r * row_bytes + b * kQ6KBytes;
      std::memcpy(t + Q6KTile::d + 2 * r, blk + 208, 2);
      for (int g = 0; g < 16; ++g) {
        t[Q6KTile::sc + 16 * g + r] = blk[192 + g];
        for (int i = 0; i < 4; ++i) {
          const int last = ggml_q6k_code(blk, 16 * g + 12 + i);
          for (int line = 0; line < 3; ++line)
            t[q6k_code_byte(g, line, r, i)] =
                uint8_t(ggml_q6k_code(blk, 16 * g + 4 * line + i) | (((last >> (2 * line)) & 3) << 6));
        }
      }
    }
  }
}

void q6k_unpack_row(const uint8_t* tile, int64_t blocks, int64_t r, uint8_t* row) {
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* t = tile + b * Q6KTile::bytes;
    uint8_t* blk = row + b * kQ6KBytes;
    std::memset(blk, 0, 192);
    std::memcpy(blk + 208, t + Q6KTile::d + 2 * r, 2);
    for (int g = 0; g < 16; ++g) {
      blk[192 + g] = t[Q6KTile::sc + 16 * g + r];
      for (int i = 0; i < 4; ++i) {
        int last = 0;
        for (int line = 0; line < 3; ++line) {
          const int byte = t[q6k_code_byte(g, line, int(r), i)];
          q6k_set_code(blk, 16 * g + 4 * line + i, byte & 63);
          last |= (byte >> 6) << (2 * line);
        }
        q6k_set_code(blk, 16 * g + 12 + i, last);
      }
    }
  }
}

void q2k_pack(const uint8_t* rows, int64_t row_bytes, int64_t blocks, uint8_t* tile) {
  for (int64_t b = 0; b < blocks; ++b) {
    uint8_t* t = tile + b * Q2KTile::bytes;
    for (int r = 0; r < kTileRows; ++r) {
      const uint8_t* blk = rows + r * row_bytes + b * kQ2KBytes;
      std::memcpy(t + Q2KTile::d + 2 * r, blk + 80, 2);
      std::memcpy(t + Q2KTile::dmin + 2 * r, blk + 82, 2);
      for (int g = 0; g < 16; ++g) {
        t[Q2KTile::scm + 16 * g + r] = blk[g];
        for (int i = 0; i < 4; ++i) {
          int byte = 0;
          for (int p = 0; p < 4; ++p) byte |= ggml_q2k_code(blk, 16 * g + 4 * p + i) << (2 * p);
          t[Q2KTile::codes + (g * 16 + r) * 4 + i] = uint8_t(byte);
        }
      }
    }
  }
}

void q2k_unpack_row(const uint8_t* tile, int64_t blocks, int64_t r, uint8_t* row) {
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* t = tile + b * Q2KTile::bytes;
    uint8_t* blk = row + b * kQ2KBytes;
    std::memcpy(blk + 80, t + Q2KTile::d + 2 * r, 2);
    std::memcpy(blk + 82, t + Q2KTile::dmin + 2 * r, 2);
    uint8_t* qs = blk + 16;
    std::memset(qs, 0, 64);
    for (int g = 0; g < 16; ++g) {
      blk[g] = t[Q2KTile::scm + 16 * g + r];
      for (int i = 0; i < 4; ++i) {
        const int byte = t[Q2KTile::codes + (g * 16 + r) * 4 + i];
        for (int p = 0; p < 4; ++p) {
          const int v = 16 * g + 4 * p + i, code = (byte >> (2 * p)) & 3;
          qs[(v / 128) * 32 + v % 32] |= uint8_t(code << (2 * ((v % 128) / 32)));
        }
      }
    }
  }
}

void q80_pack(const uint8_t* rows, int64_t row_bytes, int64_t blocks, uint8_t* tile) {
  for (int64_t b = 0; b < blocks; ++b) {
    uint8_t* t = tile + b * Q80Tile::bytes;
    for (int r = 0; r < kTileRows; ++r) {
      const uint8_t* blk = rows + r * row_bytes + b * kQ80Bytes;
      std::memcpy(t + Q80Tile::d + 2 * r, blk, 2);
      for (int v = 0; v < 32; ++v) t[Q80Tile::codes + ((v / 4) * 16 + r) * 4 + v % 4] = uint8_t(blk[2 + v] ^ 0x80);
    }
  }
}

void q80_unpack_row(const uint8_t* tile, int64_t blocks, int64_t r, uint8_t* row) {
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* t = tile + b * Q80Tile::bytes;
    uint8_t* blk = row + b * kQ80Bytes;
    std::memcpy(blk, t + Q80Tile::d + 2 * r, 2);
    for (int v = 0; v < 32; ++v) blk[2 + v] = uint8_t(t[Q80Tile::codes + ((v / 4) * 16 + r) * 4 + v % 4] ^ 0x80);
  }
}

void q4k_pack(const uint8_t* rows, int64_t row_bytes, int64_t blocks, uint8_t* tile) {
  for (int64_t b = 0; b < blocks; ++b) {
    uint8_t* t = tile + b * Q4KTile::bytes;
    for (int r = 0; r < kTileRows; ++r) {
      const uint8_t* blk = rows + r * row_bytes + b * kQ4KBytes;
      k4_pack_header(blk, r, t);
      for (int q = 0; q < 32; ++q)  // q = 4j + h: values 8q..8q+7
        for (int i = 0; i < 4; ++i)
          t[Q4KTile::codes + (q * 16 + r) * 4 + i] =
              uint8_t(ggml_q4k_code(blk, 8 * q + i) | (ggml_q4k_code(blk, 8 * q + 4 + i) << 4));
    }
  }
}

void q4k_unpack_row(const uint8_t* tile, int64_t blocks, int64_t r, uint8_t* row) {
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* t = tile + b * Q4KTile::bytes;
    uint8_t* blk = row + b * kQ4KBytes;
    k4_unpack_header(t, r, blk);
    uint8_t* qs = blk + 16;
    std::memset(qs, 0, 128);
    for (int j = 0; j < 8; ++j)
      for (int h = 0; h < 4; ++h)
        for (int i = 0; i < 4; ++i) {
          const uint8_t byte = t[Q4KTile::codes + ((4 * j + h) * 16 + r) * 4 + i];
          for (int half = 0; half < 2; ++half) {
            const int v = 32 * j + 8 * h + i + 4 * half, code = (byte >> (4 * half)) & 15;
            qs[(v / 64) * 32 + v % 32] |= uint8_t(code << (4 * ((v / 32) % 2)));
          }
        }
  }
}

}  // namespace

bool ggml_tile_supported(uint32_t type) {
  return ggml_tile_block_bytes(type) > 0;
}

int64_t ggml_tile_block_bytes(uint32_t type) {
  switch (GgmlType(type)) {
    case GgmlType::Q4_K: return Q4KTile::bytes;
    case GgmlType::Q8_0: return Q80Tile::bytes;
    case GgmlType::Q2_K: return Q2KTile::bytes;
    case GgmlType::Q3_K: return Q3KTile::bytes;
    case GgmlType::Q5_K: return Q5KTile::bytes;
    case GgmlType::Q6_K: return Q6KTile::bytes;
    default: return 0;
  }
}

void ggml_tile_pack(uint32_t type, const uint8_t* rows, int64_t row_bytes, int64_t blocks, uint8_t* tile) {
  switch (GgmlType(type)) {
    case GgmlType::Q2_K: return q2k_pack(rows, row_bytes, blocks, tile);
    case GgmlType::Q3_K: return q3k_pack(rows, row_bytes, blocks, tile);
    case GgmlType::Q4_K: return q4k_pack(rows, row_bytes, blocks, tile);
    case GgmlType::Q5_K: return q5k_pack(rows, row_bytes, blocks, tile);
    case GgmlType::Q6_K: return q6k_pack(rows, row_bytes, blocks, tile);
    case GgmlType::Q8_0: return q80_pack(rows, row_bytes, blocks, tile);
    default: throw std::invalid_argument("ggml_tile_pack: " + ggml_type_name(type) + " has no tile form");
  }
}

void ggml_tile_pack_matrix(uint32_t type, const uint8_t* blocks, int64_t rows, int64_t cols, uint8_t* dst) {
  const int64_t n_blocks = cols / ggml_type_info(type)->block;
  const int64_t row_bytes = int64_t(ggml_row_bytes(type, cols));
  const int64_t tile_bytes = n_blocks * ggml_tile_block_bytes(type);
  for (int64_t t = 0; t < rows / kTileRows; ++t)
    ggml_tile_pack(type, blocks + t * kTileRows * row_bytes, row_bytes, n_blocks, dst + t * tile_bytes);
}

void ggml_tile_unpack_matrix(uint32_t type, const uint8_t* tiles, int64_t rows, int64_t cols, uint8_t* dst) {
  const int64_t n_blocks = cols / ggml_type_info(type)->block;
  const int64_t row_bytes = int64_t(ggml_row_bytes(type, cols));
  const int64_t tile_bytes = n_blocks * ggml_tile_block_bytes(type);
  for (int64_t t = 0; t < rows / kTileRows; ++t)
    ggml_tile_unpack(type, tiles + t * tile_bytes, n_blocks, dst + t * kTileRows * row_bytes, row_bytes);
}

void ggml_tile_unpack_row(uint32_t type, const uint8_t* tile, int64_t blocks, int64_t r, uint8_t* row) {
  switch (GgmlType(type)) {
    case GgmlType::Q2_K: return q2k_unpack_row(tile, blocks, r, row);
    case GgmlType::Q3_K: return q3k_unpack_row(tile, blocks, r, row);
    case GgmlType::Q4_K: return q4k_unpack_row(tile, blocks, r, row);
    case GgmlType::Q5_K: return q5k_unpack_row(tile, blocks, r, row);
    case GgmlType::Q6_K: return q6k_unpack_row(tile, blocks, r, row);
    case GgmlType::Q8_0: return q80_unpack_row(tile, blocks, r, row);
    default: throw std::invalid_argument("ggml_tile_unpack_row: " + ggml_type_name(type) + " has no tile form");
  }
}

void ggml_tile_unpack(uint32_t type, const uint8_t* tile, int64_t blocks, uint8_t* rows, int64_t row_bytes) {
  for (int64_t r = 0; r < kTileRows; ++r) ggml_tile_unpack_row(type, tile, blocks, r, rows + r * row_bytes);
}

}  // namespace mt
