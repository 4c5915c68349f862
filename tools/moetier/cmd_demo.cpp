// moetier demo: the newcomer's first question, answered on their own machine in a couple of
// minutes: what is this machine, would the full 671B DeepSeek V3.2 run here (where its experts
// would live, how fast, what bounds it, and if not, what is short), and a real run of the
// built-in demo model streaming experts from disk, measured beside the planner's prediction.
#include <cmath>
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "planner/dense_format.h"
#include "planner/fit_advice.h"
#include "planner/plan_report.h"
#include "runtime/core/text_file.h"
#include "tools/moetier/args.h"
#include "tools/moetier/commands.h"
#include "tools/moetier/demo_run.h"
#include "tools/moetier/machine_probe.h"
#include "tools/moetier/plan_inputs.h"

namespace mt::cli {

namespace {

const char* kUsage = R"(usage: moetier demo [--store DIR] [--prompt TEXT] [-n N] [--expert-share X] [--profile FILE]
                    [--json FILE] [--quiet]

Answers "can I run DeepSeek V3.2 on this machine?" in three short tables:
  1. this machine: CPU, cores, ISA, RAM and disk bandwidth (the cached profile; measured in
     about 20 s the first time, `moetier profile --force` measures again);
  2. the full 671B DeepSeek V3.2 with q4 experts, planned for this machine: whether it fits,
     how many experts would live in VRAM / RAM / NVMe, predicted decode and prefill tokens/s
     and the bottleneck; if it does not fit, what is short and how much RAM would make it fit;
  3. the built-in demo model (random weights: its text is gibberish), run now from its packed
     store with an expert RAM budget below the size of its experts, so cold experts stream
     from disk: the text, tokens/s, cache hit rate and disk reads, measured beside the
     planner's prediction for that same run.

