// The gpu_kernels API in a build without nvcc: the probe says why, the backend refuses.
#include "gpu_kernels/cuda_backend.h"
#include "gpu_kernels/gpu_probe.h"

namespace mt::gpu {

GpuInfo probe_gpu() {
  GpuInfo info;
  info.reason = "this build has no CUDA support (nvcc was not found at configure time)";
  return info;
}

bool built_with_cuda() { return false; }

bool measure_device_copy(uint64_t, CopyBandwidth&, std::string& error) {
  error = "this build has no CUDA support";
  return false;
}

Result<std::unique_ptr<backend::Backend>> make_cuda_backend(std::unique_ptr<backend::Backend>, const CudaOptions&) {
  return make_error("--gpu on: this build has no CUDA support (nvcc was not found at configure time); rebuild with "
                    "the CUDA toolkit at /usr/local/cuda");
}

Result<std::unique_ptr<ExpertRunner>> make_cuda_expert_runner(backend::Backend&) {
  return make_error("this build has no CUDA support");
}

const TierBudget* vram_accounting(const backend::Backend&) { return nullptr; }
Status setup_status(const backend::Backend&) { return ok_status(); }
uint64_t dense_bytes_on_host(const backend::Backend&) { return 0; }
void synchronize(backend::Backend&) {}
bool graph_stats(const backend::Backend&, GraphPolicyStats&) { return false; }

}  // namespace mt::gpu
