// "Would this model run here, and if not, what would make it?": the smallest RAM budget with
// which the solver finds a plan at all, and the one that keeps every routed expert in RAM,
// each with the plan it gives; plus the disk the model's packed store would take. Found by
// asking the solver itself (a search over the RAM budget), so the advice can never disagree
// with what `moetier plan` would say at that budget.
#pragma once

#include <cstdint>
#include <optional>

#include "planner/solver.h"

namespace mt::planner {

struct FitAdvice {
  // The smallest RAM budget (within 1%) that plans, and that plan; nullopt when none up to
  // the search's ceiling does (e.g. a GPU reservation that no RAM can fix).
  std::optional<uint64_t> min_ram_budget;
  std::optional<Plan> at_min;
  // The smallest RAM budget that leaves no expert on NVMe, and that plan.
  std::optional<uint64_t> all_in_ram_budget;
  std::optional<Plan> all_in_ram;
  uint64_t ram_headroom = 0;  // what the OS keeps beside a budget: machine RAM = budget + this
};

// `req`'s RAM budgets (ram_budget, expert_ram_budget) are replaced; everything else is kept.
FitAdvice fit_advice(const PlanRequest& req);

// Bytes of the packed store of `in.model` with `in.expert_format` experts of `in.expert_bytes`:
// every routed expert plus the non-expert weights as shipped.
uint64_t packed_store_bytes(const CostInputs& in);

}  // namespace mt::planner
