// `moetier trace`: runs prompts through a model and records which routed experts every token
// chooses (planner/activation_stats.h), for the placement planner and prefetch.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "planner/activation_stats.h"
#include "runtime/engine/engine.h"
#include "tools/moetier/args.h"
#include "tools/moetier/commands.h"
#include "tools/moetier/expert_flags.h"
#include "tools/moetier/progress.h"

namespace mt::cli {

namespace {
const char* kUsage = R"(usage: moetier trace --model DIR --prompts FILE [--out FILE] [-n N] [options]

Runs every prompt through the model (prefill, then N greedy decode steps) and records which
routed experts each token chooses in every MoE layer, and which experts of the next MoE layer
follow them. Writes the statistics as JSON (docs/formats.md) for the placement planner, and
prints how skewed the routing is.

  --model DIR                  checkpoint directory or packed expert store
  --prompts FILE               one prompt per line: plain text, or a JSON object
                               {"prompt": "..."} (a line starting with '{'); blank lines skipped
  --out FILE                   where to write the trace (written atomically)     [trace.json]
  -n, --n-predict N            greedy decode steps after each prompt; every generated
                               token runs through the model and is traced        [16]
  --max-tokens-per-prompt N    keep only the first N tokens of a longer prompt   [no limit]
  --chat                       wrap each prompt in the model's chat format (a user turn)
  --ignore-eos                 keep decoding after the end-of-sentence token
  --ctx N                      KV cache length in tokens     [min(4096, model maximum)]

packed expert stores (moetier convert, make-model --packed):
  --ram-budget SIZE  RAM for routed experts (e.g. 8G); experts beyond it stream from disk
  --cache-policy P   lfru, lfu or lru                                           [lfru]
  --no-prefetch      do not read the next layer's predicted experts ahead
  --pread            use pread instead of io_uring
  --isa NAME         cap the kernels' ISA: scalar, avx2, avx512   [MOETIER_ISA, else the CPU's best]
  --backend NAME     cpu (fast kernels) or reference (the exact fp32 path)             [cpu]
  --gpu on|off       run attention, dense weights and the plan's VRAM experts on the CUDA
                     backend (EXPERIMENTAL: not yet verified on a GPU)               [off]
  --gpu-vram SIZE    VRAM the CUDA backend may use                   [free VRAM less 1 GiB]
  --gpu-cache T      its latent KV cache: bf16, f32 or fp8 (half bf16's VRAM)         [bf16]
  --gpu-graphs on|off  replay decode steps' attention blocks as CUDA graphs           [on]
  --gguf-tiles on|off  a GGUF's Q2_K..Q6_K, Q8_0 matrices as 16-row tiles (AVX2 or AVX-512, fits in RAM) [on]

A prompt longer than the context (after --max-tokens-per-prompt) is an error; decoding stops
early when the context is full or (without --ignore-eos) at the end-of-sentence token.
)";

struct Prompt {
  std::string text;
  int line = 0;
  std::vector<int32_t> ids;
};

// Plain-text or JSONL prompts; errors name the file and line.
Result<std::vector<Prompt>> read_prompts(const std::filesystem::path& file) {
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) return make_error(file.string() + ": is a directory, not a prompts file");
  std::ifstream in(file);
  if (!in) return make_error(file.string() + ": cannot read the prompts file");
  std::vector<Prompt> out;
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const size_t start = line.find_first_not_of(" \t");
    if (start == std::string::npos) continue;
    const std::string where = file.string() + ":" + std::to_string(n);
    if (line[start] != '{') {
      out.push_back({line, n, {}});
      continue;
    }
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      return make_error(where + ": not valid JSON (" + e.what() + "); write {\"prompt\": \"...\"}");
    }
    auto it = j.find("prompt");
    if (it == j.end() || !it->is_string())
      return make_error(where + ": expected {\"prompt\": \"...\"} (a string field \"prompt\")");
    if (it->get_ref<const std::string&>().empty()) return make_error(where + ": the prompt is empty");
    out.push_back({it->get<std::string>(), n, {}});
  }
  if (in.bad()) return make_error(file.string() + ": read error");
  if (out.empty())
    return make_error(file.string() + ": no prompts (write one per line, plain text or {\"prompt\": \"...\"})");
  return out;
}

