#include "tools/moetier/demo_run.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "offload/expert_store.h"
#include "planner/activation_stats.h"
#include "planner/dense_format.h"
#include "runtime/core/text_file.h"
#include "runtime/engine/engine.h"
#include "tools/moetier/progress.h"
#include "tools/moetier/synthetic_model.h"

namespace mt::cli {

namespace {

// Routing statistics come from prompts other than the one measured, as a user would trace
// their own workload once and then run new prompts.
constexpr const char* kTracePrompts[] = {
    "The history of the printing press begins in",
    "Explain how a mixture-of-experts language model routes each token.",
    "def fibonacci(n):",
    "Write a short poem about the sea at night.",
};
constexpr int64_t kTraceDecode = 16;

int32_t argmax(const std::vector<float>& logits, int64_t V) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.begin() + V) - logits.begin());
}

// Also tokenizes the measured prompt (the planner needs its length), with the same engine.
Result<planner::ActivationStats> trace_demo(const std::filesystem::path& store, const std::string& prompt,
                                            int64_t& traced_tokens, int64_t& prompt_tokens) {
  EngineOptions eo;
  eo.context = 256;
  eo.announce_device = false;
  eo.packed.show_progress = false;
  MT_ASSIGN(std::unique_ptr<Engine> e, Engine::open(store, eo));
  MT_ASSIGN(const Tokenizer* tok, e->tokenizer());
  planner::ActivationRecorder rec(e->config(), store.filename().string());
  e->set_routing_observer([&rec](int64_t layer, const int32_t* ex, int64_t n, int64_t k) { rec.record(layer, ex, n, k); });
  std::vector<float> logits;
  const int64_t V = e->config().vocab_size;
  for (const char* text : kTracePrompts) {
    e->reset();
    MT_ASSIGN(std::vector<int32_t> ids, build_prompt(*tok, text, PromptOptions{}));
    MT_TRY(e->eval(ids, false, logits));
    for (int64_t i = 0; i < kTraceDecode; ++i) {
      const int32_t next = argmax(logits, V);
      MT_TRY(e->eval(std::span<const int32_t>(&next, 1), false, logits));
    }
  }
  e->set_routing_observer(nullptr);
  traced_tokens = static_cast<int64_t>(rec.stats().tokens);
  MT_ASSIGN(std::vector<int32_t> ids, build_prompt(*tok, prompt, PromptOptions{}));
  prompt_tokens = static_cast<int64_t>(ids.size());
  return rec.stats();
}

Result<DemoMeasurement> measure(const std::filesystem::path& store, const planner::Placement& placement,
                                const DemoRunOptions& o, int64_t context) {
  EngineOptions eo;
  eo.context = context;
  eo.announce_device = false;  // the machine table above already says which GPU, if any, is used
  eo.packed.placement = placement;
  eo.packed.show_progress = false;  // a few MB: under a second
  MT_ASSIGN(std::unique_ptr<Engine> e, Engine::open(store, eo));
  MT_ASSIGN(const Tokenizer* tok, e->tokenizer());
  MT_ASSIGN(std::vector<int32_t> ids, build_prompt(*tok, o.prompt, PromptOptions{}));
  DemoMeasurement m;
  m.prompt_tokens = static_cast<int64_t>(ids.size());
  if (m.prompt_tokens + o.n_predict > e->context())
    return make_error("the demo prompt is " + std::to_string(m.prompt_tokens) + " tokens; with -n " +
                      std::to_string(o.n_predict) + " that is more than the demo's context of " +
                      std::to_string(e->context()) + " tokens (shorten the prompt or lower -n)");
  std::vector<float> logits;
  auto t0 = std::chrono::steady_clock::now();
  MT_TRY(e->eval(ids, false, logits));
  m.prefill_tokens_per_s = double(m.prompt_tokens) / std::max(seconds_since(t0), 1e-9);
  ExpertScheduler* pe = e->expert_scheduler();
  if (!pe) return make_error(store.string() + " is not a packed store");
  pe->reset_stats();  // the figures below are decode's, as the planner predicts them

  const int64_t V = e->config().vocab_size;
  TextStream stream(*tok);
  t0 = std::chrono::steady_clock::now();
  // Greedy, and past an end-of-sentence token: the run always decodes n tokens, so its speed
  // is comparable from run to run.
  for (int64_t i = 0; i < o.n_predict; ++i) {
    const int32_t next = argmax(logits, V);
    m.text += stream.push(next);
    MT_TRY(e->eval(std::span<const int32_t>(&next, 1), false, logits));
    ++m.decode_tokens;
  }
  const double decode_s = seconds_since(t0);
  m.text += stream.flush();
  m.decode_tokens_per_s = double(m.decode_tokens) / std::max(decode_s, 1e-9);
  const ExpertSchedulerStats s = pe->stats();
  m.hit_rate = s.cache.hit_rate();
  m.disk_bytes_per_token = double(s.cache.bytes_read) / double(std::max<int64_t>(1, m.decode_tokens));
  return m;
}

}  // namespace

