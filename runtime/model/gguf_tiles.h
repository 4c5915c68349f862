// A GGUF model's Q2_K..Q6_K and Q8_0 matrices re-laid as row tiles (runtime/core/ggml_tiles.h)
// for the CPU backend's tile GEMV: every code, scale and min kept, 16 rows in the vector lanes
// (closer to RAM bandwidth than the blocks for every type, e.g. on AVX-512 Q8_0 ~1.0 against 0.79,
// Q4_K 0.94-0.96 against 0.73-0.76, Q2_K 0.80 against 0.59-0.62; docs/benchmarks.md). Matrices of other
// types, the embedding table (read by rows) and matrices whose rows are not a multiple of 16 stay
// as mapped. Each tiled matrix's mapped pages are dropped once copied, so the model is not held
// twice; the tiles live in ModelWeights::tiles. For a model that fits in RAM (the tiles are
// anonymous memory, not page cache).
#pragma once

#include <cstdint>
#include <functional>

#include "runtime/model/deepseek_weights.h"

namespace mt {

struct GgufTileInfo {
  int64_t matrices = 0;   // matrices tiled
  uint64_t bytes = 0;     // their tile bytes
};

// Whether a GGUF whose tensor data is `data_bytes` is mapped into memory at load, and so tiled:
// under 0.8 of the available RAM (the rest for the process and the page cache). A bigger one runs
// its blocks as the page cache brings them. The engine decides by it, the planner plans by it.
inline bool gguf_fits_in_ram(uint64_t data_bytes, uint64_t available_bytes) {
  return double(data_bytes) < 0.8 * double(available_bytes);
}

// Tiles w's matrices of the tiled types for which want(type) holds (w from load_gguf_weights;
// the caller knows which types its kernels run faster as tiles). progress(done, total) in bytes of
// tiles.
GgufTileInfo tile_gguf_weights(ModelWeights& w, const std::function<bool(uint32_t)>& want,
                               const std::function<void(uint64_t, uint64_t)>& progress = {});

// The other way, for a converted store's tiled matrices (convert --gguf-tiles on) on a backend or
// ISA without a tile kernel for their type (native(type) false): each back to its GGUF blocks,
// once, in a buffer of ModelWeights::tiles, so that no product unpacks the whole matrix per call.
// Returns the matrices turned back.
int64_t untile_gguf_weights(ModelWeights& w, const std::function<bool(uint32_t)>& native);

}  // namespace mt
