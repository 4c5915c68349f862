#include "runtime/model/gguf_tiles.h"

#include <vector>

#include "runtime/core/ggml_tiles.h"
#include "runtime/core/ggml_types.h"

namespace mt {

namespace {

bool tileable(const Linear& l) {
  return l.dtype == DType::GGUF && !l.tiled && l.data && ggml_tile_supported(l.ggml_type) && l.rows > 0 &&
         l.rows % kTileRows == 0;
}

// Every matrix the graph multiplies by through the backend's matmul, and the routed experts.
std::vector<Linear*> matrices(ModelWeights& w) {
  std::vector<Linear*> out;
  for_each_model_matmul_weight(w, [&](Linear& l) { out.push_back(&l); });
  for (LayerWeights& lw : w.layers)
    for (FfnWeights& e : lw.experts) out.insert(out.end(), {&e.gate, &e.up, &e.down});
  return out;
}

}  // namespace

GgufTileInfo tile_gguf_weights(ModelWeights& w, const std::function<bool(uint32_t)>& want,
                               const std::function<void(uint64_t, uint64_t)>& progress) {
  GgufTileInfo info;
  std::vector<Linear*> todo;
  uint64_t total = 0;
  for (Linear* l : matrices(w))
    if (tileable(*l) && want(l->ggml_type)) {
      todo.push_back(l);
      total += uint64_t(ggml_tiled_bytes(l->ggml_type, l->rows, l->cols, ggml_type_info(l->ggml_type)->block));
    }
  for (Linear* l : todo) {
    const int64_t blocks = l->cols / ggml_type_info(l->ggml_type)->block;
    const int64_t row_bytes = int64_t(ggml_row_bytes(l->ggml_type, l->cols));
    const int64_t tile_bytes = blocks * ggml_tile_block_bytes(l->ggml_type);
    AlignedBuffer& buf = w.tiles.emplace_back(size_t(l->rows / kTileRows * tile_bytes));
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < l->rows / kTileRows; ++t)
      ggml_tile_pack(l->ggml_type, l->data + t * kTileRows * row_bytes, row_bytes, blocks, buf.data() + t * tile_bytes);
    if (w.gguf) w.gguf->release(l->data, uint64_t(l->rows * row_bytes));
    w.tiled_mapped_bytes += uint64_t(l->rows * row_bytes);
    l->data = buf.data();
    l->tiled = true;
    ++info.matrices;
    info.bytes += buf.size();
    if (progress) progress(info.bytes, total);
  }
  return info;
}

int64_t untile_gguf_weights(ModelWeights& w, const std::function<bool(uint32_t)>& native) {
  int64_t n = 0;
  for (Linear* l : matrices(w)) {
    if (l->dtype != DType::GGUF || !l->tiled || native(l->ggml_type)) continue;
    AlignedBuffer& buf = w.tiles.emplace_back(size_t(l->rows) * ggml_row_bytes(l->ggml_type, l->cols));
    ggml_tile_unpack_matrix(l->ggml_type, l->data, l->rows, l->cols, buf.data());
    l->data = buf.data();
    l->tiled = false;
    ++n;
  }
  return n;
}

}  // namespace mt
