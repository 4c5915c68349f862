// The backend of one expert tier: runs a batch of routed-expert tasks on blobs that tier holds.
// The scheduler (expert_scheduler.h) launches the VRAM tier's batch, computes the CPU tiers
// meanwhile, then waits: a GPU runner works asynchronously into its own output, the CPU runner
// synchronously in launch(). Without a GPU runner the VRAM tier runs on the CPU runner.
#pragma once

#include <cstdint>

#include "cpu_kernels/expert_ffn.h"
#include "runtime/core/expert_format.h"
#include "runtime/core/status.h"

namespace mt {

class ExpertRunner {
 public:
  virtual ~ExpertRunner() = default;
  virtual const char* name() const = 0;
  // y[token] += weight * Expert(x[token]) for every task (cpu::ExpertTask); may return before
  // the work is done (then wait() finishes it). x and y stay valid until wait() returns.
  virtual Status launch(const ExpertGeometry& g, const cpu::ExpertTask* tasks, int64_t n_tasks, const float* x,
                        float* y) = 0;
  virtual Status wait() { return ok_status(); }
};

// The CPU tier: the packed-expert kernels, with their configuration and a reused workspace.
class CpuExpertRunner final : public ExpertRunner {
 public:
  explicit CpuExpertRunner(cpu::ExpertKernelConfig cfg) : cfg_(cfg) {}
  const char* name() const override { return "cpu"; }
  Status launch(const ExpertGeometry& g, const cpu::ExpertTask* tasks, int64_t n_tasks, const float* x,
                float* y) override {
    cpu::experts_ffn(g, tasks, n_tasks, x, y, cfg_, &workspace_);
    return ok_status();
  }
  size_t workspace_bytes() const { return workspace_.bytes(); }

 private:
  cpu::ExpertKernelConfig cfg_;
  cpu::ExpertWorkspace workspace_;  // reused, so decode allocates nothing once warm
};

}  // namespace mt
