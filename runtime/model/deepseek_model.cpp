#include "runtime/model/deepseek_model.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "cpu_kernels/ops.h"  // yarn_inv_freq: a constant of the config, not an op

namespace mt {

namespace {
constexpr float kIndexerNormEps = 1e-6f;  // hard-coded in the DeepSeek V3.2 reference
}

DeepSeekModel::DeepSeekModel(ModelWeights weights, std::unique_ptr<backend::Backend> backend,
                             std::unique_ptr<RoutedExperts> experts)
    : w_(std::move(weights)), backend_(std::move(backend)), experts_(std::move(experts)) {
  if (!experts_) experts_ = std::make_unique<CheckpointExperts>(w_, *backend_);
  const ModelConfig& c = w_.config;
  const bool yarn = c.rope_scaling.type == "yarn";
  inv_freq_ = cpu::yarn_inv_freq(c.qk_rope_head_dim, c.rope_theta, yarn ? c.rope_scaling.factor : 1.0,
                                 c.rope_scaling.original_max_position_embeddings, c.rope_scaling.beta_fast,
                                 c.rope_scaling.beta_slow);
  softmax_scale_ = static_cast<float>(c.softmax_scale());
  const MlaHeadDims dims{c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim, c.kv_lora_rank};
  for (size_t L = 0; L < w_.layers.size(); ++L)
    backend_->load_attention_weights(static_cast<int64_t>(L), w_.layers[L].kv_b.view(), dims);
  // Every dense weight the graph multiplies by (a GPU backend keeps its own copy of each).
  auto prepare = [&](const Linear& l) {
    if (l.view().data) backend_->prepare_weight(l.view());
  };
  // ...and every constant vector an op reads.
  auto prepare_vector = [&](const std::vector<float>& v) {
    if (!v.empty()) backend_->prepare_vector(v.data(), static_cast<int64_t>(v.size()));
  };
  for (const LayerWeights& lw : w_.layers) {
    for_each_matmul_weight(lw, prepare);
    for (const auto* v : {&lw.attn_norm, &lw.ffn_norm, &lw.q_a_norm, &lw.kv_a_norm, &lw.router_bias}) prepare_vector(*v);
    if (lw.has_indexer) {
      prepare_vector(lw.indexer.k_norm_weight);
      prepare_vector(lw.indexer.k_norm_bias);
    }
  }
  prepare(w_.lm_head);
  prepare_vector(w_.final_norm);
  prepare_vector(inv_freq_);
}

DeepSeekModel::Act DeepSeekModel::act(int64_t n) const { return backend_->alloc_activations(n); }

void DeepSeekModel::name(const char* what, int64_t layer, const float* data, int64_t rows, int64_t cols) const {
  if (!on_tensor_) return;
  std::vector<float> host(static_cast<size_t>(rows * cols));
  backend_->download(data, host.data(), rows * cols);
  on_tensor_(what, layer, TensorView{host.data(), rows, cols});
}

std::unique_ptr<backend::AttentionCache> DeepSeekModel::make_cache(int64_t max_tokens) {
  const ModelConfig& c = w_.config;
  const backend::CacheShape shape{c.num_hidden_layers, c.kv_lora_rank, c.qk_rope_head_dim,
                                  c.arch == ModelArch::V32 ? c.index_head_dim : 0};
  return backend_->make_cache(shape, max_tokens);
}

void DeepSeekModel::switch_part(ModelPart p) {
  if (!prof_) return;
  const auto now = std::chrono::steady_clock::now();
  if (mark_ != std::chrono::steady_clock::time_point{})
    prof_->seconds[static_cast<size_t>(part_)] += std::chrono::duration<double>(now - mark_).count();
  mark_ = now;
  part_ = p;
}

void DeepSeekModel::matmul(const Linear& w, const float* x, int64_t n, float* y) {
  const WeightView v = w.view();
  if (prof_) prof_->weight_bytes[static_cast<size_t>(part_)] += v.stored_bytes();
  backend_->matmul(v, x, n, y);
}

Status DeepSeekModel::forward(std::span<const int32_t> ids, backend::AttentionCache& cache, bool all_logits,
                              std::vector<float>& logits) {
  const Segment seg{&cache, cache.size(), static_cast<int64_t>(ids.size()), 0};
  return forward_segments(ids, std::span<const Segment>(&seg, 1), all_logits, logits);
}

Status DeepSeekModel::forward_batch(std::span<const int32_t> ids, std::span<backend::AttentionCache* const> caches,
                                    std::vector<float>& logits) {
  if (ids.size() != caches.size())
    return make_error("forward_batch: " + std::to_string(ids.size()) + " tokens for " + std::to_string(caches.size()) +
                      " sequences (one token each)");
  std::vector<Segment> segs;
  segs.reserve(caches.size());
  for (size_t i = 0; i < caches.size(); ++i) {
    if (!caches[i]) return make_error("forward_batch: sequence " + std::to_string(i) + " has no cache");
    for (size_t j = 0; j < i; ++j)
      if (caches[j] == caches[i])
        return make_error("forward_batch: sequences " + std::to_string(j) + " and " + std::to_string(i) +
                          " share one cache (one token per sequence per step)");
    segs.push_back(Segment{caches[i], caches[i]->size(), 1, static_cast<int64_t>(i)});
  }
  return forward_segments(ids, segs, false, logits);
}

Status DeepSeekModel::forward_segments(std::span<const int32_t> ids, std::span<const Segment> segs, bool all_logits,
                                       std::vector<float>& logits) {
  const ModelConfig& c = w_.config;
  const auto n = static_cast<int64_t>(ids.size());
  if (n == 0 || segs.empty()) return make_error("forward: no tokens to process (empty prompt?)");
  for (const Segment& sg : segs) {
    if (sg.pos0 + sg.n > sg.cache->max_tokens())
      return make_error("forward: " + std::to_string(sg.pos0 + sg.n) + " tokens exceed the context of " +
                        std::to_string(sg.cache->max_tokens()) + " tokens (raise --ctx, or shorten the prompt)");
    for (int64_t t = 0; t < sg.n; ++t)
      if (ids[sg.row0 + t] < 0 || ids[sg.row0 + t] >= c.vocab_size)
        return make_error("forward: token id " + std::to_string(ids[sg.row0 + t]) + " at position " +
                          std::to_string(sg.pos0 + t) + " is outside the model's vocabulary [0, " +
                          std::to_string(c.vocab_size) + ")");
  }

  backend::Backend& be = *backend_;
  const int64_t D = c.hidden_size;
  mark_ = {};
  part_ = ModelPart::Other;
  switch_part(ModelPart::Other);
  // The residual stream, the normalised input of a block, and a block's output.
  const Act h_buf = act(n * D), xn_buf = act(n * D), delta_buf = act(n * D);
  float* const h = h_buf->data();
  float* const xn = xn_buf->data();
  float* const delta = delta_buf->data();
  {
    PartScope ps(*this, ModelPart::Embedding);
    be.embed(w_.embed.view(), ids.data(), n, h);
    if (prof_) prof_->weight_bytes[static_cast<size_t>(ModelPart::Embedding)] += uint64_t(n) * w_.embed.view().stored_bytes() / uint64_t(c.vocab_size);
  }
  name("embed", -1, h, n, D);

  const float eps = static_cast<float>(c.rms_norm_eps);
  const bool decode = std::all_of(segs.begin(), segs.end(), [](const Segment& sg) { return sg.n == 1; });
  for (int64_t L = 0; L < c.num_hidden_layers; ++L) {
    const LayerWeights& lw = w_.layers[static_cast<size_t>(L)];
    {
      // The attention block as one region (a GPU may replay it as a graph); not while the
      // tensor callback reads its intermediates.
      RegionScope region(be, backend::Region{L, n, static_cast<int64_t>(segs.size()), decode}, !on_tensor_);
      be.rmsnorm(h, lw.attn_norm.data(), xn, n, D, eps);
      name("attn_norm", L, xn, n, D);
      {
        PartScope ps(*this, ModelPart::Attention);
        build_attention(L, xn, n, segs, delta);
      }
      name("attn_out", L, delta, n, D);
      be.add(h, delta, n * D);
    }

    be.rmsnorm(h, lw.ffn_norm.data(), xn, n, D, eps);
    name("ffn_norm", L, xn, n, D);
    if (lw.is_moe) {
      MT_TRY(build_moe(L, xn, n, delta));
    } else {
      PartScope ps(*this, ModelPart::DenseFfn);
      build_ffn(lw.dense, c.intermediate_size, xn, n, delta);
    }
    name("ffn_out", L, delta, n, D);
    be.add(h, delta, n * D);
    name("residual", L, h, n, D);
  }
  for (const Segment& sg : segs) sg.cache->set_size(sg.pos0 + sg.n);

  // Logits of every row, or of each segment's last row.
  std::vector<int64_t> rows_out;
  for (const Segment& sg : segs)
    for (int64_t t = all_logits ? 0 : sg.n - 1; t < sg.n; ++t) rows_out.push_back(sg.row0 + t);
  const auto rows = static_cast<int64_t>(rows_out.size());
  {
    PartScope ps(*this, ModelPart::LmHead);
    for (int64_t r = 0; r < rows; ++r)
      be.rmsnorm(h + rows_out[r] * D, w_.final_norm.data(), xn + r * D, 1, D, eps);
    name("final_norm", -1, xn, rows, D);
    const Act out = act(rows * c.vocab_size);
    matmul(w_.lm_head, xn, rows, out->data());
    logits.resize(static_cast<size_t>(rows * c.vocab_size));
    be.download(out->data(), logits.data(), rows * c.vocab_size);
  }
  if (on_tensor_) on_tensor_("logits", -1, TensorView{logits.data(), rows, c.vocab_size});
  switch_part(ModelPart::Other);
  return ok_status();
}

void DeepSeekModel::build_attention(int64_t L, const float* x, int64_t n, std::span<const Segment> segs, float* out) {
  const ModelConfig& c = w_.config;
  const LayerWeights& lw = w_.layers[static_cast<size_t>(L)];
  backend::Backend& be = *backend_;
  const int64_t H = c.num_attention_heads, nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim;
  const int64_t qk = c.qk_head_dim(), dv = c.v_head_dim, R = c.kv_lora_rank;
  const float eps = static_cast<float>(c.rms_norm_eps);

  // Query: c_q = RMSNorm(W_qa x); q = W_qb c_q, rope on the last `rope` dims of each head.
  // The projections run over every row of every segment at once (each weight read once).
  const Act cq_buf = act(n * c.q_lora_rank), q_buf = act(n * H * qk);
  float* const cq = cq_buf->data();
  float* const q = q_buf->data();
  matmul(lw.q_a, x, n, cq);
  be.rmsnorm(cq, lw.q_a_norm.data(), cq, n, c.q_lora_rank, eps);
  name("q_latent", L, cq, n, c.q_lora_rank);
  matmul(lw.q_b, cq, n, q);
  for (const Segment& sg : segs)
    be.rope(backend::RopeLayout::Interleaved, q + sg.row0 * H * qk + nope, sg.n, H, qk, rope, sg.pos0, inv_freq_.data());
  name("q", L, q, n, H * qk);

  // Key/value latent: a = W_kva x; c_kv = RMSNorm(a[:R]); k_rope = RoPE(a[R:]). Cached.
  const Act kva_buf = act(n * (R + rope)), latent_buf = act(n * R), k_rope_buf = act(n * rope);
  float* const kva = kva_buf->data();
  float* const latent = latent_buf->data();
  float* const k_rope = k_rope_buf->data();
  matmul(lw.kv_a, x, n, kva);
  be.copy_rows(kva, R + rope, latent, R, n, R);
  be.copy_rows(kva + R, R + rope, k_rope, rope, n, rope);
  be.rmsnorm(latent, lw.kv_a_norm.data(), latent, n, R, eps);
  for (const Segment& sg : segs) {
    be.rope(backend::RopeLayout::Interleaved, k_rope + sg.row0 * rope, sg.n, 1, rope, rope, sg.pos0, inv_freq_.data());
    be.cache_store(*sg.cache, L, sg.pos0, sg.n, latent + sg.row0 * R, k_rope + sg.row0 * rope);
  }
  name("kv_latent", L, latent, n, R);
  name("k_rope", L, k_rope, n, rope);

  std::vector<std::vector<std::vector<int32_t>>> selected(segs.size());
  if (lw.has_indexer) {
    PartScope ps(*this, ModelPart::Indexer);
    build_indexer(L, x, cq, n, segs, selected);
  }

  // Absorbed attention over each sequence's latent cache.
  const Act o_buf = act(n * H * dv);
  float* const o = o_buf->data();
  if (prof_) prof_->weight_bytes[static_cast<size_t>(part_)] += lw.kv_b.view().stored_bytes();  // read per head
  for (size_t i = 0; i < segs.size(); ++i) {
    const Segment& sg = segs[i];
    backend::MlaArgs a;
    a.layer = L;
    a.n = sg.n;
    a.pos0 = sg.pos0;
    a.heads = H;
    a.dims = MlaHeadDims{nope, rope, dv, R};
    a.scale = softmax_scale_;
    a.q = q + sg.row0 * H * qk;
    a.selected = lw.has_indexer ? &selected[i] : nullptr;
    a.out = o + sg.row0 * H * dv;
    be.mla_attention(*sg.cache, a);
  }
  name("attn_heads", L, o, n, H * dv);
  matmul(lw.o, o, n, out);
}

void DeepSeekModel::build_indexer(int64_t L, const float* x, const float* cq, int64_t n, std::span<const Segment> segs,
                                  std::vector<std::vector<std::vector<int32_t>>>& selected) {
  const ModelConfig& c = w_.config;
  const IndexerWeights& iw = w_.layers[static_cast<size_t>(L)].indexer;
  backend::Backend& be = *backend_;
  const int64_t nh = c.index_n_heads, hd = c.index_head_dim, rope = c.qk_rope_head_dim;

  // Index queries: W_iq c_q, half-split RoPE on the first `rope` dims of each head.
  const Act iq_buf = act(n * nh * hd);
  float* const iq = iq_buf->data();
  matmul(iw.wq_b, cq, n, iq);
  for (const Segment& sg : segs)
    be.rope(backend::RopeLayout::HalfSplit, iq + sg.row0 * nh * hd, sg.n, nh, hd, rope, sg.pos0, inv_freq_.data());
  name("index_q", L, iq, n, nh * hd);

  // Index key: LayerNorm(W_ik x), half-split RoPE; cached.
  const Act ik_buf = act(n * hd);
  float* const ik = ik_buf->data();
  matmul(iw.wk, x, n, ik);
  be.layernorm(ik, iw.k_norm_weight.data(), iw.k_norm_bias.data(), ik, n, hd, kIndexerNormEps);
  for (const Segment& sg : segs) {
    be.rope(backend::RopeLayout::HalfSplit, ik + sg.row0 * hd, sg.n, 1, hd, rope, sg.pos0, inv_freq_.data());
    be.cache_store_index_key(*sg.cache, L, sg.pos0, sg.n, ik + sg.row0 * hd);
  }
  name("index_k", L, ik, n, hd);

  // Head weights w = W_w x / sqrt(n_heads). The Hadamard rotation of the reference is omitted:
  // it is orthonormal, so without FP8 quantisation it leaves every q.k unchanged.
  const Act hw_buf = act(n * nh);
  float* const hw = hw_buf->data();
  matmul(iw.weights_proj, x, n, hw);
  const float head_scale = 1.0f / std::sqrt(static_cast<float>(nh));
  const float dot_scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (size_t i = 0; i < segs.size(); ++i) {
    const Segment& sg = segs[i];
    backend::IndexerArgs a;
    a.layer = L;
    a.n = sg.n;
    a.pos0 = sg.pos0;
    a.heads = nh;
    a.dim = hd;
    a.top_k = c.index_topk;
    a.scale = head_scale * dot_scale;
    a.q = iq + sg.row0 * nh * hd;
    a.head_weight = hw + sg.row0 * nh;
    be.indexer_topk(*sg.cache, a, selected[i]);
  }
}

void DeepSeekModel::build_ffn(const FfnWeights& f, int64_t width, const float* x, int64_t n, float* out) {
  backend::Backend& be = *backend_;
  const Act g = act(n * width), u = act(n * width);
  matmul(f.gate, x, n, g->data());
  matmul(f.up, x, n, u->data());
  be.silu_mul(g->data(), u->data(), g->data(), n * width);
  matmul(f.down, g->data(), n, out);
}

void DeepSeekModel::build_router(int64_t L, const float* x, int64_t n, std::vector<int32_t>& experts,
                                 std::vector<float>& weights) {
  const ModelConfig& c = w_.config;
  const LayerWeights& lw = w_.layers[static_cast<size_t>(L)];
  const int64_t E = c.n_routed_experts, K = c.num_experts_per_tok;
  const Act logits = act(n * E);
  matmul(lw.router, x, n, logits->data());
  const RouterParams rp{E, c.n_group, c.topk_group, K, static_cast<float>(c.routed_scaling_factor), c.norm_topk_prob};
  experts.resize(static_cast<size_t>(n * K));
  weights.resize(static_cast<size_t>(n * K));
  backend_->route(logits->data(), lw.router_bias.data(), rp, n, experts.data(), weights.data());
}

Status DeepSeekModel::build_moe(int64_t L, const float* x, int64_t n, float* out) {
  const ModelConfig& c = w_.config;
  const LayerWeights& lw = w_.layers[static_cast<size_t>(L)];
  const int64_t D = c.hidden_size, K = c.num_experts_per_tok;

  // Predict the next MoE layer's experts from this layer's input (the residual stream changes
  // little from one layer to the next) so their reads overlap this layer's compute.
  if ((experts_->wants_prefetch() || prediction_observer_) && L + 1 < c.num_hidden_layers && c.is_moe_layer(L + 1)) {
    PartScope ps(*this, ModelPart::Router);
    std::vector<int32_t> next;
    std::vector<float> unused;
    build_router(L + 1, x, n, next, unused);
    if (prediction_observer_) prediction_observer_(L + 1, next.data(), n, K);
    if (experts_->wants_prefetch()) experts_->prefetch(L + 1, next);
  }

  std::vector<int32_t> chosen;
  std::vector<float> weight;
  {
    PartScope ps(*this, ModelPart::Router);
    build_router(L, x, n, chosen, weight);
  }
  if (observer_) observer_(L, chosen.data(), n, K);
  {
    // The routed experts run on the host (the expert scheduler), on a host copy of x.
    PartScope ps(*this, ModelPart::RoutedExperts);
    std::vector<float> xh(static_cast<size_t>(n * D)), yh(xh.size(), 0.0f);
    backend_->download(x, xh.data(), n * D);
    MT_TRY(experts_->apply(L, xh.data(), n, chosen.data(), weight.data(), K, yh.data()));
    backend_->upload(yh.data(), out, n * D);
    if (prof_) {  // each distinct expert's weights are read once per step
      std::vector<int32_t> distinct(chosen);
      std::sort(distinct.begin(), distinct.end());
      distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
      for (int32_t e : distinct) prof_->weight_bytes[static_cast<size_t>(ModelPart::RoutedExperts)] += experts_->expert_bytes(L, e);
    }
  }
  name("routed_out", L, out, n, D);
  if (lw.has_shared) {
    PartScope ps(*this, ModelPart::SharedExpert);
    const Act ys = act(n * D);
    build_ffn(lw.shared, c.n_shared_experts * c.moe_intermediate_size, x, n, ys->data());
    name("shared_out", L, ys->data(), n, D);
    backend_->add(out, ys->data(), n * D);
  }
  return ok_status();
}

uint64_t CheckpointExperts::expert_bytes(int64_t L, int32_t e) const {
  const FfnWeights& f = w_.layers[static_cast<size_t>(L)].experts[static_cast<size_t>(e)];
  return f.gate.view().stored_bytes() + f.up.view().stored_bytes() + f.down.view().stored_bytes();
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
  // x and out are host rows; the backend computes on its own activation memory.
  std::vector<float> xe, ye;
  for (int64_t e = 0; e < E; ++e) {
    const auto& us = users[static_cast<size_t>(e)];
    if (us.empty()) continue;
    const auto m = static_cast<int64_t>(us.size());
    xe.resize(static_cast<size_t>(m * D));
    for (int64_t i = 0; i < m; ++i) std::copy(x + us[i].first * D, x + (us[i].first + 1) * D, &xe[i * D]);
    const FfnWeights& f = lw.experts[static_cast<size_t>(e)];
    const auto xd = be_.alloc_activations(m * D), g = be_.alloc_activations(m * W), u = be_.alloc_activations(m * W),
               yd = be_.alloc_activations(m * D);
    be_.upload(xe.data(), xd->data(), m * D);
    be_.matmul(f.gate.view(), xd->data(), m, g->data());
    be_.matmul(f.up.view(), xd->data(), m, u->data());
    be_.silu_mul(g->data(), u->data(), g->data(), m * W);
    be_.matmul(f.down.view(), g->data(), m, yd->data());
    ye.resize(static_cast<size_t>(m * D));
    be_.download(yd->data(), ye.data(), m * D);
    for (int64_t i = 0; i < m; ++i) {
      float* o = out + us[i].first * D;
      const float w = us[i].second;
      for (int64_t d = 0; d < D; ++d) o[d] += w * ye[i * D + d];
    }
  }
  return ok_status();
}

}  // namespace mt
