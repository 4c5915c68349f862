#include "cpu_kernels/reference_backend.h"

#include "cpu_kernels/reference_cache.h"

#include <algorithm>
#include <vector>

#include "cpu_kernels/attention.h"
#include "cpu_kernels/expert_ffn.h"
#include "cpu_kernels/ops.h"

namespace mt::cpu {

namespace {

using backend::AttentionCache;

class ReferenceBackend final : public backend::Backend {
 public:
  const char* name() const override { return "reference"; }

  bool supports_experts(ExpertQuant q) const override {
    return q == ExpertQuant::Q4 || q == ExpertQuant::Q8 || q == ExpertQuant::BF16 || q == ExpertQuant::GGUF;
  }

  bool supports(backend::Op op, DType weight) const override {
    if (op != backend::Op::Matmul && op != backend::Op::Embed) return true;
    return weight == DType::F32 || weight == DType::BF16 || weight == DType::F16 || weight == DType::F8_E4M3 ||
           is_packed(weight) || weight == DType::GGUF;  // GGUF: a decodable ggml type (check_view)
  }

  void load_attention_weights(int64_t layer, const WeightView& kv_b, const MlaHeadDims&) override {
    if (kv_b_.size() <= static_cast<size_t>(layer)) kv_b_.resize(static_cast<size_t>(layer) + 1);
    std::vector<float>& w = kv_b_[static_cast<size_t>(layer)];
    w.resize(static_cast<size_t>(kv_b.rows * kv_b.cols));
    dequantize_rows(kv_b, 0, kv_b.rows, w.data());
  }

  uint64_t weight_bytes() const override {
    uint64_t b = 0;
    for (const auto& w : kv_b_) b += w.size() * sizeof(float);
    return b;
  }

  std::unique_ptr<AttentionCache> make_cache(const backend::CacheShape& shape, int64_t max_tokens) override {
    return std::make_unique<ReferenceCache>(shape, max_tokens);
  }

  void embed(const WeightView& table, const int32_t* ids, int64_t n, float* out) override {
    for (int64_t t = 0; t < n; ++t) dequantize_rows(table, ids[t], 1, out + t * table.cols);
  }
  void matmul(const WeightView& w, const float* x, int64_t n, float* y) override { cpu::matmul(w, x, n, y); }
  void rmsnorm(const float* x, const float* w, float* y, int64_t n, int64_t dim, float eps) override {
    cpu::rmsnorm(x, w, y, n, dim, eps);
  }
  void layernorm(const float* x, const float* w, const float* b, float* y, int64_t n, int64_t dim, float eps) override {
    cpu::layernorm(x, w, b, y, n, dim, eps);
  }
  void rope(backend::RopeLayout layout, float* x, int64_t n, int64_t heads, int64_t stride, int64_t rope_dim, int64_t pos0,
            const float* inv_freq) override {
    for (int64_t t = 0; t < n; ++t)
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x + (t * heads + h) * stride;
        if (layout == backend::RopeLayout::Interleaved) rope_interleaved(v, rope_dim, pos0 + t, inv_freq);
        else rope_half_split(v, rope_dim, pos0 + t, inv_freq);
      }
  }
  void silu_mul(const float* gate, const float* up, float* out, int64_t n) override { cpu::silu_mul(gate, up, out, n); }
  void add(float* acc, const float* x, int64_t n) override {
    for (int64_t i = 0; i < n; ++i) acc[i] += x[i];
  }
  void route(const float* logits, const float* bias, const RouterParams& p, int64_t n, int32_t* experts,
             float* weights) override {
    for (int64_t t = 0; t < n; ++t)
      route_sigmoid_grouped(logits + t * p.n_experts, bias, p, experts + t * p.top_k, weights + t * p.top_k);
  }

  void cache_store(AttentionCache& cache, int64_t layer, int64_t pos0, int64_t n, const float* latent,
                   const float* k_rope) override {
    auto& c = static_cast<ReferenceCache&>(cache);
    const int64_t R = c.shape().latent, rope = c.shape().rope;
    std::copy(latent, latent + n * R, c.latent(layer, pos0));
    std::copy(k_rope, k_rope + n * rope, c.k_rope(layer, pos0));
  }
  void cache_store_index_key(AttentionCache& cache, int64_t layer, int64_t pos0, int64_t n, const float* keys) override {
    auto& c = static_cast<ReferenceCache&>(cache);
    std::copy(keys, keys + n * c.shape().index_key, c.index_key(layer, pos0));
  }

