#include "runtime/model/deepseek_model.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "cpu_kernels/attention.h"
#include "cpu_kernels/ops.h"

namespace mt {

namespace {
constexpr float kIndexerNormEps = 1e-6f;  // hard-coded in the DeepSeek V3.2 reference
}

DeepSeekModel::DeepSeekModel(ModelWeights weights, std::unique_ptr<RoutedExperts> experts)
    : w_(std::move(weights)), experts_(std::move(experts)) {
  if (!experts_) experts_ = std::make_unique<CheckpointExperts>(w_);
  const ModelConfig& c = w_.config;
  const bool yarn = c.rope_scaling.type == "yarn";
  inv_freq_ = cpu::yarn_inv_freq(c.qk_rope_head_dim, c.rope_theta, yarn ? c.rope_scaling.factor : 1.0,
                                 c.rope_scaling.original_max_position_embeddings, c.rope_scaling.beta_fast,
                                 c.rope_scaling.beta_slow);
  softmax_scale_ = static_cast<float>(c.softmax_scale());
  // The absorbed form multiplies queries by W_UK^T and latents by W_UV: decode kv_b once.
  kv_b_f32_.resize(w_.layers.size());
  for (size_t L = 0; L < w_.layers.size(); ++L) {
    const Linear& kvb = w_.layers[L].kv_b;
    kv_b_f32_[L].resize(static_cast<size_t>(kvb.rows * kvb.cols));
    cpu::dequantize_rows(kvb.view(), 0, kvb.rows, kv_b_f32_[L].data());
  }
}

Status DeepSeekModel::forward(std::span<const int32_t> ids, KvCache& cache, bool all_logits,
                              std::vector<float>& logits) {
  const ModelConfig& c = w_.config;
  const auto n = static_cast<int64_t>(ids.size());
  const int64_t pos0 = cache.size();
  if (n == 0) return make_error("forward: no tokens to process (empty prompt?)");
  if (pos0 + n > cache.max_tokens())
    return make_error("forward: " + std::to_string(pos0 + n) + " tokens exceed the context of " +
                      std::to_string(cache.max_tokens()) + " tokens (raise --ctx, or shorten the prompt)");
  for (int64_t t = 0; t < n; ++t)
    if (ids[t] < 0 || ids[t] >= c.vocab_size)
      return make_error("forward: token id " + std::to_string(ids[t]) + " at position " + std::to_string(pos0 + t) +
                        " is outside the model's vocabulary [0, " + std::to_string(c.vocab_size) + ")");

  const int64_t D = c.hidden_size;
  std::vector<float> h(static_cast<size_t>(n * D)), xn(h.size()), delta(h.size());
  for (int64_t t = 0; t < n; ++t) cpu::dequantize_rows(w_.embed.view(), ids[t], 1, &h[t * D]);

  const float eps = static_cast<float>(c.rms_norm_eps);
  for (int64_t L = 0; L < c.num_hidden_layers; ++L) {
    const LayerWeights& lw = w_.layers[static_cast<size_t>(L)];
    cpu::rmsnorm(h.data(), lw.attn_norm.data(), xn.data(), n, D, eps);
    attention(L, xn.data(), n, pos0, cache, delta.data());
    for (size_t i = 0; i < h.size(); ++i) h[i] += delta[i];

    cpu::rmsnorm(h.data(), lw.ffn_norm.data(), xn.data(), n, D, eps);
    if (lw.is_moe) MT_TRY(moe(L, xn.data(), n, delta.data()));
    else ffn(lw.dense, c.intermediate_size, xn.data(), n, delta.data());
    for (size_t i = 0; i < h.size(); ++i) h[i] += delta[i];
  }
  cache.set_size(pos0 + n);

  const int64_t first = all_logits ? 0 : n - 1, rows = n - first;
  cpu::rmsnorm(&h[first * D], w_.final_norm.data(), xn.data(), rows, D, eps);
  logits.resize(static_cast<size_t>(rows * c.vocab_size));
  cpu::matmul(w_.lm_head.view(), xn.data(), rows, logits.data());
  return ok_status();
}

void DeepSeekModel::attention(int64_t L, const float* x, int64_t n, int64_t pos0, KvCache& cache,
                              float* out) const {
  const ModelConfig& c = w_.config;
  const LayerWeights& lw = w_.layers[static_cast<size_t>(L)];
  const int64_t H = c.num_attention_heads, nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim;
  const int64_t qk = c.qk_head_dim(), dv = c.v_head_dim, R = c.kv_lora_rank;
  const float eps = static_cast<float>(c.rms_norm_eps);

  // Query: c_q = RMSNorm(W_qa x); q = W_qb c_q, rope on the last `rope` dims of each head.
  std::vector<float> cq(static_cast<size_t>(n * c.q_lora_rank)), q(static_cast<size_t>(n * H * qk));
  cpu::matmul(lw.q_a.view(), x, n, cq.data());
  cpu::rmsnorm(cq.data(), lw.q_a_norm.data(), cq.data(), n, c.q_lora_rank, eps);
  cpu::matmul(lw.q_b.view(), cq.data(), n, q.data());
  for (int64_t t = 0; t < n; ++t)
    for (int64_t hd = 0; hd < H; ++hd) cpu::rope_interleaved(&q[(t * H + hd) * qk + nope], rope, pos0 + t, inv_freq_.data());

  // Key/value latent: a = W_kva x; c_kv = RMSNorm(a[:R]); k_rope = RoPE(a[R:]). Cached.
  std::vector<float> kva(static_cast<size_t>(n * (R + rope)));
  cpu::matmul(lw.kv_a.view(), x, n, kva.data());
  for (int64_t t = 0; t < n; ++t) {
    float* a = &kva[t * (R + rope)];
    cpu::rmsnorm(a, lw.kv_a_norm.data(), cache.latent(L, pos0 + t), 1, R, eps);
    std::copy(a + R, a + R + rope, cache.k_rope(L, pos0 + t));
    cpu::rope_interleaved(cache.k_rope(L, pos0 + t), rope, pos0 + t, inv_freq_.data());
  }

  std::vector<std::vector<int32_t>> selected;
  if (lw.has_indexer) index_select(L, x, cq.data(), n, pos0, cache, selected);

  // Absorbed attention per (token, head) over the latent cache.
  const std::vector<float>& kvb = kv_b_f32_[static_cast<size_t>(L)];
  std::vector<float> o(static_cast<size_t>(n * H * dv));
  const int64_t total = pos0 + n;
  std::vector<int32_t> all_positions(static_cast<size_t>(total));
  for (int64_t s = 0; s < total; ++s) all_positions[static_cast<size_t>(s)] = static_cast<int32_t>(s);
  const cpu::MlaHeadDims dims{nope, rope, dv, R};
  // Threads only pay off past a few hundred thousand multiply-adds (decode of a tiny model
  // is far below that, and a barrier on a busy machine costs milliseconds).
  const bool parallel = n * H * total * (R + nope * R / std::max<int64_t>(total, 1)) > (int64_t{1} << 18);
#pragma omp parallel if (parallel)
  {
    std::vector<float> scratch(static_cast<size_t>(2 * R + total));
#pragma omp for schedule(dynamic) collapse(2)
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t hd = 0; hd < H; ++hd) {
        // Causal: keys [0, pos]; V3.2: the indexer's selection among them.
        const std::vector<int32_t>* sel = lw.has_indexer ? &selected[static_cast<size_t>(t)] : nullptr;
        const int32_t* keys = sel ? sel->data() : all_positions.data();
        const int64_t n_keys = sel ? static_cast<int64_t>(sel->size()) : pos0 + t + 1;
        const float* qh = &q[(t * H + hd) * qk];
        const float* wuk = &kvb[static_cast<size_t>(hd * (nope + dv) * R)];
        cpu::mla_attend_head(qh, qh + nope, wuk, wuk + nope * R, cache.latent(L, 0), cache.k_rope(L, 0), keys,
                             n_keys, dims, softmax_scale_, &o[(t * H + hd) * dv], scratch.data());
      }
    }
  }
  cpu::matmul(lw.o.view(), o.data(), n, out);
}

