#include "runtime/config/model_config.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "runtime/core/json_fields.h"

namespace mt {

using json = nlohmann::json;

double ModelConfig::softmax_scale() const {
  double scale = 1.0 / std::sqrt(static_cast<double>(qk_head_dim()));
  if (rope_scaling.type == "yarn" && rope_scaling.factor > 1.0 && rope_scaling.mscale_all_dim != 0.0) {
    const double m = 0.1 * rope_scaling.mscale_all_dim * std::log(rope_scaling.factor) + 1.0;
    scale *= m * m;
  }
  return scale;
}

namespace {

// Field readers over JsonFields (runtime/core/json_fields.h): a missing optional field keeps the
// default; a present field of the wrong type, or a number outside its range, is an error naming
// the field and the range. The first error wins. Integers are sizes and counts: 0 .. 2^31-1
// (token ids up to 2^31-1 too); validate_config then checks what the model can mean.
constexpr int64_t kMaxInt = (int64_t{1} << 31) - 1;
constexpr double kMaxReal = 1e30;

class Reader {
 public:
  Reader(const json& j, const std::string& label) : f_(j, label) {}

  void integer(const char* key, int64_t& out, bool required) { integer(f_, key, out, required); }
  void integer(const JsonFields<json>& f, const char* key, int64_t& out, bool required, int64_t lo = 0) {
    if (!f.has(key)) {
      if (required) fail(f.field(key), "missing required field '" + f.field(key) + "'");
      return;
    }
    take(f.integer(key, lo, kMaxInt), out);
  }
  void number(const JsonFields<json>& f, const char* key, double& out) {
    take(f.number_or(key, out, -kMaxReal, kMaxReal), out);
  }
  void number(const char* key, double& out) { number(f_, key, out); }
  void boolean(const char* key, bool& out) { take(f_.boolean_or(key, out), out); }
  void string(const JsonFields<json>& f, const char* key, std::string& out) { take(f.string_or(key, out), out); }
  void string(const char* key, std::string& out) { string(f_, key, out); }

  void fail(const std::string& /*field*/, const std::string& msg) {
    if (error_.empty()) error_ = f_.where() + ": " + msg;
  }
  void fail(const std::string& msg) { fail("", msg); }
  const std::string& error() const { return error_; }
  // A value read by JsonFields: stored on success, its error kept (the first one wins).
  template <class T, class U>
  void take(Result<T> r, U& out) {
    if (!r) {
      if (error_.empty()) error_ = r.error();
      return;
    }
    out = static_cast<U>(*r);
  }

 private:
  JsonFields<json> f_;
  std::string error_;
};

}  // namespace

Result<ModelConfig> parse_config_json(const std::string& text, const std::string& label) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return make_error(label + ": not valid JSON");
  if (!j.is_object()) return make_error(label + ": expected a JSON object at the top level");

  ModelConfig c;
  Reader r(j, label);
  r.string("model_type", c.model_type);
  if (c.model_type == "deepseek_v32") c.arch = ModelArch::V32;
  else if (c.model_type == "deepseek_v3") c.arch = ModelArch::V3;
  else if (r.error().empty())
    return make_error(label + ": model_type '" + c.model_type +
                      "' is not supported (expected deepseek_v3 or deepseek_v32)");

