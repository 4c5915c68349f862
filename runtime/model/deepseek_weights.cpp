#include "runtime/model/deepseek_weights.h"

#include <cctype>
#include <cmath>
#include <cstring>
#include <set>
#include <sstream>

namespace mt {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::ostringstream o;
  o << "[";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << "]";
  return o.str();
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Looks tensors up by name, records which were used, and names the file in every error.
class Binder {
 public:
  Binder(const ModelConfig& c, const TensorStore& s, const std::string& label)
      : cfg_(c), store_(s), label_(label) {}

  Result<const TensorInfo*> get(const std::string& name, const std::vector<int64_t>& shape) {
    const TensorInfo* t = store_.find(name);
    if (!t)
      return make_error(label_ + ": missing tensor '" + name + "' (expected shape " + shape_str(shape) +
                        "); the checkpoint is incomplete or does not match config.json");
    used_.insert(name);
    if (t->shape != shape)
      return make_error(label_ + "/" + t->file + ": tensor '" + name + "' has shape " + shape_str(t->shape) +
                        ", but config.json implies " + shape_str(shape));
    return t;
  }

  Result<std::vector<float>> vec(const std::string& name, int64_t n) {
    MT_ASSIGN(const TensorInfo* t, get(name, {n}));
    std::vector<float> out(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      switch (t->dtype) {
        case DType::F32: { float f; std::memcpy(&f, t->data + 4 * i, 4); out[i] = f; break; }
        case DType::BF16: { uint16_t h; std::memcpy(&h, t->data + 2 * i, 2); out[i] = bf16_to_f32(h); break; }
        case DType::F16: { uint16_t h; std::memcpy(&h, t->data + 2 * i, 2); out[i] = f16_to_f32(h); break; }
        default:
          return make_error(label_ + "/" + t->file + ": tensor '" + name + "' has dtype " +
                            std::string(dtype_name(t->dtype)) + "; expected F32, BF16 or F16");
      }
    }
    return out;
  }

  // allow_fp8: linear layers that DeepSeek ships in FP8; router / embeddings / lm_head are not.
  Result<Linear> linear(const std::string& name, int64_t rows, int64_t cols, bool allow_fp8 = true) {
    MT_ASSIGN(const TensorInfo* t, get(name, {rows, cols}));
    Linear l;
    l.dtype = t->dtype;
    l.data = t->data;
    l.rows = rows;
    l.cols = cols;
    const std::string where = label_ + "/" + t->file + ": tensor '" + name + "'";
    if (t->dtype == DType::F8_E4M3) {
      if (!allow_fp8)
        return make_error(where + " is F8_E4M3, but this tensor must be BF16, F16 or F32 in DeepSeek checkpoints");
      if (cfg_.quant.block_rows != cfg_.quant.block_cols)
        return make_error(label_ + ": non-square FP8 weight blocks are not supported");
      l.block = cfg_.quant.block_rows;
      const std::string sname = name + "_scale_inv";
      MT_ASSIGN(const TensorInfo* s, get(sname, {ceil_div(rows, l.block), ceil_div(cols, l.block)}));
      if (s->dtype != DType::F32)
        return make_error(label_ + "/" + s->file + ": tensor '" + sname + "' has dtype " +
                          std::string(dtype_name(s->dtype)) + "; FP8 block scales must be F32");
      l.scale.resize(static_cast<size_t>(s->numel()));
      std::memcpy(l.scale.data(), s->data, s->nbytes);
      for (float v : l.scale)
        if (!(v > 0.0f) || !std::isfinite(v))
          return make_error(label_ + "/" + s->file + ": tensor '" + sname +
                            "' holds a non-positive or non-finite scale; the file is corrupt");
    } else if (is_packed(t->dtype)) {  // a packed store's dense weights (convert --dense q4|q8)
      const int64_t ck = t->dtype == DType::Q4_PACKED ? 8 : 4;
      if (t->group <= 0 || t->group % ck || cols % t->group)
        return make_error(where + " is " + std::string(dtype_name(t->dtype)) + " with group " +
                          std::to_string(t->group) + ", which does not divide its " + std::to_string(cols) + " columns");
      l.block = t->group;
    } else if (t->dtype == DType::GGUF) {  // a packed store of a GGUF's weights: the file's blocks
      l.ggml_type = t->ggml_type;
      l.tiled = t->ggml_tiled;  // or their row tiles (convert --gguf-tiles on)
    } else if (t->dtype != DType::BF16 && t->dtype != DType::F16 && t->dtype != DType::F32) {
      return make_error(where + " has dtype " + std::string(dtype_name(t->dtype)) +
                        "; expected F8_E4M3, BF16, F16 or F32");
    }
    return l;
  }

  // A matrix read by rows (the embedding table; kv_b, per head), which row tiles cannot serve.
  Result<Linear> row_read_linear(const std::string& name, int64_t rows, int64_t cols, bool allow_fp8 = true) {
    MT_ASSIGN(Linear l, linear(name, rows, cols, allow_fp8));
    if (l.tiled)
      return make_error(label_ + ": tensor '" + name + "' is stored as row tiles, but it is read by rows; the store is "
                        "damaged or from another tool: convert the GGUF again");
    return l;
  }

