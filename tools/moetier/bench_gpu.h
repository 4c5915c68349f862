// `moetier bench gpu`: the CUDA backend's kernels at DeepSeek V3's real attention shapes.
#pragma once

#include <nlohmann/json.hpp>

#include "tools/moetier/args.h"

namespace mt::cli {

int bench_gpu(const Args& a, nlohmann::ordered_json& out);

}  // namespace mt::cli