int32_t argmax(const std::vector<float>& v) {
  return static_cast<int32_t>(std::max_element(v.begin(), v.end()) - v.begin());
}

std::string model_name(const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::path p = std::filesystem::weakly_canonical(dir, ec);
  if (ec) p = dir;
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

// Per layer: the share of all choices taken by the busiest 10% of experts, and the top five.
void print_summary(const planner::ActivationStats& s) {
  const auto E = static_cast<size_t>(s.n_routed_experts);
  const size_t top = std::max<size_t>(1, (E + 9) / 10);
  std::printf("routing skew: share of the %llu choices per layer taken by the busiest %zu of %zu experts "
              "(uniform routing: %.1f%%)\n",
              static_cast<unsigned long long>(s.tokens * static_cast<uint64_t>(s.top_k)), top, E,
              100.0 * static_cast<double>(top) / static_cast<double>(E));
  for (const planner::LayerActivations& la : s.layers) {
    std::vector<int32_t> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return la.counts[a] > la.counts[b]; });
    uint64_t busiest = 0, total = 0;
    for (size_t i = 0; i < E; ++i) {
      total += la.counts[order[i]];
      if (i < top) busiest += la.counts[order[i]];
    }
    std::printf("  layer %3d: %5.1f%%   most frequent:", la.layer, total ? 100.0 * busiest / total : 0.0);
    for (size_t i = 0; i < std::min<size_t>(5, E); ++i)
      std::printf(" %d (%.2f)", order[i], s.frequency(la.layer, order[i]));
    std::printf("\n");
  }
  std::printf("(in parentheses: the fraction of tokens that choose the expert; each token chooses %lld)\n",
              static_cast<long long>(s.top_k));
  const double agree = s.prediction_agreement();
  if (agree >= 0)
    std::printf("prefetch prediction (each MoE layer routed on the previous layer's input): %.1f%% of predicted "
                "choices were made; `moetier plan` takes it as the prefetch's precision and recall\n",
                100.0 * agree);
}

}  // namespace

