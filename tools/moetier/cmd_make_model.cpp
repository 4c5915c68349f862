#include <cstdio>
#include <filesystem>

#include "tools/moetier/args.h"
#include "tools/moetier/commands.h"
#include "tools/moetier/progress.h"
#include "tools/moetier/synthetic_model.h"

namespace mt::cli {

namespace {
const char* kUsage = R"(usage: moetier make-model --preset NAME --out DIR [options]

Writes a synthetic DeepSeek checkpoint in exactly the Hugging Face layout (config.json,
sharded safetensors + model.safetensors.index.json, tokenizer files). Weights are random,
deterministic by seed, scaled so activations stay sane through every layer.

  --preset NAME     tiny (tens of MB, for tests), demo (the README demo), wide (the real
                    expert shape: hidden 7168, 256 experts of width 2048, top-8, groups 8/4),
                    or a full config: deepseek-v3, deepseek-r1, deepseek-v3.1, deepseek-v3.2
  --arch v3|v3.2    v3.2 adds DeepSeek Sparse Attention (the lightning indexer)   [v3]
  --out DIR         output directory (written as DIR.partial, renamed when complete)
  --seed N          random seed                                                   [0]
  --layers N        number of layers (overrides the preset)
  --experts N       routed experts per MoE layer (must divide by the expert groups)
  --dtype fp8|bf16  FP8 e4m3 with 128x128 block scales as DeepSeek ships, or BF16  [fp8]
  --shard-mb N      start a new shard file past N MB; 0 writes one model.safetensors [4000]
  --tokenizer PATH  tokenizer directory or tokenizer.json   [the bundled DeepSeek V3 tokenizer]
  --packed FMT      write a packed expert store (q4, q8 or bf16 experts) instead of a HF
                    checkpoint: the same weights as make-model + moetier convert, without
                    the checkpoint on disk (for benchmarks at the real expert shape)
  --group N         quantisation group of --packed q4/q8                          [32]
  --dense FMT       with --packed: the dense weights as q8, q4 or bf16 (convert --dense) [q8]
  --force           replace DIR if it exists
)";
}  // namespace

int cmd_make_model(int argc, char** argv) {
  auto parsed = Args::parse(argc, argv,
                            {{"preset"}, {"arch"}, {"out"}, {"seed"}, {"layers"}, {"experts"}, {"dtype"},
                             {"shard-mb"}, {"tokenizer"}, {"packed"}, {"group"}, {"dense"}, {"force", false}, {"help", false}},
                            "make-model");
  if (!parsed) return std::fprintf(stderr, "error: %s\n", parsed.error().c_str()), 2;
  const Args& a = *parsed;
  if (a.has("help")) return std::fputs(kUsage, stdout), 0;
  auto fail = [](const std::string& m) { std::fprintf(stderr, "error: %s\n", m.c_str()); return 1; };
  if (!a.has("preset") || !a.has("out")) return fail("make-model needs --preset and --out (see --help)");

  const std::string arch_s = a.get_or("arch", "");
  std::optional<ModelArch> arch;
  if (arch_s == "v3") arch = ModelArch::V3;
  else if (arch_s == "v3.2") arch = ModelArch::V32;
  else if (!arch_s.empty()) return fail("--arch must be v3 or v3.2, got '" + arch_s + "'");
  auto cfg = preset_config(*a.get("preset"), arch);
  if (!cfg) return fail(cfg.error());

  SyntheticModelOptions o;
  o.config = *cfg;
  auto layers = a.get_int("layers", o.config.num_hidden_layers, 1, 1000);
  auto experts = a.get_int("experts", o.config.n_routed_experts, 1, 4096);
  auto seed = a.get_int("seed", 0, 0, INT64_MAX);
  auto shard_mb = a.get_int("shard-mb", 4000, 0, 1 << 30);
  for (auto* r : {&layers, &experts, &seed, &shard_mb})
    if (!*r) return fail(r->error());
  o.config.num_hidden_layers = *layers;
  o.config.first_k_dense_replace = std::min(o.config.first_k_dense_replace, *layers);
  if (a.has("experts")) {
    o.config.n_routed_experts = *experts;
    o.config.num_experts_per_tok = std::min(o.config.num_experts_per_tok, *experts);
  }
  o.seed = static_cast<uint64_t>(*seed);
  o.shard_bytes = *shard_mb * 1'000'000;
  const std::string dtype = a.get_or("dtype", "fp8");
  if (dtype != "fp8" && dtype != "bf16") return fail("--dtype must be fp8 or bf16, got '" + dtype + "'");
  o.fp8 = dtype == "fp8";
  o.tokenizer = a.get_or("tokenizer", std::string(MOETIER_DATA_DIR) + "/tokenizer-deepseek-v3");
  o.out = *a.get("out");
  o.overwrite = a.has("force");
  if (auto p = a.get("packed")) {
    o.packed = true;
    if (!expert_quant_from_name(*p, o.packed_quant)) return fail("--packed must be q4, q8 or bf16, got '" + *p + "'");
    auto group = a.get_int("group", 32, 1, 1 << 20);
    if (!group) return fail(group.error());
    o.packed_group = *group;
    o.packed_dense = a.get_or("dense", "q8");
    if (o.packed_dense != "q8" && o.packed_dense != "q4" && o.packed_dense != "bf16")
      return fail("--dense must be q8, q4 or bf16, got '" + o.packed_dense + "'");
  } else if (a.has("dense")) {
    return fail("--dense goes with --packed (a HF checkpoint keeps its tensors as the --dtype says)");
  }

  const int64_t total = synthetic_model_bytes(o);
  std::error_code ec;
  const auto parent = std::filesystem::absolute(o.out, ec).parent_path();
  if (auto space = std::filesystem::space(parent, ec); !ec && static_cast<int64_t>(space.available) < total)
    return fail("make-model: " + format_bytes(static_cast<double>(total)) + " needed but only " +
                format_bytes(static_cast<double>(space.available)) + " free on the disk holding " + parent.string());
  std::fprintf(stderr, "make-model: %s %s, %lld layers, %lld experts, %s weights, %s\n", a.get("preset")->c_str(),
               o.config.model_type.c_str(), static_cast<long long>(o.config.num_hidden_layers),
               static_cast<long long>(o.config.n_routed_experts), dtype.c_str(),
               format_bytes(static_cast<double>(total)).c_str());
  ProgressBar bar("writing", total);
  Status st = write_synthetic_model(o, [&](int64_t b) { bar.advance(b); });
  bar.finish();
  if (!st) return fail(st.error());
  std::printf("wrote %s\n", o.out.c_str());
  return 0;
}

}  // namespace mt::cli