Status ensure_demo_store(const std::filesystem::path& dir, bool quiet) {
  bool rewrite = false;
  if (std::filesystem::exists(dir / "manifest.json")) {
    MT_ASSIGN(std::string text, read_text_file(dir / "manifest.json"));
    auto m = offload::parse_manifest(text, (dir / "manifest.json").string());
    if (m.ok()) return ok_status();
    // A demo store written by an older moetier (store format 1): the demo writes it again.
    if (m.error().find("format version 1") == std::string::npos) return make_error(m.error());
    rewrite = true;
    if (!quiet) std::fprintf(stderr, "moetier demo: %s is an older store format; writing it again\n", dir.c_str());
  }
  std::error_code ec;
  if (!rewrite && (std::filesystem::exists(dir, ec) || std::filesystem::is_symlink(dir, ec)))
    return make_error(dir.string() + " exists but is not a packed store (no manifest.json); remove it or give "
                      "another --store");
  SyntheticModelOptions so;
  MT_ASSIGN(so.config, preset_config("demo"));
  so.seed = 1;
  so.tokenizer = std::string(MOETIER_DATA_DIR) + "/tokenizer-deepseek-v3";
  so.out = dir;
  // A "<dir>.partial" left by an interrupted run is replaced; an existing directory only when it
  // is the demo's own older-format store (the writer replaces nothing but a store).
  so.overwrite = rewrite;
  so.packed = true;
  so.packed_quant = ExpertQuant::Q4;
  std::filesystem::create_directories(std::filesystem::absolute(dir, ec).parent_path(), ec);
  const int64_t total = synthetic_model_bytes(so);
  if (quiet) return write_synthetic_model(so, nullptr);
  ProgressBar bar("writing the demo model", total);
  Status st = write_synthetic_model(so, [&](int64_t b) { bar.advance(b); });
  bar.finish();
  return st;
}

Result<DemoRun> run_demo_model(const DemoRunOptions& o, const planner::MachineProfile& profile) {
  if (o.n_predict < 1) return make_error("-n must be at least 1");
  const std::filesystem::path manifest = o.store / "manifest.json";
  MT_ASSIGN(std::string text, read_text_file(manifest));
  MT_ASSIGN(offload::StoreManifest sm, offload::parse_manifest(text, manifest.string()));

  DemoRun r;
  planner::CostInputs& in = r.inputs;
  MT_ASSIGN(in.model, parse_config_json(sm.config_json, manifest.string()));
  in.expert_format = sm.expert_quant;
  in.expert_bytes = sm.blob_bytes;
  in.dense_format = planner::dense_format_of_store(sm.dense_quant);
  in.machine = profile;
  in.use_gpu = false;  // the demo runs on the CPU whatever the machine has
  int64_t prompt_tokens = 0;
  MT_ASSIGN(in.stats, trace_demo(o.store, o.prompt, r.traced_tokens, prompt_tokens));

  r.layers = in.model.num_hidden_layers;
  r.experts = (in.model.num_hidden_layers - planner::first_moe_layer(in.model)) * in.model.n_routed_experts;
  r.expert_bytes_total = uint64_t(r.experts) * in.expert_bytes;
  r.expert_ram = static_cast<uint64_t>(std::llround(o.budget_fraction * double(r.expert_bytes_total)));

  // The planner is asked about the run below: its context, its prompt as one prefill chunk,
  // decode at the middle of the generated span.
  in.context = std::min<int64_t>(in.model.max_position_embeddings, prompt_tokens + o.n_predict + 1);
  in.prefill_chunk = std::max<int64_t>(1, prompt_tokens);
  in.decode_fill = std::min<int64_t>(in.context, prompt_tokens + o.n_predict / 2);
  planner::PlanRequest req;
  req.cost = in;
  req.expert_ram_budget = r.expert_ram;
  MT_ASSIGN(r.plan, planner::make_plan(req));
  MT_ASSIGN(r.measured, measure(o.store, r.plan.placement, o, in.context));
  return r;
}

}  // namespace mt::cli