  r.integer("vocab_size", c.vocab_size, true);
  r.integer("hidden_size", c.hidden_size, true);
  r.integer("intermediate_size", c.intermediate_size, true);
  r.integer("moe_intermediate_size", c.moe_intermediate_size, true);
  r.integer("num_hidden_layers", c.num_hidden_layers, true);
  r.integer("first_k_dense_replace", c.first_k_dense_replace, false);
  r.integer("moe_layer_freq", c.moe_layer_freq, false);
  r.integer("n_routed_experts", c.n_routed_experts, true);
  r.integer("n_shared_experts", c.n_shared_experts, false);
  r.integer("num_experts_per_tok", c.num_experts_per_tok, true);
  r.integer("n_group", c.n_group, false);
  r.integer("topk_group", c.topk_group, false);
  r.number("routed_scaling_factor", c.routed_scaling_factor);
  r.string("scoring_func", c.scoring_func);
  r.string("topk_method", c.topk_method);
  r.boolean("norm_topk_prob", c.norm_topk_prob);
  r.integer("q_lora_rank", c.q_lora_rank, true);
  r.integer("kv_lora_rank", c.kv_lora_rank, true);
  r.integer("qk_nope_head_dim", c.qk_nope_head_dim, true);
  r.integer("qk_rope_head_dim", c.qk_rope_head_dim, true);
  r.integer("v_head_dim", c.v_head_dim, true);
  r.integer("num_attention_heads", c.num_attention_heads, true);
  c.num_key_value_heads = c.num_attention_heads;
  r.integer("num_key_value_heads", c.num_key_value_heads, false);
  r.string("hidden_act", c.hidden_act);
  r.boolean("attention_bias", c.attention_bias);
  r.number("rms_norm_eps", c.rms_norm_eps);
  r.number("rope_theta", c.rope_theta);
  r.integer("max_position_embeddings", c.max_position_embeddings, true);
  r.integer("num_nextn_predict_layers", c.num_nextn_predict_layers, false);
  r.boolean("tie_word_embeddings", c.tie_word_embeddings);
  r.integer("bos_token_id", c.bos_token_id, false);
  r.integer("eos_token_id", c.eos_token_id, false);
  r.string("torch_dtype", c.torch_dtype);

  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) {
      r.fail("field 'rope_scaling' must be an object or null");
    } else {
      const JsonFields<json> rs(*it, label, "rope_scaling");
      r.string(rs, "type", c.rope_scaling.type);
      if (c.rope_scaling.type.empty()) r.string(rs, "rope_type", c.rope_scaling.type);
      r.number(rs, "factor", c.rope_scaling.factor);
      r.integer(rs, "original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings, false, 1);
      r.number(rs, "beta_fast", c.rope_scaling.beta_fast);
      r.number(rs, "beta_slow", c.rope_scaling.beta_slow);
      r.number(rs, "mscale", c.rope_scaling.mscale);
      r.number(rs, "mscale_all_dim", c.rope_scaling.mscale_all_dim);
    }
  }

  if (auto it = j.find("quantization_config"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) {
      r.fail("field 'quantization_config' must be an object");
    } else {
      const JsonFields<json> q(*it, label, "quantization_config");
      std::string method, fmt;
      r.string(q, "quant_method", method);
      r.string(q, "fmt", fmt);
      if (r.error().empty() && method != "fp8")
        r.fail("quantization_config.quant_method '" + method + "' is not supported (only fp8)");
      if (r.error().empty() && !fmt.empty() && fmt != "e4m3")
        r.fail("quantization_config.fmt '" + fmt + "' is not supported (only e4m3)");
      c.quant.fp8 = true;
      r.string(q, "activation_scheme", c.quant.activation_scheme);
      r.string(q, "scale_fmt", c.quant.scale_fmt);
      if (const json* b = q.find("weight_block_size")) {
        if (!b->is_array() || b->size() != 2) {
          r.fail("quantization_config.weight_block_size must be two integers, got " + b->dump());
        } else {
          r.take(q.integer_value((*b)[0], "weight_block_size[0]", 1, 1 << 16), c.quant.block_rows);
          r.take(q.integer_value((*b)[1], "weight_block_size[1]", 1, 1 << 16), c.quant.block_cols);
        }
      }
    }
  }

  if (c.arch == ModelArch::V32) {
    r.integer("index_n_heads", c.index_n_heads, true);
    r.integer("index_head_dim", c.index_head_dim, true);
    r.integer("index_topk", c.index_topk, true);
  }
  if (!r.error().empty()) return make_error(r.error());
  MT_TRY(validate_config(c, label));
  return c;
}

