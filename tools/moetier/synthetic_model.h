// Writes a synthetic DeepSeek V3 / V3.2 checkpoint in exactly the HF layout (config.json,
// sharded safetensors with model.safetensors.index.json, FP8 + 128x128 block scales or BF16,
// tokenizer files), deterministic by seed. Weights are random but scaled so activations keep a
// sane magnitude through every layer, and router biases are random so routing is not uniform.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>

#include "runtime/core/expert_format.h"
#include "runtime/config/model_config.h"
#include "runtime/core/status.h"

namespace mt {

struct SyntheticModelOptions {
  ModelConfig config;
  bool fp8 = true;                    // false: BF16 weights, no quantization_config
  uint64_t seed = 0;
  int64_t shard_bytes = 4'000'000'000;  // 0: a single model.safetensors
  std::filesystem::path tokenizer;    // directory with tokenizer.json (+ tokenizer_config.json) or the json file
  std::filesystem::path out;
  bool overwrite = false;
  // Write a packed expert store instead of a HF checkpoint: the same weights (routed experts
  // rounded to FP8/BF16 exactly as the checkpoint would hold them), packed as `packed_quant`.
  // Identical to make-model followed by moetier convert, without the checkpoint on disk.
  bool packed = false;
  ExpertQuant packed_quant = ExpertQuant::Q4;
  int64_t packed_group = 32;
  std::string packed_dense = "q8";  // the dense weights' form, as convert --dense
};

// Called with the bytes just written.
using ProgressFn = std::function<void(int64_t bytes)>;

// Total bytes of tensor data the checkpoint will hold (for progress and disk checks).
int64_t synthetic_model_bytes(const SyntheticModelOptions& o);

// Writes into "<out>.partial" and renames to `out` when complete.
Status write_synthetic_model(const SyntheticModelOptions& o, const ProgressFn& progress);

}  // namespace mt
