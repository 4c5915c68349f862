// Where a model's routed experts come from and how they run: from the checkpoint's own
// tensors (the fp32 reference path), or from the packed expert store through the RAM cache
// (runtime/engine/expert_scheduler.h). The model routes; this applies the chosen experts.
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "runtime/backend/backend.h"
#include "runtime/core/status.h"

namespace mt {

struct LayerWeights;
struct ModelWeights;

class RoutedExperts {
 public:
  virtual ~RoutedExperts() = default;
  // out[t, :] += sum_k weights[t*top_k + k] * Expert_{experts[t*top_k + k]}(x[t, :]), t < n.
  // An error (an expert that cannot be read) names the layer and expert.
  virtual Status apply(int64_t layer, const float* x, int64_t n, const int32_t* experts, const float* weights,
                       int64_t top_k, float* out) = 0;
  // The experts `layer` will probably need next, most likely first. Only a hint.
  virtual void prefetch(int64_t layer, std::span<const int32_t> experts) { (void)layer, (void)experts; }
  virtual bool wants_prefetch() const { return false; }
  // Weight bytes one use of this expert reads, for a profile; 0 where the runner counts its own
  // (the expert scheduler's blobs).
  virtual uint64_t expert_bytes(int64_t layer, int32_t expert) const { (void)layer, (void)expert; return 0; }
};

// The reference path: experts are the checkpoint's FFN tensors, run through the model's backend.
class CheckpointExperts final : public RoutedExperts {
 public:
  CheckpointExperts(const ModelWeights& w, backend::Backend& be) : w_(w), be_(be) {}
  Status apply(int64_t layer, const float* x, int64_t n, const int32_t* experts, const float* weights,
               int64_t top_k, float* out) override;
  uint64_t expert_bytes(int64_t layer, int32_t expert) const override;

 private:
  const ModelWeights& w_;
  backend::Backend& be_;
};

}  // namespace mt
