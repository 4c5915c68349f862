// The calling process's resident set (RSS), as the kernel counts it: what the memory budget's
// accounting is checked against (bench decode), not something the runtime allocates by.
#pragma once

#include <cstdint>

namespace mt {

// Resident bytes of this process from /proc/self/statm; 0 where it cannot be read.
uint64_t process_rss_bytes();
// The most this process has had resident (VmHWM of /proc/self/status); 0 where it cannot be read.
uint64_t process_peak_rss_bytes();

}  // namespace mt
