// Packed expert blobs: pack_expert / unpack_expert (the only writer and
// reader of the in-row code order, described in expert_ffn_internal.h and docs/kernels.md).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_kernels/expert_ffn_internal.h"
#include "cpu_kernels/ggml_dequant.h"
#include "runtime/core/dtype.h"
#include "runtime/core/ggml_tiles.h"
#include "runtime/core/ggml_types.h"

namespace mt::cpu {

using namespace expert_detail;

namespace expert_detail {

PackedMat packed_matrix(const ExpertGeometry& g, const uint8_t* blob, int which) {
  const ExpertBlobLayout L = expert_blob_layout(g);
  PackedMat m;
  m.quant = g.quant;
  m.rows = expert_matrix_shape(g, which).rows;
  m.cols = expert_matrix_shape(g, which).cols;
  m.rows_padded = padded_rows(m.rows);
  m.group = g.quant == ExpertQuant::BF16 ? m.cols : g.group;
  m.codes = blob + L.offset(which);
  m.scales = g.quant == ExpertQuant::BF16 ? nullptr : m.codes + round_up(m.tile_code_bytes() * m.tiles(), 64);
  return m;
}

}  // namespace expert_detail

namespace {

// Symmetric 4-bit: the value of largest magnitude m maps to code 0 (q = -8): d = m / -8, so
// q = round(w / d) lies in -8..7 (+8 clamps to 7). d is rounded to fp16 before the codes are made.
void quantize_group_q4(const float* w, int64_t n, uint16_t& scale_h, uint8_t* codes) {
  float m = 0.0f, am = 0.0f;
  for (int64_t i = 0; i < n; ++i)
    if (std::fabs(w[i]) > am) {
      am = std::fabs(w[i]);
      m = w[i];
    }
  scale_h = f32_to_f16(std::clamp(m / -8.0f, -65504.0f, 65504.0f));
  const float d = f16_to_f32(scale_h);
  const float inv = d != 0.0f ? 1.0f / d : 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float q = std::nearbyint(w[i] * inv);
    codes[i] = static_cast<uint8_t>(std::clamp(q, -8.0f, 7.0f) + 8.0f);
  }
}

// Symmetric 8-bit: d = max|w| / 127, q = round(w / d) in -127..127, stored as q + 128.
void quantize_group_q8(const float* w, int64_t n, float& scale, uint8_t* codes) {
  float am = 0.0f;
  for (int64_t i = 0; i < n; ++i) am = std::max(am, std::fabs(w[i]));
  scale = am / 127.0f;
  const float inv = am > 0.0f ? 127.0f / am : 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    const float q = std::nearbyint(w[i] * inv);
    codes[i] = static_cast<uint8_t>(std::clamp(q, -127.0f, 127.0f) + 128.0f);
  }
}

}  // namespace

void expert_detail::pack_matrix(ExpertQuant quant, const float* w, int64_t rows, int64_t cols, int64_t group,
                                uint8_t* dst) {
  PackedMat m;
  m.quant = quant;
  m.rows = rows;
  m.rows_padded = padded_rows(rows);
  m.cols = cols;
  m.group = quant == ExpertQuant::BF16 ? cols : group;
  const size_t code_bytes = m.tile_code_bytes() * static_cast<size_t>(m.tiles());
  uint8_t* codes = dst;
  uint8_t* scales = dst + round_up(code_bytes, 64);
  const int64_t ck = chunk_k(quant), G = m.groups();
#pragma omp parallel for schedule(static) if (m.tiles() > 1 && rows * cols > (int64_t{1} << 18))
  for (int64_t tile = 0; tile < m.tiles(); ++tile) {
   std::vector<uint8_t> rc(static_cast<size_t>(cols));  // one row's codes in k order
   for (int64_t lr = 0; lr < kRowTile; ++lr) {
    const int64_t r = tile * kRowTile + lr;
    uint8_t* tcodes = codes + static_cast<size_t>(tile) * m.tile_code_bytes();
    const float* wr = r < rows ? w + r * cols : nullptr;
    if (quant == ExpertQuant::BF16) {
      for (int64_t k = 0; k < cols; ++k) {
        const uint16_t b = r < rows ? f32_to_bf16(wr[k]) : 0;
        std::memcpy(tcodes + (k / 2) * kChunkBytes + (2 * lr + k % 2) * 2, &b, 2);
      }
      continue;
    }
    for (int64_t gi = 0; gi < G; ++gi) {
      const size_t sidx = static_cast<size_t>((tile * G + gi) * kRowTile + lr);
      if (quant == ExpertQuant::Q4) {
        uint16_t s = 0;
        if (r < rows) quantize_group_q4(wr + gi * group, group, s, rc.data() + gi * group);
        else std::fill_n(rc.data() + gi * group, group, uint8_t{8});
        std::memcpy(scales + sidx * 2, &s, 2);
      } else {
        float s = 0.0f;
        if (r < rows) quantize_group_q8(wr + gi * group, group, s, rc.data() + gi * group);
        else std::fill_n(rc.data() + gi * group, group, uint8_t{128});
        std::memcpy(scales + sidx * 4, &s, 4);
      }
    }
    for (int64_t c = 0; c < cols / ck; ++c) {
      uint8_t* p = tcodes + c * kChunkBytes + 4 * lr;
      for (int j = 0; j < 4; ++j)
        p[j] = quant == ExpertQuant::Q4 ? static_cast<uint8_t>(rc[c * 8 + j] | (rc[c * 8 + 4 + j] << 4))
                                        : rc[c * 4 + j];
    }
   }
  }
}