  --store DIR         the demo model's packed store, written on first use   [models/demo-v3-q4]
  --prompt TEXT       the demo prompt                          [The quick brown fox jumps over]
  -n, --n-predict N   tokens to decode                                                     [64]
  --expert-share X    expert RAM budget as a share of the demo's expert bytes, 0 < X < 1  [0.4]
  --profile FILE      a profile written by `moetier profile` instead of the cached one
  --json FILE         also write every figure as JSON ('-': stdout, and no tables)
  --quiet             no progress lines or bars
)";

int fail(const std::string& m, int code = 1) {
  std::fprintf(stderr, "error: %s\n", m.c_str());
  return code;
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

std::string bytes(double b) { return planner::format_decimal_bytes(b); }
std::string gib(double b) { return fmt("%.0f GiB", std::ceil(b / double(uint64_t(1) << 30))); }

std::string isa_text(const planner::MachineProfile& p) {
  std::string s = p.avx512 ? "AVX-512" : p.avx2 ? "AVX2" : "no AVX2";
  if (p.avx512_vnni) s += " VNNI";
  if (p.avx512_bf16) s += " BF16";
  if (p.amx) s += ", AMX";
  return s;
}

std::string tiers_text(const planner::Placement& p) {
  std::string s = std::to_string(p.count(planner::Tier::Vram)) + " VRAM / " + std::to_string(p.count(planner::Tier::Ram)) +
                  " RAM / " + std::to_string(p.count(planner::Tier::Nvme)) + " NVMe";
  if (p.count(planner::Tier::Nvme) > 0) s += " (RAM cache " + bytes(double(p.nvme_cache_bytes)) + ")";
  return s;
}

std::string speed_text(const planner::Prediction& p) {
  return fmt("decode %.2f tokens/s", p.decode_tokens_per_s) + fmt(", prefill %.1f tokens/s", p.prefill_tokens_per_s);
}

std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

void row(const char* label, const std::string& value) { std::printf("  %-12s %s\n", label, value.c_str()); }

// `text` on lines of at most ~90 bytes, split between UTF-8 characters, control characters as spaces.
void print_wrapped(const char* label, const std::string& text) {
  std::string line;
  bool first = true;
  auto flush = [&] {
    row(first ? label : "", line);
    line.clear();
    first = false;
  };
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (line.size() >= 90 && (c & 0xC0) != 0x80) flush();
    line += c < 0x20 ? ' ' : static_cast<char>(c);
  }
  if (!line.empty() || first) flush();
}

nlohmann::json plan_json(const planner::Plan& p) {
  return {{"vram_experts", p.placement.count(planner::Tier::Vram)},
          {"ram_experts", p.placement.count(planner::Tier::Ram)},
          {"nvme_experts", p.placement.count(planner::Tier::Nvme)},
          {"nvme_cache_bytes", p.placement.nvme_cache_bytes},
          {"ram_budget_bytes", p.ram_budget},
          {"decode_tokens_per_s", p.prediction.decode_tokens_per_s},
          {"prefill_tokens_per_s", p.prediction.prefill_tokens_per_s},
          {"bottleneck", p.prediction.bottleneck}};
}

// Section 1.
nlohmann::json machine_section(const planner::MachineProfile& m, const std::filesystem::path& profile_file, bool print) {
  const std::string disk = m.disk_read_gbs > 0 ? fmt("%.2f GB/s", m.disk_read_gbs) + " (O_DIRECT, expert-sized reads) in " + m.disk_path
                                               : "not measured";
  const std::string gpu = m.gpu.present ? m.gpu.name + ", " + bytes(double(m.gpu.vram_total_bytes))
                                        : "none" + (m.gpu.reason.empty() ? "" : " (" + m.gpu.reason + ")");
  if (print) {
    std::printf("This machine   (profile measured %s; %s)\n", m.measured_at.c_str(), profile_file.c_str());
    row("CPU", m.cpu_model + ": " + std::to_string(m.physical_cores) + " cores, " + std::to_string(m.logical_cpus) +
                   " threads, " + isa_text(m));
    row("RAM", gib(double(m.ram_total_bytes)) + ", " + bytes(double(m.ram_available_bytes)) + " available, " +
                   fmt("%.1f GB/s read", m.ram_read_gbs));
    row("disk", disk);
    row("GPU", gpu);
    std::printf("\n");
  }
  return {{"cpu", m.cpu_model}, {"cores", m.physical_cores}, {"threads", m.logical_cpus}, {"isa", isa_text(m)},
          {"ram_bytes", m.ram_total_bytes}, {"ram_available_bytes", m.ram_available_bytes}, {"ram_read_gbs", m.ram_read_gbs},
          {"disk_read_gbs", m.disk_read_gbs}, {"disk_path", m.disk_path}, {"gpu", m.gpu.present ? m.gpu.name : "none"},
          {"measured_at", m.measured_at}, {"profile", profile_file.string()}};
}

// Section 2: the 671B model on this machine.
Result<nlohmann::json> big_model_section(const planner::MachineProfile& m, const std::filesystem::path& models_dir,
                                         bool print) {
  planner::PlanRequest req;
  planner::CostInputs& in = req.cost;
  MT_ASSIGN(in.model, preset_config("deepseek-v3.2"));
  in.expert_format = "q4";
  MT_ASSIGN(in.expert_bytes, expert_bytes_for("q4", in.model, 32));
  in.context = 4096;
  in.machine = m;
  in.dense_format = planner::default_dense_format(in.model, m.ram_total_bytes, nullptr);  // as plan / convert
  in.stats = planner::uniform_activations(in.model);

  Result<planner::Plan> here = planner::make_plan(req);
  const planner::FitAdvice adv = planner::fit_advice(req);
  const uint64_t store = planner::packed_store_bytes(in);
  std::error_code ec;
  const auto space = std::filesystem::space(models_dir, ec);
  const bool free_known = !ec;
  const uint64_t free_disk = free_known ? space.available : 0;

  nlohmann::json j = {{"model", "deepseek-v3.2 (671B, q4 experts)"}, {"context", in.context}, {"fits", here.ok()},
                      {"store_bytes", store}, {"disk_free_bytes", free_known ? nlohmann::json(free_disk) : nlohmann::json(nullptr)}, {"disk_dir", models_dir.string()}};
  if (here) j["plan"] = plan_json(*here);
  else j["why_not"] = here.error();
  if (adv.at_min) {
    j["minimum"] = plan_json(*adv.at_min);
    j["minimum"]["machine_ram_bytes"] = *adv.min_ram_budget + adv.ram_headroom;
  }
  if (adv.all_in_ram) {
    j["all_in_ram"] = plan_json(*adv.all_in_ram);
    j["all_in_ram"]["machine_ram_bytes"] = *adv.all_in_ram_budget + adv.ram_headroom;
  }
  if (!print) return j;

  std::printf("DeepSeek V3.2 (671B, 37B active), q4 experts, 4096-token context, on this machine\n");
  if (here) {
    row("verdict", "runs: " + speed_text(here->prediction) + " (predicted)");
    row("experts", tiers_text(here->placement));
    row("bound by", here->prediction.bottleneck);
  } else {
    std::string why = first_line(here.error());
    if (!why.empty() && why.back() == ':') why.pop_back();
    row("verdict", why);
  }
  const bool short_of_ram = !here || (adv.all_in_ram && here->placement.count(planner::Tier::Nvme) > 0);
  if (!here && adv.at_min)
    row("would run", "with " + bytes(double(*adv.min_ram_budget)) + " of RAM for moetier (a machine of " +
                         gib(double(*adv.min_ram_budget + adv.ram_headroom)) + "): " + speed_text(adv.at_min->prediction) +
                         ", experts " + tiers_text(adv.at_min->placement));
  if (short_of_ram && adv.all_in_ram)
    row("full speed", "every expert in RAM needs " + bytes(double(*adv.all_in_ram_budget)) + " (a machine of " +
                          gib(double(*adv.all_in_ram_budget + adv.ram_headroom)) + "): " + speed_text(adv.all_in_ram->prediction));
  std::string disk = "the q4 store takes " + bytes(double(store)) + "; ";
  if (!free_known) disk += "free space in " + models_dir.string() + " unknown (" + ec.message() + ")";
  else disk += bytes(double(free_disk)) + " free in " + models_dir.string() +
               (free_disk >= store ? " (enough)" : " (short by " + bytes(double(store - free_disk)) + ")");
  row("disk", disk);
  std::printf("  (moetier plan --preset deepseek-v3.2 shows the full plan; --hardware SPEC plans another machine)\n\n");
  return j;
}

// Section 3.
nlohmann::json demo_section(const DemoRun& r, const DemoRunOptions& o, bool print) {
  const planner::Prediction& p = r.plan.prediction;
  const DemoMeasurement& m = r.measured;
  const double hit_pred = p.share_vram + p.share_ram + p.share_nvme_hit;
  nlohmann::json j = {
      {"store", o.store.string()}, {"layers", r.layers}, {"experts", r.experts},
      {"expert_bytes_total", r.expert_bytes_total}, {"expert_ram_budget", r.expert_ram},
      {"prompt", o.prompt}, {"prompt_tokens", m.prompt_tokens}, {"decode_tokens", m.decode_tokens},
      {"text", m.text}, {"traced_tokens", r.traced_tokens}, {"plan", plan_json(r.plan)},
      {"predicted", {{"prefill_tokens_per_s", p.prefill_tokens_per_s}, {"decode_tokens_per_s", p.decode_tokens_per_s},
                     {"hit_rate", hit_pred}, {"disk_bytes_per_token", p.expert_bytes_from_disk_per_token}}},
      {"measured", {{"prefill_tokens_per_s", m.prefill_tokens_per_s}, {"decode_tokens_per_s", m.decode_tokens_per_s},
                    {"hit_rate", m.hit_rate}, {"disk_bytes_per_token", m.disk_bytes_per_token}}}};
  if (!print) return j;

  std::printf("The demo model, run now   (%lld layers, %lld experts; random weights, so the text is gibberish)\n",
              static_cast<long long>(r.layers), static_cast<long long>(r.experts));
  row("store", o.store.string() + ", q4 experts: " + bytes(double(r.expert_bytes_total)) + ", RAM budget " +
                   bytes(double(r.expert_ram)) + fmt(" (%.0f%%)", 100.0 * double(r.expert_ram) / double(r.expert_bytes_total)));
  row("placement", tiers_text(r.plan.placement) + fmt(", from a trace of %.0f tokens", double(r.traced_tokens)));
  row("prompt", o.prompt);
  print_wrapped("generated", m.text);
  std::printf("\n  %-26s %12s %12s %10s\n", "", "predicted", "measured", "meas/pred");
  auto line = [](const char* what, double pred, double meas, const char* f) {
    std::printf("  %-26s %12s %12s %10s\n", what, fmt(f, pred).c_str(), fmt(f, meas).c_str(),
                pred > 0 ? fmt("%.2f", meas / pred).c_str() : "-");
  };
  line(("prefill tokens/s (" + std::to_string(m.prompt_tokens) + " tok)").c_str(), p.prefill_tokens_per_s,
       m.prefill_tokens_per_s, "%.1f");
  line(("decode tokens/s (" + std::to_string(m.decode_tokens) + " tok)").c_str(), p.decode_tokens_per_s,
       m.decode_tokens_per_s, "%.1f");
  line("expert cache hit rate, %", 100.0 * hit_pred, 100.0 * m.hit_rate, "%.1f");
  line("disk KB per token", p.expert_bytes_from_disk_per_token / 1e3, m.disk_bytes_per_token / 1e3, "%.1f");
  std::printf("  (one short run on a shared machine: expect noise; scripts/bench_planner.sh measures carefully)\n");
  return j;
}

}  // namespace

