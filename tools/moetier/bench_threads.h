// `moetier bench ... --threads N`: the OpenMP team a benchmark runs on, set before it measures
// anything, so that its kernels and its RAM bandwidth yardstick share it.
#pragma once

#include <omp.h>

#include <cstdint>

#include "tools/moetier/args.h"

namespace mt::cli {

// --threads (0, the default: OpenMP's own count); a valid N > 0 becomes the process's team size.
inline Result<int64_t> apply_bench_threads(const Args& a) {
  Result<int64_t> threads = a.get_int("threads", 0, 0, 4096);
  if (threads && *threads > 0) omp_set_num_threads(static_cast<int>(*threads));
  return threads;
}

}  // namespace mt::cli
