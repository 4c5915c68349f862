// moetier serve: the OpenAI-compatible HTTP server (runtime/server/http_server.h).
#include <signal.h>

#include <cstdio>
#include <filesystem>
#include <thread>

#include "runtime/core/process_memory.h"
#include "runtime/server/batch_scheduler.h"
#include "runtime/server/http_server.h"
#include "tools/moetier/args.h"
#include "tools/moetier/commands.h"
#include "tools/moetier/expert_flags.h"
#include "tools/moetier/progress.h"

namespace mt::cli {

namespace {

const char* kUsage = R"(usage: moetier serve --model DIR [options]

Serves the model over an OpenAI-compatible HTTP API until Ctrl-C:
  POST /v1/chat/completions   chat (streamed with "stream": true), thinking as reasoning_content
  POST /v1/completions        plain text completion
  GET  /v1/models             the model served
  GET  /health                {"status": "ok"} (no API key needed)
  GET  /metrics               Prometheus text: tokens/s, queue depth, time to first token,
                              expert-cache hit rate, expert uses by tier, disk bytes, RSS
Up to --parallel requests decode together in one batched step (each weight read once per
step); more wait in arrival order. Each of those sequences holds a KV cache of --context tokens,
made at start-up.

  --model PATH       checkpoint or packed store (config.json, weights, tokenizer.json), or GGUF file
  --host ADDR        address to listen on; loopback unless told otherwise       [127.0.0.1]
  --port N           TCP port (0: any free one, printed)                          [8080]
  --api-key KEY      require "Authorization: Bearer KEY" on /v1 and /metrics   [none]
  --parallel N       sequences decoded together                                      [4]
  --context N        tokens per sequence, prompt and answer     [min(4096, model maximum)]
  --max-body SIZE    largest request body                                         [4M]

packed expert stores: --plan FILE|auto, --ram-budget SIZE, --cache-policy P, --no-prefetch,
--pread, --isa NAME, --backend NAME, --gpu on|off, --gpu-vram SIZE, --gpu-cache T, --gpu-graphs on|off, --gguf-tiles on|off (as for generate)
)";

}  // namespace

int cmd_serve(int argc, char** argv) {
  std::vector<FlagSpec> flags = {{"model"},   {"host"},    {"port"},     {"api-key"},
                                 {"parallel"}, {"context"}, {"max-body"}, {"help", false}};
  add_expert_streaming_flags(flags);
  auto parsed = Args::parse(argc, argv, flags, "serve");
  if (!parsed) return std::fprintf(stderr, "error: %s\n", parsed.error().c_str()), 2;
  const Args& a = *parsed;
  if (a.has("help")) return std::fputs(kUsage, stdout), 0;
  auto fail = [](const std::string& m, int code = 1) {
    std::fprintf(stderr, "error: %s\n", m.c_str());
    return code;
  };
  if (!a.has("model")) return fail("serve needs --model DIR (see --help)", 2);
  auto port = a.get_int("port", 8080, 0, 65535);
  auto parallel = a.get_int("parallel", 4, 1, 256);
  auto context = a.get_int("context", 0, 2, 1 << 24);
  if (!port) return fail(port.error(), 2);
  if (!parallel) return fail(parallel.error(), 2);
  if (!context) return fail(context.error(), 2);
  uint64_t max_body = uint64_t{4} << 20;
  if (auto b = a.get("max-body")) {
    auto v = parse_bytes(*b);
    if (!v || *v < 1024) return fail("--max-body must be a size of at least 1K (e.g. 4M)", 2);
    max_body = static_cast<uint64_t>(*v);
  }

  // Ctrl-C and SIGTERM stop the server from a thread of their own (httplib's stop is not
  // async-signal-safe); every thread started later inherits the blocked mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  ::signal(SIGPIPE, SIG_IGN);  // a client that goes away must not kill the server

  auto engine = open_engine_from_flags(a, *context);
  if (!engine) return fail(engine.error());
  Engine& e = **engine;
  server::ServerOptions o;
  o.host = a.get_or("host", "127.0.0.1");
  o.port = static_cast<int>(*port);
  o.api_key = a.get_or("api-key", "");
  o.parallel = *parallel;
  o.context = e.context();
  o.max_body_bytes = max_body;
  std::error_code ec;
  auto canon = std::filesystem::weakly_canonical(*a.get("model"), ec);
  o.model_name = (ec ? std::filesystem::path(*a.get("model")) : canon).filename().string();

  // The KV caches of every slot, charged before they are made: a server that cannot hold them
  // says so now instead of being killed later.
  const uint64_t per_slot = server::BatchScheduler::kv_bytes_per_slot(e, o.context);
  const uint64_t kv = per_slot * static_cast<uint64_t>(o.parallel);
  const uint64_t avail = system_memory().available_bytes;
  if (avail > 0 && kv > avail)
    return fail("--parallel " + std::to_string(o.parallel) + " x --context " + std::to_string(o.context) + " needs " +
                format_bytes(double(kv)) + " of KV cache, but only " + format_bytes(double(avail)) +
                " of RAM is available; lower --parallel or --context");

  auto srv = server::HttpServer::start(e, o);
  if (!srv) return fail(srv.error());
  std::fprintf(stderr,
               "moetier serve: %s on http://%s:%d (%lld sequences x %lld tokens, KV cache %s%s); Ctrl-C stops\n",
               o.model_name.c_str(), o.host.c_str(), (*srv)->port(), static_cast<long long>(o.parallel),
               static_cast<long long>(o.context), format_bytes(double(kv)).c_str(),
               o.api_key.empty() ? "" : ", API key required");
  std::thread stopper([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    std::fprintf(stderr, "moetier serve: stopping\n");
    (*srv)->stop();
  });
  stopper.detach();
  Status s = (*srv)->serve();
  if (!s) return fail(s.error());
  return 0;
}

}  // namespace mt::cli
