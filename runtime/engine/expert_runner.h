// The CPU expert tier's runner (the interface is runtime/backend/expert_runner.h): the
// packed-expert kernels, synchronously in launch(). Without a GPU runner the VRAM tier runs here.
#pragma once

#include <cstdint>

#include "cpu_kernels/expert_ffn.h"
#include "runtime/backend/expert_runner.h"

namespace mt {

class CpuExpertRunner final : public ExpertRunner {
 public:
  explicit CpuExpertRunner(cpu::ExpertKernelConfig cfg) : cfg_(cfg) {}
  const char* name() const override { return "cpu"; }
  Status launch(const ExpertGeometry& g, const ExpertTask* tasks, int64_t n_tasks, const float* x, float* y) override {
    cpu::experts_ffn(g, tasks, n_tasks, x, y, cfg_, &workspace_);
    return ok_status();
  }
  size_t workspace_bytes() const { return workspace_.bytes(); }

 private:
  cpu::ExpertKernelConfig cfg_;
  cpu::ExpertWorkspace workspace_;  // reused, so decode allocates nothing once warm
};

}  // namespace mt
