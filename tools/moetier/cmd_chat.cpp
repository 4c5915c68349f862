// moetier chat: an interactive terminal chat in the model's chat format, answers streamed as
// they are generated. Each turn re-renders the conversation and evaluates only what the KV
// cache does not hold yet. Ctrl-C stops the current answer (not the program); Ctrl-D or /quit
// ends the session.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "runtime/engine/engine.h"
#include "runtime/sampling/sampler.h"
#include "runtime/server/output_parser.h"
#include "runtime/tokenizer/chat_format.h"
#include "tools/moetier/args.h"
#include "tools/moetier/commands.h"
#include "tools/moetier/expert_flags.h"
#include "tools/moetier/progress.h"

namespace mt::cli {

namespace {

const char* kUsage = R"(usage: moetier chat --model DIR [options]

An interactive chat in the model's chat format; answers stream as they are generated.
Type a message and Enter. Commands:
  /reset          start a new conversation (the system prompt stays)
  /stats          tokens/s of the last answer, context used, expert cache hit rate, placement
  /think on|off   V3.1/V3.2 thinking mode (the reasoning is shown dimmed)
  /quit           leave (or Ctrl-D)
Ctrl-C stops the answer being written, not the program.

  --model PATH       checkpoint, packed store or GGUF file
  --system TEXT      system prompt
  --think            start with thinking mode on (V3.1/V3.2)
  -n, --n-predict N  longest answer in tokens                                   [1024]
  --temperature T    0 = greedy                                                  [0.6]
  --top-p P          nucleus sampling                                            [0.95]
  --seed N           sampling seed                                               [0]
  --ctx N            KV cache length in tokens                  [min(4096, model maximum)]
packed expert stores: --plan FILE|auto, --ram-budget SIZE, ... (as for generate)
)";

// Set by SIGINT while an answer is being written; the loop checks it between tokens.
std::atomic<bool> g_interrupted{false};
void on_sigint(int) { g_interrupted = true; }

struct LastAnswer {
  int64_t prompt_tokens = 0, evaluated = 0, generated = 0;
  double prefill_s = 0, decode_s = 0;
};

}  // namespace

