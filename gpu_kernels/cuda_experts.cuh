// Routed experts on the GPU: blobs copied to VRAM once in the GPU layout (gpu_layout.h), then
// batches launched asynchronously on their own stream through pinned staging (one copy in,
// the kernels, one copy out, events around them) and finished by wait(). A task of few rows
// runs through the GEMV kernels (weights read once per row); one of kGemmRows or more (a
// prefill) decodes its expert to bf16 once and runs cuBLAS GEMMs. The VRAM tier's runner
// (make_cuda_expert_runner) and the backend's expert_ffn op both use it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>

#include "gpu_kernels/cuda_common.cuh"
#include "gpu_kernels/gpu_layout.h"
#include "gpu_kernels/gpu_probe.h"
#include "runtime/backend/expert_runner.h"
#include "runtime/core/memory_budget.h"

namespace mt::gpu {

// The device and its VRAM budget, shared by the backend, its caches and the expert runner.
struct DeviceContext {
  DeviceContext(GpuInfo i, uint64_t limit) : info(std::move(i)), vram("VRAM", limit) {}
  Status charge(const std::string& what, uint64_t bytes) { return vram.charge(what, bytes); }
  GpuInfo info;
  TierBudget vram;
};

class CudaExperts {
 public:
  // `what`: the budget item its blobs are charged under.
  CudaExperts(std::shared_ptr<DeviceContext> ctx, bool resident);
  ~CudaExperts();
  CudaExperts(const CudaExperts&) = delete;
  CudaExperts& operator=(const CudaExperts&) = delete;

  // Copies `host_blob` to VRAM under `key`; tasks name it by key, or (key -1) by the blob's address.
  Status make_resident(const ExpertGeometry& g, int64_t key, const uint8_t* host_blob);
  void forget_all();
  Status launch(const ExpertGeometry& g, const ExpertTask* tasks, int64_t n_tasks, const float* x, float* y);
  Status wait();
  double last_busy_seconds() const { return busy_s_; }

 private:
  Status launch_batch(const ExpertGeometry& g, const ExpertTask* tasks, int64_t n_tasks, const float* x, float* y);
  std::shared_ptr<DeviceContext> ctx_;
  std::string what_;
  Stream stream_;
  Cublas blas_{stream_.get()};  // the prefill path's GEMMs, on the runner's stream
  Event start_, stop_;
  std::unordered_map<int64_t, DeviceBuffer> blobs_;  // key -> the VRAM copy (charged its size)
  PinnedBuffer in_, out_;
  DeviceBuffer in_dev_, h_dev_, y_dev_;
  DeviceBuffer w_bf16_, x_bf16_, gu_, h_bf16_, yt_;  // the prefill path's scratch
  std::vector<uint8_t> packed_;
  float* pending_y_ = nullptr;  // the host output of the batch in flight
  int64_t pending_elems_ = 0;
  double busy_s_ = 0.0;
};

std::unique_ptr<ExpertRunner> make_expert_runner(std::shared_ptr<DeviceContext> ctx);

}  // namespace mt::gpu
