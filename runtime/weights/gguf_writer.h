// Writes a GGUF file (version 3) holding metadata only, no tensors: how a packed store made from
// a GGUF keeps the tokenizer the file stored (tokenizer.gguf, read back by the GGUF reader and
// runtime/weights/gguf_tokenizer.h). Written to PATH.tmp and renamed, so a crash leaves no
// half-written file under the final name.
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include "runtime/core/status.h"
#include "runtime/weights/gguf.h"

namespace mt {

Status write_gguf_metadata(const std::filesystem::path& path, const std::map<std::string, GgufValue, std::less<>>& kv);

}  // namespace mt
