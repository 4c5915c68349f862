// The measured half of `moetier demo`: the built-in demo model as a packed q4 store (written
// on first use), traced on a few built-in prompts, planned by the placement planner for an
// expert RAM budget smaller than its experts (so cold experts stream from disk), then run on
// the user's prompt, with the planner's prediction for exactly that run beside the measurement.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "planner/solver.h"
#include "runtime/core/status.h"

namespace mt::cli {

struct DemoRunOptions {
  std::filesystem::path store;      // the demo store (created when it has no manifest.json)
  std::string prompt;
  int64_t n_predict = 64;
  double budget_fraction = 0.4;     // expert RAM budget as a share of all expert bytes
  bool quiet = false;               // no progress bars
};

struct DemoMeasurement {
  double prefill_tokens_per_s = 0, decode_tokens_per_s = 0;
  double hit_rate = 0;              // decode only: expert uses served from RAM
  double disk_bytes_per_token = 0;  // decode only
  int64_t prompt_tokens = 0, decode_tokens = 0;
  std::string text;                 // what the model generated
};

struct DemoRun {
  planner::Plan plan;               // for the run below
  planner::CostInputs inputs;       // what the plan was made from
  uint64_t expert_ram = 0, expert_bytes_total = 0;
  int64_t layers = 0, experts = 0, traced_tokens = 0;
  DemoMeasurement measured;
};

// Traces, plans and runs the demo store (written beforehand by ensure_demo_store). `profile` is this machine's
// (its disk figures measured where the store lives).
Result<DemoRun> run_demo_model(const DemoRunOptions& o, const planner::MachineProfile& profile);

// Writes the demo store if `dir` has no manifest.json yet (a progress bar unless quiet).
Status ensure_demo_store(const std::filesystem::path& dir, bool quiet);

}  // namespace mt::cli
