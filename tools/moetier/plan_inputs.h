// Turns command-line flags into the planner's inputs: the model (checkpoint, packed store or
// preset), the expert format and its blob size, the machine (cached or measured profile, a
// profile file, or described hardware), statistics, budgets and pins. Shared by `plan` and by
// the commands that compute a plan at start-up.
#pragma once

#include <filesystem>
#include <string>

#include "planner/plan_report.h"
#include "planner/solver.h"
#include "tools/moetier/args.h"

namespace mt::cli {

struct PlanSetup {
  planner::PlanRequest request;
  planner::ReportContext context;
};

// Bytes of one routed expert of `c` in `format` (q4/q8/bf16: the packed blob; fp8: as shipped).
Result<uint64_t> expert_bytes_for(const std::string& format, const ModelConfig& c, int64_t group);

// Reads --model/--preset, --experts, --dense, --context, --fill, --batch, --prefill-chunk, --profile,
// --hardware, --no-gpu, --vram-budget, --ram-budget, --nvme-cache, --trace, --pin.
Result<PlanSetup> plan_request_from_args(const Args& a);

}  // namespace mt::cli