void DeepSeekModel::index_select(int64_t L, const float* x, const float* cq, int64_t n, int64_t pos0,
                                 KvCache& cache, std::vector<std::vector<int32_t>>& selected) const {
  const ModelConfig& c = w_.config;
  const IndexerWeights& iw = w_.layers[static_cast<size_t>(L)].indexer;
  const int64_t nh = c.index_n_heads, hd = c.index_head_dim, rope = c.qk_rope_head_dim;

  // Index queries: W_iq c_q, half-split RoPE on the first `rope` dims of each head.
  std::vector<float> iq(static_cast<size_t>(n * nh * hd));
  cpu::matmul(iw.wq_b.view(), cq, n, iq.data());
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < nh; ++h) cpu::rope_half_split(&iq[(t * nh + h) * hd], rope, pos0 + t, inv_freq_.data());

  // Index key: LayerNorm(W_ik x), half-split RoPE; cached.
  std::vector<float> ik(static_cast<size_t>(n * hd));
  cpu::matmul(iw.wk.view(), x, n, ik.data());
  cpu::layernorm(ik.data(), iw.k_norm_weight.data(), iw.k_norm_bias.data(), ik.data(), n, hd, kIndexerNormEps);
  for (int64_t t = 0; t < n; ++t) {
    float* k = cache.index_key(L, pos0 + t);
    std::copy(&ik[t * hd], &ik[(t + 1) * hd], k);
    cpu::rope_half_split(k, rope, pos0 + t, inv_freq_.data());
  }

  // Head weights w = W_w x / sqrt(n_heads). The Hadamard rotation of the reference is omitted:
  // it is orthonormal, so without FP8 quantisation it leaves every q.k unchanged.
  std::vector<float> hw(static_cast<size_t>(n * nh));
  cpu::matmul(iw.weights_proj.view(), x, n, hw.data());
  const float head_scale = 1.0f / std::sqrt(static_cast<float>(nh));
  const float dot_scale = 1.0f / std::sqrt(static_cast<float>(hd));

  selected.assign(static_cast<size_t>(n), {});
