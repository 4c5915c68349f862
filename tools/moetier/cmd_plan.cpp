// moetier plan: where every expert of a model would live on a machine and how fast it would run.
#include <cstdio>
#include <filesystem>

#include "planner/plan_report.h"
#include "planner/solver.h"
#include "runtime/core/text_file.h"
#include "tools/moetier/args.h"
#include "tools/moetier/commands.h"
#include "tools/moetier/plan_check.h"
#include "tools/moetier/plan_inputs.h"

namespace mt::cli {

namespace {

const char* kUsage = R"(usage: moetier plan (--model DIR | --preset NAME) [options]

Places every routed expert in VRAM, RAM or NVMe (behind a RAM cache) and predicts prefill and
decode speed, with the time per tier and the bottleneck. By default it plans for this machine
(its cached profile from `moetier profile`, measured now if there is none); --hardware plans
for a machine you do not have.

model:
  --model DIR           a Hugging Face checkpoint or a packed store (its format and blob size are used)
  --preset NAME         deepseek-v3, deepseek-r1, deepseek-v3.1, deepseek-v3.2, tiny, demo, wide
  --experts FORMAT      q4, q8, bf16 or fp8 (as shipped)            [the store's format, else q4]
  --dense FORMAT        the non-expert weights without a GPU: q8, q4 (convert --dense), fp8
                        (as shipped, = convert --dense bf16), auto: what convert would choose
                        on this machine (q8, or q4 when q8 fills over half the RAM)
                                                                   [the store's form, else auto]
  --context N           KV cache length the plan reserves                                [4096]
  --fill N              context tokens when decode speed is predicted              [context / 2]
  --batch N             sequences decoded together                                          [1]
  --prefill-chunk N     tokens per prefill step                                           [512]
  --prefetch-recall X   share of missed experts read one layer ahead     [the trace's, else 0.6]
  --prefetch-precision X  share of read-ahead experts then used; the rest are wasted reads
                        (bench decode prints both; a trace measures them) [the trace's, else 0.6]

machine:
  --profile FILE        a profile written by `moetier profile`          [the cached one, or measure]
  --hardware SPEC       a described machine instead, e.g.
                        "gpu=24G,ram=512G@300GB/s,disk=7GB/s,cores=32,isa=avx512", or a preset:
%s  --no-gpu              plan as if there were no GPU

budgets:
  --vram-budget SIZE    VRAM the plan may use                  [free VRAM - 1.5 GiB headroom]
  --ram-budget SIZE     RAM the plan may use                   [available RAM - 4 GiB headroom]
  --expert-ram SIZE     RAM for routed experts (RAM tier + NVMe cache) after the runtime's own
                        needs; replaces --ram-budget (same meaning as generate --ram-budget)
  --nvme-cache SIZE     RAM that caches the experts left on NVMe       [chosen by the planner]

statistics and pins:
  --trace FILE          activation statistics from `moetier trace` (else: uniform prior)
  --pin LIST            LAYER:EXPERT=TIER[,...]; TIER vram, ram or nvme; EXPERT may be *

check:
  --check               then run the placement on --model (a packed store) and print predicted
                        vs measured per part: attention, dense FFN, routers, shared and routed
                        experts with the disk, lm_head; disk bytes, hit rate, prefetch
  --check-tokens N      decode steps the check measures                                    [32]
  --check-json FILE     the comparison as JSON

output:
  --json FILE           write the placement file (`moetier generate --plan FILE` reads it)
  --svg FILE            write a heatmap: layers x experts, colour = tier, darker = chosen more
  --quiet               only errors and the output files
)";

}  // namespace

int cmd_plan(int argc, char** argv) {
  std::vector<FlagSpec> flags = {{"model"},      {"preset"},        {"experts"},     {"dense"},       {"context"},
                                 {"fill"},       {"batch"},         {"prefill-chunk"}, {"prefetch-recall"}, {"prefetch-precision"}, {"profile"},
                                 {"hardware"},   {"no-gpu", false}, {"vram-budget"}, {"ram-budget"}, {"expert-ram"},
                                 {"nvme-cache"}, {"trace"},         {"pin"},         {"json"},
                                 {"svg"},        {"quiet", false},  {"help", false}, {"check", false},
                                 {"check-tokens"}, {"check-json"}};
  auto parsed = Args::parse(argc, argv, flags, "plan");
  if (!parsed) return std::fprintf(stderr, "error: %s\n", parsed.error().c_str()), 2;
  const Args& a = *parsed;
  if (a.has("help")) return std::printf(kUsage, planner::hardware_preset_help().c_str()), 0;
  auto fail = [](const std::string& m, int code = 1) {
    std::fprintf(stderr, "error: %s\n", m.c_str());
    return code;
  };

  if ((a.has("check-tokens") || a.has("check-json")) && !a.has("check"))
    return fail("--check-tokens and --check-json go with --check", 2);
  if (a.has("check")) {
    if (!a.has("model")) return fail("--check runs the plan: it needs --model DIR (a packed store), not --preset", 2);
    if (a.has("hardware")) return fail("--check measures this machine: it cannot check a --hardware plan", 2);
    std::error_code ec;
    if (!std::filesystem::exists(std::filesystem::path(*a.get("model")) / "manifest.json", ec))
      return fail("--check runs packed stores: " + *a.get("model") + " has no manifest.json (run `moetier convert`)", 2);
  }
  auto req = plan_request_from_args(a);
  if (!req) return fail(req.error(), 2);
  auto plan = planner::make_plan(req->request);
  if (!plan) return fail(plan.error());
  const planner::ReportContext& ctx = req->context;
  const planner::CostInputs& in = req->request.cost;
  if (!a.has("quiet")) std::fputs(planner::format_plan_report(*plan, in, ctx).c_str(), stdout);
  if (auto out = a.get("json")) {
    if (Status st = planner::save_placement(*out, plan->placement, planner::plan_summary_json(*plan, in, ctx)); !st)
      return fail(st.error());
    if (!a.has("quiet")) std::printf("placement written to %s\n", out->c_str());
  }
  if (auto out = a.get("svg")) {
    if (Status st = write_file_atomic(*out, planner::render_plan_svg(*plan, in, ctx)); !st) return fail(st.error());
    if (!a.has("quiet")) std::printf("heatmap written to %s\n", out->c_str());
  }
  if (a.has("check")) {
    PlanCheckOptions co;
    co.model_dir = *a.get("model");
    auto tokens = a.get_int("check-tokens", 32, 1, 1 << 16);
    if (!tokens) return fail(tokens.error(), 2);
    co.tokens = *tokens;
    nlohmann::json report;
    if (Status st = run_plan_check(co, *plan, in, report); !st) return fail("plan --check: " + st.error());
    if (auto out = a.get("check-json"))
      if (Status st = write_file_atomic(*out, report.dump(2) + "\n"); !st) return fail(st.error());
  }
  return 0;
}

}  // namespace mt::cli