Status validate_config(const ModelConfig& c, const std::string& label) {
  auto bad = [&](const std::string& m) { return make_error(label + ": " + m); };
  auto positive = [&](const char* name, int64_t v) -> std::string {
    return v > 0 ? "" : std::string("field '") + name + "' must be positive, got " + std::to_string(v);
  };
  const std::pair<const char*, int64_t> dims[] = {
      {"vocab_size", c.vocab_size}, {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size}, {"moe_intermediate_size", c.moe_intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers}, {"q_lora_rank", c.q_lora_rank},
      {"kv_lora_rank", c.kv_lora_rank}, {"qk_nope_head_dim", c.qk_nope_head_dim},
      {"qk_rope_head_dim", c.qk_rope_head_dim}, {"v_head_dim", c.v_head_dim},
      {"num_attention_heads", c.num_attention_heads}, {"max_position_embeddings", c.max_position_embeddings},
      {"n_group", c.n_group}, {"topk_group", c.topk_group}, {"moe_layer_freq", c.moe_layer_freq}};
  for (auto& [name, v] : dims)
    if (auto m = positive(name, v); !m.empty()) return bad(m);
  // Keep every tensor size and index product far inside int64 and size_t.
  const int64_t kMaxDim = int64_t(1) << 24;
  for (auto& [name, v] : dims)
    if (v > kMaxDim) return bad(std::string("field '") + name + "' = " + std::to_string(v) + " is implausibly large");
  if (c.n_routed_experts < 0 || c.n_routed_experts > 4096) return bad("n_routed_experts must be in [0, 4096]");
  if (c.n_shared_experts < 0 || c.n_shared_experts > 64) return bad("n_shared_experts must be in [0, 64]");
  if (c.first_k_dense_replace < 0 || c.first_k_dense_replace > c.num_hidden_layers)
    return bad("first_k_dense_replace must be in [0, num_hidden_layers]");
  if (c.qk_rope_head_dim % 2 != 0) return bad("qk_rope_head_dim must be even (RoPE rotates pairs)");
  if (c.hidden_act != "silu") return bad("hidden_act '" + c.hidden_act + "' is not supported (only silu)");
  if (c.attention_bias) return bad("attention_bias = true is not supported by DeepSeek V3 models");
  if (c.tie_word_embeddings) return bad("tie_word_embeddings = true is not supported (DeepSeek V3 keeps lm_head separate)");
  if (!(c.rms_norm_eps > 0.0 && c.rms_norm_eps < 1.0)) return bad("rms_norm_eps must be in (0, 1)");
  if (!(c.rope_theta > 1.0)) return bad("rope_theta must be > 1");
  if (!c.rope_scaling.type.empty() && c.rope_scaling.type != "yarn")
    return bad("rope_scaling.type '" + c.rope_scaling.type + "' is not supported (only yarn)");
  if (c.rope_scaling.type == "yarn") {
    if (!(c.rope_scaling.factor >= 1.0 && c.rope_scaling.factor < 1e6)) return bad("rope_scaling.factor must be >= 1");
    if (c.rope_scaling.original_max_position_embeddings <= 0) return bad("rope_scaling.original_max_position_embeddings must be positive");
    if (!(c.rope_scaling.beta_fast > 0 && c.rope_scaling.beta_slow > 0)) return bad("rope_scaling.beta_fast and beta_slow must be positive");
  }
  if (c.n_routed_experts > 0) {
    if (c.scoring_func != "sigmoid")
      return bad("scoring_func '" + c.scoring_func + "' is not supported (DeepSeek V3 uses sigmoid)");
    if (c.n_routed_experts % c.n_group != 0)
      return bad("n_routed_experts (" + std::to_string(c.n_routed_experts) + ") must be divisible by n_group (" +
                 std::to_string(c.n_group) + ")");
    if (c.topk_group > c.n_group) return bad("topk_group must not exceed n_group");
    const int64_t per_group = c.n_routed_experts / c.n_group;
    if (c.n_group > 1 && per_group < 2) return bad("each expert group needs at least 2 experts (group score = top-2 sum)");
    if (c.num_experts_per_tok <= 0 || c.num_experts_per_tok > c.topk_group * per_group)
      return bad("num_experts_per_tok must be in [1, topk_group * experts per group]");
  }
  if (c.quant.fp8 && (c.quant.block_rows <= 0 || c.quant.block_cols <= 0))
    return bad("quantization_config.weight_block_size must be positive");
  if (c.arch == ModelArch::V32) {
    if (c.index_n_heads <= 0 || c.index_n_heads > 4096) return bad("index_n_heads must be in [1, 4096]");
    if (c.index_head_dim < c.qk_rope_head_dim || c.index_head_dim > 65536)
      return bad("index_head_dim must be at least qk_rope_head_dim (its first dims are rotary)");
    if (c.index_topk <= 0) return bad("index_topk must be positive");
  }
  if (c.bos_token_id < 0 || c.bos_token_id >= c.vocab_size) return bad("bos_token_id is outside the vocabulary");
  if (c.eos_token_id < 0 || c.eos_token_id >= c.vocab_size) return bad("eos_token_id is outside the vocabulary");
  return ok_status();
}

