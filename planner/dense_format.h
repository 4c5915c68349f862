// The non-expert weights (attention, indexer, shared experts, dense FFN, embedding, lm_head)
// in the form the CPU path holds them: as shipped ("fp8": FP8 linears with 128x128 block
// scales, BF16 embedding, head and routers; `convert --dense bf16` keeps exactly that), or
// packed by `convert --dense q8|q4` (int8 / 4-bit with a scale per 32 values, the routed-expert
// kernels' layout). kv_b, routers and norms stay as shipped in every form. What the planner
// charges to RAM and streams per token on the CPU path.
#pragma once

#include <cstdint>
#include <string>

#include "planner/model_size.h"
#include "runtime/config/model_config.h"

namespace mt::planner {

// Bytes per decoded token (per layer kind) and resident, split by the kernel that reads them.
struct DenseBytes {
  // Per MoE / dense layer: attention (with the indexer) and the shared expert / dense FFN.
  double moe_attention_packed = 0, moe_shared_packed = 0, dense_layer_packed = 0;
  double moe_attention_fp8 = 0, moe_shared_fp8 = 0, dense_layer_fp8 = 0;  // FP8 as shipped (kv_b at least)
  double moe_bf16 = 0, dense_bf16 = 0;   // norms, routers (BF16/F32 as shipped)
  double lm_head_packed = 0, lm_head_bf16 = 0;
  double embedding = 0;
  double resident = 0;                   // the whole main model's non-expert weights
};

// format: "fp8" (as shipped; "bf16" is the same here), "q8" or "q4". Throws std::invalid_argument
// for anything else (callers validate user input with dense_format_valid).
DenseBytes dense_bytes(const ModelConfig& c, const std::string& format);
bool dense_format_valid(const std::string& format);

// What `convert --dense auto` and `plan --dense auto` choose: q8, unless the q8 weights would take
// more than half of `ram_bytes` (the 671B model below ~40 GB of RAM); then q4. `why` says so.
std::string default_dense_format(const ModelConfig& c, uint64_t ram_bytes, std::string* why);

// The planner's form for a packed store's `dense.quant` ("q8", "q4"; "bf16" keeps the weights as
// shipped: "fp8"; "gguf", a GGUF's blocks of 4.5 to 8.5 bits a weight: costed as "q8").
inline std::string dense_format_of_store(const std::string& store_dense_quant) {
  if (store_dense_quant == "gguf") return "q8";
  return store_dense_quant == "bf16" ? "fp8" : store_dense_quant;
}

}  // namespace mt::planner
