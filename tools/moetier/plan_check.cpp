#include "tools/moetier/plan_check.h"

#include <algorithm>
#include <cstdio>

#include "runtime/engine/engine.h"
#include "tools/moetier/decode_run.h"

namespace mt::cli {

namespace {

double part_seconds(const StepProfile& p, ModelPart part) { return p.seconds[static_cast<size_t>(part)]; }

}  // namespace

Status run_plan_check(const PlanCheckOptions& o, const planner::Plan& plan, const planner::CostInputs& in,
                      nlohmann::json& out) {
  if (plan.gpu)
    return make_error("plan --check measures the CPU path; this plan puts work on the GPU, which this build cannot "
                      "run yet: add --no-gpu");
  const int64_t fill = in.decode_fill > 0 ? in.decode_fill : std::max<int64_t>(1, in.context / 2);
  const int64_t prompt = std::max<int64_t>(1, fill - o.tokens / 2);
  EngineOptions eo;
  eo.context = std::max(in.context, prompt + o.tokens + 1);
  eo.packed.placement = plan.placement;
  std::fprintf(stderr, "moetier plan --check: running the placement on %s: a %lld-token prompt, then %lld tokens "
               "(batch %lld)\n", o.model_dir.c_str(), static_cast<long long>(prompt), static_cast<long long>(o.tokens),
               static_cast<long long>(in.batch));
  MT_ASSIGN(auto engine, Engine::open(o.model_dir, eo));
  MT_ASSIGN(DecodeRun run, run_decode(*engine, prompt, o.tokens, in.batch));

  const planner::Prediction& pr = plan.prediction;
  const planner::CpuParts& c = pr.cpu_parts;
  const StepProfile& m = run.profile;
  const double steps = double(run.steps);
  const double measured_step = run.decode_seconds / steps;
  struct Row {
    const char* name;
    double predicted, measured;  // seconds per step
  };
  const double other = part_seconds(m, ModelPart::Embedding) + part_seconds(m, ModelPart::Other) + run.sampling_seconds;
  const Row rows[] = {
      {"attention (with indexer)", c.attention,
       (part_seconds(m, ModelPart::Attention) + part_seconds(m, ModelPart::Indexer)) / steps},
      {"dense FFN", c.dense_ffn, part_seconds(m, ModelPart::DenseFfn) / steps},
      {"routers", c.routers, part_seconds(m, ModelPart::Router) / steps},
      {"shared experts", c.shared_experts, part_seconds(m, ModelPart::SharedExpert) / steps},
      {"routed experts + disk", c.routed_experts, part_seconds(m, ModelPart::RoutedExperts) / steps},
      {"lm_head", c.lm_head, part_seconds(m, ModelPart::LmHead) / steps},
      {"other (embedding, norms, sampling)", 0.0, other / steps},
      {"whole step", pr.decode.total, measured_step},
  };
  auto ratio = [](double p, double x) {
    char b[16] = "-";
    if (p > 0 && x > 0) std::snprintf(b, sizeof b, "%.2f", p / x);
    return std::string(b);
  };
  std::printf("\nplan --check: predicted vs measured, per decode step (%lld steps at ~%lld tokens of context)\n",
              static_cast<long long>(run.steps), static_cast<long long>(prompt + o.tokens / 2));
  std::printf("  %-36s %12s %12s %10s\n", "part", "predicted ms", "measured ms", "pred/meas");
  nlohmann::json parts = nlohmann::json::object();
  for (const Row& r : rows) {
    std::printf("  %-36s %12.2f %12.2f %10s\n", r.name, 1e3 * r.predicted, 1e3 * r.measured,
                ratio(r.predicted, r.measured).c_str());
    parts[r.name] = {{"predicted_s", r.predicted}, {"measured_s", r.measured}};
  }
  // Tokens of all sequences per second on both sides (the plan's figure is per sequence).
  const double tps = run.decode_tokens_per_s(), predicted_tps = pr.decode_tokens_per_s * double(in.batch);
  const std::string label = in.batch == 1 ? "decode tokens/s" : "decode tokens/s, all " + std::to_string(in.batch) + " sequences";
  std::printf("  %-36s %12.2f %12.2f %10s\n", label.c_str(), predicted_tps, tps, ratio(predicted_tps, tps).c_str());
  out["parts"] = parts;
  out["batch"] = in.batch;
  out["predicted_tokens_per_s"] = predicted_tps;
  out["measured_tokens_per_s"] = tps;
  if (run.experts) {
    const ExpertSchedulerStats& s = *run.experts;
    const double uses = double(s.uses_vram + s.uses_ram + s.uses_nvme_hit + s.uses_nvme_miss);
    const double hit_pred = pr.share_vram + pr.share_ram + pr.share_nvme_hit;
    const double hit_meas = uses > 0 ? double(s.uses_vram + s.uses_ram + s.uses_nvme_hit) / uses : 1.0;
    const double disk_pred = pr.expert_bytes_from_disk_per_token, disk_meas = run.disk_bytes_per_token();
    std::printf("  %-36s %12.1f %12.1f %10s\n", "disk MB per token", disk_pred / 1e6, disk_meas / 1e6,
                ratio(disk_pred, disk_meas).c_str());
    std::printf("  %-36s %11.1f%% %11.1f%%\n", "expert reads served from RAM", 100.0 * hit_pred, 100.0 * hit_meas);
    if (plan.placement.count(planner::Tier::Nvme) > 0) {
      std::printf("  %-36s %11.1f%% %11.1f%%\n", "prefetch precision", 100.0 * in.prefetch_precision,
                  100.0 * s.prefetch_precision());
      std::printf("  %-36s %11.1f%% %11.1f%%\n", "prefetch recall", 100.0 * in.prefetch_recall,
                  100.0 * s.prefetch_recall());
    }
    out["disk_bytes_per_token"] = {{"predicted", disk_pred}, {"measured", disk_meas}};
    out["ram_hit_share"] = {{"predicted", hit_pred}, {"measured", hit_meas}};
    out["prefetch"] = {{"precision", {{"predicted", in.prefetch_precision}, {"measured", s.prefetch_precision()}}},
                       {"recall", {{"predicted", in.prefetch_recall}, {"measured", s.prefetch_recall()}}}};
  }
  return ok_status();
}

}  // namespace mt::cli
