#include "planner/dense_format.h"

#include <cstdio>
#include <stdexcept>

namespace mt::planner {

namespace {

// Bytes per value of a packed matrix with a scale per 32 values (tile padding is < 0.1%).
double packed_bytes_per_param(const std::string& f) { return f == "q8" ? 1.0 + 4.0 / 32.0 : 0.5 + 2.0 / 32.0; }

}  // namespace

bool dense_format_valid(const std::string& f) { return f == "fp8" || f == "bf16" || f == "q8" || f == "q4"; }

DenseBytes dense_bytes(const ModelConfig& c, const std::string& format) {
  if (!dense_format_valid(format)) throw std::invalid_argument("dense_bytes: unknown format " + format);
  const ModelSizes s = compute_model_sizes(c);
  const int64_t B = c.quant.block_rows > 0 ? c.quant.block_rows : 128;
  const auto blocks = [&](int64_t n) { return double((n + B - 1) / B); };
  const double H = double(c.num_attention_heads);
  // kv_b [H*(nope+v), kv_lora] stays FP8 as shipped in every form.
  const double kvb_rows = H * double(c.qk_nope_head_dim + c.v_head_dim), kvb_params = kvb_rows * double(c.kv_lora_rank);
  const double kvb_fp8 = kvb_params + 4.0 * blocks(int64_t(kvb_rows)) * blocks(c.kv_lora_rank);
  const double attn_norms = double(c.q_lora_rank + c.kv_lora_rank);  // in s.attention, BF16
  // Indexer: weights_proj (BF16) and the k_norm (F32) are not packed.
  const double ix_small_params = c.arch == ModelArch::V32 ? double(c.index_n_heads * c.hidden_size + 2 * c.index_head_dim) : 0.0;
  const double ix_small_bytes = c.arch == ModelArch::V32 ? double(2 * c.index_n_heads * c.hidden_size + 8 * c.index_head_dim) : 0.0;

  DenseBytes d;
  const double moe_small = double(s.layer_norms.fp8_bytes + s.router.fp8_bytes) + ix_small_bytes + 2.0 * attn_norms;
  const double dense_small = double(s.layer_norms.fp8_bytes) + ix_small_bytes + 2.0 * attn_norms;
  if (format == "fp8" || format == "bf16") {
    const double attn = double(s.attention.fp8_bytes + s.indexer.fp8_bytes) - ix_small_bytes - 2.0 * attn_norms;
    d.moe_attention_fp8 = attn;
    d.moe_shared_fp8 = double(s.shared_expert.fp8_bytes);
    d.dense_layer_fp8 = attn + double(s.dense_ffn.fp8_bytes);
    d.lm_head_bf16 = double(s.lm_head.fp8_bytes);
    d.embedding = double(s.embedding.fp8_bytes);
  } else {
    const double bpp = packed_bytes_per_param(format);
    const double attn_params = double(s.attention.params + s.indexer.params) - kvb_params - attn_norms - ix_small_params;
    d.moe_attention_packed = attn_params * bpp;
    d.moe_attention_fp8 = kvb_fp8;
    d.moe_shared_packed = double(s.shared_expert.params) * bpp;
    d.dense_layer_packed = (attn_params + double(s.dense_ffn.params)) * bpp;
    d.dense_layer_fp8 = kvb_fp8;
    d.lm_head_packed = double(s.lm_head.params) * bpp;
    d.embedding = double(s.embedding.params) * bpp;
  }
  d.moe_bf16 = moe_small;
  d.dense_bf16 = dense_small;
  const double moe_layer = d.moe_attention_packed + d.moe_attention_fp8 + d.moe_shared_packed + d.moe_shared_fp8 + d.moe_bf16;
  const double dense_layer = d.dense_layer_packed + d.dense_layer_fp8 + d.dense_bf16;
  d.resident = double(s.moe_layers) * moe_layer + double(s.dense_layers) * dense_layer + d.lm_head_packed +
               d.lm_head_bf16 + d.embedding + double(s.final_norm.fp8_bytes);
  return d;
}

std::string default_dense_format(const ModelConfig& c, uint64_t ram_bytes, std::string* why) {
  const double q8 = dense_bytes(c, "q8").resident;
  const bool small = ram_bytes > 0 && q8 > 0.5 * double(ram_bytes);
  if (why) {
    char buf[200];
    std::snprintf(buf, sizeof buf, "%s: the dense weights take %.1f GB as q8, %s half of the %.1f GB of RAM",
                  small ? "q4" : "q8", q8 / 1e9, small ? "more than" : "at most", double(ram_bytes) / 1e9);
    *why = buf;
  }
  return small ? "q4" : "q8";
}

}  // namespace mt::planner
