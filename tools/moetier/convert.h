// HF checkpoint (FP8 block-scaled or BF16) -> packed store (format 2): routed experts as
// packed blobs, every other weight in the layout its kernel streams (--dense q8|q4 packed, or
// bf16). Streams tensor by tensor and expert by expert, so peak memory is one expert in fp32 plus
// a slab of one dense tensor and its packed form, whatever the model size. The store is written
// to "<dst>.partial" and renamed when complete.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>

#include "runtime/core/expert_format.h"
#include "runtime/config/model_config.h"
#include "runtime/core/status.h"

namespace mt {

struct ConvertOptions {
  std::filesystem::path src, dst;
  ExpertQuant quant = ExpertQuant::Q4;
  int64_t group = 32;
  // Dense weights (attention, indexer, shared experts, dense FFN, embedding, lm_head): "q8",
  // "q4" (packed, `group`), "bf16". kv_b (read per head by MLA), routers, norms and biases stay
  // as stored, and so does a matrix whose columns `group` does not divide.
  std::string dense = "q8";
  bool overwrite = false;
  // GGUF: write each expert matrix whose type has a row-tile form as its tiles (the same bytes
  // rearranged, runtime/core/ggml_tiles.h), which the tile GEMV reads at RAM speed.
  bool gguf_tiles = true;
};

struct ConvertPlan {
  uint64_t input_bytes = 0;   // what will be read (for progress)
  uint64_t blob_bytes = 0;    // one packed expert
  uint64_t n_blobs = 0;
  uint64_t dense_bytes = 0;   // as stored in the checkpoint
  uint64_t dense_params = 0;  // values in the non-expert tensors
  ModelConfig config;         // the checkpoint's
};

Result<ConvertPlan> plan_conversion(const ConvertOptions& o);

Status convert_to_store(const ConvertOptions& o, const std::function<void(uint64_t bytes)>& progress);

// A GGUF file (llama.cpp's deepseek2; any part of a split model) -> packed store keeping every
// tensor's GGUF blocks (convert_gguf.cpp); `quant`, `group` and `dense` do not apply.
Result<ConvertPlan> plan_gguf_conversion(const ConvertOptions& o);
Status convert_gguf_to_store(const ConvertOptions& o, const std::function<void(uint64_t bytes)>& progress);

// config.json and friends: a small text file, written whole or not at all reported.
Status write_text_file(const std::filesystem::path& path, const std::string& text);

// Copies tokenizer.json / tokenizer_config.json (those that exist) from one directory to another.
Status copy_tokenizer_files(const std::filesystem::path& from, const std::filesystem::path& to);

}  // namespace mt
