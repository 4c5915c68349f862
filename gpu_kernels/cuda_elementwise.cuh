// The CUDA backend's element-wise ops on device activations, computed as the reference
// backend computes them (cpu_kernels/norm.cpp, rope.cpp, ops.h): the norms accumulate in
// double, RoPE takes cos/sin in double of the fp32 angle. Launched on the caller's stream;
// none synchronises.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace mt::gpu {

// y[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w, n rows of dim (y may be x).
void rmsnorm_rows(const float* x, const float* w, float* y, int64_t n, int64_t dim, float eps, cudaStream_t s);
// y[t] = (x[t] - mean) / sqrt(var + eps) * w + b, the biased two-pass variance (y may be x).
void layernorm_rows(const float* x, const float* w, const float* b, float* y, int64_t n, int64_t dim, float eps,
                    cudaStream_t s);
// Rotates `rope_dim` dims of `heads` heads in each of n rows (head h of row t at x + (t * heads
// + h) * stride, position pos0 + t): interleaved pairs (2i, 2i+1), or half-split (i, i + rope_dim/2).
void rope_rows(bool interleaved, float* x, int64_t n, int64_t heads, int64_t stride, int64_t rope_dim, int64_t pos0,
               const float* inv_freq, cudaStream_t s);
// out[i] = silu(g[i]) * u[i] (out may alias g or u).
void silu_mul(const float* g, const float* u, float* out, int64_t n, cudaStream_t s);
// acc[i] += x[i]
void add_into(float* acc, const float* x, int64_t n, cudaStream_t s);

}  // namespace mt::gpu
