#include "runtime/core/expert_format.h"

#include <stdexcept>

#include "runtime/core/ggml_tiles.h"
#include "runtime/core/ggml_types.h"

namespace mt {

namespace {
size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }
}  // namespace

std::string_view expert_quant_name(ExpertQuant q) {
  switch (q) {
    case ExpertQuant::Q4: return "q4";
    case ExpertQuant::Q8: return "q8";
    case ExpertQuant::BF16: return "bf16";
    case ExpertQuant::GGUF: return "gguf";
  }
  return "?";
}

bool expert_quant_from_name(std::string_view name, ExpertQuant& out) {
  for (ExpertQuant q : {ExpertQuant::Q4, ExpertQuant::Q8, ExpertQuant::BF16, ExpertQuant::GGUF})
    if (name == expert_quant_name(q)) {
      out = q;
      return true;
    }
  return false;
}

bool expert_geometry_valid(const ExpertGeometry& g, std::string* why) {
  auto fail = [&](const std::string& m) {
    if (why) *why = m;
    return false;
  };
  if (g.quant != ExpertQuant::Q4 && g.quant != ExpertQuant::Q8 && g.quant != ExpertQuant::BF16 &&
      g.quant != ExpertQuant::GGUF)
    return fail("unknown expert quantisation");
  if (g.hidden <= 0 || g.inter <= 0) return fail("hidden and inter must be positive");
  if (g.hidden > (int64_t{1} << 24) || g.inter > (int64_t{1} << 24)) return fail("hidden/inter too large");
  if (g.quant == ExpertQuant::GGUF) {
    const char* names[3] = {"gate", "up", "down"};
    for (int m = 0; m < 3; ++m) {
      const GgmlTypeInfo* t = ggml_type_info(g.ggml[m]);
      if (!t) return fail(std::string(names[m]) + ": unknown ggml type " + std::to_string(g.ggml[m]));
      const int64_t k = m == 2 ? g.inter : g.hidden;
      if (k % t->block)
        return fail(std::string(names[m]) + ": " + t->name + " rows of " + std::to_string(k) + " are not whole blocks");
    }
    return true;
  }
  if (g.quant == ExpertQuant::BF16) {
    if (g.hidden % 8 || g.inter % 8) return fail("bf16 experts need hidden and inter multiples of 8");
    return true;
  }
  if (g.group <= 0 || g.group % 8) return fail("group must be a positive multiple of 8");
  if (g.hidden % g.group || g.inter % g.group)
    return fail("group " + std::to_string(g.group) + " must divide hidden " + std::to_string(g.hidden) +
                " and inter " + std::to_string(g.inter));
  return true;
}

bool store_tiled_matrix(uint32_t type, int64_t rows) {
  if (rows % kTileRows != 0) return false;
  // Not ggml_tile_supported: a tile form added later must not turn a stored matrix of blocks into tiles.
  switch (GgmlType(type)) {
    case GgmlType::Q2_K: case GgmlType::Q3_K: case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K:
    case GgmlType::Q8_0:
      return true;
    default:
      return false;
  }
}

bool expert_matrix_tiled(const ExpertGeometry& g, int which) {
  return g.quant == ExpertQuant::GGUF && g.ggml_tiles && which >= 0 && which < 3 &&
         store_tiled_matrix(g.ggml[which], expert_matrix_shape(g, which).rows);
}

size_t packed_matrix_bytes(ExpertQuant q, int64_t rows, int64_t cols, int64_t group) {
  const auto rp = static_cast<size_t>((rows + kExpertRowTile - 1) / kExpertRowTile * kExpertRowTile);
  const auto c = static_cast<size_t>(cols);
  switch (q) {
    case ExpertQuant::Q4:
      return round_up(rp * c / 2, 64) + round_up(rp * (c / static_cast<size_t>(group)) * 2, 64);
    case ExpertQuant::Q8:
      return round_up(rp * c, 64) + round_up(rp * (c / static_cast<size_t>(group)) * 4, 64);
    case ExpertQuant::BF16:
      return round_up(rp * c * 2, 64);
    case ExpertQuant::GGUF:
      return 0;  // per ggml type: expert_blob_layout
  }
  return 0;
}

ExpertBlobLayout expert_blob_layout(const ExpertGeometry& g) {
  std::string why;
  if (!expert_geometry_valid(g, &why)) throw std::invalid_argument("expert_blob_layout: " + why);
  ExpertBlobLayout L;
  if (g.quant == ExpertQuant::GGUF) {
    const auto bytes = [&](int which) {
      const uint32_t t = g.ggml[which];
      const ExpertMatrixShape s = expert_matrix_shape(g, which);
      return round_up(expert_matrix_tiled(g, which)
                          ? size_t(ggml_tiled_bytes(t, s.rows, s.cols, ggml_type_info(t)->block))
                          : size_t(s.rows) * ggml_row_bytes(t, s.cols),
                      64);
    };
    L.gate_bytes = bytes(0);
    L.up_bytes = bytes(1);
    L.down_bytes = bytes(2);
  } else {
    L.gate_bytes = packed_matrix_bytes(g.quant, g.inter, g.hidden, g.group);
    L.up_bytes = L.gate_bytes;
    L.down_bytes = packed_matrix_bytes(g.quant, g.hidden, g.inter, g.group);
  }
  L.gate_offset = 0;
  L.up_offset = L.gate_offset + L.gate_bytes;
  L.down_offset = L.up_offset + L.up_bytes;
  L.total_bytes = round_up(L.down_offset + L.down_bytes, 4096);
  return L;
}

}  // namespace mt