int cmd_chat(int argc, char** argv) {
  std::vector<FlagSpec> flags = {{"model"}, {"system"}, {"think", false}, {"n-predict", true, 'n'}, {"temperature"},
                                 {"top-p"}, {"seed"}, {"ctx"}, {"help", false}};
  add_expert_streaming_flags(flags);
  auto parsed = Args::parse(argc, argv, flags, "chat");
  if (!parsed) return std::fprintf(stderr, "error: %s\n", parsed.error().c_str()), 2;
  const Args& a = *parsed;
  if (a.has("help")) return std::fputs(kUsage, stdout), 0;
  auto fail = [](const std::string& m, int code = 1) {
    std::fprintf(stderr, "error: %s\n", m.c_str());
    return code;
  };
  if (!a.has("model")) return fail("chat needs --model DIR (see --help)", 2);
  auto n_predict = a.get_int("n-predict", 1024, 1, 1 << 24);
  auto temperature = a.get_double("temperature", 0.6, 0.0, 100.0);
  auto top_p = a.get_double("top-p", 0.95, 0.0, 1.0);
  auto seed = a.get_int("seed", 0, 0, INT64_MAX);
  auto ctx = a.get_int("ctx", 0, 2, 1 << 24);
  for (auto* r : {&n_predict, &seed, &ctx})
    if (!*r) return fail(r->error(), 2);
  for (auto* r : {&temperature, &top_p})
    if (!*r) return fail(r->error(), 2);
  if (*top_p <= 0) return fail("--top-p must be greater than 0", 2);

  auto engine = open_engine_from_flags(a, *ctx);
  if (!engine) return fail(engine.error());
  Engine& e = **engine;
  auto tok_r = e.tokenizer();
  if (!tok_r) return fail(tok_r.error());
  const Tokenizer& tok = **tok_r;
  const ChatStyle style = detect_chat_style(tok.chat_template());
  bool thinking = a.has("think");
  if (thinking && style != ChatStyle::V31) return fail("--think needs a V3.1/V3.2 chat template; this model has the V3 one", 2);

  // SIGINT interrupts the answer; without SA_RESTART it also interrupts a read at the prompt.
  struct sigaction sa{};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);

  const bool tty = ::isatty(STDOUT_FILENO);
  const char* dim = tty ? "\033[2m" : "";
  const char* plain = tty ? "\033[0m" : "";
  nlohmann::json messages = nlohmann::json::array();
  const std::string system = a.get_or("system", "");
  auto reset = [&] {
    messages = nlohmann::json::array();
    if (!system.empty()) messages.push_back({{"role", "system"}, {"content", system}});
  };
  reset();
  std::vector<int32_t> cached;  // the tokens the KV cache holds, in order
  Sampler sampler(SamplingParams{static_cast<float>(*temperature), 0, static_cast<float>(*top_p),
                                 static_cast<uint64_t>(*seed)});
  LastAnswer last;
  const int64_t V = e.config().vocab_size;
  const auto eos = static_cast<int32_t>(e.config().eos_token_id);
  std::fprintf(stderr, "moetier chat: %s, context %lld tokens%s; /quit or Ctrl-D to leave, Ctrl-C stops an answer\n",
               a.get("model")->c_str(), static_cast<long long>(e.context()),
               style == ChatStyle::V31 ? (thinking ? ", thinking on" : ", thinking off") : "");

  while (true) {
    std::printf("> ");
    std::fflush(stdout);
    g_interrupted = false;
    std::string line;
    if (!std::getline(std::cin, line)) {
      if (g_interrupted) {  // Ctrl-C at the prompt: a fresh prompt
        std::cin.clear();
        std::printf("\n");
        continue;
      }
      std::printf("\n");
      return 0;  // Ctrl-D
    }
    if (line.empty()) continue;
    if (line == "/quit" || line == "/exit") return 0;
    if (line == "/reset") {
      reset();
      std::printf("(new conversation)\n");
      continue;
    }
    if (line == "/think on" || line == "/think off") {
      if (style != ChatStyle::V31) {
        std::printf("(thinking mode needs a V3.1/V3.2 chat template; this model has the V3 one)\n");
        continue;
      }
      thinking = line == "/think on";
      std::printf("(thinking %s)\n", thinking ? "on" : "off");
      continue;
    }
    if (line == "/stats") {
      std::printf("last answer: %lld tokens in %.2f s (%.1f tokens/s); prompt %lld tokens, %lld evaluated in %.2f s "
                  "(the rest was in the cache)\ncontext: %lld of %lld tokens used\n",
                  static_cast<long long>(last.generated), last.decode_s,
                  last.decode_s > 0 ? double(last.generated) / last.decode_s : 0.0,
                  static_cast<long long>(last.prompt_tokens), static_cast<long long>(last.evaluated), last.prefill_s,
                  static_cast<long long>(e.position()), static_cast<long long>(e.context()));
      if (const ExpertScheduler* pe = e.expert_scheduler()) {
        const ExpertSchedulerStats s = pe->stats();
        std::printf("experts: %lld resident, %lld streamed; cache hit rate %.1f%%; %.2f GB read from disk; uses "
                    "VRAM/RAM/NVMe hit/miss %llu/%llu/%llu/%llu\n",
                    static_cast<long long>(s.resident_experts), static_cast<long long>(s.streamed_experts),
                    100.0 * s.cache.hit_rate(), double(s.cache.bytes_read) / 1e9,
                    static_cast<unsigned long long>(s.uses_vram), static_cast<unsigned long long>(s.uses_ram),
                    static_cast<unsigned long long>(s.uses_nvme_hit), static_cast<unsigned long long>(s.uses_nvme_miss));
      } else {
        std::printf("experts: all in the checkpoint's mapped weights (no packed store)\n");
      }
      continue;
    }
    if (line[0] == '/') {
      std::printf("(unknown command %s: /reset, /stats, /think on|off, /quit)\n", line.c_str());
      continue;
    }

    messages.push_back({{"role", "user"}, {"content", line}});
    ChatOptions co;
    co.add_generation_prompt = true;
    co.style = style;
    co.thinking = thinking;
    auto rendered = render_chat(messages, co);
    if (!rendered) {
      messages.erase(messages.end() - 1);
      std::printf("(cannot render the conversation: %s)\n", rendered.error().c_str());
      continue;
    }
    const std::vector<int32_t> ids = tok.encode(*rendered);
    if (static_cast<int64_t>(ids.size()) + 1 >= e.context()) {
      messages.erase(messages.end() - 1);
      std::printf("(the conversation is %zu tokens; the context holds %lld: /reset to start over, or raise --ctx)\n",
                  ids.size(), static_cast<long long>(e.context()));
      continue;
    }
    // Keep what the cache already holds; evaluate the rest.
    size_t common = 0;
    while (common < cached.size() && common < ids.size() && cached[common] == ids[common]) ++common;
    if (common == ids.size()) --common;  // the last prompt token must be evaluated for its logits
    e.sequence().set_size(static_cast<int64_t>(common));
    cached.resize(common);
    std::vector<float> logits;
    auto t0 = std::chrono::steady_clock::now();
    const std::span<const int32_t> rest(ids.data() + common, ids.size() - common);
    if (Status s = e.eval(rest, false, logits); !s) return fail(s.error());
    cached.insert(cached.end(), rest.begin(), rest.end());
    last = LastAnswer{static_cast<int64_t>(ids.size()), static_cast<int64_t>(rest.size()), 0, seconds_since(t0), 0};

    server::OutputParser parser(thinking, {});
    TextStream stream(tok);
    std::string answer;
    bool in_reasoning = false;
    auto show = [&](const server::OutputDelta& d) {
      if (!d.reasoning.empty()) {
        if (!in_reasoning) std::printf("%s", dim), in_reasoning = true;
        std::fwrite(d.reasoning.data(), 1, d.reasoning.size(), stdout);
      }
      if (!d.content.empty()) {
        if (in_reasoning) std::printf("%s\n", plain), in_reasoning = false;
        std::fwrite(d.content.data(), 1, d.content.size(), stdout);
        answer += d.content;
      }
      std::fflush(stdout);
    };
    t0 = std::chrono::steady_clock::now();
    const int64_t budget = std::min<int64_t>(*n_predict, e.context() - e.position() - 1);
    bool interrupted = false;
    for (int64_t i = 0; i < budget; ++i) {
      if (g_interrupted) {
        interrupted = true;
        break;
      }
      const int32_t next = sampler.sample(logits.data(), V);
      if (next == eos || next == tok.eos_id()) break;
      ++last.generated;
      show(parser.push(stream.push(next)));
      if (Status s = e.eval(std::span<const int32_t>(&next, 1), false, logits); !s) return fail(s.error());
      cached.push_back(next);
    }
    server::OutputDelta end = parser.push(stream.flush());
    const server::OutputDelta tail = parser.finish();
    end.reasoning += tail.reasoning;
    end.content += tail.content;
    show(end);
    if (in_reasoning) std::printf("%s", plain);
    last.decode_s = seconds_since(t0);
    std::printf(interrupted ? " [stopped]\n" : "\n");
    // The answer joins the conversation (the next render closes it with the end-of-sentence
    // token, which the cache may not hold: the common-prefix match above takes care of that).
    messages.push_back({{"role", "assistant"}, {"content", answer}});
  }
}

}  // namespace mt::cli
