#include "cpu_kernels/cpu_backend.h"

#include <algorithm>
#include <string>

#include "cpu_kernels/dense_gemm.h"
#include "cpu_kernels/dense_gemv.h"
#include "cpu_kernels/expert_ffn_internal.h"
#include "cpu_kernels/ops.h"
#include "cpu_kernels/reference_backend.h"

namespace mt::cpu {

namespace {

using backend::AttentionCache;

class CpuBackend final : public backend::Backend {
 public:
  explicit CpuBackend(ExpertKernelConfig k)
      : ref_(make_reference_backend()), kernels_(k),
        isa_(k.isa_level < 0 ? expert_detail::cpu_isa_level() : std::min(k.isa_level, expert_detail::cpu_isa_level())),
        name_(std::string("cpu-") + std::string(expert_kernel_isa(k))) {}

  const char* name() const override { return name_.c_str(); }
  bool supports(backend::Op op, DType weight) const override { return ref_->supports(op, weight); }
  bool supports_experts(ExpertQuant q) const override { return ref_->supports_experts(q); }
  void load_attention_weights(int64_t layer, const WeightView& kv_b, const MlaHeadDims& d) override {
    ref_->load_attention_weights(layer, kv_b, d);
  }
  uint64_t weight_bytes() const override { return ref_->weight_bytes(); }
  std::unique_ptr<AttentionCache> make_cache(const backend::CacheShape& s, int64_t max_tokens) override {
    return ref_->make_cache(s, max_tokens);
  }

  void embed(const WeightView& t, const int32_t* ids, int64_t n, float* out) override { ref_->embed(t, ids, n, out); }
  void matmul(const WeightView& w, const float* x, int64_t n, float* y) override {
    if (n <= kGemvMaxTokens) {
      if (!dense_gemv(w, x, n, y, isa_)) ref_->matmul(w, x, n, y);
      return;
    }
    // Prefill: oneDNN pays off once the product is more than a few hundred thousand MACs.
    if (w.cols > 0 && n * w.rows * w.cols >= (int64_t{1} << 20)) dense_gemm(w, x, n, y);
    else ref_->matmul(w, x, n, y);
  }
  void rmsnorm(const float* x, const float* w, float* y, int64_t n, int64_t d, float eps) override {
    ref_->rmsnorm(x, w, y, n, d, eps);
  }
  void layernorm(const float* x, const float* w, const float* b, float* y, int64_t n, int64_t d, float eps) override {
    ref_->layernorm(x, w, b, y, n, d, eps);
  }
  void rope(backend::RopeLayout l, float* x, int64_t n, int64_t h, int64_t s, int64_t rd, int64_t p,
            const float* f) override {
    ref_->rope(l, x, n, h, s, rd, p, f);
  }
  void silu_mul(const float* g, const float* u, float* out, int64_t n) override { ref_->silu_mul(g, u, out, n); }
  void add(float* acc, const float* x, int64_t n) override { ref_->add(acc, x, n); }
  void route(const float* l, const float* b, const RouterParams& p, int64_t n, int32_t* e, float* w) override {
    ref_->route(l, b, p, n, e, w);
  }
  void cache_store(AttentionCache& c, int64_t l, int64_t p0, int64_t n, const float* lat, const float* kr) override {
    ref_->cache_store(c, l, p0, n, lat, kr);
  }
  void cache_store_index_key(AttentionCache& c, int64_t l, int64_t p0, int64_t n, const float* k) override {
    ref_->cache_store_index_key(c, l, p0, n, k);
  }
  void mla_attention(AttentionCache& c, const backend::MlaArgs& a) override { ref_->mla_attention(c, a); }
  void indexer_topk(AttentionCache& c, const backend::IndexerArgs& a, std::vector<std::vector<int32_t>>& s) override {
    ref_->indexer_topk(c, a, s);
  }
  void expert_ffn(const ExpertGeometry& g, const ExpertTask* t, int64_t n, const float* x, float* y) override {
    experts_ffn(g, t, n, x, y, kernels_, &workspace_);
  }

 private:
  std::unique_ptr<backend::Backend> ref_;  // every op without a faster kernel here
  ExpertKernelConfig kernels_;
  int isa_ = 0;
  std::string name_;
  ExpertWorkspace workspace_;
};

}  // namespace

std::unique_ptr<backend::Backend> make_cpu_backend(ExpertKernelConfig kernels) {
  return std::make_unique<CpuBackend>(kernels);
}

}  // namespace mt::cpu
