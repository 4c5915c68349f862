// The runner of one expert tier: runs a batch of routed-expert tasks on the blobs that tier
// holds. The expert scheduler (runtime/engine/expert_scheduler.h) launches the VRAM tier's
// batch, computes the CPU tiers meanwhile, then waits: a GPU runner works asynchronously into
// its own output, a CPU runner synchronously in launch().
#pragma once

#include <cstdint>

#include "runtime/backend/backend.h"
#include "runtime/core/status.h"

namespace mt {

class ExpertRunner {
 public:
  virtual ~ExpertRunner() = default;
  virtual const char* name() const = 0;
  // Makes expert `expert` of `layer` resident where this runner computes, from `blob`, which
  // may be freed once this returns: a GPU runner keeps its own copy in VRAM. Tasks then name it
  // by expert_key(layer, expert). An error names what ran out. Runners that compute where the
  // blob is need nothing.
  virtual Status make_resident(const ExpertGeometry& g, int64_t layer, int64_t expert, const uint8_t* blob) {
    (void)g, (void)layer, (void)expert, (void)blob;
    return ok_status();
  }
  // y[token] += weight * Expert(x[token]) for every task; may return before the work is done
  // (then wait() finishes it). x and y stay valid, and y untouched by the caller, until wait()
  // returns. A task with a key names an expert made resident first.
  virtual Status launch(const ExpertGeometry& g, const ExpertTask* tasks, int64_t n_tasks, const float* x, float* y) = 0;
  virtual Status wait() { return ok_status(); }
  // Seconds the device worked on the last launched batch (known after wait(); a synchronous
  // runner: 0, its time is the caller's). The scheduler's overlap accounting.
  virtual double last_busy_seconds() const { return 0.0; }
};

}  // namespace mt
