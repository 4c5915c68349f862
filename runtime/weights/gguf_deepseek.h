// A GGUF file of llama.cpp's `deepseek2` architecture (DeepSeek V3 / R1 / V3.1) read as
// moetier's model: its ModelConfig from the metadata, and its tensors' bytes by part of the
// model, for the planner to plan with the file's real quantisation. Every missing key or
// mis-shaped tensor is one Error naming the key or tensor; where the file is silent and
// DeepSeek V3 has a fixed answer (the expert groups, before llama.cpp stored them), the answer
// is assumed and said in `notes`.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "runtime/config/model_config.h"
#include "runtime/core/status.h"
#include "runtime/weights/gguf.h"

namespace mt {

struct GgufDeepSeek {
  ModelConfig config;
  std::vector<std::string> notes;  // what was assumed
  // Bytes per main-model layer, by part; lm_head, embedding and the final norm apart.
  std::vector<uint64_t> attention, norms, router, shared, dense_ffn, experts;
  uint64_t embedding = 0, lm_head = 0, final_norm = 0, skipped = 0;  // skipped: MTP (nextn) tensors
  std::map<uint32_t, uint64_t> expert_types, dense_types;  // GgmlType id -> bytes
  // Of dense_types, the matrices a decode step multiplies by as stored: not the embedding (rows
  // looked up), kv_b's attn_k_b/attn_v_b (rejoined to fp32 at load), norms or the router.
  std::map<uint32_t, uint64_t> matmul_types;

  uint64_t expert_total() const;
  uint64_t dense_total() const;  // everything but the routed experts
};

Result<GgufDeepSeek> read_gguf_deepseek(const GgufModel& g);

}  // namespace mt
