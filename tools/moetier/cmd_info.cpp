#include <cstdio>

#include "planner/model_size.h"
#include "runtime/config/model_config.h"
#include "runtime/engine/engine.h"
#include "tools/moetier/args.h"
#include "tools/moetier/commands.h"
#include "tools/moetier/progress.h"

namespace mt::cli {

namespace {
const char* kUsage = R"(usage: moetier info (--model DIR | --preset NAME [--arch v3|v3.2])

Prints a model's configuration and the size of each component (parameters and bytes in the
FP8 checkpoint format), computed from config.json alone: no weights are read.

  --model PATH    a checkpoint directory (only config.json is read), packed store or GGUF file
  --preset NAME   deepseek-v3, deepseek-r1, deepseek-v3.1, deepseek-v3.2, tiny, demo, wide
  --arch ARCH     v3 or v3.2 (for the synthetic presets)
)";

void row(const char* name, const planner::Component& c, int64_t count = 1) {
  std::printf("  %-34s %8lld x %16lld params %12s\n", name, static_cast<long long>(count),
              static_cast<long long>(c.params), format_bytes(static_cast<double>(c.fp8_bytes)).c_str());
}
}  // namespace

int cmd_info(int argc, char** argv) {
  auto parsed = Args::parse(argc, argv, {{"model"}, {"preset"}, {"arch"}, {"help", false}}, "info");
  if (!parsed) return std::fprintf(stderr, "error: %s\n", parsed.error().c_str()), 2;
  const Args& a = *parsed;
  if (a.has("help")) return std::fputs(kUsage, stdout), 0;
  auto fail = [](const std::string& m) { std::fprintf(stderr, "error: %s\n", m.c_str()); return 1; };
  if (a.has("model") == a.has("preset")) return fail("info needs exactly one of --model or --preset");
  std::optional<ModelArch> arch;
  if (auto s = a.get("arch")) {
    if (*s == "v3") arch = ModelArch::V3;
    else if (*s == "v3.2") arch = ModelArch::V32;
    else return fail("--arch must be v3 or v3.2");
  }
  auto cfg = a.has("model") ? peek_model_config(*a.get("model")) : preset_config(*a.get("preset"), arch);
  if (!cfg) return fail(cfg.error());
  const ModelConfig& c = *cfg;
  const planner::ModelSizes s = planner::compute_model_sizes(c);
  std::printf("%s: %lld layers (%lld dense, %lld MoE), hidden %lld, %lld heads, vocab %lld\n", c.model_type.c_str(),
              static_cast<long long>(c.num_hidden_layers), static_cast<long long>(s.dense_layers),
              static_cast<long long>(s.moe_layers), static_cast<long long>(c.hidden_size),
              static_cast<long long>(c.num_attention_heads), static_cast<long long>(c.vocab_size));
  std::printf("experts: %lld routed (width %lld, top-%lld, %lld groups keep %lld) + %lld shared\n",
              static_cast<long long>(c.n_routed_experts), static_cast<long long>(c.moe_intermediate_size),
              static_cast<long long>(c.num_experts_per_tok), static_cast<long long>(c.n_group),
              static_cast<long long>(c.topk_group), static_cast<long long>(c.n_shared_experts));
  if (c.arch == ModelArch::V32)
    std::printf("sparse attention: indexer %lld heads x %lld, top-%lld tokens\n", static_cast<long long>(c.index_n_heads),
                static_cast<long long>(c.index_head_dim), static_cast<long long>(c.index_topk));
  std::printf("components (FP8 checkpoint bytes):\n");
  row("MLA attention / layer", s.attention, c.num_hidden_layers);
  if (c.arch == ModelArch::V32) row("indexer / layer", s.indexer, c.num_hidden_layers);
  row("dense FFN / dense layer", s.dense_ffn, s.dense_layers);
  row("routed expert", s.expert, s.moe_layers * c.n_routed_experts);
  row("shared expert / MoE layer", s.shared_expert, s.moe_layers);
  row("router / MoE layer", s.router, s.moe_layers);
  row("embedding", s.embedding);
  row("lm_head", s.lm_head);
  std::printf("main model: %lld params, %s; active per token: %lld params\n", static_cast<long long>(s.main_model.params),
              format_bytes(static_cast<double>(s.main_model.fp8_bytes)).c_str(), static_cast<long long>(s.active_params));
  if (c.num_nextn_predict_layers > 0)
    std::printf("MTP module (not run): %lld params, %s\n", static_cast<long long>(s.mtp_module.params),
                format_bytes(static_cast<double>(s.mtp_module.fp8_bytes)).c_str());
  return 0;
}

}  // namespace mt::cli
