// The packed expert blob format of the store: one blob per (layer, routed expert) holding
// [gate | up | down], so one O_DIRECT read brings a whole expert and nothing is repacked at run
// time. Sizes and offsets only: the store (offload/), the planner's size figures, the tools and
// the kernels all read them here. Each packed matrix [rows, cols] (cols = K, the reduction
// dimension, a multiple of `group`) has its rows padded to kExpertRowTile, starts on a 64-byte
// boundary, and holds
//   Q4:   rows*cols/2 bytes of 4-bit codes, then rows*cols/group fp16 scales
//   Q8:   rows*cols bytes of int8 codes, then rows*cols/group fp32 scales
//   BF16: rows*cols bf16 values
// each part rounded up to 64 bytes; the blob is zero-padded to a multiple of 4096 bytes.
//   GGUF: each matrix as a GGUF file holds it (rows of ggml blocks back to back, the type per
//   matrix in ExpertGeometry::ggml), copied from the file unchanged; no row padding. With
//   ExpertGeometry::ggml_tiles, each matrix whose type has a row-tile form and whose rows are a
//   multiple of 16 is held as those tiles instead (runtime/core/ggml_tiles.h: the same codes,
//   scales and mins, 16 rows interleaved, for the tile GEMV), each rounded up to 64 bytes. The code
// order inside a row (interleaving for the SIMD kernels) belongs to the kernels
// (cpu_kernels/expert_pack.cpp is its only writer and reader; GGUF blobs are written by
// tools/moetier/convert_gguf.cpp, their tiles by runtime/core/ggml_tiles.h's packer).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace mt {

enum class ExpertQuant : uint8_t { Q4 = 1, Q8 = 2, BF16 = 3, GGUF = 4 };

std::string_view expert_quant_name(ExpertQuant q);                // "q4", "q8", "bf16", "gguf"
bool expert_quant_from_name(std::string_view name, ExpertQuant& out);

struct ExpertGeometry {
  ExpertQuant quant = ExpertQuant::Q4;
  int64_t hidden = 0;  // model hidden size (gate/up K, down N)
  int64_t inter = 0;   // expert width (gate/up N, down K)
  int64_t group = 32;  // quantisation group along K (Q4/Q8); must divide hidden and inter
  uint32_t ggml[3] = {0, 0, 0};  // GGUF: the GgmlType ids of gate, up and down (may differ by layer)
  bool ggml_tiles = false;       // GGUF: matrices with a tile form held as row tiles (expert_matrix_tiled)
};

// Whether a store (format 3) that holds tiles holds a GGUF matrix of `type` with `rows` rows as
// row tiles, expert or dense: Q2_K..Q6_K or Q8_0 with rows a multiple of kTileRows. The types are
// a fixed list, part of the format: a type that gains a tile form later stays blocks in the stores
// already written.
bool store_tiled_matrix(uint32_t type, int64_t rows);
// Whether matrix `which` (0 gate, 1 up, 2 down) of a GGUF expert is held as row tiles: the
// geometry asks for tiles and store_tiled_matrix says so.
bool expert_matrix_tiled(const ExpertGeometry& g, int which);

struct ExpertBlobLayout {
  size_t gate_offset = 0, up_offset = 0, down_offset = 0;
  size_t gate_bytes = 0, up_bytes = 0, down_bytes = 0;
  size_t total_bytes = 0;  // multiple of 4096
  // Matrix `which` (0 gate, 1 up, 2 down).
  size_t offset(int which) const { return which == 0 ? gate_offset : which == 1 ? up_offset : down_offset; }
};

// Matrix `which` (0 gate, 1 up, 2 down) of an expert: gate and up are [inter, hidden], down
// [hidden, inter] (rows = outputs, cols = the reduction).
struct ExpertMatrixShape {
  int64_t rows = 0, cols = 0;
};
inline ExpertMatrixShape expert_matrix_shape(const ExpertGeometry& g, int which) {
  return which == 2 ? ExpertMatrixShape{g.hidden, g.inter} : ExpertMatrixShape{g.inter, g.hidden};
}

// Rows of a packed matrix are stored in tiles of this many (the last one zero-padded).
inline constexpr int64_t kExpertRowTile = 16;

// Returns false (and a reason) when the geometry is unusable (group not dividing K, ...).
bool expert_geometry_valid(const ExpertGeometry& g, std::string* why);
// Throws std::invalid_argument for a geometry expert_geometry_valid rejects.
ExpertBlobLayout expert_blob_layout(const ExpertGeometry& g);
// Bytes of one packed matrix [rows, cols] (codes then scales, each rounded up to 64 bytes).
size_t packed_matrix_bytes(ExpertQuant q, int64_t rows, int64_t cols, int64_t group);

}  // namespace mt
