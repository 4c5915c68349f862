#include "runtime/backend/backend.h"

#include <algorithm>
#include <cstring>

namespace mt::backend {

const char* op_name(Op op) {
  switch (op) {
    case Op::Embed: return "embed";
    case Op::Matmul: return "matmul";
    case Op::RmsNorm: return "rmsnorm";
    case Op::LayerNorm: return "layernorm";
    case Op::Rope: return "rope";
    case Op::SiluMul: return "silu_mul";
    case Op::Add: return "add";
    case Op::Route: return "route";
    case Op::CacheStore: return "cache_store";
    case Op::MlaAttention: return "mla_attention";
    case Op::IndexerTopk: return "indexer_topk";
    case Op::ExpertFfn: return "expert_ffn";
  }
  return "?";
}

namespace {
class HostActivations final : public ActivationBuffer {
 public:
  explicit HostActivations(int64_t n) : ActivationBuffer(nullptr, n), v_(static_cast<size_t>(n)) {
    reset(v_.data(), n);
  }

 private:
  std::vector<float> v_;
};
}  // namespace

std::unique_ptr<ActivationBuffer> Backend::alloc_activations(int64_t n) { return std::make_unique<HostActivations>(n); }

void Backend::upload(const float* host, float* dst, int64_t n) {
  if (n > 0) std::memcpy(dst, host, static_cast<size_t>(n) * sizeof(float));
}

void Backend::download(const float* src, float* host, int64_t n) {
  if (n > 0) std::memcpy(host, src, static_cast<size_t>(n) * sizeof(float));
}

void Backend::copy_rows(const float* src, int64_t ld_src, float* dst, int64_t ld_dst, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) std::copy(src + r * ld_src, src + r * ld_src + cols, dst + r * ld_dst);
}

void Backend::zero(float* dst, int64_t n) { std::fill(dst, dst + n, 0.0f); }

}  // namespace mt::backend
