// The DeepSeek V3 / V3.2 model as a graph over a backend (runtime/backend/backend.h): the model
// decides what is computed, in what order, from which weights (spec sections 3 and 4); the
// backend computes it. With the reference backend (cpu_kernels/reference_backend.h) this is the
// numerical reference for every faster path: fp32 activations and accumulation throughout,
// weights decoded exactly from the checkpoint.
//
// One code path serves prefill and decode: a chunk of n tokens at positions
// [cache.size(), cache.size()+n) is appended to the cache and attends, causally, to everything
// cached so far, using the absorbed (latent-space) MLA form.
#pragma once

#include <chrono>
#include <exception>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/core/status.h"
#include "runtime/core/tensor_view.h"
#include "runtime/model/deepseek_weights.h"
#include "runtime/model/routed_experts.h"
#include "runtime/model/step_profile.h"

namespace mt {

class DeepSeekModel {
 public:
  // `backend` runs every op; `experts` runs the routed experts (null: the checkpoint's own
  // tensors through the backend).
  DeepSeekModel(ModelWeights weights, std::unique_ptr<backend::Backend> backend,
                std::unique_ptr<RoutedExperts> experts = nullptr);
  DeepSeekModel(const DeepSeekModel&) = delete;  // the expert runner refers to the weights
  DeepSeekModel& operator=(const DeepSeekModel&) = delete;

  const ModelConfig& config() const { return w_.config; }
  const ModelWeights& weights() const { return w_; }
  backend::Backend& backend() const { return *backend_; }

  // A sequence's attention caches, made by the backend that runs attention.
  std::unique_ptr<backend::AttentionCache> make_cache(int64_t max_tokens);

  // Runs `ids` at the next positions of `cache` and appends them to it. Fills `logits` with
  // [n, vocab] rows when all_logits, else with the last position's [vocab] row.
  // Errors (and leaves the cache unchanged) on an empty chunk, a token id outside the
  // vocabulary, or a chunk that does not fit in the cache; an expert read error also leaves
  // the cache's size unchanged.
  Status forward(std::span<const int32_t> ids, backend::AttentionCache& cache, bool all_logits, std::vector<float>& logits);

  // Batched decode: one token per sequence, ids[i] appended to caches[i] (all distinct), in one
  // step: every projection, expert and the lm_head run over all B rows at once (each weight read
  // once per step); RoPE, the caches and attention per sequence. logits: [B, vocab]. Errors
  // (and leaves every cache unchanged) as forward does.
  Status forward_batch(std::span<const int32_t> ids, std::span<backend::AttentionCache* const> caches,
                       std::vector<float>& logits);

  // Sees every routing decision: the experts chosen for the n tokens of a chunk in MoE layer
  // `layer` ([n, top_k], row-major), in layer order, before they run (moetier trace).
  using RoutingObserver = std::function<void(int64_t layer, const int32_t* experts, int64_t n, int64_t top_k)>;
  void set_routing_observer(RoutingObserver f) { observer_ = std::move(f); }
  // Sees each MoE layer's prefetch prediction (its router on the previous layer's input) before
  // that layer routes; computed for it even when nothing is prefetched (all experts resident).
  void set_prediction_observer(RoutingObserver f) { prediction_observer_ = std::move(f); }

  // Sees every named intermediate of the graph as it is produced: `name` (e.g. "attn_norm",
  // "q", "kv_latent", "attn_out", "ffn_out", "logits"), its layer (-1 outside layers) and its
  // fp32 rows. For tests, tracing and debugging; null: none.
  using TensorCallback = std::function<void(const char* name, int64_t layer, TensorView t)>;
  void set_tensor_callback(TensorCallback f) { on_tensor_ = std::move(f); }

  // Accumulates the time and weight bytes of later forward() calls by part into `p` (null: stop).
  void set_profile(StepProfile* p) { prof_ = p; }

 private:
  // Charges time since the last switch to the current part and makes `p` current (profiling only).
  void switch_part(ModelPart p);
  struct PartScope {  // a part for the scope's duration, the enclosing one restored after
    DeepSeekModel& m;
    ModelPart prev;
    PartScope(DeepSeekModel& model, ModelPart p) : m(model), prev(model.part_) { m.switch_part(p); }
    ~PartScope() { m.switch_part(prev); }
  };
  // backend matmul with the weight's bytes charged to the current part.
  void matmul(const Linear& w, const float* x, int64_t n, float* y);
  // Rows [row0, row0 + n) of a step belong to one sequence: its cache, from position pos0.
  struct Segment {
    backend::AttentionCache* cache;
    int64_t pos0, n, row0;
  };
  Status forward_segments(std::span<const int32_t> ids, std::span<const Segment> segs, bool all_logits,
                          std::vector<float>& logits);
  void build_attention(int64_t layer, const float* x, int64_t n, std::span<const Segment> segs, float* out);
  // For each query of each segment, the cached positions it may attend to (V3.2 top-k selection).
  void build_indexer(int64_t layer, const float* x, const float* cq, int64_t n, std::span<const Segment> segs,
                     std::vector<std::vector<std::vector<int32_t>>>& selected);
  void build_ffn(const FfnWeights& f, int64_t width, const float* x, int64_t n, float* out);
  Status build_moe(int64_t layer, const float* x, int64_t n, float* out);
  // Routes n tokens of layer L: top_k experts and weights per token.
  void build_router(int64_t layer, const float* x, int64_t n, std::vector<int32_t>& experts, std::vector<float>& weights);
  // Shows `data` (backend memory) to the tensor callback, through a host copy.
  void name(const char* what, int64_t layer, const float* data, int64_t rows, int64_t cols) const;
  // A backend region for the scope; ended as incomplete when an exception leaves it.
  struct RegionScope {
    backend::Backend& be;
    bool on;
    int exceptions;
    RegionScope(backend::Backend& b, const backend::Region& r, bool enabled)
        : be(b), on(enabled), exceptions(std::uncaught_exceptions()) {
      if (on) be.begin_region(r);
    }
    ~RegionScope() noexcept(false) {
      if (on) be.end_region(std::uncaught_exceptions() == exceptions);
    }
  };
  // Activation memory of the backend, for one forward.
  using Act = std::unique_ptr<backend::ActivationBuffer>;
  Act act(int64_t n) const;

  ModelWeights w_;
  std::unique_ptr<backend::Backend> backend_;
  std::unique_ptr<RoutedExperts> experts_;
  std::vector<float> inv_freq_;              // YaRN frequencies for qk_rope_head_dim
  float softmax_scale_ = 1.0f;
  RoutingObserver observer_;
  RoutingObserver prediction_observer_;
  TensorCallback on_tensor_;
  StepProfile* prof_ = nullptr;
  ModelPart part_ = ModelPart::Other;
  std::chrono::steady_clock::time_point mark_{};
};

}  // namespace mt