#pragma omp parallel if (n > 1 && n * (pos0 + n) * nh * hd > (int64_t{1} << 18))
  {
    std::vector<float> score;
#pragma omp for schedule(dynamic)
    for (int64_t t = 0; t < n; ++t) {
      const int64_t visible = pos0 + t + 1;
      std::vector<int32_t>& sel = selected[static_cast<size_t>(t)];
      if (visible <= c.index_topk) {  // every visible key is selected: dense causal attention
        sel.resize(static_cast<size_t>(visible));
        for (int64_t s = 0; s < visible; ++s) sel[static_cast<size_t>(s)] = static_cast<int32_t>(s);
        continue;
      }
      score.resize(static_cast<size_t>(visible));
      cpu::indexer_scores(&iq[t * nh * hd], &hw[t * nh], cache.index_key(L, 0), nh, hd, visible,
                          head_scale * dot_scale, score.data());
      sel.resize(static_cast<size_t>(c.index_topk));
      cpu::topk(score.data(), visible, c.index_topk, sel.data());
      std::sort(sel.begin(), sel.end());  // attend in position order: deterministic sums
    }
  }
}

void DeepSeekModel::ffn(const FfnWeights& f, int64_t width, const float* x, int64_t n, float* out) const {
  std::vector<float> g(static_cast<size_t>(n * width)), u(g.size());
  cpu::matmul(f.gate.view(), x, n, g.data());
  cpu::matmul(f.up.view(), x, n, u.data());
  cpu::silu_mul(g.data(), u.data(), g.data(), n * width);
  cpu::matmul(f.down.view(), g.data(), n, out);
}

