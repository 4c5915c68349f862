// The calling process's resident set (RSS), as the kernel counts it: what the memory budget's
// accounting is checked against (bench decode), not something the runtime allocates by; and the
// machine's RAM as the kernel reports it.
#pragma once

#include <cstdint>

namespace mt {

// Resident bytes of this process from /proc/self/statm; 0 where it cannot be read.
uint64_t process_rss_bytes();
// The most this process has had resident (VmHWM of /proc/self/status); 0 where it cannot be read.
uint64_t process_peak_rss_bytes();

// The machine's RAM from /proc/meminfo: MemTotal and MemAvailable (what can still be allocated
// without swapping; never above the total); zeros where it cannot be read.
struct SystemMemory {
  uint64_t total_bytes = 0;
  uint64_t available_bytes = 0;
};
SystemMemory system_memory();

}  // namespace mt