namespace {

void unpack_matrix(const PackedMat& m, float* w) {
  const int64_t ck = chunk_k(m.quant), G = m.groups();
  for (int64_t r = 0; r < m.rows; ++r) {
    const int64_t tile = r / kRowTile, lr = r % kRowTile;
    const uint8_t* tcodes = m.codes + static_cast<size_t>(tile) * m.tile_code_bytes();
    float* wr = w + r * m.cols;
    for (int64_t k = 0; k < m.cols; ++k) {
      const int64_t c = k / ck, j = k % ck;
      if (m.quant == ExpertQuant::BF16) {
        uint16_t b;
        std::memcpy(&b, tcodes + c * kChunkBytes + (2 * lr + j) * 2, 2);
        wr[k] = bf16_to_f32(b);
        continue;
      }
      const size_t sidx = static_cast<size_t>((tile * G + k / m.group) * kRowTile + lr);
      const uint8_t byte = tcodes[c * kChunkBytes + 4 * lr + (j & 3)];
      if (m.quant == ExpertQuant::Q4) {
        uint16_t s;
        std::memcpy(&s, m.scales + sidx * 2, 2);
        const int code = j < 4 ? (byte & 15) : (byte >> 4);
        wr[k] = static_cast<float>(code - 8) * f16_to_f32(s);
      } else {
        float s;
        std::memcpy(&s, m.scales + sidx * 4, 4);
        wr[k] = static_cast<float>(static_cast<int>(byte) - 128) * s;
      }
    }
  }
}

}  // namespace

void pack_expert(const ExpertGeometry& g, const float* gate, const float* up, const float* down, uint8_t* blob) {
  if (g.quant == ExpertQuant::GGUF)  // GGUF blobs hold a file's blocks as they are (moetier convert copies them)
    throw std::invalid_argument("pack_expert: GGUF experts are copied from a GGUF file, not packed from fp32");
  const ExpertBlobLayout L = expert_blob_layout(g);
  std::memset(blob, 0, L.total_bytes);
  pack_matrix(g.quant, gate, g.inter, g.hidden, g.group, blob + L.gate_offset);
  pack_matrix(g.quant, up, g.inter, g.hidden, g.group, blob + L.up_offset);
  pack_matrix(g.quant, down, g.hidden, g.inter, g.group, blob + L.down_offset);
}

RawExpertMatrix raw_expert_matrix(const ExpertGeometry& g, const uint8_t* blob, int which) {
  const PackedMat m = packed_matrix(g, blob, which);
  RawExpertMatrix out;
  out.rows = m.rows;
  out.cols = m.cols;
  out.group = m.group;
  const int64_t ck = chunk_k(m.quant), G = m.groups();
  const auto n = static_cast<size_t>(m.rows * m.cols);
  if (m.quant == ExpertQuant::BF16) out.bits.resize(n);
  else out.codes.resize(n);
  if (m.quant == ExpertQuant::Q4) out.scale_bits.resize(static_cast<size_t>(m.rows * G));
  if (m.quant == ExpertQuant::Q8) out.scales.resize(static_cast<size_t>(m.rows * G));
  for (int64_t r = 0; r < m.rows; ++r) {
    const int64_t tile = r / kRowTile, lr = r % kRowTile;
    const uint8_t* tcodes = m.codes + static_cast<size_t>(tile) * m.tile_code_bytes();
    for (int64_t k = 0; k < m.cols; ++k) {
      const int64_t c = k / ck, j = k % ck;
      const auto i = static_cast<size_t>(r * m.cols + k);
      if (m.quant == ExpertQuant::BF16) {
        std::memcpy(&out.bits[i], tcodes + c * kChunkBytes + (2 * lr + j) * 2, 2);
        continue;
      }
      const uint8_t byte = tcodes[c * kChunkBytes + 4 * lr + (j & 3)];
      out.codes[i] = m.quant == ExpertQuant::Q4 ? static_cast<int8_t>(j < 4 ? (byte & 15) : (byte >> 4))
                                                : static_cast<int8_t>(static_cast<int>(byte) - 128);
    }
    for (int64_t gi = 0; gi < G; ++gi) {
      const size_t sidx = static_cast<size_t>((tile * G + gi) * kRowTile + lr);
      const auto o = static_cast<size_t>(r * G + gi);
      if (m.quant == ExpertQuant::Q4) std::memcpy(&out.scale_bits[o], m.scales + sidx * 2, 2);
      else std::memcpy(&out.scales[o], m.scales + sidx * 4, 4);
    }
  }
  return out;
}

void unpack_expert(const ExpertGeometry& g, const uint8_t* blob, float* gate, float* up, float* down) {
  if (g.quant == ExpertQuant::GGUF) {  // the reference decoder, matrix by matrix
    const ExpertBlobLayout L = expert_blob_layout(g);
    float* outs[3] = {gate, up, down};
    std::vector<uint8_t> blocks;
    for (int m = 0; m < 3; ++m) {
      const auto [rows, cols] = expert_matrix_shape(g, m);
      const uint8_t* src = blob + L.offset(m);
      if (expert_matrix_tiled(g, m)) {  // the tiles' blocks back, byte for byte, then decoded as stored
        blocks.resize(size_t(rows) * ggml_row_bytes(g.ggml[m], cols));
        ggml_tile_unpack_matrix(g.ggml[m], src, rows, cols, blocks.data());
        src = blocks.data();
      }
      ggml_dequantize(g.ggml[m], src, rows * cols, outs[m]);
    }
    return;
  }
  unpack_matrix(packed_matrix(g, blob, 0), gate);
  unpack_matrix(packed_matrix(g, blob, 1), up);
  unpack_matrix(packed_matrix(g, blob, 2), down);
}

}  // namespace mt::cpu
