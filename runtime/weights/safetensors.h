// Read-only, memory-mapped access to safetensors checkpoints: one file, or a sharded set
// described by model.safetensors.index.json. Every structural problem (bad header JSON,
// unknown dtype, offsets out of range or overlapping, size not matching shape, index naming
// a missing file or tensor) is reported as one Error naming the file and the tensor.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/dtype.h"
#include "runtime/core/status.h"

namespace mt {

// Headers longer than this are rejected as corrupt (the limit the reference implementation uses).
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

// RAII read-only mapping of a whole file.
class MappedFile {
 public:
  static Result<std::unique_ptr<MappedFile>> open(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  MappedFile() = default;
  std::filesystem::path path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into the mapping; not necessarily aligned
  size_t nbytes = 0;
  std::string file;  // file name (no directory), for error messages
  int64_t group = 0; // Q4_PACKED / Q8_PACKED: the quantisation group along the columns
  uint32_t ggml_type = 0;  // GGUF (a packed store of a GGUF's dense weights): the GgmlType id
  bool ggml_tiled = false;  // GGUF: held as row tiles (runtime/core/ggml_tiles.h), not rows of blocks

  int64_t numel() const;
};

class TensorStore {
 public:
  // `path` is a directory (model.safetensors.index.json, else model.safetensors, else the
  // only *.safetensors file) or a single .safetensors file (a path ending in ".index.json" is
  // opened as an index). Errors name the full path of the file at fault; TensorInfo::file
  // holds the bare file name.
  static Result<TensorStore> open(const std::filesystem::path& path);

  // Tensors of some other container (a packed store's dense file) already located in memory
  // that `owner` keeps alive (a mapping or a buffer); the store holds `owner` as long as it lives.
  static TensorStore from_memory(std::shared_ptr<const void> owner, std::vector<TensorInfo> tensors);

  const TensorInfo* find(std::string_view name) const;
  const std::map<std::string, TensorInfo, std::less<>>& tensors() const { return tensors_; }

  // Tells the kernel a tensor's pages will not be read again soon (streaming conversions read
  // each tensor once: this keeps the resident set bounded). The data stays valid: a later
  // read faults the pages back in from the file. A no-op for a store made by from_memory.
  void release(const TensorInfo& t) const;

 private:
  static Result<TensorStore> open_single(const std::filesystem::path& file);
  static Result<TensorStore> open_index(const std::filesystem::path& index_path);
  // Maps and parses one file, keeping the mapping alive in files_.
  Status add_file(const std::filesystem::path& file, std::vector<TensorInfo>* tensors_out);

  std::vector<std::shared_ptr<const void>> files_;  // mappings or buffers the tensors point into
  bool releasable_ = true;                           // file mappings (release() may drop pages)
  std::map<std::string, TensorInfo, std::less<>> tensors_;
};

// Parses one safetensors image already in memory (used by TensorStore and the fuzzer).
// `file_label` names the file in errors and fills TensorInfo::file. Tensors come back in
// data-offset order; their `data` pointers point into [data, data + size).
Result<std::vector<TensorInfo>> parse_safetensors(const uint8_t* data, size_t size,
                                                  const std::string& file_label);
// As above, also returning the header's "__metadata__" strings (when `metadata` is not null).
Result<std::vector<TensorInfo>> parse_safetensors(const uint8_t* data, size_t size,
                                                  const std::string& file_label,
                                                  std::map<std::string, std::string>* metadata);

// Writes safetensors files. Tensors are written in insertion order, data 64-byte aligned.
// Files are written to "<name>.tmp" and renamed when complete, so a crash never leaves a
// file that looks valid.
class SafetensorsWriter {
 public:
  struct Entry {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  // Writes one file holding `entries`.
  static Status write_file(const std::filesystem::path& path, const std::vector<Entry>& entries,
                           const std::map<std::string, std::string>& metadata = {});
  // Writes model.safetensors.index.json mapping each tensor to its shard file name.
  static Status write_index(const std::filesystem::path& dir,
                            const std::map<std::string, std::string>& weight_map,
                            uint64_t total_size);
};

}  // namespace mt
