// The tokenizer of a GGUF model: a tokenizer.json beside the file when there is one (the
// Hugging Face original), else the one the file stores (tokenizer.ggml.*: a byte-level BPE
// vocabulary, its merges, the pre-tokenizer's name, BOS/EOS and the chat template).
#pragma once

#include <filesystem>
#include <string>

#include "runtime/core/status.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/weights/gguf.h"

namespace mt {

// The file's own tokenizer lists; errors name the key at fault.
Result<TokenizerVocab> gguf_tokenizer_vocab(const GgufModel& g);

// tokenizer.json next to `gguf_path` if present, else the file's own; `source` (optional) says
// which was used.
Result<Tokenizer> load_gguf_tokenizer(const GgufModel& g, const std::filesystem::path& gguf_path,
                                      std::string* source = nullptr);

}  // namespace mt
