#include "planner/fit_advice.h"

#include "planner/dense_format.h"

#include <cmath>

#include "planner/model_size.h"

namespace mt::planner {

namespace {

constexpr uint64_t kFloor = uint64_t(1) << 20;    // 1 MiB
constexpr uint64_t kCeiling = uint64_t(1) << 46;  // 64 TiB: beyond any one server

// The smallest budget in [kFloor, kCeiling] for which `good(plan)` holds, to 1%, assuming
// monotonicity (more RAM never turns a plan that works into one that does not).
template <class Good>
std::optional<uint64_t> smallest_budget(PlanRequest req, Good good, std::optional<Plan>& out) {
  auto try_budget = [&](uint64_t b) -> std::optional<Plan> {
    req.ram_budget = b;
    req.expert_ram_budget = 0;
    Result<Plan> p = make_plan(req);
    if (p && good(*p)) return std::move(*p);
    return std::nullopt;
  };
  std::optional<Plan> hi_plan = try_budget(kCeiling);
  if (!hi_plan) return std::nullopt;
  uint64_t lo = kFloor, hi = kCeiling;  // lo fails (or is the floor), hi works
  if (auto p = try_budget(lo)) {
    out = std::move(p);
    return lo;
  }
  while (double(hi) > double(lo) * 1.01) {
    const auto mid = static_cast<uint64_t>(std::sqrt(double(lo)) * std::sqrt(double(hi)));
    if (auto p = try_budget(mid)) {
      hi = mid;
      hi_plan = std::move(p);
    } else {
      lo = mid;
    }
  }
  out = std::move(hi_plan);
  return hi;
}

}  // namespace

FitAdvice fit_advice(const PlanRequest& req) {
  FitAdvice a;
  a.ram_headroom = req.ram_headroom;
  a.min_ram_budget = smallest_budget(req, [](const Plan&) { return true; }, a.at_min);
  a.all_in_ram_budget =
      smallest_budget(req, [](const Plan& p) { return p.placement.count(Tier::Nvme) == 0; }, a.all_in_ram);
  return a;
}

uint64_t packed_store_bytes(const CostInputs& in) {
  const ModelConfig& c = in.model;
  const ModelSizes s = compute_model_sizes(c);
  const double experts = double(s.moe_layers) * double(c.n_routed_experts);
  const double dense = dense_bytes_of(in).resident;
  return static_cast<uint64_t>(dense + experts * double(in.expert_bytes));
}

}  // namespace mt::planner
