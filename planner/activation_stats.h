// How often each routed expert is chosen, per MoE layer, and which experts of layer L+1
// follow which of layer L for the same token: written by `moetier trace`, read by the planner
// (placement by frequency) and usable for prefetch. Without a trace the planner uses a
// uniform prior and says so.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/config/model_config.h"
#include "runtime/core/status.h"

namespace mt::planner {

struct LayerActivations {
  int32_t layer = 0;                // model layer index (dense layers have no entry)
  std::vector<uint64_t> counts;     // [n_routed_experts]: times chosen
  // next[e] = (expert of layer+1, times it was chosen by a token that chose e here), sparse,
  // largest count first. Empty for the last MoE layer.
  std::vector<std::vector<std::pair<int32_t, uint64_t>>> next;
  // Prefetch prediction of this layer (its router run on the previous layer's input, as the
  // runtime does): choices predicted, and how many of them the token then chose here.
  uint64_t predicted = 0, predicted_used = 0;
};

struct ActivationStats {
  int version = 1;
  std::string model;                // what was traced (directory name), for the reader
  int64_t num_hidden_layers = 0;
  int64_t first_moe_layer = 0;
  int64_t n_routed_experts = 0;
  int64_t top_k = 0;
  uint64_t tokens = 0;              // tokens traced (each contributes top_k choices per layer)
  bool uniform_prior = false;       // true: not measured, every expert equally likely
  std::vector<LayerActivations> layers;  // one per MoE layer, in layer order

  // Probability that a token chooses `expert` in model layer `layer` (sums to top_k per layer).
  double frequency(int64_t layer, int64_t expert) const;
  // Share of predicted choices the tokens then made, over all layers: the prefetch's expected
  // precision and recall at one token per step. -1 when the trace has no predictions.
  double prediction_agreement() const;
  const LayerActivations* find(int64_t layer) const;
};

// Every routed expert of every MoE layer equally likely (top_k / n_routed_experts per token).
ActivationStats uniform_activations(const ModelConfig& c);

// Followers kept per expert in LayerActivations::next: the heaviest ones, enough for
// prefetch and placement, while a 256-expert layer stays at most 256 x 32 pairs in the file.
inline constexpr size_t kMaxFollowers = 32;

// The first MoE layer of a model (num_hidden_layers when it has none).
int64_t first_moe_layer(const ModelConfig& c);

// Accumulates routing decisions as a model runs. `next` pairs each MoE layer with the next MoE
// layer (layer+1 in the DeepSeek V3 family) and keeps the kMaxFollowers most frequent
// followers per expert. `tokens` counts the rows seen by the first MoE layer, so a forward
// pass that fails midway leaves the statistics inconsistent: discard the recorder then.
// Calls for a dense layer, with another top_k than the model's, or holding an expert id outside
// [0, n_routed_experts) (the router never produces one) are ignored whole.
class ActivationRecorder {
 public:
  explicit ActivationRecorder(const ModelConfig& c, std::string model_name);
  // The experts chosen for n tokens in `layer` ([n, top_k], row-major), in layer order per
  // forward pass: the co-occurrence with the previous MoE layer uses the rows it saw last.
  void record(int64_t layer, const int32_t* experts, int64_t n, int64_t top_k);
  // The prefetch prediction for `layer` ([n, top_k]), made before its routing is recorded;
  // scored against it by the next record() of that layer.
  void record_prediction(int64_t layer, const int32_t* experts, int64_t n, int64_t top_k);
  const ActivationStats& stats();

 private:
  ActivationStats s_;
  std::vector<std::vector<std::vector<uint64_t>>> next_dense_;  // [moe layer][e][e'] while recording
  std::vector<int32_t> prev_rows_;
  int64_t prev_layer_ = -1;
  std::vector<int32_t> predicted_rows_;
  int64_t predicted_layer_ = -1;
  std::vector<int32_t> moe_index_;  // model layer -> index into s_.layers, -1 for a dense layer
  bool dirty_ = true;
};

nlohmann::json activations_to_json(const ActivationStats& s);
// Checks every field; when `expect` is given, also that layers/experts/top_k match that model
// (a trace of another model is an error naming both).
Result<ActivationStats> activations_from_json(const nlohmann::json& j, const std::string& where,
                                              const ModelConfig* expect);
Result<ActivationStats> load_activations(const std::filesystem::path& file, const ModelConfig* expect);
Status save_activations(const std::filesystem::path& file, const ActivationStats& s);

}  // namespace mt::planner
