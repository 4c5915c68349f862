#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "gpu_kernels/gpu_probe.h"

namespace mt::gpu {

GpuInfo probe_gpu() {
  GpuInfo info;
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    info.reason = cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error so later probes start clean
    return info;
  }
  if (count == 0) {
    info.reason = "no CUDA device";
    return info;
  }
  cudaDeviceProp prop{};
  if ((err = cudaGetDeviceProperties(&prop, 0)) != cudaSuccess) {
    info.reason = cudaGetErrorString(err);
    return info;
  }
  size_t free_b = 0, total_b = 0;
  if ((err = cudaMemGetInfo(&free_b, &total_b)) != cudaSuccess) {
    info.reason = cudaGetErrorString(err);
    return info;
  }
  info.available = true;
  info.name = prop.name;
  info.compute_major = prop.major;
  info.compute_minor = prop.minor;
  info.total_bytes = static_cast<int64_t>(total_b);
  info.free_bytes = static_cast<int64_t>(free_b);
  return info;
}

bool built_with_cuda() { return true; }

bool measure_device_copy(uint64_t bytes, CopyBandwidth& out, std::string& error) {
  void *a = nullptr, *b = nullptr;
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  auto fail = [&](cudaError_t e, const char* what) {
    error = std::string(what) + ": " + cudaGetErrorString(e);
    cudaGetLastError();
    return false;
  };
  cudaError_t e;
  bool ok = false;
  std::vector<float> ms;
  if ((e = cudaMalloc(&a, bytes)) != cudaSuccess) ok = fail(e, "cudaMalloc");
  else if ((e = cudaMalloc(&b, bytes)) != cudaSuccess) ok = fail(e, "cudaMalloc");
  else if ((e = cudaEventCreate(&e0)) != cudaSuccess || (e = cudaEventCreate(&e1)) != cudaSuccess) ok = fail(e, "cudaEventCreate");
  else {
    ok = true;
    cudaMemset(a, 1, bytes);
    for (int i = 0; i < 6 && ok; ++i) {  // the first is a warm-up
      cudaEventRecord(e0);
      cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice);
      cudaEventRecord(e1);
      if ((e = cudaEventSynchronize(e1)) != cudaSuccess) {
        ok = fail(e, "device copy");
        break;
      }
      float t = 0;
      cudaEventElapsedTime(&t, e0, e1);
      if (i) ms.push_back(t);
    }
  }
  if (ok) {
    std::sort(ms.begin(), ms.end());
    const double s = double(ms[ms.size() / 2]) / 1e3;
    out.copy_gbs = double(bytes) / s / 1e9;
    out.traffic_gbs = 2.0 * out.copy_gbs;
  }
  if (e0) cudaEventDestroy(e0);
  if (e1) cudaEventDestroy(e1);
  if (a) cudaFree(a);
  if (b) cudaFree(b);
  return ok;
}

}  // namespace mt::gpu