int cmd_trace(int argc, char** argv) {
  std::vector<FlagSpec> flags = {{"model"}, {"prompts"}, {"out"}, {"n-predict", true, 'n'}, {"max-tokens-per-prompt"},
                                 {"chat", false}, {"ignore-eos", false}, {"ctx"}, {"help", false}};
  add_expert_streaming_flags(flags);
  auto parsed = Args::parse(argc, argv, flags, "trace");
  if (!parsed) return std::fprintf(stderr, "error: %s\n", parsed.error().c_str()), 2;
  const Args& a = *parsed;
  if (a.has("help")) return std::fputs(kUsage, stdout), 0;
  auto fail = [](const std::string& m) { std::fprintf(stderr, "error: %s\n", m.c_str()); return 1; };
  if (!a.has("model")) return fail("trace needs --model DIR (see --help)");
  if (!a.has("prompts")) return fail("trace needs --prompts FILE (see --help)");
  if (!a.positional().empty()) return fail("trace: unexpected argument '" + a.positional()[0] + "' (see --help)");

  auto n_predict = a.get_int("n-predict", 16, 0, 1 << 24);
  auto max_prompt = a.get_int("max-tokens-per-prompt", 0, 1, 1 << 30);
  auto ctx = a.get_int("ctx", 0, 1, 1 << 24);
  for (auto* r : {&n_predict, &max_prompt, &ctx})
    if (!*r) return fail(r->error());
  const std::filesystem::path out = a.get_or("out", "trace.json");
  {
    // Fail now rather than after hours of tracing.
    const std::filesystem::path parent = out.parent_path().empty() ? "." : out.parent_path();
    std::error_code ec;
    if (!std::filesystem::is_directory(parent, ec))
      return fail("--out " + out.string() + ": the directory " + parent.string() + " does not exist");
    if (std::filesystem::is_directory(out, ec)) return fail("--out " + out.string() + ": is a directory");
  }

  auto prompts = read_prompts(*a.get("prompts"));
  if (!prompts) return fail(prompts.error());

  auto engine = open_engine_from_flags(a, *ctx);
  if (!engine) return fail(engine.error());
  Engine& e = **engine;
  auto tok_r = e.tokenizer();
  if (!tok_r) return fail(tok_r.error());
  const Tokenizer& tok = **tok_r;

  // Tokenise everything first, so that a bad prompt stops the run before any tracing.
  PromptOptions po;
  po.chat = a.has("chat");
  int64_t planned = 0;
  for (Prompt& p : *prompts) {
    const std::string where = *a.get("prompts") + ":" + std::to_string(p.line);
    auto ids = build_prompt(tok, p.text, po);
    if (!ids) return fail(where + ": " + ids.error());
    if (*max_prompt > 0 && static_cast<int64_t>(ids->size()) > *max_prompt) ids->resize(static_cast<size_t>(*max_prompt));
    const auto n = static_cast<int64_t>(ids->size());
    if (n > e.context())
      return fail(where + ": the prompt is " + std::to_string(n) + " tokens, longer than the context of " +
                  std::to_string(e.context()) + " tokens (raise --ctx or pass --max-tokens-per-prompt)");
    p.ids = std::move(*ids);
    planned += n + std::min(*n_predict, e.context() - n);
  }

  planner::ActivationRecorder rec(e.config(), model_name(*a.get("model")));
  e.set_routing_observer([&rec](int64_t layer, const int32_t* experts, int64_t n, int64_t k) {
    rec.record(layer, experts, n, k);
  });
  e.set_prediction_observer([&rec](int64_t layer, const int32_t* experts, int64_t n, int64_t k) {
    rec.record_prediction(layer, experts, n, k);
  });

  const auto eos = static_cast<int32_t>(e.config().eos_token_id);
  int64_t prompt_tokens = 0, generated = 0;
  std::vector<float> logits;
  const auto t0 = std::chrono::steady_clock::now();
  {
    ProgressBar bar("tracing " + std::to_string(prompts->size()) + " prompts", planned, "tokens");
    for (const Prompt& p : *prompts) {
      e.reset();
      const auto n = static_cast<int64_t>(p.ids.size());
      const int64_t budget = std::min(*n_predict, e.context() - n);
      if (Status st = e.eval(p.ids, false, logits); !st) return fail(*a.get("prompts") + ":" + std::to_string(p.line) + ": " + st.error());
      prompt_tokens += n;
      bar.advance(n);
      int64_t steps = 0;
      for (; steps < budget; ++steps) {
        const int32_t next = argmax(logits);
        if ((next == eos || next == tok.eos_id()) && !a.has("ignore-eos")) break;
        if (Status st = e.eval(std::span<const int32_t>(&next, 1), false, logits); !st) return fail(st.error());
        bar.advance(1);
      }
      generated += steps;
      bar.advance(budget - steps);  // stopped early: the bar still reaches the end
    }
  }
  e.set_routing_observer(nullptr);
  const double secs = seconds_since(t0);

  const planner::ActivationStats& s = rec.stats();
  if (Status st = planner::save_activations(out, s); !st) return fail(st.error());
  std::printf("traced %llu tokens (%zu prompts: %lld prompt tokens, %lld generated) in %.1f s (%.1f tokens/s); wrote %s\n",
              static_cast<unsigned long long>(s.tokens), prompts->size(), static_cast<long long>(prompt_tokens),
              static_cast<long long>(generated), secs, static_cast<double>(s.tokens) / std::max(secs, 1e-9),
              out.string().c_str());
  print_summary(s);
  return 0;
}

}  // namespace mt::cli
