#include "runtime/core/process_memory.h"

#include <unistd.h>

#include <cstdio>
#include <string_view>

namespace mt {

uint64_t process_rss_bytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return 0;
  unsigned long long size = 0, resident = 0;
  const int got = std::fscanf(f, "%llu %llu", &size, &resident);
  std::fclose(f);
  const long page = sysconf(_SC_PAGESIZE);
  return got == 2 && page > 0 ? resident * static_cast<uint64_t>(page) : 0;
}

uint64_t process_peak_rss_bytes() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return 0;
  char line[256];
  unsigned long long kb = 0;
  while (std::fgets(line, sizeof line, f))
    if (std::sscanf(line, "VmHWM: %llu kB", &kb) == 1) break;
  std::fclose(f);
  return kb * 1024;
}

}  // namespace mt

namespace mt {

SystemMemory system_memory() {
  SystemMemory m;
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (!f) return m;
  char key[64];
  unsigned long long kb = 0;
  while (std::fscanf(f, "%63s %llu%*[^\n]", key, &kb) == 2) {
    if (std::string_view(key) == "MemTotal:") m.total_bytes = kb * 1024;
    else if (std::string_view(key) == "MemAvailable:") m.available_bytes = kb * 1024;
  }
  std::fclose(f);
  if (m.available_bytes > m.total_bytes) m.available_bytes = m.total_bytes;
  return m;
}

}  // namespace mt