  Result<FfnWeights> ffn(const std::string& prefix, int64_t width) {
    FfnWeights f;
    MT_ASSIGN(f.gate, linear(prefix + ".gate_proj.weight", width, cfg_.hidden_size));
    MT_ASSIGN(f.up, linear(prefix + ".up_proj.weight", width, cfg_.hidden_size));
    MT_ASSIGN(f.down, linear(prefix + ".down_proj.weight", cfg_.hidden_size, width));
    return f;
  }

  Status check_no_extra() const {
    for (const auto& [name, info] : store_.tensors()) {
      if (used_.count(name)) continue;
      if (is_mtp_tensor(name)) continue;
      return make_error(label_ + "/" + info.file + ": unexpected tensor '" + name +
                        "' (not part of a " + cfg_.model_type + " model with this config.json)");
    }
    return ok_status();
  }

 private:
  // Multi-token-prediction layers (ids >= num_hidden_layers) are not used by this engine.
  bool is_mtp_tensor(const std::string& name) const {
    const std::string p = "model.layers.";
    if (name.rfind(p, 0) != 0) return false;
    size_t i = p.size();
    int64_t id = 0;
    bool digits = false;
    while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])) && id < (1 << 20)) {
      id = id * 10 + (name[i++] - '0');
      digits = true;
    }
    return digits && id >= cfg_.num_hidden_layers &&
           id < cfg_.num_hidden_layers + cfg_.num_nextn_predict_layers;
  }

  const ModelConfig& cfg_;
  const TensorStore& store_;
  std::string label_;
  std::set<std::string, std::less<>> used_;
};

}  // namespace

Result<ModelWeights> ModelWeights::load(const std::filesystem::path& dir) {
  MT_ASSIGN(ModelConfig cfg, load_config(dir));
  MT_ASSIGN(TensorStore store, TensorStore::open(dir));
  return bind(std::move(cfg), std::move(store), dir.string());
}

Result<ModelWeights> ModelWeights::bind(ModelConfig cfg, TensorStore store, const std::string& label,
                                        bool routed_experts_external) {
  ModelWeights m;
  m.config = std::move(cfg);
  m.store = std::move(store);
  const ModelConfig& c = m.config;
  Binder b(c, m.store, label);
  const int64_t D = c.hidden_size, H = c.num_attention_heads;

  MT_ASSIGN(m.embed, b.row_read_linear("model.embed_tokens.weight", c.vocab_size, D, /*allow_fp8=*/false));
  MT_ASSIGN(m.final_norm, b.vec("model.norm.weight", D));
  MT_ASSIGN(m.lm_head, b.linear("lm_head.weight", c.vocab_size, D, /*allow_fp8=*/false));

  m.layers.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t L = 0; L < c.num_hidden_layers; ++L) {
    LayerWeights& lw = m.layers[static_cast<size_t>(L)];
    const std::string p = "model.layers." + std::to_string(L);
    const std::string a = p + ".self_attn";
    MT_ASSIGN(lw.attn_norm, b.vec(p + ".input_layernorm.weight", D));
    MT_ASSIGN(lw.ffn_norm, b.vec(p + ".post_attention_layernorm.weight", D));
    MT_ASSIGN(lw.q_a, b.linear(a + ".q_a_proj.weight", c.q_lora_rank, D));
    MT_ASSIGN(lw.q_a_norm, b.vec(a + ".q_a_layernorm.weight", c.q_lora_rank));
    MT_ASSIGN(lw.q_b, b.linear(a + ".q_b_proj.weight", H * c.qk_head_dim(), c.q_lora_rank));
    MT_ASSIGN(lw.kv_a, b.linear(a + ".kv_a_proj_with_mqa.weight", c.kv_lora_rank + c.qk_rope_head_dim, D));
    MT_ASSIGN(lw.kv_a_norm, b.vec(a + ".kv_a_layernorm.weight", c.kv_lora_rank));
    MT_ASSIGN(lw.kv_b, b.row_read_linear(a + ".kv_b_proj.weight", H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank));
    MT_ASSIGN(lw.o, b.linear(a + ".o_proj.weight", D, H * c.v_head_dim));
    if (c.arch == ModelArch::V32) {
      lw.has_indexer = true;
      const std::string ix = a + ".indexer";
      MT_ASSIGN(lw.indexer.wq_b, b.linear(ix + ".wq_b.weight", c.index_n_heads * c.index_head_dim, c.q_lora_rank));
      MT_ASSIGN(lw.indexer.wk, b.linear(ix + ".wk.weight", c.index_head_dim, D));
      MT_ASSIGN(lw.indexer.k_norm_weight, b.vec(ix + ".k_norm.weight", c.index_head_dim));
      MT_ASSIGN(lw.indexer.k_norm_bias, b.vec(ix + ".k_norm.bias", c.index_head_dim));
      MT_ASSIGN(lw.indexer.weights_proj, b.linear(ix + ".weights_proj.weight", c.index_n_heads, D));
    }
    lw.is_moe = c.is_moe_layer(L);
    if (!lw.is_moe) {
      MT_ASSIGN(lw.dense, b.ffn(p + ".mlp", c.intermediate_size));
      continue;
    }
    MT_ASSIGN(lw.router, b.linear(p + ".mlp.gate.weight", c.n_routed_experts, D, /*allow_fp8=*/false));
    if (c.topk_method == "noaux_tc") {
      MT_ASSIGN(lw.router_bias, b.vec(p + ".mlp.gate.e_score_correction_bias", c.n_routed_experts));
    } else {
      lw.router_bias.assign(static_cast<size_t>(c.n_routed_experts), 0.0f);
    }
    if (!routed_experts_external) lw.experts.reserve(static_cast<size_t>(c.n_routed_experts));
    for (int64_t e = 0; e < c.n_routed_experts && !routed_experts_external; ++e) {
      MT_ASSIGN(FfnWeights f, b.ffn(p + ".mlp.experts." + std::to_string(e), c.moe_intermediate_size));
      lw.experts.push_back(std::move(f));
    }
    if (c.n_shared_experts > 0) {
      lw.has_shared = true;
      MT_ASSIGN(lw.shared, b.ffn(p + ".mlp.shared_experts", c.n_shared_experts * c.moe_intermediate_size));
    }
  }
  MT_TRY(b.check_no_extra());
  return m;
}

