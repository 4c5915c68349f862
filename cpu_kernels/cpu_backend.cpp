#include "cpu_kernels/cpu_backend.h"

#include <algorithm>
#include <string>

#include "cpu_kernels/dense_gemm.h"
#include "cpu_kernels/dense_gemv.h"
#include "cpu_kernels/expert_ffn_internal.h"
#include "cpu_kernels/ggml_gemv.h"
#include "cpu_kernels/ggml_gemv_tiles.h"
#include "cpu_kernels/ops.h"
#include "cpu_kernels/packed_matmul.h"
#include "cpu_kernels/attention.h"
#include "cpu_kernels/reference_backend.h"
#include "cpu_kernels/reference_cache.h"

namespace mt::cpu {

namespace {

using backend::AttentionCache;

// At the scalar level, the tokens up to which GGUF blocks (and tiles) go through the scalar GEMV
// rather than decoded slabs + oneDNN. With a SIMD GEMV (AVX2 and up) every count takes it.
constexpr int64_t kGgufGemvMaxTokens = 32;

class CpuBackend final : public backend::Backend {
 public:
  explicit CpuBackend(ExpertKernelConfig k)
      : ref_(make_reference_backend()), kernels_(k),
        isa_(k.isa_level < 0 ? expert_detail::cpu_isa_level() : std::min(k.isa_level, expert_detail::cpu_isa_level())),
        name_(std::string("cpu-") + std::string(expert_kernel_isa(k))) {}

  const char* name() const override { return name_.c_str(); }
  bool supports(backend::Op op, DType weight) const override { return ref_->supports(op, weight); }
  bool supports_experts(ExpertQuant q) const override { return ref_->supports_experts(q); }
  // kv_b stays as stored (mapped, FP8 or BF16): no fp32 copy (4.1 GB for the 671B model).
  void load_attention_weights(int64_t layer, const WeightView& kv_b, const MlaHeadDims&) override {
    if (kv_b_.size() <= static_cast<size_t>(layer)) kv_b_.resize(static_cast<size_t>(layer) + 1);
    kv_b_[static_cast<size_t>(layer)] = kv_b;
  }
  uint64_t weight_bytes() const override { return 0; }
  std::unique_ptr<AttentionCache> make_cache(const backend::CacheShape& s, int64_t max_tokens) override {
    return ref_->make_cache(s, max_tokens);
  }

