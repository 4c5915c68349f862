#include "runtime/model/gguf_weights.h"

#include <charconv>
#include <map>
#include <set>

#include "cpu_kernels/ggml_dequant.h"
#include "runtime/core/ggml_types.h"
#include "runtime/weights/gguf_deepseek.h"

namespace mt {

namespace {

std::string dims_str(const std::vector<int64_t>& d) {
  std::string s;
  for (size_t i = 0; i < d.size(); ++i) {  // appended in two steps: `"x" + to_string(...)` trips GCC 12's -Wrestrict
    if (i) s += 'x';
    s += std::to_string(d[i]);
  }
  return s;
}

// Looks tensors up by llama.cpp's names, checks their ggml shapes (innermost dimension first),
// records which were used, and names the file in every error.
class GgufBinder {
 public:
  GgufBinder(const GgufModel& g, const ModelConfig& c) : g_(g), cfg_(c) {}

  const GgufTensor* find(const std::string& name) const { return g_.find(name); }

  Result<const GgufTensor*> get(const std::string& name, const std::vector<int64_t>& dims) {
    const GgufTensor* t = g_.find(name);
    if (!t)
      return make_error(g_.files().front().string() + ": missing tensor '" + name + "' (expected shape " +
                        dims_str(dims) + "); the file is incomplete or not a DeepSeek V3-family model");
    used_.insert(name);
    if (t->dims != dims)
      return make_error(t->file + ": tensor '" + name + "' has shape " + dims_str(t->dims) + ", the metadata implies " +
                        dims_str(dims));
    if (!cpu::ggml_can_dequantize(t->type)) unsupported_[t->type].push_back(name);
    return t;
  }

  Result<std::vector<float>> vec(const std::string& name, int64_t n) {
    MT_ASSIGN(const GgufTensor* t, get(name, {n}));
    std::vector<float> out(static_cast<size_t>(n));
    if (!ggml_float_dtype(t->type))
      return make_error(t->file + ": tensor '" + name + "' is " + ggml_type_name(t->type) +
                        "; a norm or bias vector must be F32, F16 or BF16");
    cpu::ggml_dequantize(t->type, t->data, n, out.data());
    return out;
  }

  // A view of rows [rows, cols] at `data` of tensor t's type.
  static Linear view(const GgufTensor& t, const uint8_t* data, int64_t rows, int64_t cols) {
    Linear l;
    l.dtype = ggml_float_dtype(t.type).value_or(DType::GGUF);
    l.data = data;
    l.rows = rows;
    l.cols = cols;
    if (l.dtype == DType::GGUF) l.ggml_type = t.type;
    return l;
  }

  Result<Linear> linear(const std::string& name, int64_t rows, int64_t cols) {
    MT_ASSIGN(const GgufTensor* t, get(name, {cols, rows}));
    return view(*t, t->data, rows, cols);
  }

  Result<FfnWeights> ffn(const std::string& prefix, const std::string& suffix, int64_t width) {
    FfnWeights f;
    MT_ASSIGN(f.gate, linear(prefix + "ffn_gate" + suffix + ".weight", width, cfg_.hidden_size));
    MT_ASSIGN(f.up, linear(prefix + "ffn_up" + suffix + ".weight", width, cfg_.hidden_size));
    MT_ASSIGN(f.down, linear(prefix + "ffn_down" + suffix + ".weight", cfg_.hidden_size, width));
    return f;
  }

  // Expert e's three matrices: slices of the layer's stacked [cols, rows, experts] tensors.
  Result<std::vector<FfnWeights>> experts(const std::string& prefix) {
    const int64_t D = cfg_.hidden_size, I = cfg_.moe_intermediate_size, E = cfg_.n_routed_experts;
    MT_ASSIGN(const GgufTensor* gate, get(prefix + "ffn_gate_exps.weight", {D, I, E}));
    MT_ASSIGN(const GgufTensor* up, get(prefix + "ffn_up_exps.weight", {D, I, E}));
    MT_ASSIGN(const GgufTensor* down, get(prefix + "ffn_down_exps.weight", {I, D, E}));
    std::vector<FfnWeights> out(static_cast<size_t>(E));
    if (!unsupported_.empty()) return out;  // refused as a whole by check_types
    const uint64_t gate_bytes = uint64_t(I) * ggml_row_bytes(gate->type, D);
    const uint64_t up_bytes = uint64_t(I) * ggml_row_bytes(up->type, D);
    const uint64_t down_bytes = uint64_t(D) * ggml_row_bytes(down->type, I);
    for (int64_t e = 0; e < E; ++e) {
      FfnWeights& f = out[static_cast<size_t>(e)];
      f.gate = view(*gate, gate->data + uint64_t(e) * gate_bytes, I, D);
      f.up = view(*up, up->data + uint64_t(e) * up_bytes, I, D);
      f.down = view(*down, down->data + uint64_t(e) * down_bytes, D, I);
    }
    return out;
  }

