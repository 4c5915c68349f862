#include <cuda_bf16.h>

#include <cmath>

#include "gpu_kernels/cuda_common.cuh"
#include "gpu_kernels/cuda_ops.cuh"

namespace mt::gpu {

namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t n, int per = kThreads) { return static_cast<int>((n + per - 1) / per); }

__device__ __forceinline__ float load_val(const void* p, bool bf16, int64_t i) {
  return bf16 ? __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]) : static_cast<const float*>(p)[i];
}
__device__ __forceinline__ void store_val(void* p, bool bf16, int64_t i, float v) {
  if (bf16) static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  else static_cast<float*>(p)[i] = v;
}

__global__ void convert_kernel(const void* src, bool src_bf16, int64_t ld_src, void* dst, bool dst_bf16, int64_t ld_dst,
                               int64_t rows, int64_t cols) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * cols) return;
  const int64_t r = i / cols, c = i % cols;
  store_val(dst, dst_bf16, r * ld_dst + c, load_val(src, src_bf16, r * ld_src + c));
}

__global__ void gather_kernel(const uint8_t* src, int64_t ld_bytes, const int32_t* idx, int64_t n, uint8_t* out,
                              int64_t row_bytes) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * row_bytes) return;
  const int64_t r = i / row_bytes, b = i % row_bytes;
  out[i] = src[int64_t(idx[r]) * ld_bytes + b];
}

__device__ float block_reduce(float v, bool is_max, float* shared) {
  for (int o = 16; o > 0; o >>= 1) {
    const float u = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, u) : v + u;
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // shared may still hold an earlier reduction's values
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  const int warps = blockDim.x / 32;
  v = lane < warps ? shared[lane] : (is_max ? -INFINITY : 0.0f);
  for (int o = 16; o > 0; o >>= 1) {
    const float u = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, u) : v + u;
  }
  return v;
}

__global__ void softmax_kernel(const float* S, int64_t ld_s, int64_t cols, bool causal, int64_t first_valid, int64_t heads,
                               float scale, void* P, bool p_bf16, int64_t ld_p) {
  __shared__ float shared[32];
  const int64_t r = blockIdx.x;
  const int64_t valid = causal ? min(cols, first_valid + r / heads) : cols;
  const float* row = S + r * ld_s;
  float m = -INFINITY;
  for (int64_t c = threadIdx.x; c < valid; c += blockDim.x) m = fmaxf(m, scale * row[c]);
  m = block_reduce(m, true, shared);
  float sum = 0.0f;
  for (int64_t c = threadIdx.x; c < valid; c += blockDim.x) sum += expf(scale * row[c] - m);
  sum = block_reduce(sum, false, shared);
  const float inv = 1.0f / sum;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    store_val(P, p_bf16, r * ld_p + c, c < valid ? expf(scale * row[c] - m) * inv : 0.0f);
}

__global__ void indexer_score_kernel(const float* G, int64_t total, const float* w, int64_t n, int64_t heads,
                                     int64_t first_visible, float scale, float* score) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * total) return;
  const int64_t t = i / total, s = i % total;
  if (s >= first_visible + t) {
    score[i] = -INFINITY;
    return;
  }
  float acc = 0.0f;
  for (int64_t h = 0; h < heads; ++h) acc += w[t * heads + h] * fmaxf(G[(t * heads + h) * total + s], 0.0f);
  acc = acc * scale + 0.0f;  // -0 -> +0: cpu::topk treats them as equal
  score[i] = isnan(acc) ? -INFINITY : acc;
}

__global__ void iota_kernel(int32_t* v, int64_t n) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) v[i] = static_cast<int32_t>(i);
}