std::vector<TensorSpec> checkpoint_layout(const ModelConfig& c) {
  std::vector<TensorSpec> out;
  const int64_t D = c.hidden_size, H = c.num_attention_heads;
  auto add = [&](std::string name, std::vector<int64_t> shape, TensorRole role, int64_t layer) {
    out.push_back(TensorSpec{std::move(name), std::move(shape), role, layer});
  };
  auto ffn = [&](const std::string& prefix, int64_t width, int64_t L) {
    add(prefix + ".gate_proj.weight", {width, D}, TensorRole::Linear, L);
    add(prefix + ".up_proj.weight", {width, D}, TensorRole::Linear, L);
    add(prefix + ".down_proj.weight", {D, width}, TensorRole::Linear, L);
  };
  add("model.embed_tokens.weight", {c.vocab_size, D}, TensorRole::Embedding, -1);
  for (int64_t L = 0; L < c.num_hidden_layers; ++L) {
    const std::string p = "model.layers." + std::to_string(L);
    const std::string a = p + ".self_attn";
    add(p + ".input_layernorm.weight", {D}, TensorRole::Norm, L);
    add(a + ".q_a_proj.weight", {c.q_lora_rank, D}, TensorRole::Linear, L);
    add(a + ".q_a_layernorm.weight", {c.q_lora_rank}, TensorRole::Norm, L);
    add(a + ".q_b_proj.weight", {H * c.qk_head_dim(), c.q_lora_rank}, TensorRole::Linear, L);
    add(a + ".kv_a_proj_with_mqa.weight", {c.kv_lora_rank + c.qk_rope_head_dim, D}, TensorRole::Linear, L);
    add(a + ".kv_a_layernorm.weight", {c.kv_lora_rank}, TensorRole::Norm, L);
    add(a + ".kv_b_proj.weight", {H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank}, TensorRole::Linear, L);
    add(a + ".o_proj.weight", {D, H * c.v_head_dim}, TensorRole::Linear, L);
    if (c.arch == ModelArch::V32) {
      const std::string ix = a + ".indexer";
      add(ix + ".wq_b.weight", {c.index_n_heads * c.index_head_dim, c.q_lora_rank}, TensorRole::Linear, L);
      add(ix + ".wk.weight", {c.index_head_dim, D}, TensorRole::Linear, L);
      add(ix + ".k_norm.weight", {c.index_head_dim}, TensorRole::Norm, L);
      add(ix + ".k_norm.bias", {c.index_head_dim}, TensorRole::NormBias, L);
      add(ix + ".weights_proj.weight", {c.index_n_heads, D}, TensorRole::Router, L);
    }
    add(p + ".post_attention_layernorm.weight", {D}, TensorRole::Norm, L);
    if (!c.is_moe_layer(L)) {
      ffn(p + ".mlp", c.intermediate_size, L);
      continue;
    }
    add(p + ".mlp.gate.weight", {c.n_routed_experts, D}, TensorRole::Router, L);
    if (c.topk_method == "noaux_tc")
      add(p + ".mlp.gate.e_score_correction_bias", {c.n_routed_experts}, TensorRole::RouterBias, L);
    for (int64_t e = 0; e < c.n_routed_experts; ++e) ffn(p + ".mlp.experts." + std::to_string(e), c.moe_intermediate_size, L);
    if (c.n_shared_experts > 0) ffn(p + ".mlp.shared_experts", c.n_shared_experts * c.moe_intermediate_size, L);
  }
  add("model.norm.weight", {D}, TensorRole::Norm, -1);
  add("lm_head.weight", {c.vocab_size, D}, TensorRole::LmHead, -1);
  return out;
}

}  // namespace mt
