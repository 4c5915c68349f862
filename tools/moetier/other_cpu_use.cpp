#include "tools/moetier/other_cpu_use.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>

namespace mt::cli {

OtherCpuUse::OtherCpuUse() : start_(now()) {}

OtherCpuUse::Sample OtherCpuUse::now() {
  Sample s;
  std::ifstream in("/proc/stat");
  std::string line;
  if (!std::getline(in, line) || line.rfind("cpu ", 0) != 0) return s;
  std::istringstream f(line.substr(4));
  // user nice system idle iowait irq softirq steal (guest time is already in user)
  uint64_t v[8] = {};
  for (auto& x : v)
    if (!(f >> x)) return s;
  const double tick = double(std::max(1L, ::sysconf(_SC_CLK_TCK)));
  const uint64_t idle = v[3] + v[4];
  const uint64_t busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
  s.busy_s = double(busy) / tick;
  s.total_s = double(busy + idle) / tick;
  rusage ru{};
  if (::getrusage(RUSAGE_SELF, &ru) != 0) return s;
  s.self_s = double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + 1e-6 * double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
  s.ok = true;
  return s;
}

double OtherCpuUse::share() const {
  const Sample end = now();
  if (!start_.ok || !end.ok) return -1;
  const double total = end.total_s - start_.total_s;
  if (total <= 0) return 0;
  const double others = (end.busy_s - start_.busy_s) - (end.self_s - start_.self_s);
  return std::clamp(others / total, 0.0, 1.0);
}

double OtherCpuUse::busy_seconds() const {
  const Sample end = now();
  if (!start_.ok || !end.ok) return -1;
  return std::max(0.0, end.busy_s - start_.busy_s);
}

}  // namespace mt::cli
