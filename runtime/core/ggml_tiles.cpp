#include "runtime/core/ggml_tiles.h"

#include <cstring>

#include "runtime/core/ggml_types.h"

namespace mt {

namespace {

using Q4KTile = ggml_tile_layout::Q4K;
using Q80Tile = ggml_tile_layout::Q80;
using Q2KTile = ggml_tile_layout::Q2K;
using Q6KTile = ggml_tile_layout::Q6K;
constexpr int64_t kQ4KBytes = 144, kQ80Bytes = 34, kQ2KBytes = 84, kQ6KBytes = 210;  // the GGUF blocks

// Q4_K's 12 scale bytes from 8 six-bit scales and mins (ggml_k4_scales inverted).
void k4_pack_scales(const int* sc, const int* m, uint8_t* s) {
  for (int g = 0; g < 4; ++g) {
    s[g] = uint8_t((sc[g] & 63) | ((sc[g + 4] >> 4) << 6));
    s[g + 4] = uint8_t((m[g] & 63) | ((m[g + 4] >> 4) << 6));
    s[g + 8] = uint8_t((sc[g + 4] & 15) | ((m[g + 4] & 15) << 4));
  }
}

// Code t (0..255) of a Q2_K block's 64 code bytes.
int q2k_code(const uint8_t* qs, int t) { return (qs[(t / 128) * 32 + t % 32] >> (2 * ((t % 128) / 32))) & 3; }

// Code t (0..255, 6 bits) of a Q6_K block: the low nibble in ql, the two high bits in qh.
int q6k_code(const uint8_t* blk, int t) {
  const int h = t / 128, r = t % 128;
  return ((blk[h * 64 + r % 64] >> (4 * (r / 64))) & 15) | (((blk[128 + h * 32 + r % 32] >> (2 * (r / 32))) & 3) << 4);
}
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
          const int last = q6k_code(blk, 16 * g + 12 + i);
          for (int line = 0; line < 3; ++line)
            t[q6k_code_byte(g, line, r, i)] =
                uint8_t(q6k_code(blk, 16 * g + 4 * line + i) | (((last >> (2 * line)) & 3) << 6));
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

}  // namespace

bool ggml_tile_supported(uint32_t type) {
  return ggml_tile_block_bytes(type) > 0;
}

int64_t ggml_tile_block_bytes(uint32_t type) {
  switch (GgmlType(type)) {
    case GgmlType::Q4_K: return Q4KTile::bytes;
    case GgmlType::Q8_0: return Q80Tile::bytes;
    case GgmlType::Q2_K: return Q2KTile::bytes;
    case GgmlType::Q6_K: return Q6KTile::bytes;
    default: return 0;
  }
}

void ggml_tile_pack(uint32_t type, const uint8_t* rows, int64_t row_bytes, int64_t blocks, uint8_t* tile) {
  if (GgmlType(type) == GgmlType::Q6_K) return q6k_pack(rows, row_bytes, blocks, tile);
  if (GgmlType(type) == GgmlType::Q2_K) {
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
            for (int p = 0; p < 4; ++p) byte |= q2k_code(blk + 16, 16 * g + 4 * p + i) << (2 * p);
            t[Q2KTile::codes + (g * 16 + r) * 4 + i] = uint8_t(byte);
          }
        }
      }
    }
    return;
  }
  if (GgmlType(type) == GgmlType::Q8_0) {
    for (int64_t b = 0; b < blocks; ++b) {
      uint8_t* t = tile + b * Q80Tile::bytes;
      for (int r = 0; r < kTileRows; ++r) {
        const uint8_t* blk = rows + r * row_bytes + b * kQ80Bytes;
        std::memcpy(t + Q80Tile::d + 2 * r, blk, 2);
        for (int v = 0; v < 32; ++v) t[Q80Tile::codes + ((v / 4) * 16 + r) * 4 + v % 4] = uint8_t(blk[2 + v] ^ 0x80);
      }
    }
    return;
  }
  for (int64_t b = 0; b < blocks; ++b) {
    uint8_t* t = tile + b * Q4KTile::bytes;
    for (int r = 0; r < kTileRows; ++r) {
      const uint8_t* blk = rows + r * row_bytes + b * kQ4KBytes;
      std::memcpy(t + Q4KTile::d + 2 * r, blk, 2);
      std::memcpy(t + Q4KTile::dmin + 2 * r, blk + 2, 2);
      int sc[8], m[8];
      ggml_k4_scales(blk + 4, sc, m);
      for (int j = 0; j < 8; ++j) {
        t[Q4KTile::sc + 16 * j + r] = uint8_t(sc[j]);
        t[Q4KTile::m + 32 * (j / 2) + 2 * r + (j % 2)] = uint8_t(m[j]);
      }
      uint8_t code[256];  // in value order
      for (int c = 0; c < 4; ++c)
        for (int i = 0; i < 32; ++i) {
          code[64 * c + i] = blk[16 + 32 * c + i] & 15;
          code[64 * c + 32 + i] = blk[16 + 32 * c + i] >> 4;
        }
      for (int q = 0; q < 32; ++q)  // q = 4j + h: values 8q..8q+7
        for (int i = 0; i < 4; ++i)
          t[Q4KTile::codes + (q * 16 + r) * 4 + i] = uint8_t(code[8 * q + i] | (code[8 * q + 4 + i] << 4));
    }
  }
}

void ggml_tile_unpack_row(uint32_t type, const uint8_t* tile, int64_t blocks, int64_t r, uint8_t* row) {
  if (GgmlType(type) == GgmlType::Q6_K) return q6k_unpack_row(tile, blocks, r, row);
  if (GgmlType(type) == GgmlType::Q2_K) {
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
    return;
  }
  if (GgmlType(type) == GgmlType::Q8_0) {
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* t = tile + b * Q80Tile::bytes;
      uint8_t* blk = row + b * kQ80Bytes;
      std::memcpy(blk, t + Q80Tile::d + 2 * r, 2);
      for (int v = 0; v < 32; ++v) blk[2 + v] = uint8_t(t[Q80Tile::codes + ((v / 4) * 16 + r) * 4 + v % 4] ^ 0x80);
    }
    return;
  }
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* t = tile + b * Q4KTile::bytes;
    uint8_t* blk = row + b * kQ4KBytes;
    std::memcpy(blk, t + Q4KTile::d + 2 * r, 2);
    std::memcpy(blk + 2, t + Q4KTile::dmin + 2 * r, 2);
    int sc[8], m[8];
    for (int j = 0; j < 8; ++j) sc[j] = t[Q4KTile::sc + 16 * j + r], m[j] = t[Q4KTile::m + 32 * (j / 2) + 2 * r + (j % 2)];
    k4_pack_scales(sc, m, blk + 4);
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

void ggml_tile_unpack(uint32_t type, const uint8_t* tile, int64_t blocks, uint8_t* rows, int64_t row_bytes) {
  for (int64_t r = 0; r < kTileRows; ++r) ggml_tile_unpack_row(type, tile, blocks, r, rows + r * row_bytes);
}

}  // namespace mt