  void embed(const WeightView& t, const int32_t* ids, int64_t n, float* out) override { ref_->embed(t, ids, n, out); }
  void matmul(const WeightView& w, const float* x, int64_t n, float* y) override {
    if (is_packed(w.dtype)) {  // convert --dense q4|q8: the routed-expert kernels, any token count
      packed_matmul(w, x, n, y, kernels_, packed_scratch_);
      return;
    }
    if (w.dtype == DType::GGUF && w.tiled && (isa_ >= 1 || n <= kGgufGemvMaxTokens)) {
      // Row tiles (a GGUF's Q2_K..Q6_K and Q8_0 matrices when loaded for this backend): 16 rows in
      // the lanes, 4 tokens a pass, at any token count. A prompt too: 3-28x the GFLOP/s of decoding
      // the blocks to fp32 for oneDNN from 32 up to 512 tokens (Zen 4, AVX-512; docs/benchmarks.md).
      ggml_gemv_tiles(w.ggml_type, w.data, w.rows, w.cols, n, x, y, isa_);
      return;
    }
    if (w.dtype == DType::GGUF && (isa_ >= 1 || n <= kGgufGemvMaxTokens) && ggml_gemv_has_kernel(w.ggml_type, isa_)) {
      // A GGUF's block formats straight from the blocks, 4 tokens per pass (cpu_kernels/ggml_gemv.h),
      // at any token count: 1.3-11x decoding the blocks to fp32 slabs for oneDNN up to 512 tokens.
      ggml_gemv_tokens(w.ggml_type, w.data, w.rows, w.cols, n, x, y, isa_);
      return;
    }
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
  // Head by head, threads over heads, from kv_b as stored (no resident fp32 copy; a quarter of
  // the bytes for FP8 weights): a single query decodes each row into L1 as it uses it; several
  // share the head's rows decoded to fp32 once per call. The reference's per-head arithmetic,
  // compiled for this CPU's ISA (cpu_kernels/mla_head_body.h).
  void mla_attention(AttentionCache& cache, const backend::MlaArgs& a) override {
    auto& c = static_cast<ReferenceCache&>(cache);
    const MlaHeadDims& d = a.dims;
    const int64_t H = a.heads, qk = d.nope + d.rope, R = d.latent, n = a.n, pos0 = a.pos0, total = pos0 + n;
    const WeightView& kvb = kv_b_[static_cast<size_t>(a.layer)];
    std::vector<int32_t> all_positions(static_cast<size_t>(total));
    for (int64_t s = 0; s < total; ++s) all_positions[static_cast<size_t>(s)] = static_cast<int32_t>(s);
    const float* latent = c.latent(a.layer, 0);
    const float* k_rope = c.k_rope(a.layer, 0);
    const MlaHeadFn attend = mla_head_for(isa_);
    // One query: each head straight from the stored rows (read once, never widened in memory).
    // Several: the head's rows decoded to fp32 once and shared by the queries.
    // The stored-row kernels take what dense_decode_rows takes; anything else (packed, a GGUF's
    // attn_kv_b kept in its blocks) is decoded per head by the general row decoder.
    const bool stored_ok = isa_ >= 1 && n == 1 && dense_rows_decodable(kvb);
    const auto stored = isa_ >= 2 ? mla_attend_head_stored_avx512 : mla_attend_head_stored_avx2;
#pragma omp parallel if (H > 1)
    {
      std::vector<float> w(stored_ok ? 0 : static_cast<size_t>((d.nope + d.v) * R)),
          scratch(static_cast<size_t>(3 * R + total));
#pragma omp for schedule(dynamic)
      for (int64_t hd = 0; hd < H; ++hd) {
        const int64_t row0 = hd * (d.nope + d.v);
        if (stored_ok) {
          const std::vector<int32_t>* sel = a.selected ? &(*a.selected)[0] : nullptr;
          const int32_t* keys = sel ? sel->data() : all_positions.data();
          const int64_t n_keys = sel ? static_cast<int64_t>(sel->size()) : pos0 + 1;
          const float* qh = a.q + hd * qk;
          stored(qh, qh + d.nope, kvb, row0, latent, k_rope, keys, n_keys, d, a.scale, a.out + hd * d.v, scratch.data());
          continue;
        }
        if (!dense_decode_rows(kvb, row0, d.nope + d.v, w.data(), isa_)) dequantize_rows(kvb, row0, d.nope + d.v, w.data());
        for (int64_t t = 0; t < n; ++t) {
          const std::vector<int32_t>* sel = a.selected ? &(*a.selected)[static_cast<size_t>(t)] : nullptr;
          const int32_t* keys = sel ? sel->data() : all_positions.data();
          const int64_t n_keys = sel ? static_cast<int64_t>(sel->size()) : pos0 + t + 1;
          const float* qh = a.q + (t * H + hd) * qk;
          attend(qh, qh + d.nope, w.data(), w.data() + d.nope * R, latent, k_rope, keys, n_keys, d, a.scale,
                 a.out + (t * H + hd) * d.v, scratch.data());
        }
      }
    }
  }
  void indexer_topk(AttentionCache& c, const backend::IndexerArgs& a, std::vector<std::vector<int32_t>>& s) override {
    ref_->indexer_topk(c, a, s);
  }
  void expert_ffn(const ExpertGeometry& g, const ExpertTask* t, int64_t n, const float* x, float* y) override {
    experts_ffn(g, t, n, x, y, kernels_, &workspace_);
  }

 private:
  std::unique_ptr<backend::Backend> ref_;  // every op without a faster kernel here
  std::vector<WeightView> kv_b_;           // per layer, as stored
  ExpertKernelConfig kernels_;
  int isa_ = 0;
  std::string name_;
  ExpertWorkspace workspace_;
  PackedMatmulScratch packed_scratch_;
};

}  // namespace

std::unique_ptr<backend::Backend> make_cpu_backend(ExpertKernelConfig kernels) {
  return std::make_unique<CpuBackend>(kernels);
}

}  // namespace mt::cpu
