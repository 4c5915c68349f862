// A GGUF model of llama.cpp's `deepseek2` architecture bound to moetier's model structure
// (ModelWeights), the weights kept in the file's own block formats: every matrix is a view of
// the mapped tensor (F32 / F16 / BF16 as themselves, Q8_0 and the K-quants as DType::GGUF), the
// routed experts are slices of the per-layer stacked *_exps tensors. The one exception is
// kv_b: llama.cpp's converter splits it into attn_k_b (transposed) and attn_v_b, which are
// decoded and rejoined into an fp32 kv_b at load (ModelWeights::derived); older files that
// still carry attn_kv_b use it as stored.
//
// Every failure is one Error naming the file and tensor: a missing or mis-shaped tensor, an
// unexpected one, and ggml types moetier has no kernel for (each such type with the tensors
// that use it).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "runtime/core/status.h"
#include "runtime/model/deepseek_weights.h"

namespace mt {

struct GgufLoadInfo {
  std::vector<std::string> notes;  // what was assumed about the file (read_gguf_deepseek)
  uint64_t derived_bytes = 0;      // bytes rebuilt at load (the fp32 kv_b)
};

// Opens `path` (one GGUF file, or any part of a split model) and binds it.
Result<ModelWeights> load_gguf_weights(const std::filesystem::path& path, GgufLoadInfo* info = nullptr);

}  // namespace mt
