// `moetier plan --check`: runs a plan's placement on its model for some tokens and sets the
// planner's prediction beside the measurement, part by part (attention, dense FFN, routers,
// shared experts, routed experts with the disk, lm_head), with disk bytes, hit rates and the
// prefetch's precision and recall: what a researcher checks before trusting a plan.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "planner/cost_model.h"
#include "planner/solver.h"
#include "runtime/core/status.h"

namespace mt::cli {

struct PlanCheckOptions {
  std::filesystem::path model_dir;  // a packed store
  int64_t tokens = 32;              // decode steps measured
};

// Prints the comparison on stdout; `out` receives it as JSON. The decode is measured at the
// plan's context fill (a prompt of fill - tokens / 2 tokens, then `tokens` steps).
Status run_plan_check(const PlanCheckOptions& o, const planner::Plan& plan, const planner::CostInputs& in,
                      nlohmann::json& out);

}  // namespace mt::cli
