// The CUDA backend's own kernels: what cuBLAS does not do (conversions, the attention softmax,
// the indexer's head reduction, row gathers, the routed-expert GEMV on the store's q4/q8/bf16
// blocks). Launched on the caller's stream; none synchronises.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "gpu_kernels/fp8_cache_layout.h"
#include "gpu_kernels/gpu_layout.h"
#include "gpu_kernels/router_topk.h"

namespace mt::gpu {

// dst[i] = src[i] converted: between fp32 and bf16 (is_bf16 says dst's type); strided rows:
// rows x cols, source row stride ld_src, destination ld_dst (elements).
void convert_rows(const float* src, int64_t ld_src, void* dst, bool dst_bf16, int64_t ld_dst, int64_t rows, int64_t cols,
                  cudaStream_t s);
// The same from bf16 or fp32 to bf16 or fp32.
void convert_rows_any(const void* src, bool src_bf16, int64_t ld_src, void* dst, bool dst_bf16, int64_t ld_dst,
                      int64_t rows, int64_t cols, cudaStream_t s);
// out rows [n, cols] = src rows idx[i] (ld elements of elem_bytes each).
void gather_rows(const void* src, int64_t ld, int64_t elem_bytes, const int32_t* idx, int64_t n, void* out, int64_t cols,
                 cudaStream_t s);
// Row r of S [rows, cols] (ld_s) -> P (bf16 or fp32, ld_p): softmax(scale * S[r, :valid]),
// zero beyond; valid = causal ? min(cols, first_valid + r / heads) : cols.
void softmax_rows(const float* S, int64_t ld_s, int64_t rows, int64_t cols, bool causal, int64_t first_valid,
                  int64_t heads, float scale, void* P, bool p_bf16, int64_t ld_p, cudaStream_t s);
// score[t, s] = scale * sum_h w[t, h] * max(0, G[t*heads + h, s]) for s < visible_t = first_visible
// + t (rows of `total`); -0 made +0 and NaN made -inf, so a radix sort orders like cpu::topk.
void indexer_scores(const float* G, int64_t total, const float* w, int64_t n, int64_t heads, int64_t first_visible,
                    float scale, float* score, cudaStream_t s);
void iota(int32_t* v, int64_t n, cudaStream_t s);

// The group-limited router (router_topk.h) for n tokens: logits [n, E] and bias [E] (or null)
// on the device -> experts and weights [n, top_k] on the device. p must pass gpu_router_ok.
void route_tokens(const float* logits, const float* bias, const RouterParams& p, int64_t n, int32_t* experts,
                  float* weights, cudaStream_t s);

// FP8 cache rows (fp8_cache_layout.h): n positions from latent [n, L.latent] and k_rope
// [n, L.rope] fp32 into rows (L.bytes apart); and rows idx[i] (or i when idx is null) back as
// bf16 [n, L.latent + L.rope], ld_out elements apart.
void store_fp8_rows(const float* latent, const float* k_rope, int64_t n, const Fp8Row& L, uint8_t* rows, cudaStream_t s);
void load_fp8_rows(const uint8_t* rows, const Fp8Row& L, const int32_t* idx, int64_t n, void* out_bf16, int64_t ld_out,
                   cudaStream_t s);

// One routed-expert task on the device: `n` rows of the batch (rows[off .. off+n) of the
// token and weight arrays) through the expert at `blob` (GPU layout).
struct DeviceExpertTask {
  const uint8_t* blob;
  int32_t off, n;
};
// h[off + i, :] = silu(gate x_tok) * (up x_tok), then y[tok, :] += weight * down h, for every
// task's rows; x and y [*, hidden] fp32, h [rows, inter] fp32 scratch.
void expert_ffn(const ExpertGeometry& g, const GpuExpertLayout& L, const DeviceExpertTask* tasks, int64_t n_tasks,
                const int32_t* tokens, const float* weights, const float* x, float* h, float* y,
                cudaStream_t s);

// The prefill path of a task with many rows: its matrix `m` decoded to bf16 [rows, cols]; x
// rows tokens[i] gathered as bf16; silu(g) * u as bf16; y[tokens[i]] += weights[i] * yt[i].
void dequantize_expert_matrix(ExpertQuant q, const uint8_t* blob, const GpuMatrix& m, void* out_bf16, cudaStream_t s);
void gather_rows_bf16(const float* x, int64_t cols, const int32_t* tokens, int64_t n, void* out_bf16, cudaStream_t s);
void silu_mul_bf16(const float* g, const float* u, int64_t n, void* out_bf16, cudaStream_t s);
void scatter_add_rows(const float* yt, int64_t cols, const int32_t* tokens, const float* weights, int64_t n, float* y,
                      cudaStream_t s);

}  // namespace mt::gpu
