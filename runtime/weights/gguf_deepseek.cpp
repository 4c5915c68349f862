#include "runtime/weights/gguf_deepseek.h"

#include <charconv>
#include <numeric>

namespace mt {

namespace {

const char* kArch = "deepseek2";

}  // namespace

uint64_t GgufDeepSeek::expert_total() const { return std::accumulate(experts.begin(), experts.end(), uint64_t{0}); }

uint64_t GgufDeepSeek::dense_total() const {
  uint64_t b = embedding + lm_head + final_norm;
  for (const auto* v : {&attention, &norms, &router, &shared, &dense_ffn}) b += std::accumulate(v->begin(), v->end(), uint64_t{0});
  return b;
}

Result<GgufDeepSeek> read_gguf_deepseek(const GgufModel& g) {
  const std::string file = g.files().front().string();
  const GgufValue* arch = g.find_key("general.architecture");
  if (!arch || !arch->as_string()) return make_error(file + ": no general.architecture key (not a model GGUF?)");
  if (*arch->as_string() != kArch)
    return make_error(file + ": architecture '" + *arch->as_string() +
                      "'; moetier runs DeepSeek V3-family GGUFs (llama.cpp's 'deepseek2')");
  GgufDeepSeek d;
  ModelConfig& c = d.config;
  auto key = [&](const std::string& k) { return g.find_key(std::string(kArch) + "." + k); };
  auto need_int = [&](const std::string& k, int64_t& out) -> Status {
    const GgufValue* v = key(k);
    if (!v) return make_error(file + ": missing key " + kArch + "." + k);
    const auto i = v->as_int();
    if (!i) return make_error(file + ": key " + std::string(kArch) + "." + k + " is a " + gguf_type_name(v->type) +
                              ", not an integer");
    out = *i;
    return ok_status();
  };
  auto opt_int = [&](const std::string& k, int64_t& out) -> Status { return key(k) ? need_int(k, out) : ok_status(); };
  auto opt_num = [&](const std::string& k, double& out) -> Status {
    const GgufValue* v = key(k);
    if (!v) return ok_status();
    const auto x = v->as_number();
    if (!x) return make_error(file + ": key " + std::string(kArch) + "." + k + " is not a number");
    out = *x;
    return ok_status();
  };
  c.model_type = "deepseek_v3";
  c.arch = ModelArch::V3;
  MT_TRY(need_int("block_count", c.num_hidden_layers));
  MT_TRY(need_int("embedding_length", c.hidden_size));
  MT_TRY(need_int("feed_forward_length", c.intermediate_size));
  MT_TRY(need_int("attention.head_count", c.num_attention_heads));
  c.num_key_value_heads = c.num_attention_heads;
  MT_TRY(opt_int("attention.head_count_kv", c.num_key_value_heads));
  MT_TRY(need_int("expert_count", c.n_routed_experts));
  MT_TRY(need_int("expert_used_count", c.num_experts_per_tok));
  MT_TRY(need_int("expert_feed_forward_length", c.moe_intermediate_size));
  MT_TRY(need_int("expert_shared_count", c.n_shared_experts));
  MT_TRY(need_int("leading_dense_block_count", c.first_k_dense_replace));
  MT_TRY(opt_int("attention.q_lora_rank", c.q_lora_rank));
  MT_TRY(need_int("attention.kv_lora_rank", c.kv_lora_rank));
  MT_TRY(need_int("rope.dimension_count", c.qk_rope_head_dim));
  // Before llama.cpp's MLA rework key_length was nope + rope and value_length v; after it they
  // describe the latent cache, and the head sizes moved to *_mla.
  int64_t key_len = 0, value_len = 0;
  if (key("attention.key_length_mla")) {
    MT_TRY(need_int("attention.key_length_mla", key_len));
    MT_TRY(need_int("attention.value_length_mla", value_len));
  } else {
    MT_TRY(need_int("attention.key_length", key_len));
    MT_TRY(need_int("attention.value_length", value_len));
  }
  c.qk_nope_head_dim = key_len - c.qk_rope_head_dim;
  c.v_head_dim = value_len;
  MT_TRY(need_int("context_length", c.max_position_embeddings));
  MT_TRY(opt_num("attention.layer_norm_rms_epsilon", c.rms_norm_eps));
  MT_TRY(opt_num("rope.freq_base", c.rope_theta));
  MT_TRY(opt_num("expert_weights_scale", c.routed_scaling_factor));
  int64_t norm = 0;
  if (key("expert_weights_norm")) {
    MT_TRY(need_int("expert_weights_norm", norm));
    c.norm_topk_prob = norm != 0;
  } else {
    c.norm_topk_prob = false;  // llama.cpp's default when the key is absent
    d.notes.push_back(std::string(kArch) + ".expert_weights_norm absent: the experts' weights are not normalised");
  }
  // Absent, llama.cpp takes softmax (DeepSeek V2/V2.5 files predate the key).
  int64_t gating = 1;
  MT_TRY(opt_int("expert_gating_func", gating));
  if (gating != 2)
    return make_error(file + ": " + kArch + ".expert_gating_func " +
                      (key("expert_gating_func") ? std::to_string(gating) : std::string("absent")) +
                      " (softmax routing: DeepSeek V2); moetier runs V3's sigmoid routing");
  if (key("expert_group_count")) {
    MT_TRY(need_int("expert_group_count", c.n_group));
    MT_TRY(need_int("expert_group_used_count", c.topk_group));
  } else if (c.n_routed_experts == 256) {
    c.n_group = 8;
    c.topk_group = 4;
    d.notes.push_back(std::string(kArch) + ".expert_group_count absent: assuming DeepSeek V3's 8 expert groups, 4 kept");
  }
  MT_TRY(opt_int("nextn_predict_layers", c.num_nextn_predict_layers));
  if (const GgufValue* t = key("rope.scaling.type"); t && t->as_string() && *t->as_string() == "yarn") {
    c.rope_scaling.type = "yarn";
    MT_TRY(opt_num("rope.scaling.factor", c.rope_scaling.factor));
    MT_TRY(opt_int("rope.scaling.original_context_length", c.rope_scaling.original_max_position_embeddings));
    double log_mul = 0.0;
    MT_TRY(opt_num("rope.scaling.yarn_log_multiplier", log_mul));
    // llama.cpp stores 0.1 * mscale_all_dim; DeepSeek's mscale is 1 as well.
    c.rope_scaling.mscale_all_dim = static_cast<float>(log_mul / 0.1);  // the key is a float32
    c.rope_scaling.mscale = c.rope_scaling.mscale_all_dim;
  }
  // The vocabulary: the key, else the tokenizer's list, else the embedding's rows.
  if (key("vocab_size")) {
    MT_TRY(need_int("vocab_size", c.vocab_size));
  } else if (const GgufValue* tokens = g.find_key("tokenizer.ggml.tokens")) {
    c.vocab_size = static_cast<int64_t>(tokens->count);
  } else if (const GgufTensor* e = g.find("token_embd.weight"); e && e->dims.size() == 2) {
    c.vocab_size = e->dims[1];
  }
  for (const char* k : {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"})
    if (const GgufValue* v = g.find_key(k); v && v->as_int())
      (std::string(k).find("bos") != std::string::npos ? c.bos_token_id : c.eos_token_id) = *v->as_int();
  // A converter that counts the MTP layers in block_count leaves them at its end, named nextn.
  if (c.num_nextn_predict_layers > 0)
    for (const GgufTensor& t : g.tensors())
      if (t.name == "blk." + std::to_string(c.num_hidden_layers - 1) + ".nextn.eh_proj.weight") {
        c.num_hidden_layers -= c.num_nextn_predict_layers;
        d.notes.push_back("block_count includes the " + std::to_string(c.num_nextn_predict_layers) +
                          " MTP layer(s) at its end; they are not run");
        break;
      }
  MT_TRY(validate_config(c, file));

  // Tensors by part.
  const auto L = static_cast<size_t>(c.num_hidden_layers);
  for (auto* v : {&d.attention, &d.norms, &d.router, &d.shared, &d.dense_ffn, &d.experts}) v->assign(L, 0);
  std::vector<int> expert_parts(L, 0);
  // "blk.N.part": N and part, parsed by hand (names are short, but a fuzzed one need not be).
  auto block_of = [](const std::string& n, uint64_t& layer, std::string& part) {
    if (n.rfind("blk.", 0) != 0) return false;
    const char* first = n.data() + 4;
    const char* last = n.data() + n.size();
    const auto [end, ec] = std::from_chars(first, last, layer);
    if (ec != std::errc() || end == first || end == last || *end != '.' || end + 1 == last) return false;
    part.assign(end + 1, last);
    return true;
  };
  for (const GgufTensor& t : g.tensors()) {
    const std::string& n = t.name;
    uint64_t layer = 0;
    std::string part;
    if (n == "token_embd.weight") d.embedding += t.nbytes, d.dense_types[t.type] += t.nbytes;
    else if (n == "output.weight") d.lm_head += t.nbytes, d.dense_types[t.type] += t.nbytes, d.matmul_types[t.type] += t.nbytes;
    else if (n == "output_norm.weight") d.final_norm += t.nbytes;
    else if (block_of(n, layer, part)) {
      if (layer >= L || part.rfind("nextn.", 0) == 0) {  // the MTP module: not run
        d.skipped += t.nbytes;
        continue;
      }
      if (part.find("_exps.") != std::string::npos) {
        // [hidden, width, experts] for gate/up, [width, hidden, experts] for down (ggml order).
        const bool down = part.rfind("ffn_down_exps", 0) == 0;
        const std::vector<int64_t> want = down ? std::vector<int64_t>{c.moe_intermediate_size, c.hidden_size, c.n_routed_experts}
                                               : std::vector<int64_t>{c.hidden_size, c.moe_intermediate_size, c.n_routed_experts};
        if (t.dims != want)
          return make_error(t.file + ": tensor '" + n + "' has shape " + [&] {
            std::string s;
            for (size_t i = 0; i < t.dims.size(); ++i) s += (i ? "x" : "") + std::to_string(t.dims[i]);
            return s;
          }() + ", the metadata implies " + std::to_string(want[0]) + "x" + std::to_string(want[1]) + "x" +
                            std::to_string(want[2]));
        d.experts[layer] += t.nbytes;
        d.expert_types[t.type] += t.nbytes;
        ++expert_parts[layer];
        continue;
      }
      d.dense_types[t.type] += t.nbytes;
      if (part.find("_norm") != std::string::npos) d.norms[layer] += t.nbytes;
      else if (part.rfind("ffn_gate_inp", 0) == 0 || part.rfind("exp_probs_b", 0) == 0) d.router[layer] += t.nbytes;
      else if (part.find("_shexp") != std::string::npos) d.shared[layer] += t.nbytes, d.matmul_types[t.type] += t.nbytes;
      else if (part.rfind("ffn_", 0) == 0) d.dense_ffn[layer] += t.nbytes, d.matmul_types[t.type] += t.nbytes;
      else {
        d.attention[layer] += t.nbytes;
        const bool kv_b = part.rfind("attn_k_b", 0) == 0 || part.rfind("attn_v_b", 0) == 0;  // rejoined to fp32
        if (!kv_b) d.matmul_types[t.type] += t.nbytes;
      }
    } else {
      d.skipped += t.nbytes;
    }
  }
  if (!g.find("token_embd.weight")) return make_error(file + ": no tensor 'token_embd.weight'");
  if (!g.find("output.weight")) return make_error(file + ": no tensor 'output.weight'");
  for (size_t l = 0; l < L; ++l) {
    const bool moe = c.is_moe_layer(static_cast<int64_t>(l));
    if (moe && expert_parts[l] != 3) {
      std::string missing;
      for (const char* part : {"gate", "up", "down"}) {
        const std::string name = "blk." + std::to_string(l) + ".ffn_" + part + "_exps.weight";
        if (!g.find(name)) missing += (missing.empty() ? "" : ", ") + name;
      }
      return make_error(file + ": layer " + std::to_string(l) + " has " + std::to_string(expert_parts[l]) +
                        " of its 3 routed-expert tensors; missing: " + missing);
    }
    if (!moe && expert_parts[l] != 0)
      return make_error(file + ": layer " + std::to_string(l) + " is a dense layer but holds routed experts");
    if (d.attention[l] == 0) return make_error(file + ": layer " + std::to_string(l) + " has no attention tensors");
  }
  return d;
}

}  // namespace mt
