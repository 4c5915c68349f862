// Reference CPU operators for the DeepSeek V3 family. fp32 activations, fp32 accumulation,
// OpenMP over rows. Every function here has a test against a double-precision reference.
// Activations are row-major [n_tokens, width] with the given widths (no padding).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/backend/backend.h"
#include "runtime/core/weight_view.h"

namespace mt::cpu {

// y[t, :] = x[t, :] / sqrt(mean(x[t, :]^2) + eps) * w      (y may alias x)
void rmsnorm(const float* x, const float* w, float* y, int64_t n_tokens, int64_t dim, float eps);

// y[t, :] = (x - mean) / sqrt(var + eps) * w + b           (biased variance; y may alias x)
void layernorm(const float* x, const float* w, const float* b, float* y, int64_t n_tokens,
               int64_t dim, float eps);

// Dequantize rows [row0, row0+n_rows) of `w` into out[n_rows, cols] (fp32).
void dequantize_rows(const WeightView& w, int64_t row0, int64_t n_rows, float* out);

// y[t, r] = sum_c W[r, c] * x[t, c] for t < n_tokens, r < w.rows.
// x is [n_tokens, w.cols], y is [n_tokens, w.rows]. Parallel over rows; each weight row is
// decoded once and reused for all tokens.
void matmul(const WeightView& w, const float* x, int64_t n_tokens, float* y);

// YaRN-scaled inverse frequencies for a rotary width `rope_dim` (rope_dim/2 values), per the
// DeepSeek spec section 3.3. factor <= 1 gives plain RoPE frequencies theta^(-2i/rope_dim).
std::vector<float> yarn_inv_freq(int64_t rope_dim, double theta, double factor,
                                 int64_t original_max_pos, double beta_fast, double beta_slow);

// YaRN magnitude correction m(s, mscale) = 0.1 * mscale * ln(s) + 1 (1 if s <= 1).
double yarn_mscale(double factor, double mscale);

// Rotate one vector x[rope_dim] in place at absolute position `pos` (angles p*f in fp32).
// Interleaved (MLA): pairs (x[2i], x[2i+1]). Half-split (V3.2 indexer): pairs (x[i], x[i+d/2]).
void rope_interleaved(float* x, int64_t rope_dim, int64_t pos, const float* inv_freq);
void rope_half_split(float* x, int64_t rope_dim, int64_t pos, const float* inv_freq);

// In-place numerically stable softmax over n values; -inf entries get probability 0.
void softmax(float* x, int64_t n);

// out[i] = silu(gate[i]) * up[i]  (out may alias gate or up)
void silu_mul(const float* gate, const float* up, float* out, int64_t n);

// Indices of the k largest values of x[n] (k <= n), ordered by descending value, ties broken
// by the lower index. NaN is treated as smaller than every number.
void topk(const float* x, int64_t n, int64_t k, int32_t* idx);

// In-place orthonormal Walsh-Hadamard transform (Sylvester order) of x[n], n a power of two:
// x <- H_n x / sqrt(n).
void hadamard(float* x, int64_t n);

// DeepSeek V3 group-limited sigmoid routing for one token (spec section 3.5).
using mt::RouterParams;  // runtime/backend/backend.h
// logits[n_experts] -> experts[top_k], weights[top_k]. bias may be null (no correction).
void route_sigmoid_grouped(const float* logits, const float* bias, const RouterParams& p,
                           int32_t* experts, float* weights);

}  // namespace mt::cpu
