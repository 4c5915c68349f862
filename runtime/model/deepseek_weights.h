// Binds a checkpoint's tensors to the DeepSeek V3 / V3.2 structure implied by its config:
// every expected tensor present with the right dtype and shape (FP8 weights with their block
// scales), no unexpected tensors. Large matrices stay memory-mapped; small vectors (norms,
// biases, scales) are copied to owned fp32 storage.
#pragma once

#include <cstdint>
#include <deque>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "runtime/core/weight_view.h"
#include "runtime/config/model_config.h"
#include "runtime/core/aligned_buffer.h"
#include "runtime/core/status.h"
#include "runtime/weights/gguf.h"
#include "runtime/weights/safetensors.h"

namespace mt {

// A linear layer's weight [out, in] as stored, with FP8 block scales copied out (aligned).
struct Linear {
  DType dtype = DType::F32;
  const uint8_t* data = nullptr;
  int64_t rows = 0, cols = 0;
  std::vector<float> scale;  // FP8 only: [ceil(rows/block), ceil(cols/block)]
  int64_t block = 128;
  uint32_t ggml_type = 0;    // DType::GGUF only: the ggml block format
  bool tiled = false;        // DType::GGUF only: row tiles (runtime/core/ggml_tiles.h)

  WeightView view() const {
    return WeightView{dtype, data, rows, cols, scale.empty() ? nullptr : scale.data(), block, ggml_type, tiled};
  }
};

struct FfnWeights {  // SwiGLU: down(silu(gate x) * up x)
  Linear gate, up, down;
};

struct IndexerWeights {  // V3.2 lightning indexer
  Linear wq_b, wk, weights_proj;
  std::vector<float> k_norm_weight, k_norm_bias;
};

struct LayerWeights {
  std::vector<float> attn_norm, ffn_norm, q_a_norm, kv_a_norm;
  Linear q_a, q_b, kv_a, kv_b, o;
  bool has_indexer = false;
  IndexerWeights indexer;
  bool is_moe = false;
  FfnWeights dense;
  Linear router;
  std::vector<float> router_bias;  // e_score_correction_bias (zeros if absent and not required)
  std::vector<FfnWeights> experts;
  bool has_shared = false;
  FfnWeights shared;
};

// f(linear) for each of a layer's matrices the graph multiplies by through Backend::matmul, in
// graph order: all but kv_b (attention's own, load_attention_weights) and the routed experts (the
// expert runner's). The model's lm_head is one more.
template <class Layer, class F>
void for_each_matmul_weight(Layer& lw, F&& f) {
  for (auto* l : {&lw.q_a, &lw.q_b, &lw.kv_a, &lw.o, &lw.router}) f(*l);
  if (lw.has_indexer)
    for (auto* l : {&lw.indexer.wq_b, &lw.indexer.wk, &lw.indexer.weights_proj}) f(*l);
  if (!lw.is_moe)
    for (auto* l : {&lw.dense.gate, &lw.dense.up, &lw.dense.down}) f(*l);
  if (lw.has_shared)
    for (auto* l : {&lw.shared.gate, &lw.shared.up, &lw.shared.down}) f(*l);
}

struct ModelWeights {
  ModelConfig config;
  TensorStore store;  // owns the mappings the views point into
  std::shared_ptr<const GgufModel> gguf;  // a GGUF model's mappings (runtime/model/gguf_weights.h)
  std::deque<std::vector<float>> derived;  // weights rebuilt at load (a GGUF's kv_b), views point here
  std::deque<AlignedBuffer> tiles;  // a GGUF's matrices re-laid for the CPU: row tiles, or a store's tiles as blocks (runtime/model/gguf_tiles.h)
  uint64_t tiled_mapped_bytes = 0;  // the mapped bytes those tiles replace (their pages dropped)
  Linear embed;
  std::vector<float> final_norm;
  Linear lm_head;
  std::vector<LayerWeights> layers;

  // Opens the checkpoint in `dir` (config.json + safetensors) and validates it completely.
  static Result<ModelWeights> load(const std::filesystem::path& dir);
  // routed_experts_external: the routed experts live elsewhere (the packed expert store), so
  // they are neither bound nor expected among the tensors.
  static Result<ModelWeights> bind(ModelConfig config, TensorStore store, const std::string& label,
                                   bool routed_experts_external = false);
};

// f(linear) for every matrix of the model the graph multiplies by through Backend::matmul: the
// lm_head, then each layer's (for_each_matmul_weight). What a GGUF's row tiles can serve: not the
// embedding nor kv_b, which are read by rows, and not the routed experts (the expert runner's).
template <class Model, class F>
void for_each_model_matmul_weight(Model& w, F&& f) {
  f(w.lm_head);
  for (auto& lw : w.layers) for_each_matmul_weight(lw, f);
}

// What a checkpoint of this config holds, in HF order (FP8 scale tensors not listed: every
// Linear/Expert entry gets one when stored as FP8). make-model writes exactly this.
enum class TensorRole { Embedding, LmHead, Norm, NormBias, Linear, Router, RouterBias };
struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  TensorRole role;
  int64_t layer = -1;  // -1 for non-layer tensors
};
std::vector<TensorSpec> checkpoint_layout(const ModelConfig& c);

}  // namespace mt
