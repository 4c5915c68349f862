// moetier: run DeepSeek V3-family MoE models with tiered expert placement.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "tools/moetier/commands.h"

namespace {
const char* kUsage = R"(usage: moetier COMMAND [options]      (moetier COMMAND --help for details)

commands:
  demo         can DeepSeek V3.2 run here? this machine, the 671B plan, a measured demo run
  generate     generate text from a prompt, streaming, with prefill/decode tokens/s
  serve        OpenAI-compatible HTTP server (chat, completions, streaming, batching, metrics)
  chat         interactive chat in the terminal (/reset, /stats, /think on|off)
  logits       write the logits of every position as a NumPy .npy file
  tokenize     text on stdin -> token ids (JSON), or JSONL in and out
  make-model   write a synthetic DeepSeek V3 / V3.2 checkpoint in the Hugging Face layout
  convert      turn a Hugging Face checkpoint into the packed expert store (q4/q8/bf16)
  info         describe a checkpoint or a built-in preset (shapes, sizes, tensors)
  gguf         check a GGUF file (or split model): metadata, tensor types, decode a tensor
  bench        membw | moe | io | decode: measured against this machine's own bandwidth
  profile      measure this machine for the planner (RAM, disk, kernels, GPU), cached
  plan         place every expert in VRAM, RAM or NVMe and predict prefill/decode speed
  trace        record which experts prompts route to (activation statistics for the planner)
  version      print the version
)";
}  // namespace

static int run(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  if (cmd == "version" || cmd == "--version") return std::printf("moetier %s\n", MOETIER_VERSION), 0;
  if (cmd == "generate") return mt::cli::cmd_generate(argc - 1, argv + 1);
  if (cmd == "logits") return mt::cli::cmd_logits(argc - 1, argv + 1);
  if (cmd == "tokenize") return cmd_tokenize(argc - 1, argv + 1);
  if (cmd == "make-model") return mt::cli::cmd_make_model(argc - 1, argv + 1);
  if (cmd == "convert") return mt::cli::cmd_convert(argc - 1, argv + 1);
  if (cmd == "bench") return mt::cli::cmd_bench(argc - 1, argv + 1);
  if (cmd == "info") return mt::cli::cmd_info(argc - 1, argv + 1);
  if (cmd == "profile") return mt::cli::cmd_profile(argc - 1, argv + 1);
  if (cmd == "plan") return mt::cli::cmd_plan(argc - 1, argv + 1);
  if (cmd == "demo") return mt::cli::cmd_demo(argc - 1, argv + 1);
  if (cmd == "trace") return mt::cli::cmd_trace(argc - 1, argv + 1);
  if (cmd == "serve") return mt::cli::cmd_serve(argc - 1, argv + 1);
  if (cmd == "chat") return mt::cli::cmd_chat(argc - 1, argv + 1);
  if (cmd == "gguf") return mt::cli::cmd_gguf(argc - 1, argv + 1);
  std::fprintf(stderr, "error: unknown command '%s'\n%s", cmd.c_str(), kUsage);
  return 2;
}

// A device failure inside a backend op (gpu_kernels: ops cannot return a Status) or an
// allocation failure ends here as one line, not an abort.
int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
