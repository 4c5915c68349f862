#include <cstdio>

#include "runtime/engine/engine.h"
#include "tools/moetier/args.h"
#include "tools/moetier/commands.h"
#include "tools/moetier/expert_flags.h"
#include "tools/moetier/npy.h"

namespace mt::cli {

namespace {
const char* kUsage = R"(usage: moetier logits --model DIR (--ids 0,1,2,... | --prompt TEXT) --out FILE.npy [--chunk N]

Writes the float32 logits of every position as a NumPy array [n_positions, vocab]; row i is
the prediction after token i. Use it to compare engines and quantisations on the same weights.

  --model PATH     checkpoint directory (config.json + safetensors), packed store, or GGUF file
  --ids LIST       comma-separated token ids, used as given (no BOS added)
  --prompt TEXT    text, tokenised with the model's tokenizer (BOS added as the tokenizer says)
  --out FILE       output .npy (written to FILE.tmp, then renamed)
  --chunk N        feed the tokens N at a time through the KV cache; 1 runs every token
                   through the decode path                             [all at once]
  --ram-budget SIZE, --cache-policy P, --no-prefetch, --pread, --isa NAME, --backend cpu|reference,
  --gpu on|off, --gpu-vram SIZE, --gpu-cache bf16|f32|fp8, --gpu-graphs on|off, --gguf-tiles on|off (as for generate)
                   expert streaming options for packed stores (as for generate)
)";
}  // namespace

int cmd_logits(int argc, char** argv) {
  std::vector<FlagSpec> flags = {{"model"}, {"ids"}, {"prompt"}, {"out"}, {"chunk"}, {"help", false}};
  add_expert_streaming_flags(flags);
  auto parsed = Args::parse(argc, argv, flags, "logits");
  if (!parsed) return std::fprintf(stderr, "error: %s\n", parsed.error().c_str()), 2;
  const Args& a = *parsed;
  if (a.has("help")) return std::fputs(kUsage, stdout), 0;
  auto fail = [](const std::string& m) { std::fprintf(stderr, "error: %s\n", m.c_str()); return 1; };
  if (!a.has("model") || !a.has("out")) return fail("logits needs --model and --out (see --help)");
  if (a.has("ids") == a.has("prompt")) return fail("logits needs exactly one of --ids or --prompt");

  std::vector<int32_t> ids;
  if (a.has("ids")) {
    auto r = parse_id_list(*a.get("ids"));
    if (!r) return fail(r.error());
    ids = *r;
  }
  auto chunk = a.get_int("chunk", 0, 1, INT32_MAX);
  if (!chunk) return fail(chunk.error());

  if (a.has("prompt")) {
    auto tok = load_model_tokenizer(*a.get("model"));
    if (!tok) return fail(tok.error());
    auto r = build_prompt(*tok, *a.get("prompt"), {});
    if (!r) return fail(r.error());
    ids = *r;
  }
  if (ids.empty()) return fail("no tokens given (--ids is empty)");
  auto cfg = peek_model_config(*a.get("model"));
  if (!cfg) return fail(cfg.error());
  if (static_cast<int64_t>(ids.size()) > cfg->max_position_embeddings)
    return fail("the input is " + std::to_string(ids.size()) + " tokens, longer than the model's context of " +
                std::to_string(cfg->max_position_embeddings) + " (max_position_embeddings)");
  // The cache holds exactly these positions.
  auto engine = open_engine_from_flags(a, static_cast<int64_t>(ids.size()), /*show_progress=*/false);
  if (!engine) return fail(engine.error());
  Engine& e = **engine;

  const int64_t n = static_cast<int64_t>(ids.size()), V = e.config().vocab_size;
  const int64_t step = *chunk > 0 ? *chunk : n;
  std::vector<float> all(static_cast<size_t>(n * V)), part;
  for (int64_t i = 0; i < n; i += step) {
    const int64_t m = std::min(step, n - i);
    Status st = e.eval(std::span<const int32_t>(ids.data() + i, static_cast<size_t>(m)), true, part);
    if (!st) return fail(st.error());
    std::copy(part.begin(), part.end(), all.begin() + i * V);
  }
  Status st = write_npy_f32(*a.get("out"), all.data(), {n, V});
  if (!st) return fail(st.error());
  std::fprintf(stderr, "wrote %s: [%lld, %lld] float32\n", a.get("out")->c_str(), static_cast<long long>(n),
               static_cast<long long>(V));
  return 0;
}

}  // namespace mt::cli
