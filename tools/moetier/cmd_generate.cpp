#include <chrono>
#include <cstdio>

#include "runtime/engine/engine.h"
#include "runtime/sampling/sampler.h"
#include "tools/moetier/args.h"
#include "tools/moetier/progress.h"
#include "tools/moetier/commands.h"
#include "tools/moetier/expert_flags.h"

namespace mt::cli {

namespace {
const char* kUsage = R"(usage: moetier generate --model DIR --prompt TEXT [options]

Generates text, streaming it as it is produced, and ends with prefill and decode tokens/s.

  --model PATH       checkpoint directory (config.json, safetensors, tokenizer.json), packed
                     store, or llama.cpp GGUF file (any part of a split one; docs/gguf.md)
  --prompt TEXT      the prompt
  -n, --n-predict N  tokens to generate at most                               [64]
  --chat             wrap the prompt in the model's chat format (as a user turn)
  --system TEXT      system prompt (with --chat)
  --think            V3.1/V3.2 thinking mode (with --chat)
  --temperature T    0 = greedy                                               [0]
  --top-k K          sample among the K most likely tokens; 0 = all           [0]
  --top-p P          nucleus sampling: smallest set with probability >= P     [1]
  --seed N           sampling seed                                            [0]
  --ctx N            KV cache length in tokens                  [min(4096, model maximum)]
  --ignore-eos       keep generating after the end-of-sentence token

packed expert stores (moetier convert, make-model --packed):
  --ram-budget SIZE  RAM for routed experts (e.g. 8G); experts beyond it stream from disk
                     through an LRU/LFU-style cache with next-layer prefetch    [all in RAM]
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
)";

}  // namespace

int cmd_generate(int argc, char** argv) {
  std::vector<FlagSpec> flags = {{"model"}, {"prompt"}, {"n-predict", true, 'n'}, {"chat", false}, {"system"},
                                 {"think", false}, {"temperature"}, {"top-k"}, {"top-p"}, {"seed"}, {"ctx"},
                                 {"ignore-eos", false}, {"help", false}};
  add_expert_streaming_flags(flags);
  auto parsed = Args::parse(argc, argv, flags, "generate");
  if (!parsed) return std::fprintf(stderr, "error: %s\n", parsed.error().c_str()), 2;
  const Args& a = *parsed;
  if (a.has("help")) return std::fputs(kUsage, stdout), 0;
  auto fail = [](const std::string& m) { std::fprintf(stderr, "error: %s\n", m.c_str()); return 1; };
  if (!a.has("model")) return fail("generate needs --model DIR (see --help)");
  if (!a.has("prompt")) return fail("generate needs --prompt TEXT (see --help)");

  auto n_predict = a.get_int("n-predict", 64, 0, 1 << 24);
  auto top_k = a.get_int("top-k", 0, 0, 1 << 30);
  auto seed = a.get_int("seed", 0, 0, INT64_MAX);
  auto ctx = a.get_int("ctx", 0, 1, 1 << 24);
  auto temperature = a.get_double("temperature", 0.0, 0.0, 100.0);
  auto top_p = a.get_double("top-p", 1.0, 0.0, 1.0);
  for (auto* r : {&n_predict, &top_k, &seed, &ctx})
    if (!*r) return fail(r->error());
  for (auto* r : {&temperature, &top_p})
    if (!*r) return fail(r->error());
  if (*top_p <= 0.0) return fail("--top-p must be greater than 0");

  auto engine = open_engine_from_flags(a, *ctx);
  if (!engine) return fail(engine.error());
  Engine& e = **engine;
  auto tok_r = e.tokenizer();
  if (!tok_r) return fail(tok_r.error());
  const Tokenizer& tok = **tok_r;

  PromptOptions po;
  po.chat = a.has("chat");
  po.thinking = a.has("think");
  po.system = a.get_or("system", "");
  if ((po.thinking || !po.system.empty()) && !po.chat) return fail("--think and --system need --chat");
  auto prompt = build_prompt(tok, *a.get("prompt"), po);
  if (!prompt) return fail(prompt.error());
  const auto n_prompt = static_cast<int64_t>(prompt->size());
  if (n_prompt > e.context())
    return fail("the prompt is " + std::to_string(n_prompt) + " tokens, longer than the context of " +
                std::to_string(e.context()) + " tokens (raise --ctx, up to the model's " +
                std::to_string(e.config().max_position_embeddings) + ")");
  int64_t budget = *n_predict;
  if (n_prompt + budget > e.context()) {
    budget = e.context() - n_prompt;
    std::fprintf(stderr, "moetier: the context holds only %lld more tokens; generating at most that many\n",
                 static_cast<long long>(budget));
  }

  std::printf("%s", a.get("prompt")->c_str());
  std::fflush(stdout);

  std::vector<float> logits;
  const auto t0 = std::chrono::steady_clock::now();
  Status st = e.eval(*prompt, false, logits);
  if (!st) return fail(st.error());
  const double prefill_s = seconds_since(t0);

  Sampler sampler(SamplingParams{static_cast<float>(*temperature), static_cast<int>(*top_k),
                                 static_cast<float>(*top_p), static_cast<uint64_t>(*seed)});
  TextStream stream(tok);
  const int64_t V = e.config().vocab_size;
  const auto eos = static_cast<int32_t>(e.config().eos_token_id);
  int64_t generated = 0;
  const auto t1 = std::chrono::steady_clock::now();
  int64_t decode_steps = 0;
  while (generated < budget) {
    const int32_t next = sampler.sample(logits.data(), V);
    ++generated;
    if ((next == eos || next == tok.eos_id()) && !a.has("ignore-eos")) break;
    std::string piece = stream.push(next);
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    if (generated == budget) break;
    st = e.eval(std::span<const int32_t>(&next, 1), false, logits);
    if (!st) return fail(st.error());
    ++decode_steps;
  }
  const std::string rest = stream.flush();
  std::fwrite(rest.data(), 1, rest.size(), stdout);
  std::printf("\n");
  std::fflush(stdout);
  const double decode_s = seconds_since(t1);
  std::fprintf(stderr, "prefill: %lld tokens in %.3f s (%.1f tokens/s); decode: %lld tokens in %.3f s (%.1f tokens/s)\n",
               static_cast<long long>(n_prompt), prefill_s, n_prompt / std::max(prefill_s, 1e-9),
               static_cast<long long>(decode_steps), decode_s, decode_steps / std::max(decode_s, 1e-9));
  if (const ExpertScheduler* pe = e.expert_scheduler()) {
    const ExpertSchedulerStats s = pe->stats();
    std::fprintf(stderr,
                 "experts: %s, %s; cache hit rate %.1f%% (%llu hits, %llu misses), %.2f GB read from disk, "
                 "prefetch precision %.1f%% recall %.1f%%\n",
                 s.all_resident ? "all in RAM" : "streamed through the RAM cache", pe->io_backend(),
                 100.0 * s.cache.hit_rate(), static_cast<unsigned long long>(s.cache.hits),
                 static_cast<unsigned long long>(s.cache.misses), double(s.cache.bytes_read) / 1e9,
                 100.0 * s.prefetch_precision(), 100.0 * s.prefetch_recall());
  }
  return 0;
}

}  // namespace mt::cli