  // kv_b [H * (nope + v), latent]: attn_kv_b as stored, else rejoined in fp32 from attn_k_b
  // ([nope, latent, H]: per head W_UK transposed) and attn_v_b ([latent, v, H]).
  Result<Linear> kv_b(const std::string& prefix, std::deque<std::vector<float>>& derived, uint64_t& derived_bytes) {
    const int64_t H = cfg_.num_attention_heads, nope = cfg_.qk_nope_head_dim, v = cfg_.v_head_dim,
                  R = cfg_.kv_lora_rank;
    if (find(prefix + "attn_kv_b.weight")) {
      for (const char* part : {"attn_k_b.weight", "attn_v_b.weight"})
        if (find(prefix + part)) used_.insert(prefix + part);
      return linear(prefix + "attn_kv_b.weight", H * (nope + v), R);
    }
    MT_ASSIGN(const GgufTensor* kb, get(prefix + "attn_k_b.weight", {nope, R, H}));
    MT_ASSIGN(const GgufTensor* vb, get(prefix + "attn_v_b.weight", {R, v, H}));
    Linear l;
    l.dtype = DType::F32;
    l.rows = H * (nope + v);
    l.cols = R;
    if (!unsupported_.empty()) return l;
    std::vector<float>& w = derived.emplace_back(static_cast<size_t>(l.rows * R));
    std::vector<float> head(static_cast<size_t>(R * std::max(nope, v)));
    const uint64_t kb_head = uint64_t(R) * ggml_row_bytes(kb->type, nope);
    const uint64_t vb_head = uint64_t(v) * ggml_row_bytes(vb->type, R);
    for (int64_t h = 0; h < H; ++h) {
      float* rows = w.data() + h * (nope + v) * R;
      cpu::ggml_dequantize(kb->type, kb->data + uint64_t(h) * kb_head, R * nope, head.data());  // [R, nope]
      for (int64_t j = 0; j < nope; ++j)
        for (int64_t c = 0; c < R; ++c) rows[j * R + c] = head[static_cast<size_t>(c * nope + j)];
      cpu::ggml_dequantize(vb->type, vb->data + uint64_t(h) * vb_head, v * R, rows + nope * R);  // [v, R]
    }
    derived_bytes += w.size() * sizeof(float);
    l.data = reinterpret_cast<const uint8_t*>(w.data());
    return l;
  }

  // One error for every tensor whose type has no kernel, grouped by type.
  Status check_types() const {
    if (unsupported_.empty()) return ok_status();
    std::string msg = g_.files().front().string() + ": moetier has no kernel for ";
    bool first = true;
    for (const auto& [type, names] : unsupported_) {
      if (!first) msg += "; ";
      msg += ggml_type_name(type);
      msg += " (" + std::to_string(names.size()) + (names.size() == 1 ? " tensor: " : " tensors: ");
      msg += names.front();
      msg += names.size() > 1 ? ", ...)" : ")";
      first = false;
    }
    return make_error(msg + ". It runs F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q2_K..Q6_K: pick a quantisation "
                            "of those types");
  }

  // Tensors nobody asked for: an error, except the MTP module (blk.N.nextn.*, or N past the
  // main layers), which moetier does not run.
  Status check_no_extra() const {
    for (const GgufTensor& t : g_.tensors()) {
      if (used_.count(t.name)) continue;
      if (t.name.rfind("blk.", 0) == 0) {
        int64_t layer = -1;
        const char* first = t.name.data() + 4;
        const auto [end, ec] = std::from_chars(first, t.name.data() + t.name.size(), layer);
        if (ec == std::errc() && end != first &&
            (layer >= cfg_.num_hidden_layers || t.name.find(".nextn.") != std::string::npos))
          continue;
      }
      return make_error(t.file + ": unexpected tensor '" + t.name + "' (not part of a deepseek2 model with this metadata)");
    }
    return ok_status();
  }