void DeepSeekModel::route(int64_t L, const float* x, int64_t n, std::vector<int32_t>& experts,
                          std::vector<float>& weights) const {
  const ModelConfig& c = w_.config;
  const LayerWeights& lw = w_.layers[static_cast<size_t>(L)];
  const int64_t E = c.n_routed_experts, K = c.num_experts_per_tok;
  std::vector<float> logits(static_cast<size_t>(n * E));
  cpu::matmul(lw.router.view(), x, n, logits.data());
  const cpu::RouterParams rp{E, c.n_group, c.topk_group, K, static_cast<float>(c.routed_scaling_factor),
                             c.norm_topk_prob};
  experts.resize(static_cast<size_t>(n * K));
  weights.resize(static_cast<size_t>(n * K));
  for (int64_t t = 0; t < n; ++t)
    cpu::route_sigmoid_grouped(&logits[t * E], lw.router_bias.data(), rp, &experts[t * K], &weights[t * K]);
}

Status DeepSeekModel::moe(int64_t L, const float* x, int64_t n, float* out) {
  const ModelConfig& c = w_.config;
  const LayerWeights& lw = w_.layers[static_cast<size_t>(L)];
  const int64_t D = c.hidden_size, K = c.num_experts_per_tok;

  // Predict the next MoE layer's experts from this layer's input (the residual stream changes
  // little from one layer to the next) so their reads overlap this layer's compute.
  if (experts_->wants_prefetch() && L + 1 < c.num_hidden_layers && c.is_moe_layer(L + 1)) {
    std::vector<int32_t> next;
    std::vector<float> unused;
    route(L + 1, x, n, next, unused);
    experts_->prefetch(L + 1, next);
  }

  std::vector<int32_t> chosen;
  std::vector<float> weight;
  route(L, x, n, chosen, weight);
  if (observer_) observer_(L, chosen.data(), n, K);
  std::fill(out, out + n * D, 0.0f);
  MT_TRY(experts_->apply(L, x, n, chosen.data(), weight.data(), K, out));
  if (lw.has_shared) {
    std::vector<float> ys(static_cast<size_t>(n * D));
    ffn(lw.shared, c.n_shared_experts * c.moe_intermediate_size, x, n, ys.data());
    for (int64_t i = 0; i < n * D; ++i) out[i] += ys[i];
  }
  return ok_status();
}

Status CheckpointExperts::apply(int64_t L, const float* x, int64_t n, const int32_t* experts, const float* weights,
                                int64_t top_k, float* out) {
  const ModelConfig& c = w_.config;
  const LayerWeights& lw = w_.layers[static_cast<size_t>(L)];
  const int64_t D = c.hidden_size, E = c.n_routed_experts, W = c.moe_intermediate_size;
  // Group the tokens by expert so each expert's weights are read once per chunk.
  std::vector<std::vector<std::pair<int64_t, float>>> users(static_cast<size_t>(E));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t k = 0; k < top_k; ++k) users[static_cast<size_t>(experts[t * top_k + k])].push_back({t, weights[t * top_k + k]});
  std::vector<float> xe, g, u, ye;
  for (int64_t e = 0; e < E; ++e) {
    const auto& us = users[static_cast<size_t>(e)];
    if (us.empty()) continue;
    const auto m = static_cast<int64_t>(us.size());
    xe.resize(static_cast<size_t>(m * D));
    for (int64_t i = 0; i < m; ++i) std::copy(x + us[i].first * D, x + (us[i].first + 1) * D, &xe[i * D]);
    const FfnWeights& f = lw.experts[static_cast<size_t>(e)];
    g.resize(static_cast<size_t>(m * W));
    u.resize(g.size());
    ye.resize(static_cast<size_t>(m * D));
    cpu::matmul(f.gate.view(), xe.data(), m, g.data());
    cpu::matmul(f.up.view(), xe.data(), m, u.data());
    cpu::silu_mul(g.data(), u.data(), g.data(), m * W);
    cpu::matmul(f.down.view(), g.data(), m, ye.data());
    for (int64_t i = 0; i < m; ++i) {
      float* o = out + us[i].first * D;
      const float w = us[i].second;
      for (int64_t d = 0; d < D; ++d) o[d] += w * ye[i * D + d];
    }
  }
  return ok_status();
}

}  // namespace mt