// One warp per output row; lanes split k in chunks of 8 (gpu_expert_row8).
constexpr int kWarps = 8;

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__global__ void expert_gate_up_kernel(ExpertQuant q, GpuMatrix gate, GpuMatrix up, const DeviceExpertTask* tasks,
                                      const int32_t* tokens, const float* x, int64_t hidden, float* h, int64_t inter) {
  const DeviceExpertTask task = tasks[blockIdx.y];
  const int64_t r = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= inter) return;
  for (int32_t i = 0; i < task.n; ++i) {
    const float* xr = x + int64_t(tokens[task.off + i]) * hidden;
    float g = 0.0f, u = 0.0f;
    for (int64_t k0 = int64_t(lane) * 8; k0 < hidden; k0 += 32 * 8) {
      float wg[8], wu[8];
      gpu_expert_row8(q, task.blob, gate, r, k0, wg);
      gpu_expert_row8(q, task.blob, up, r, k0, wu);
      for (int j = 0; j < 8; ++j) g += wg[j] * xr[k0 + j], u += wu[j] * xr[k0 + j];
    }
    g = warp_sum(g);
    u = warp_sum(u);
    if (lane == 0) h[int64_t(task.off + i) * inter + r] = g / (1.0f + expf(-g)) * u;
  }
}

__global__ void expert_down_kernel(ExpertQuant q, GpuMatrix down, const DeviceExpertTask* tasks, const int32_t* tokens,
                                   const float* weights, const float* h, int64_t inter, float* y, int64_t hidden) {
  const DeviceExpertTask task = tasks[blockIdx.y];
  const int64_t r = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (r >= hidden) return;
  for (int32_t i = 0; i < task.n; ++i) {
    const float* hr = h + int64_t(task.off + i) * inter;
    float acc = 0.0f;
    for (int64_t k0 = int64_t(lane) * 8; k0 < inter; k0 += 32 * 8) {
      float w[8];
      gpu_expert_row8(q, task.blob, down, r, k0, w);
      for (int j = 0; j < 8; ++j) acc += w[j] * hr[k0 + j];
    }
    acc = warp_sum(acc);
    if (lane == 0) atomicAdd(&y[int64_t(tokens[task.off + i]) * hidden + r], weights[task.off + i] * acc);
  }
}

__global__ void dequant_kernel(ExpertQuant q, const uint8_t* blob, GpuMatrix m, __nv_bfloat16* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x, chunks = m.cols / 8;
  if (i >= m.rows * chunks) return;
  const int64_t r = i / chunks, k0 = (i % chunks) * 8;
  float w[8];
  gpu_expert_row8(q, blob, m, r, k0, w);
  for (int j = 0; j < 8; ++j) out[r * m.cols + k0 + j] = __float2bfloat16_rn(w[j]);
}

__global__ void gather_bf16_kernel(const float* x, int64_t cols, const int32_t* tokens, int64_t n, __nv_bfloat16* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * cols) return;
  out[i] = __float2bfloat16_rn(x[int64_t(tokens[i / cols]) * cols + i % cols]);
}

__global__ void silu_mul_kernel(const float* g, const float* u, int64_t n, __nv_bfloat16* out) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  out[i] = __float2bfloat16_rn(g[i] / (1.0f + expf(-g[i])) * u[i]);
}

__global__ void scatter_add_kernel(const float* yt, int64_t cols, const int32_t* tokens, const float* weights, int64_t n,
                                   float* y) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * cols) return;
  const int64_t r = i / cols;
  atomicAdd(&y[int64_t(tokens[r]) * cols + i % cols], weights[r] * yt[i]);
}

}  // namespace

void dequantize_expert_matrix(ExpertQuant q, const uint8_t* blob, const GpuMatrix& m, void* out_bf16, cudaStream_t s) {
  dequant_kernel<<<blocks_for(m.rows * (m.cols / 8)), kThreads, 0, s>>>(q, blob, m, static_cast<__nv_bfloat16*>(out_bf16));
  check(cudaGetLastError(), "expert dequantisation kernel launch");
}

void gather_rows_bf16(const float* x, int64_t cols, const int32_t* tokens, int64_t n, void* out_bf16, cudaStream_t s) {
  if (n * cols == 0) return;
  gather_bf16_kernel<<<blocks_for(n * cols), kThreads, 0, s>>>(x, cols, tokens, n, static_cast<__nv_bfloat16*>(out_bf16));
  check(cudaGetLastError(), "row gather kernel launch");
}

