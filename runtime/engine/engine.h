// An inference session over one model: weights, tokenizer and KV cache, with the GPU probed
// once at start-up (no GPU means CPU only, said in one line).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "gpu_kernels/graph_policy.h"
#include "runtime/core/status.h"
#include "planner/machine_profile.h"
#include "runtime/engine/expert_scheduler.h"
#include "runtime/model/deepseek_model.h"
#include "runtime/tokenizer/tokenizer.h"

namespace mt {

struct EngineOptions {
  int64_t context = 0;  // KV cache length in tokens; 0: min(4096, max_position_embeddings)
  bool announce_device = true;
  // The backend that runs the graph: "cpu" (fast kernels where it has them, the reference's
  // operators elsewhere) or "reference" (the exact fp32 path, the oracle of the tests).
  std::string backend = "cpu";
  // A GGUF's Q2_K..Q6_K and Q8_0 matrices as row tiles (runtime/model/gguf_tiles.h) when the cpu backend runs
  // at the AVX2 or AVX-512 level (the types with a tile kernel there) and the file fits in RAM; off: as
  // mapped blocks.
  bool gguf_tiles = true;
  // `--gpu on`: the CUDA backend (gpu_kernels/cuda_backend.h) runs the weight-heavy ops and the
  // VRAM tier's experts, with `backend` as its host backend; an error when there is no GPU.
  bool gpu = false;
  uint64_t gpu_vram = 0;         // VRAM the CUDA backend may use; 0: what is free less 1 GiB
  DType gpu_cache = DType::BF16;  // its latent cache: BF16, F32 or F8_E4M3 (gpu_kernels/fp8_cache_layout.h)
  bool gpu_graphs = true;         // decode steps' attention blocks as CUDA graphs
  ExpertSchedulerOptions packed;  // for a packed expert store (moetier convert / make-model --packed)
  // Plan at start-up (`--plan auto`): when set, the engine asks the planner for the placement of
  // the store it opens, from the manifest it has already read and the machine profile this
  // returns (the caller measures; the engine runs no probe), with packed.ram_budget as the
  // expert RAM budget (0: what the machine has). Replaces packed.placement. Packed stores only.
  std::function<Result<planner::MachineProfile>()> plan_auto_profile;
};

class Engine {
 public:
  // `model_dir` is a Hugging Face checkpoint, a packed expert store, or a GGUF file (any part of a
  // split one), run from its own block formats on the CPU.
  static Result<std::unique_ptr<Engine>> open(const std::filesystem::path& model_dir, const EngineOptions& opt);

  const ModelConfig& config() const { return model_->config(); }
  const char* backend_name() const { return model_->backend().name(); }
  // The model directory's tokenizer, loaded on first use.
  Result<const Tokenizer*> tokenizer();

  // Appends `ids` at the next positions; see DeepSeekModel::forward.
  Status eval(std::span<const int32_t> ids, bool all_logits, std::vector<float>& logits);
  void reset() { cache_->set_size(0); }
  // Batched decode over several sequences (DeepSeekModel::forward_batch): each cache from
  // new_sequence() (or the engine's own, sequence()), one token each, one step.
  std::unique_ptr<backend::AttentionCache> new_sequence(int64_t context = 0) const {
    return model_->make_cache(context > 0 ? context : cache_->max_tokens());
  }
  backend::AttentionCache& sequence() { return *cache_; }
  // Appends `ids` to another sequence's cache (from new_sequence()): a server's prefill.
  Status eval_sequence(backend::AttentionCache& cache, std::span<const int32_t> ids, bool all_logits,
                       std::vector<float>& logits) {
    return model_->forward(ids, cache, all_logits, logits);
  }
  Status eval_batch(std::span<const int32_t> ids, std::span<backend::AttentionCache* const> caches,
                    std::vector<float>& logits) {
    return model_->forward_batch(ids, caches, logits);
  }
  int64_t position() const { return cache_->size(); }
  int64_t context() const { return cache_->max_tokens(); }
  // The packed-store expert runner, or null for a Hugging Face checkpoint.
  ExpertScheduler* expert_scheduler() const { return packed_; }
  // What the runtime holds in RAM now, item by item (derived weights, attention cache, expert
  // caches, kernel scratch; mapped checkpoint weights excluded).
  Result<TierBudget> ram_accounting() const;
  // Bytes of the memory-mapped weight files (the dense file of a packed store; the whole
  // checkpoint otherwise; a GGUF's less the matrices held as row tiles): resident once read.
  uint64_t mapped_weight_bytes() const;
  // What the CUDA backend holds in VRAM, or null without one.
  const TierBudget* vram_accounting() const;
  // The CUDA backend's attention regions so far (gpu_kernels/graph_policy.h); false without one.
  bool graph_stats(gpu::GraphPolicyStats& out) const;
  // Time and weight bytes of later eval() calls by part of the model (null: stop); bench decode.
  void set_profile(StepProfile* p) { model_->set_profile(p); }
  // Every routing decision of later eval() calls goes to `f` (null: none); see DeepSeekModel.
  void set_routing_observer(DeepSeekModel::RoutingObserver f) { model_->set_routing_observer(std::move(f)); }
  void set_prediction_observer(DeepSeekModel::RoutingObserver f) { model_->set_prediction_observer(std::move(f)); }

 private:
  std::filesystem::path dir_;
  std::unique_ptr<ExpertRunner> vram_runner_;  // the CUDA backend's, used by the scheduler in model_
  std::unique_ptr<DeepSeekModel> model_;
  ExpertScheduler* packed_ = nullptr;  // owned by model_
  std::unique_ptr<backend::AttentionCache> cache_;
  std::optional<Tokenizer> tokenizer_;
};

// A model's config without opening its weights: a checkpoint's config.json, a packed store's
// manifest, a GGUF's metadata.
Result<ModelConfig> peek_model_config(const std::filesystem::path& model);
// A model's tokenizer: a checkpoint's or store's tokenizer.json (a store converted from a GGUF
// without one: its tokenizer.gguf); for a GGUF, tokenizer.json beside the file, else the one
// the file stores.
Result<Tokenizer> load_model_tokenizer(const std::filesystem::path& model);

// Turns a user prompt into token ids: plain text gets BOS (if the tokenizer adds one); chat
// mode renders the model's chat format (system prompt optional, V3.1/V3.2 thinking mode).
struct PromptOptions {
  bool chat = false;
  bool thinking = false;
  std::string system;
};
Result<std::vector<int32_t>> build_prompt(const Tokenizer& tok, const std::string& text, const PromptOptions& o);

// Streams decoded text: feed generated ids, get back the newly completed UTF-8 text (bytes of
// a character split across tokens are held until the character is complete).
class TextStream {
 public:
  explicit TextStream(const Tokenizer& tok) : tok_(tok) {}
  std::string push(int32_t id);
  std::string flush();

 private:
  const Tokenizer& tok_;
  std::string pending_;
};

}  // namespace mt
