// `moetier bench gguf`: the GGUF block GEMV (cpu_kernels/ggml_gemv.h) at a routed expert's shape,
// in GB/s of weights and as a ratio to the RAM read bandwidth measured interleaved, per type,
// ISA level and path (int8: the default integer path; fp32: the exact path). --batch N tokens per
// product (each weight read once).
#pragma once

#include <nlohmann/json.hpp>

#include "tools/moetier/args.h"

namespace mt::cli {

int bench_gguf(const Args& a, nlohmann::ordered_json& out);

}  // namespace mt::cli
