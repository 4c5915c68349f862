// The median of repeated measurements (the mean of the middle two for an even count), the one
// summary every benchmark and probe of the CLI reports.
#pragma once

#include <algorithm>
#include <vector>

namespace mt::cli {

inline double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

}  // namespace mt::cli