Result<ModelConfig> load_config(const std::filesystem::path& p) {
  std::filesystem::path file = p;
  std::error_code ec;
  if (std::filesystem::is_directory(p, ec)) file = p / "config.json";
  std::ifstream in(file, std::ios::binary);
  if (!in) return make_error(file.string() + ": cannot open (is this a DeepSeek model directory with a config.json?)");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config_json(ss.str(), file.string());
}

std::string config_to_json(const ModelConfig& c) {
  nlohmann::ordered_json j;
  j["architectures"] = {c.arch == ModelArch::V32 ? "DeepseekV32ForCausalLM" : "DeepseekV3ForCausalLM"};
  j["model_type"] = c.model_type;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["moe_intermediate_size"] = c.moe_intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["first_k_dense_replace"] = c.first_k_dense_replace;
  j["moe_layer_freq"] = c.moe_layer_freq;
  j["n_routed_experts"] = c.n_routed_experts;
  j["n_shared_experts"] = c.n_shared_experts;
  j["num_experts_per_tok"] = c.num_experts_per_tok;
  j["n_group"] = c.n_group;
  j["topk_group"] = c.topk_group;
  j["routed_scaling_factor"] = c.routed_scaling_factor;
  j["scoring_func"] = c.scoring_func;
  j["topk_method"] = c.topk_method;
  j["norm_topk_prob"] = c.norm_topk_prob;
  j["q_lora_rank"] = c.q_lora_rank;
  j["kv_lora_rank"] = c.kv_lora_rank;
  j["qk_nope_head_dim"] = c.qk_nope_head_dim;
  j["qk_rope_head_dim"] = c.qk_rope_head_dim;
  j["v_head_dim"] = c.v_head_dim;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["hidden_act"] = c.hidden_act;
  j["attention_bias"] = c.attention_bias;
  j["attention_dropout"] = 0.0;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  j["max_position_embeddings"] = c.max_position_embeddings;
  if (!c.rope_scaling.type.empty()) {
    j["rope_scaling"] = {{"type", c.rope_scaling.type},
                         {"factor", c.rope_scaling.factor},
                         {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings},
                         {"beta_fast", c.rope_scaling.beta_fast},
                         {"beta_slow", c.rope_scaling.beta_slow},
                         {"mscale", c.rope_scaling.mscale},
                         {"mscale_all_dim", c.rope_scaling.mscale_all_dim}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["num_nextn_predict_layers"] = c.num_nextn_predict_layers;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.eos_token_id;
  j["torch_dtype"] = c.torch_dtype;
  j["use_cache"] = true;
  if (c.quant.fp8) {
    nlohmann::ordered_json q;
    q["quant_method"] = "fp8";
    q["fmt"] = "e4m3";
    q["activation_scheme"] = c.quant.activation_scheme.empty() ? "dynamic" : c.quant.activation_scheme;
    q["weight_block_size"] = {c.quant.block_rows, c.quant.block_cols};
    if (!c.quant.scale_fmt.empty()) q["scale_fmt"] = c.quant.scale_fmt;
    j["quantization_config"] = q;
  }
  if (c.arch == ModelArch::V32) {
    j["index_n_heads"] = c.index_n_heads;
    j["index_head_dim"] = c.index_head_dim;
    j["index_topk"] = c.index_topk;
  }
  return j.dump(2) + "\n";
}

// ---------------------------------------------------------------------------------------------
// Presets

namespace {

ModelConfig full_671b(ModelArch arch, bool ue8m0) {
  ModelConfig c;
  c.arch = arch;
  c.model_type = arch == ModelArch::V32 ? "deepseek_v32" : "deepseek_v3";
  c.vocab_size = 129280;
  c.hidden_size = 7168;
  c.intermediate_size = 18432;
  c.moe_intermediate_size = 2048;
  c.num_hidden_layers = 61;
  c.first_k_dense_replace = 3;
  c.moe_layer_freq = 1;
  c.n_routed_experts = 256;
  c.n_shared_experts = 1;
  c.num_experts_per_tok = 8;
  c.n_group = 8;
  c.topk_group = 4;
  c.routed_scaling_factor = 2.5;
  c.q_lora_rank = 1536;
  c.kv_lora_rank = 512;
  c.qk_nope_head_dim = 128;
  c.qk_rope_head_dim = 64;
  c.v_head_dim = 128;
  c.num_attention_heads = 128;
  c.num_key_value_heads = 128;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000;
  c.max_position_embeddings = 163840;
  c.rope_scaling = RopeScaling{"yarn", 40.0, 4096, 32.0, 1.0, 1.0, 1.0};
  c.num_nextn_predict_layers = 1;
  c.quant = QuantizationConfig{true, "dynamic", 128, 128, ue8m0 ? "ue8m0" : ""};
  if (arch == ModelArch::V32) {
    c.index_n_heads = 64;
    c.index_head_dim = 128;
    c.index_topk = 2048;
  }
  return c;
}

// Small synthetic shapes keep the real structure (MLA, group-limited routing, YaRN with the
// real scaling, partial FP8 blocks) at a size the test suite runs in seconds.
ModelConfig synthetic(const std::string& name, ModelArch arch) {
  ModelConfig c = full_671b(arch, arch == ModelArch::V32);
  c.num_nextn_predict_layers = 0;
  if (name == "tiny") {
    c.hidden_size = 64;
    c.intermediate_size = 192;      // 128 + a partial 64-row FP8 block
    c.moe_intermediate_size = 96;     // a multiple of the packed formats' group (32), not of 64
    c.num_hidden_layers = 3;
    c.first_k_dense_replace = 1;
    c.n_routed_experts = 16;
    c.num_experts_per_tok = 4;
    c.n_group = 4;
    c.topk_group = 2;
    c.q_lora_rank = 48;
    c.kv_lora_rank = 32;
    c.qk_nope_head_dim = 16;
    c.qk_rope_head_dim = 16;
    c.v_head_dim = 16;
    c.num_attention_heads = 8;
    c.num_key_value_heads = 8;
    c.max_position_embeddings = 4096;
    if (arch == ModelArch::V32) {
      c.index_n_heads = 4;
      c.index_head_dim = 32;
      c.index_topk = 8;
    }
  } else if (name == "demo") {
    c.hidden_size = 256;
    c.intermediate_size = 768;
    c.moe_intermediate_size = 128;
    c.num_hidden_layers = 4;
    c.first_k_dense_replace = 1;
    c.n_routed_experts = 32;
    c.num_experts_per_tok = 4;
    c.n_group = 4;
    c.topk_group = 2;
    c.q_lora_rank = 128;
    c.kv_lora_rank = 64;
    c.qk_nope_head_dim = 32;
    c.qk_rope_head_dim = 16;
    c.v_head_dim = 32;
    c.num_attention_heads = 8;
    c.num_key_value_heads = 8;
    c.max_position_embeddings = 16384;
    if (arch == ModelArch::V32) {
      c.index_n_heads = 8;
      c.index_head_dim = 64;
      c.index_topk = 64;
    }
  } else {  // "wide": the real expert shape and attention, few layers, all MoE
    c.num_hidden_layers = 2;
    c.first_k_dense_replace = 0;
  }
  return c;
}

}  // namespace

std::vector<std::string> preset_names() {
  return {"deepseek-v3", "deepseek-r1", "deepseek-v3.1", "deepseek-v3.2", "tiny", "demo", "wide"};
}

Result<ModelConfig> preset_config(const std::string& name, std::optional<ModelArch> arch) {
  if (name == "deepseek-v3" || name == "deepseek-r1") return full_671b(arch.value_or(ModelArch::V3), false);
  if (name == "deepseek-v3.1") return full_671b(arch.value_or(ModelArch::V3), true);
  if (name == "deepseek-v3.2") return full_671b(arch.value_or(ModelArch::V32), true);
  if (name == "tiny" || name == "demo" || name == "wide") return synthetic(name, arch.value_or(ModelArch::V3));
  std::string list;
  for (auto& n : preset_names()) list += (list.empty() ? "" : ", ") + n;
  return make_error("unknown preset '" + name + "' (known: " + list + ")");
}

}  // namespace mt