 private:
  const GgufModel& g_;
  const ModelConfig& cfg_;
  std::set<std::string, std::less<>> used_;
  std::map<uint32_t, std::vector<std::string>> unsupported_;
};

}  // namespace

Result<ModelWeights> load_gguf_weights(const std::filesystem::path& path, GgufLoadInfo* info) {
  MT_ASSIGN(GgufModel opened, GgufModel::open(path));
  auto g = std::make_shared<const GgufModel>(std::move(opened));
  MT_ASSIGN(GgufDeepSeek d, read_gguf_deepseek(*g));
  ModelWeights m;
  m.config = std::move(d.config);
  m.gguf = g;
  ModelConfig& c = m.config;
  const std::string file = g->files().front().string();
  if (c.q_lora_rank <= 0)
    return make_error(file + ": no attention.q_lora_rank (a DeepSeek V2-Lite-style model); moetier runs V3's low-rank queries");
  const bool has_bias = g->find("blk." + std::to_string(c.first_k_dense_replace) + ".exp_probs_b.bias") != nullptr;
  if (!has_bias) c.topk_method = "greedy";  // no correction bias: plain top-k of the sigmoid scores
  GgufBinder b(*g, c);
  const int64_t D = c.hidden_size, H = c.num_attention_heads;
  uint64_t derived_bytes = 0;

  MT_ASSIGN(m.embed, b.linear("token_embd.weight", c.vocab_size, D));
  MT_ASSIGN(m.final_norm, b.vec("output_norm.weight", D));
  MT_ASSIGN(m.lm_head, b.linear("output.weight", c.vocab_size, D));
  m.layers.resize(static_cast<size_t>(c.num_hidden_layers));
  for (int64_t L = 0; L < c.num_hidden_layers; ++L) {
    LayerWeights& lw = m.layers[static_cast<size_t>(L)];
    const std::string p = "blk." + std::to_string(L) + ".";
    MT_ASSIGN(lw.attn_norm, b.vec(p + "attn_norm.weight", D));
    MT_ASSIGN(lw.ffn_norm, b.vec(p + "ffn_norm.weight", D));
    MT_ASSIGN(lw.q_a, b.linear(p + "attn_q_a.weight", c.q_lora_rank, D));
    MT_ASSIGN(lw.q_a_norm, b.vec(p + "attn_q_a_norm.weight", c.q_lora_rank));
    MT_ASSIGN(lw.q_b, b.linear(p + "attn_q_b.weight", H * c.qk_head_dim(), c.q_lora_rank));
    MT_ASSIGN(lw.kv_a, b.linear(p + "attn_kv_a_mqa.weight", c.kv_lora_rank + c.qk_rope_head_dim, D));
    MT_ASSIGN(lw.kv_a_norm, b.vec(p + "attn_kv_a_norm.weight", c.kv_lora_rank));
    MT_ASSIGN(lw.kv_b, b.kv_b(p, m.derived, derived_bytes));
    MT_ASSIGN(lw.o, b.linear(p + "attn_output.weight", D, H * c.v_head_dim));
    lw.is_moe = c.is_moe_layer(L);
    if (!lw.is_moe) {
      MT_ASSIGN(lw.dense, b.ffn(p, "", c.intermediate_size));
      continue;
    }
    MT_ASSIGN(lw.router, b.linear(p + "ffn_gate_inp.weight", c.n_routed_experts, D));
    if (has_bias) {
      MT_ASSIGN(lw.router_bias, b.vec(p + "exp_probs_b.bias", c.n_routed_experts));
    } else {
      lw.router_bias.assign(static_cast<size_t>(c.n_routed_experts), 0.0f);
    }
    MT_ASSIGN(lw.experts, b.experts(p));
    if (c.n_shared_experts > 0) {
      lw.has_shared = true;
      MT_ASSIGN(lw.shared, b.ffn(p, "_shexp", c.n_shared_experts * c.moe_intermediate_size));
    }
  }
  MT_TRY(b.check_types());
  MT_TRY(b.check_no_extra());
  if (info) {
    info->notes = d.notes;
    info->derived_bytes = derived_bytes;
  }
  return m;
}

}  // namespace mt
