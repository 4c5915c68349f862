// The reference backend's attention caches (fp32 rows per layer, preallocated for the context so
// that decode never allocates); shared with the fast CPU backend, which keeps the same layout.
#pragma once

#include <vector>

#include "runtime/backend/backend.h"

namespace mt::cpu {

class ReferenceCache final : public backend::AttentionCache {
 public:
  ReferenceCache(const backend::CacheShape& s, int64_t max_tokens) : AttentionCache(max_tokens), shape_(s) {
    const auto L = static_cast<size_t>(s.layers);
    latent_.resize(L);
    k_rope_.resize(L);
    index_k_.resize(L);
    for (size_t l = 0; l < L; ++l) {
      latent_[l].assign(static_cast<size_t>(max_tokens * s.latent), 0.0f);
      k_rope_[l].assign(static_cast<size_t>(max_tokens * s.rope), 0.0f);
      if (s.index_key > 0) index_k_[l].assign(static_cast<size_t>(max_tokens * s.index_key), 0.0f);
    }
  }
  size_t bytes() const override {
    return static_cast<size_t>(shape_.layers * max_tokens() * (shape_.latent + shape_.rope + shape_.index_key)) * sizeof(float);
  }
  float* latent(int64_t layer, int64_t pos) { return &latent_[static_cast<size_t>(layer)][static_cast<size_t>(pos * shape_.latent)]; }
  float* k_rope(int64_t layer, int64_t pos) { return &k_rope_[static_cast<size_t>(layer)][static_cast<size_t>(pos * shape_.rope)]; }
  float* index_key(int64_t layer, int64_t pos) {
    return &index_k_[static_cast<size_t>(layer)][static_cast<size_t>(pos * shape_.index_key)];
  }
  const backend::CacheShape& shape() const { return shape_; }

 private:
  backend::CacheShape shape_;
  std::vector<std::vector<float>> latent_, k_rope_, index_k_;
};

}  // namespace mt::cpu