void silu_mul_bf16(const float* g, const float* u, int64_t n, void* out_bf16, cudaStream_t s) {
  if (n == 0) return;
  silu_mul_kernel<<<blocks_for(n), kThreads, 0, s>>>(g, u, n, static_cast<__nv_bfloat16*>(out_bf16));
  check(cudaGetLastError(), "silu kernel launch");
}

void scatter_add_rows(const float* yt, int64_t cols, const int32_t* tokens, const float* weights, int64_t n, float* y,
                      cudaStream_t s) {
  if (n * cols == 0) return;
  scatter_add_kernel<<<blocks_for(n * cols), kThreads, 0, s>>>(yt, cols, tokens, weights, n, y);
  check(cudaGetLastError(), "scatter-add kernel launch");
}

void gemm_rm(cublasHandle_t h, int64_t M, int64_t N, int64_t K, const Mat& A, const Mat& B, bool b_nk, void* C,
             cudaDataType ct, int64_t ldc, int64_t stride_c, int64_t batch) {
  const float alpha = 1.0f, beta = 0.0f;
  const cublasOperation_t op_b = b_nk ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (batch <= 1) {
    check(cublasGemmEx(h, op_b, CUBLAS_OP_N, int(N), int(M), int(K), &alpha, B.ptr, B.type, int(B.ld), A.ptr, A.type,
                       int(A.ld), &beta, C, ct, int(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "cublasGemmEx");
    return;
  }
  check(cublasGemmStridedBatchedEx(h, op_b, CUBLAS_OP_N, int(N), int(M), int(K), &alpha, B.ptr, B.type, int(B.ld),
                                   B.stride, A.ptr, A.type, int(A.ld), A.stride, &beta, C, ct, int(ldc), stride_c,
                                   int(batch), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
        "cublasGemmStridedBatchedEx");
}

void convert_rows(const float* src, int64_t ld_src, void* dst, bool dst_bf16, int64_t ld_dst, int64_t rows, int64_t cols,
                  cudaStream_t s) {
  convert_rows_any(src, false, ld_src, dst, dst_bf16, ld_dst, rows, cols, s);
}

void convert_rows_any(const void* src, bool src_bf16, int64_t ld_src, void* dst, bool dst_bf16, int64_t ld_dst,
                      int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows * cols == 0) return;
  convert_kernel<<<blocks_for(rows * cols), kThreads, 0, s>>>(src, src_bf16, ld_src, dst, dst_bf16, ld_dst, rows, cols);
  check(cudaGetLastError(), "convert kernel launch");
}

void gather_rows(const void* src, int64_t ld, int64_t elem_bytes, const int32_t* idx, int64_t n, void* out, int64_t cols,
                 cudaStream_t s) {
  if (n == 0) return;
  const int64_t row_bytes = cols * elem_bytes;
  gather_kernel<<<blocks_for(n * row_bytes), kThreads, 0, s>>>(static_cast<const uint8_t*>(src), ld * elem_bytes, idx, n,
                                                              static_cast<uint8_t*>(out), row_bytes);
  check(cudaGetLastError(), "gather kernel launch");
}

void softmax_rows(const float* S, int64_t ld_s, int64_t rows, int64_t cols, bool causal, int64_t first_valid,
                  int64_t heads, float scale, void* P, bool p_bf16, int64_t ld_p, cudaStream_t s) {
  if (rows == 0) return;
  softmax_kernel<<<static_cast<unsigned>(rows), kThreads, 0, s>>>(S, ld_s, cols, causal, first_valid, heads, scale, P,
                                                                 p_bf16, ld_p);
  check(cudaGetLastError(), "softmax kernel launch");
}

void indexer_scores(const float* G, int64_t total, const float* w, int64_t n, int64_t heads, int64_t first_visible,
                    float scale, float* score, cudaStream_t s) {
  if (n * total == 0) return;
  indexer_score_kernel<<<blocks_for(n * total), kThreads, 0, s>>>(G, total, w, n, heads, first_visible, scale, score);
  check(cudaGetLastError(), "indexer score kernel launch");
}

void iota(int32_t* v, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  iota_kernel<<<blocks_for(n), kThreads, 0, s>>>(v, n);
  check(cudaGetLastError(), "iota kernel launch");
}

void expert_ffn(const ExpertGeometry& g, const GpuExpertLayout& L, const DeviceExpertTask* tasks, int64_t n_tasks,
                const int32_t* tokens, const float* weights, const float* x, float* h, float* y,
                cudaStream_t s) {
  if (n_tasks == 0) return;
  const dim3 block(kWarps * 32);
  const dim3 grid_gu(static_cast<unsigned>((g.inter + kWarps - 1) / kWarps), static_cast<unsigned>(n_tasks));
  expert_gate_up_kernel<<<grid_gu, block, 0, s>>>(g.quant, L.mat[0], L.mat[1], tasks, tokens, x, g.hidden, h, g.inter);
  check(cudaGetLastError(), "expert gate/up kernel launch");
  const dim3 grid_d(static_cast<unsigned>((g.hidden + kWarps - 1) / kWarps), static_cast<unsigned>(n_tasks));
  expert_down_kernel<<<grid_d, block, 0, s>>>(g.quant, L.mat[2], tasks, tokens, weights, h, g.inter, y, g.hidden);
  check(cudaGetLastError(), "expert down kernel launch");
}

namespace {

// One thread per (position, latent block); the block after the last writes the rotated key.
__global__ void store_fp8_kernel(const float* latent, const float* k_rope, int64_t n, Fp8Row L, uint8_t* rows) {
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * (L.blocks + 1)) return;
  const int64_t t = i / (L.blocks + 1), b = i % (L.blocks + 1);
  uint8_t* row = rows + uint64_t(t) * L.bytes;
  if (b < L.blocks) fp8_store_block(latent + t * L.latent, L, b, row);
  else fp8_store_rope(k_rope + t * L.rope, L, row);
}

__global__ void load_fp8_kernel(const uint8_t* rows, Fp8Row L, const int32_t* idx, int64_t n, __nv_bfloat16* out,
                                int64_t ld_out) {
  const int64_t width = L.latent + L.rope;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n * width) return;
  const int64_t r = i / width, j = i % width;
  const int64_t src = idx ? int64_t(idx[r]) : r;
  out[r * ld_out + j] = __float2bfloat16_rn(fp8_load(rows + uint64_t(src) * L.bytes, L, j));
}

}  // namespace

