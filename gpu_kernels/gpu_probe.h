// Asks the CUDA runtime whether a usable GPU is present. Never fails: a build without CUDA,
// a missing driver or no device all mean "CPU only", with the reason in `reason`.
#pragma once

#include <cstdint>
#include <string>

namespace mt::gpu {

struct GpuInfo {
  bool available = false;
  std::string name;
  int64_t total_bytes = 0;
  int64_t free_bytes = 0;
  int compute_major = 0;
  int compute_minor = 0;
  std::string reason;  // why not available
};

GpuInfo probe_gpu();
bool built_with_cuda();
// Device-to-device copy bandwidth of `bytes` per copy, median of 5: bytes read plus bytes
// written per second (what the device's memory moves). Errors without a GPU.
struct CopyBandwidth {
  double traffic_gbs = 0;  // (read + write) / s
  double copy_gbs = 0;     // bytes copied / s (cudaMemcpy's convention)
};
bool measure_device_copy(uint64_t bytes, CopyBandwidth& out, std::string& error);

}  // namespace mt::gpu
