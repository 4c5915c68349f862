// One oneDNN matmul, primitives cached per shape: C[M, N] (row stride ldc, fp32) =
// A[M, K] (row-major) x W[N, K]^T (row-major, the weights' own [out, in] order), both fp32 or
// both bf16. Shared by the prefill paths of the packed experts and of dense weights.
#pragma once

#include <cstdint>

namespace mt::cpu {

struct OnednnGemm {
  int64_t M = 0, K = 0, N = 0, ldc = 0;
  bool bf16 = false;
};

void onednn_gemm(const OnednnGemm& shape, const void* A, const void* W, float* C);
// Whether oneDNN 2.6 has a bf16 matmul on this CPU (AVX-512 cores).
bool onednn_bf16_supported();

}  // namespace mt::cpu
