// The expert-streaming options shared by every command that runs a packed store
// (--ram-budget, --cache-policy, --no-prefetch, --pread, --plan FILE|auto, --isa).
#pragma once

#include <memory>
#include <vector>

#include "runtime/core/status.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/expert_scheduler.h"
#include "tools/moetier/args.h"

namespace mt::cli {

// Appends the flags to a command's flag list.
void add_expert_streaming_flags(std::vector<FlagSpec>& flags);
// Reads them into `eo` (its expert-scheduler options; --plan auto: its start-up planning);
// an error names the flag.
Status read_expert_streaming_flags(const Args& a, EngineOptions& eo);

// The expert kernels' configuration: --isa scalar|avx2|avx512, else the environment's
// MOETIER_ISA; MOETIER_PREFILL_MIN=N (0: never use the oneDNN prefill path). Read here, in the
// CLI, and passed to the kernels as values.
Result<cpu::ExpertKernelConfig> expert_kernel_config(const Args& a);

// Opens --model with a KV cache of `context` tokens and the streaming flags above.
Result<std::unique_ptr<Engine>> open_engine_from_flags(const Args& a, int64_t context, bool show_progress = true);

}  // namespace mt::cli
