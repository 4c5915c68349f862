// One timed decode run of an open engine, as `bench decode` and `plan --check` measure it:
// prompts prefilled, then n steps of B sequences with greedy sampling, the model's per-part
// timing (StepProfile) and the expert scheduler's counters for the decode steps only.
#pragma once

#include <cstdint>
#include <optional>

#include "runtime/core/status.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/expert_scheduler.h"
#include "runtime/model/step_profile.h"

namespace mt::cli {

struct DecodeRun {
  int64_t prompt_tokens = 0, steps = 0, batch = 1;
  double prefill_seconds = 0;      // the first sequence's prompt
  double decode_seconds = 0;       // all steps, sampling included
  double sampling_seconds = 0;     // argmax over the vocabulary
  StepProfile profile;             // routed-expert weight bytes included (one blob per use)
  std::optional<ExpertSchedulerStats> experts;  // packed stores only
  uint64_t blob_bytes = 0;

  int64_t tokens() const { return steps * batch; }
  double decode_tokens_per_s() const { return decode_seconds > 0 ? double(tokens()) / decode_seconds : 0.0; }
  double disk_bytes_per_token() const {
    return experts && tokens() ? double(experts->cache.bytes_read) / double(tokens()) : 0.0;
  }
};

// Prompts of `prompt_tokens` fixed pseudo-random ids (one per sequence), then `steps` decode steps.
Result<DecodeRun> run_decode(Engine& e, int64_t prompt_tokens, int64_t steps, int64_t batch);

}  // namespace mt::cli
