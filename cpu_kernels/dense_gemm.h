// Prefill-sized products with dense weights as stored: y[n, rows] = x[n, cols] W^T through
// oneDNN's fp32 GEMM, the weights decoded exactly to fp32 one slab of rows at a time (so the
// slab stays in cache). Activations stay fp32: equal to the reference cpu::matmul within fp32
// rounding. The fast CPU backend's matmul above kGemvMaxTokens tokens.
#pragma once

#include <cstdint>

#include "runtime/core/weight_view.h"

namespace mt::cpu {

void dense_gemm(const WeightView& w, const float* x, int64_t n_tokens, float* y);

}  // namespace mt::cpu