int cmd_demo(int argc, char** argv) {
  auto parsed = Args::parse(argc, argv,
                            {{"store"}, {"prompt"}, {"n-predict", true, 'n'}, {"expert-share"}, {"profile"}, {"json"},
                             {"quiet", false}, {"help", false}},
                            "demo");
  if (!parsed) return fail(parsed.error(), 2);
  const Args& a = *parsed;
  if (a.has("help")) return std::fputs(kUsage, stdout), 0;
  if (!a.positional().empty()) return fail("demo takes no positional arguments (got '" + a.positional()[0] + "')", 2);
  DemoRunOptions o;
  o.store = a.get_or("store", "models/demo-v3-q4");
  o.prompt = a.get_or("prompt", "The quick brown fox jumps over");
  if (o.prompt.empty()) return fail("--prompt must not be empty", 2);
  auto n = a.get_int("n-predict", 64, 1, 4000);
  if (!n) return fail(n.error(), 2);
  o.n_predict = *n;
  auto share = a.get_double("expert-share", 0.4, 0.0, 1.0);
  if (!share) return fail(share.error(), 2);
  if (*share <= 0.0 || *share >= 1.0)
    return fail("--expert-share must be between 0 and 1 exclusive (a share of the demo's experts kept in RAM)", 2);
  o.budget_fraction = *share;
  const std::string json_out = a.get_or("json", "");
  const bool tables = json_out != "-";
  o.quiet = a.has("quiet") || !tables;

  // The store first: the profile measures the disk it lives on.
  if (Status st = ensure_demo_store(o.store, o.quiet); !st) return fail("writing the demo model to " + o.store.string() + ": " + st.error());
  ProbeOptions po;
  po.model_dir = o.store;
  const std::filesystem::path profile_file = a.get_or("profile", planner::default_profile_path().string());
  auto profile = a.has("profile") ? planner::load_profile(profile_file)
                                  : load_or_measure_profile(po, /*force=*/false, /*quiet=*/o.quiet);
  if (!profile) return fail(profile.error());
  if (!o.quiet) std::fprintf(stderr, "\n");

  nlohmann::json out;
  out["machine"] = machine_section(*profile, profile_file, tables);
  std::error_code ec;
  auto models_dir = std::filesystem::absolute(o.store, ec).parent_path();
  auto big = big_model_section(*profile, models_dir, tables);
  if (!big) return fail(big.error());
  out["deepseek_v3_2"] = *big;
  std::fflush(stdout);
  auto run = run_demo_model(o, *profile);
  if (!run) return fail("the demo run: " + run.error());
  out["demo"] = demo_section(*run, o, tables);

  if (json_out == "-") {
    std::printf("%s\n", out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  } else if (!json_out.empty()) {
    if (Status st = write_file_atomic(json_out, out.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n"); !st)
      return fail(st.error());
    if (!a.has("quiet")) std::printf("\nwritten to %s\n", json_out.c_str());
  }
  return 0;
}

}  // namespace mt::cli
