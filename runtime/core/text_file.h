// Whole small files (manifests, profiles, traces, plans): read in one call, or written so that
// a crash or a full disk never leaves a half-written file under the final name.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "runtime/core/status.h"

namespace mt {

// The whole of a regular file. Errors name the path: "cannot read: <reason>", "not a regular
// file", or a size above `max_bytes` (a guard against reading something that is not ours).
Result<std::string> read_text_file(const std::filesystem::path& path, uint64_t max_bytes = uint64_t(1) << 30);

// Writes PATH.tmp, fsyncs it, renames it over PATH and fsyncs the directory (best effort).
// On failure PATH.tmp is removed and PATH is untouched; the error names the file and the step.
Status write_file_atomic(const std::filesystem::path& path, std::string_view bytes);

}  // namespace mt
