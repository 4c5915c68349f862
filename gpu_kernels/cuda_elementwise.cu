#include "gpu_kernels/cuda_elementwise.cuh"

#include "gpu_kernels/cuda_common.cuh"

namespace mt::gpu {

namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

// Sum over the block in double (the reference's accumulator); every thread gets the total.
__device__ double block_sum(double v, double* shared) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = lane < int(blockDim.x / 32) ? shared[lane] : 0.0;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// One block per row. Every element is read into the sum before any is written (the block
// reduction's barriers), so y may be x.
__global__ void rmsnorm_kernel(const float* x, const float* w, float* y, int64_t dim, float eps) {
  __shared__ double shared[32];
  const float* xt = x + int64_t(blockIdx.x) * dim;
  float* yt = y + int64_t(blockIdx.x) * dim;
  double ss = 0.0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += double(xt[i]) * xt[i];
  ss = block_sum(ss, shared);
  const float inv = static_cast<float>(1.0 / sqrt(ss / double(dim) + eps));
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) yt[i] = xt[i] * inv * w[i];
}

__global__ void layernorm_kernel(const float* x, const float* w, const float* b, float* y, int64_t dim, float eps) {
  __shared__ double shared[32];
  const float* xt = x + int64_t(blockIdx.x) * dim;
  float* yt = y + int64_t(blockIdx.x) * dim;
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) sum += xt[i];
  const double mean = block_sum(sum, shared) / double(dim);
  double sq = 0.0;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const double d = xt[i] - mean;
    sq += d * d;
  }
  sq = block_sum(sq, shared);
  const float inv = static_cast<float>(1.0 / sqrt(sq / double(dim) + eps));
  const float meanf = static_cast<float>(mean);
  // Rounded op by op (no fused multiply-add), as the CPU reference computes it.
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
    yt[i] = __fadd_rn(__fmul_rn(__fmul_rn(__fsub_rn(xt[i], meanf), inv), w[i]), b[i]);
}

// One thread per rotated pair.
__global__ void rope_kernel(bool interleaved, float* x, int64_t n, int64_t heads, int64_t stride, int64_t half,
                            int64_t pos0, const float* inv_freq) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * heads * half) return;
  const int64_t k = i % half, th = i / half, t = th / heads;
  float* v = x + th * stride;
  const float phi = static_cast<float>(pos0 + t) * inv_freq[k];  // the fp32 angle
  const float c = static_cast<float>(cos(double(phi))), s = static_cast<float>(sin(double(phi)));
  const int64_t i0 = interleaved ? 2 * k : k, i1 = interleaved ? 2 * k + 1 : k + half;
  const float a = v[i0], b = v[i1];
  v[i0] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));  // no fused multiply-add: as the CPU rounds
  v[i1] = __fadd_rn(__fmul_rn(a, s), __fmul_rn(b, c));
}

__global__ void silu_mul_kernel(const float* g, const float* u, float* out, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  const float a = g[i];
  out[i] = a / (1.0f + expf(-a)) * u[i];
}

__global__ void add_kernel(float* acc, const float* x, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) acc[i] += x[i];
}

}  // namespace

void rmsnorm_rows(const float* x, const float* w, float* y, int64_t n, int64_t dim, float eps, cudaStream_t s) {
  if (n <= 0 || dim <= 0) return;
  rmsnorm_kernel<<<static_cast<unsigned>(n), kThreads, 0, s>>>(x, w, y, dim, eps);
  check(cudaGetLastError(), "rmsnorm kernel");
}

void layernorm_rows(const float* x, const float* w, const float* b, float* y, int64_t n, int64_t dim, float eps,
                    cudaStream_t s) {
  if (n <= 0 || dim <= 0) return;
  layernorm_kernel<<<static_cast<unsigned>(n), kThreads, 0, s>>>(x, w, b, y, dim, eps);
  check(cudaGetLastError(), "layernorm kernel");
}

void rope_rows(bool interleaved, float* x, int64_t n, int64_t heads, int64_t stride, int64_t rope_dim, int64_t pos0,
               const float* inv_freq, cudaStream_t s) {
  const int64_t pairs = n * heads * (rope_dim / 2);
  if (pairs <= 0) return;
  rope_kernel<<<blocks_for(pairs), kThreads, 0, s>>>(interleaved, x, n, heads, stride, rope_dim / 2, pos0, inv_freq);
  check(cudaGetLastError(), "rope kernel");
}

void silu_mul(const float* g, const float* u, float* out, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  silu_mul_kernel<<<blocks_for(n), kThreads, 0, s>>>(g, u, out, n);
  check(cudaGetLastError(), "silu_mul kernel");
}

void add_into(float* acc, const float* x, int64_t n, cudaStream_t s) {
  if (n <= 0) return;
  add_kernel<<<blocks_for(n), kThreads, 0, s>>>(acc, x, n);
  check(cudaGetLastError(), "add kernel");
}

}  // namespace mt::gpu
