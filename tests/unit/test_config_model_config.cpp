#include <catch2/catch.hpp>

#include <cmath>
#include <nlohmann/json.hpp>

#include "runtime/config/model_config.h"

using namespace mt;

namespace {
std::string v3_json() { return config_to_json(*preset_config("deepseek-v3")); }
std::string with(const std::string& key, const nlohmann::json& value) {
  auto j = nlohmann::json::parse(v3_json());
  if (value.is_null() && key.rfind("-", 0) == 0) j.erase(key.substr(1));
  else j[key] = value;
  return j.dump();
}
}  // namespace

TEST_CASE("671B presets carry the published DeepSeek values", "[config]") {
  auto v3 = preset_config("deepseek-v3");
  REQUIRE(v3.ok());
  CHECK(v3->hidden_size == 7168);
  CHECK(v3->num_hidden_layers == 61);
  CHECK(v3->n_routed_experts == 256);
  CHECK(v3->quant.scale_fmt.empty());
  // Spec section 3.4: tau = 192^-1/2 * (0.1 ln 40 + 1)^2 = 0.13523378
  CHECK(std::fabs(v3->softmax_scale() - 0.13523378) < 1e-7);
  auto v31 = preset_config("deepseek-v3.1");
  REQUIRE(v31.ok());
  CHECK(v31->quant.scale_fmt == "ue8m0");
  auto v32 = preset_config("deepseek-v3.2");
  REQUIRE(v32.ok());
  CHECK(v32->arch == ModelArch::V32);
  CHECK(v32->model_type == "deepseek_v32");
  CHECK(v32->index_n_heads == 64);
  CHECK(v32->index_head_dim == 128);
  CHECK(v32->index_topk == 2048);
  CHECK_FALSE(preset_config("deepseek-v9").ok());
}

TEST_CASE("config.json round-trips for every preset and arch", "[config]") {
  for (const auto& name : preset_names()) {
    for (auto arch : {ModelArch::V3, ModelArch::V32}) {
      auto c = preset_config(name, arch);
      REQUIRE(c.ok());
      auto back = parse_config_json(config_to_json(*c), name);
      INFO(name << (back.ok() ? "" : back.error()));
      REQUIRE(back.ok());
      CHECK(back->arch == c->arch);
      CHECK(back->hidden_size == c->hidden_size);
      CHECK(back->rope_scaling.factor == c->rope_scaling.factor);
      CHECK(back->rope_scaling.original_max_position_embeddings == c->rope_scaling.original_max_position_embeddings);
      CHECK(back->quant.fp8 == c->quant.fp8);
      CHECK(back->quant.scale_fmt == c->quant.scale_fmt);
      CHECK(back->index_topk == c->index_topk);
      CHECK(back->softmax_scale() == Approx(c->softmax_scale()).epsilon(1e-12));
    }
  }
}

TEST_CASE("a real DeepSeek V3.2 config.json parses", "[config]") {
  // Field set and values as published in the HF config of DeepSeek-V3.2 (spec section 1).
  const char* text = R"({
    "architectures": ["DeepseekV32ForCausalLM"], "model_type": "deepseek_v32",
    "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 0, "eos_token_id": 1,
    "ep_size": 1, "first_k_dense_replace": 3, "hidden_act": "silu", "hidden_size": 7168,
    "index_head_dim": 128, "index_n_heads": 64, "index_topk": 2048, "initializer_range": 0.02,
    "intermediate_size": 18432, "kv_lora_rank": 512, "max_position_embeddings": 163840,
    "moe_intermediate_size": 2048, "moe_layer_freq": 1, "n_group": 8, "n_routed_experts": 256,
    "n_shared_experts": 1, "norm_topk_prob": true, "num_attention_heads": 128,
    "num_experts_per_tok": 8, "num_hidden_layers": 61, "num_key_value_heads": 128,
    "num_nextn_predict_layers": 1, "q_lora_rank": 1536, "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                            "scale_fmt": "ue8m0", "weight_block_size": [128, 128]},
    "rms_norm_eps": 1e-06, "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40,
      "mscale": 1.0, "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096, "type": "yarn"},
    "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid",
    "tie_word_embeddings": false, "topk_group": 4, "topk_method": "noaux_tc",
    "torch_dtype": "bfloat16", "transformers_version": "4.44.2", "use_cache": true,
    "v_head_dim": 128, "vocab_size": 129280})";
  auto c = parse_config_json(text, "config.json");
  REQUIRE(c.ok());
  CHECK(c->arch == ModelArch::V32);
  CHECK(c->quant.fp8);
  CHECK(c->quant.block_rows == 128);
  CHECK(c->quant.scale_fmt == "ue8m0");
  CHECK(c->rope_scaling.type == "yarn");
  CHECK(c->rope_scaling.factor == 40.0);
  CHECK(c->index_topk == 2048);
  CHECK(c->is_moe_layer(3));
  CHECK_FALSE(c->is_moe_layer(2));
}

