// HF checkpoint (FP8 block-scaled or BF16) -> packed expert store. Streams tensor by tensor
// and expert by expert, so peak memory is one expert in fp32 plus one dense tensor, whatever
// the model size. The store is written to "<dst>.partial" and renamed when complete.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>

#include "runtime/core/expert_format.h"
#include "runtime/core/status.h"

namespace mt {

struct ConvertOptions {
  std::filesystem::path src, dst;
  ExpertQuant quant = ExpertQuant::Q4;
  int64_t group = 32;
  bool overwrite = false;
};

struct ConvertPlan {
  uint64_t input_bytes = 0;   // what will be read (for progress)
  uint64_t blob_bytes = 0;    // one packed expert
  uint64_t n_blobs = 0;
  uint64_t dense_bytes = 0;
};

Result<ConvertPlan> plan_conversion(const ConvertOptions& o);
Status convert_to_store(const ConvertOptions& o, const std::function<void(uint64_t bytes)>& progress);

// config.json and friends: a small text file, written whole or not at all reported.
Status write_text_file(const std::filesystem::path& path, const std::string& text);

// Copies tokenizer.json / tokenizer_config.json (those that exist) from one directory to another.
Status copy_tokenizer_files(const std::filesystem::path& from, const std::filesystem::path& to);

}  // namespace mt
