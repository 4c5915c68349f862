// The DeepSeek V3 / V3.2 forward pass on the CPU (spec sections 3 and 4), built from the
// shared operators in cpu_kernels/. This is the numerical reference for every faster path:
// fp32 activations and accumulation throughout, weights decoded exactly from the checkpoint.
//
// One code path serves prefill and decode: a chunk of n tokens at positions
// [cache.size(), cache.size()+n) is appended to the cache and attends, causally, to everything
// cached so far, using the absorbed (latent-space) MLA form.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "runtime/core/status.h"
#include "runtime/model/deepseek_weights.h"
#include "runtime/model/kv_cache.h"
#include "runtime/model/routed_experts.h"

#include <memory>

namespace mt {

class DeepSeekModel {
 public:
  // `experts` runs the routed experts; null means the checkpoint's own (reference) tensors.
  explicit DeepSeekModel(ModelWeights weights, std::unique_ptr<RoutedExperts> experts = nullptr);
  DeepSeekModel(const DeepSeekModel&) = delete;  // the expert runner refers to the weights
  DeepSeekModel& operator=(const DeepSeekModel&) = delete;

  const ModelConfig& config() const { return w_.config; }
  const ModelWeights& weights() const { return w_; }

  // Runs `ids` at the next positions of `cache` and appends them to it. Fills `logits` with
  // [n, vocab] rows when all_logits, else with the last position's [vocab] row.
  // Errors (and leaves the cache unchanged) on an empty chunk, a token id outside the
  // vocabulary, or a chunk that does not fit in the cache; an expert read error also leaves
  // the cache's size unchanged.
  Status forward(std::span<const int32_t> ids, KvCache& cache, bool all_logits, std::vector<float>& logits);

  // Sees every routing decision: the experts chosen for the n tokens of a chunk in MoE layer
  // `layer` ([n, top_k], row-major), in layer order, before they run (moetier trace).
  using RoutingObserver = std::function<void(int64_t layer, const int32_t* experts, int64_t n, int64_t top_k)>;
  void set_routing_observer(RoutingObserver f) { observer_ = std::move(f); }

 private:
  void attention(int64_t layer, const float* x, int64_t n, int64_t pos0, KvCache& cache, float* out) const;
  // For each of the n queries, the cached positions it may attend to (V3.2 top-k selection).
  void index_select(int64_t layer, const float* x, const float* cq, int64_t n, int64_t pos0, KvCache& cache,
                    std::vector<std::vector<int32_t>>& selected) const;
  void ffn(const FfnWeights& f, int64_t width, const float* x, int64_t n, float* out) const;
  Status moe(int64_t layer, const float* x, int64_t n, float* out);
  // Routes n tokens of layer L: top_k experts and weights per token.
  void route(int64_t layer, const float* x, int64_t n, std::vector<int32_t>& experts, std::vector<float>& weights) const;

  ModelWeights w_;
  std::unique_ptr<RoutedExperts> experts_;
  std::vector<float> inv_freq_;              // YaRN frequencies for qk_rope_head_dim
  float softmax_scale_ = 1.0f;
  std::vector<std::vector<float>> kv_b_f32_;  // dequantized kv_b per layer, for absorption
  RoutingObserver observer_;
};

}  // namespace mt