void store_fp8_rows(const float* latent, const float* k_rope, int64_t n, const Fp8Row& L, uint8_t* rows, cudaStream_t s) {
  if (n <= 0) return;
  store_fp8_kernel<<<blocks_for(n * (L.blocks + 1)), kThreads, 0, s>>>(latent, k_rope, n, L, rows);
  check(cudaGetLastError(), "store_fp8_rows kernel");
}

void load_fp8_rows(const uint8_t* rows, const Fp8Row& L, const int32_t* idx, int64_t n, void* out_bf16, int64_t ld_out,
                   cudaStream_t s) {
  if (n <= 0) return;
  load_fp8_kernel<<<blocks_for(n * (L.latent + L.rope)), kThreads, 0, s>>>(rows, L, idx, n,
                                                                        static_cast<__nv_bfloat16*>(out_bf16), ld_out);
  check(cudaGetLastError(), "load_fp8_rows kernel");
}

namespace {
// One thread per token: a token's routing is a few thousand compares, and its arrays are per
// thread.
__global__ void route_kernel(const float* logits, const float* bias, RouterParams p, int64_t n, int32_t* experts,
                             float* weights) {
  const int64_t t = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n) return;
  route_token(logits + t * p.n_experts, bias, p, experts + t * p.top_k, weights + t * p.top_k);
}
}  // namespace

void route_tokens(const float* logits, const float* bias, const RouterParams& p, int64_t n, int32_t* experts,
                  float* weights, cudaStream_t s) {
  if (n <= 0) return;
  route_kernel<<<static_cast<unsigned>((n + 63) / 64), 64, 0, s>>>(logits, bias, p, n, experts, weights);
  check(cudaGetLastError(), "route kernel");
}

}  // namespace mt::gpu