  void mla_attention(AttentionCache& cache, const backend::MlaArgs& a) override {
    auto& c = static_cast<ReferenceCache&>(cache);
    const MlaHeadDims& d = a.dims;
    const int64_t H = a.heads, qk = d.nope + d.rope, R = d.latent, n = a.n, pos0 = a.pos0;
    const std::vector<float>& kvb = kv_b_[static_cast<size_t>(a.layer)];
    const int64_t total = pos0 + n;
    std::vector<int32_t> all_positions(static_cast<size_t>(total));
    for (int64_t s = 0; s < total; ++s) all_positions[static_cast<size_t>(s)] = static_cast<int32_t>(s);
    // Threads only pay off past a few hundred thousand multiply-adds (decode of a tiny model
    // is far below that, and a barrier on a busy machine costs milliseconds).
    const bool parallel = n * H * total * (R + d.nope * R / std::max<int64_t>(total, 1)) > (int64_t{1} << 18);
    const float* latent = c.latent(a.layer, 0);
    const float* k_rope = c.k_rope(a.layer, 0);
#pragma omp parallel if (parallel)
    {
      std::vector<float> scratch(static_cast<size_t>(2 * R + total));
#pragma omp for schedule(dynamic) collapse(2)
      for (int64_t t = 0; t < n; ++t) {
        for (int64_t hd = 0; hd < H; ++hd) {
          const std::vector<int32_t>* sel = a.selected ? &(*a.selected)[static_cast<size_t>(t)] : nullptr;
          const int32_t* keys = sel ? sel->data() : all_positions.data();
          const int64_t n_keys = sel ? static_cast<int64_t>(sel->size()) : pos0 + t + 1;
          const float* qh = a.q + (t * H + hd) * qk;
          const float* wuk = &kvb[static_cast<size_t>(hd * (d.nope + d.v) * R)];
          mla_attend_head(qh, qh + d.nope, wuk, wuk + d.nope * R, latent, k_rope, keys, n_keys, d, a.scale,
                          a.out + (t * H + hd) * d.v, scratch.data());
        }
      }
    }
  }

  void indexer_topk(AttentionCache& cache, const backend::IndexerArgs& a,
                    std::vector<std::vector<int32_t>>& selected) override {
    auto& c = static_cast<ReferenceCache&>(cache);
    const int64_t n = a.n, pos0 = a.pos0, nh = a.heads, hd = a.dim;
    const float* keys = c.index_key(a.layer, 0);
    selected.assign(static_cast<size_t>(n), {});
#pragma omp parallel if (n > 1 && n * (pos0 + n) * nh * hd > (int64_t{1} << 18))
    {
      std::vector<float> score;
#pragma omp for schedule(dynamic)
      for (int64_t t = 0; t < n; ++t) {
        const int64_t visible = pos0 + t + 1;
        std::vector<int32_t>& sel = selected[static_cast<size_t>(t)];
        if (visible <= a.top_k) {  // every visible key is selected: dense causal attention
          sel.resize(static_cast<size_t>(visible));
          for (int64_t s = 0; s < visible; ++s) sel[static_cast<size_t>(s)] = static_cast<int32_t>(s);
          continue;
        }
        score.resize(static_cast<size_t>(visible));
        indexer_scores(a.q + t * nh * hd, a.head_weight + t * nh, keys, nh, hd, visible, a.scale, score.data());
        sel.resize(static_cast<size_t>(a.top_k));
        topk(score.data(), visible, a.top_k, sel.data());
        std::sort(sel.begin(), sel.end());  // attend in position order: deterministic sums
      }
    }
  }

  // The packed weights decoded exactly (unpack_expert) and applied in fp32 with the plain
  // matmul: the independent reference for every packed-expert kernel.
  void expert_ffn(const ExpertGeometry& g, const ExpertTask* tasks, int64_t n_tasks, const float* x, float* y) override {
    const int64_t H = g.hidden, I = g.inter;
    std::vector<float> gate(static_cast<size_t>(I * H)), up(gate.size()), down(gate.size());
    std::vector<float> xe, gv, uv, ye;
    for (int64_t i = 0; i < n_tasks; ++i) {
      const ExpertTask& t = tasks[i];
      if (t.n <= 0) continue;
      unpack_expert(g, t.blob, gate.data(), up.data(), down.data());
      xe.resize(static_cast<size_t>(t.n * H));
      for (int64_t r = 0; r < t.n; ++r) std::copy_n(x + static_cast<int64_t>(t.tokens[r]) * H, H, &xe[r * H]);
      gv.resize(static_cast<size_t>(t.n * I));
      uv.resize(gv.size());
      ye.resize(xe.size());
      auto f32 = [](const std::vector<float>& w, int64_t rows, int64_t cols) {
        return WeightView{DType::F32, reinterpret_cast<const uint8_t*>(w.data()), rows, cols, nullptr, 128};
      };
      cpu::matmul(f32(gate, I, H), xe.data(), t.n, gv.data());
      cpu::matmul(f32(up, I, H), xe.data(), t.n, uv.data());
      cpu::silu_mul(gv.data(), uv.data(), gv.data(), t.n * I);
      cpu::matmul(f32(down, H, I), gv.data(), t.n, ye.data());
      for (int64_t r = 0; r < t.n; ++r) {
        const float w = t.weight ? t.weight[r] : 1.0f;
        float* yr = y + static_cast<int64_t>(t.tokens[r]) * H;
        for (int64_t d = 0; d < H; ++d) yr[d] += w * ye[r * H + d];
      }
    }
  }

 private:
  std::vector<std::vector<float>> kv_b_;  // per layer, fp32 [heads * (nope + v), latent]
};

}  // namespace

std::unique_ptr<backend::Backend> make_reference_backend() { return std::make_unique<ReferenceBackend>(); }

}  // namespace mt::cpu