TEST_CASE("bad config.json gives one error naming the field and the file", "[config]") {
  struct Case {
    std::string text, must_contain;
  };
  const Case cases[] = {
      {"{not json", "not valid JSON"},
      {"[1,2]", "JSON object"},
      {with("model_type", "llama"), "model_type 'llama'"},
      {with("-hidden_size", nullptr), "hidden_size"},
      {with("hidden_size", "big"), "hidden_size"},
      {with("hidden_size", -5), "hidden_size"},
      {with("hidden_size", 1.5), "hidden_size"},
      {with("n_group", 7), "n_group"},
      {with("topk_group", 9), "topk_group"},
      {with("num_experts_per_tok", 300), "num_experts_per_tok"},
      {with("qk_rope_head_dim", 63), "qk_rope_head_dim"},
      {with("rope_scaling", {{"type", "linear"}, {"factor", 2}}), "rope_scaling.type"},
      {with("rope_scaling", 5), "rope_scaling"},
      {with("quantization_config", {{"quant_method", "gptq"}}), "quant_method"},
      {with("scoring_func", "softmax"), "scoring_func"},
      {with("first_k_dense_replace", 99), "first_k_dense_replace"},
      {with("vocab_size", 0), "vocab_size"},
      {with("hidden_size", int64_t(1) << 40), "hidden_size"},
      {with("model_type", "deepseek_v32"), "index_n_heads"},
      // Found by libFuzzer + UBSan: a float far outside int64 reached a float->int cast.
      {with("rope_scaling", {{"type", "yarn"}, {"original_max_position_embeddings", 1e30}}),
       "field 'rope_scaling.original_max_position_embeddings' is 1e+30; it must be an integer in [1, 2147483647]"},
      {with("rope_scaling", {{"type", "yarn"}, {"original_max_position_embeddings", -3}}),
       "rope_scaling.original_max_position_embeddings"},
      {with("hidden_size", 1e300), "field 'hidden_size' is 1e+300; it must be an integer in [0, 2147483647]"},
      {with("hidden_size", -1e300), "hidden_size"},
      {with("rope_theta", 1e308), "field 'rope_theta' is 1e+308; it must be a finite number"},
      {with("bos_token_id", 5e9), "bos_token_id"},
      {with("quantization_config", {{"quant_method", "fp8"}, {"weight_block_size", {1e30, 128}}}),
       "weight_block_size[0]"},
  };
  for (const auto& c : cases) {
    auto r = parse_config_json(c.text, "/models/x/config.json");
    INFO(c.text.substr(0, 80));
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error(), Catch::Contains("/models/x/config.json"));
    CHECK_THAT(r.error(), Catch::Contains(c.must_contain));
  }
}

TEST_CASE("load_config names a missing file", "[config]") {
  auto r = load_config("/nonexistent/dir");
  REQUIRE_FALSE(r.ok());
  CHECK_THAT(r.error(), Catch::Contains("/nonexistent/dir"));
}
