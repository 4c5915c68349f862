// Read-only access to GGUF files (llama.cpp's format, versions 2 and 3): the metadata, the
// tensor table and the mapped tensor data, for one file or every part of a split model
// (NAME-00001-of-0000N.gguf). Validated as strictly as the safetensors reader: a bad magic, an
// unknown value or tensor type, a string or array longer than the file, a tensor whose offset
// is misaligned, whose bytes lie past the end of the file or overlap another's, a shape whose
// size overflows or does not fill whole blocks, a duplicate or over-long (64 bytes) name, an
// array of arrays, a missing or inconsistent split: each is one Error naming the file (and the
// key or tensor).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/status.h"

namespace mt {

// GGUF metadata value types.
enum class GgufType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8, Array = 9, U64 = 10, I64 = 11,
  F64 = 12,
};

struct GgufValue {
  GgufType type = GgufType::U8;
  uint64_t u = 0;  // unsigned integers and bool
  int64_t i = 0;   // signed integers
  double f = 0;    // F32, F64
  std::string s;
  // Array (of scalars or strings; arrays of arrays are refused): the elements' type and count,
  // kept by kind (a U64 above INT64_MAX keeps its bits).
  GgufType elem = GgufType::U8;
  uint64_t count = 0;
  std::vector<int64_t> ints;         // integer and bool elements
  std::vector<double> floats;        // F32 and F64 elements
  std::vector<std::string> strings;  // String elements

  // An integer of any integer type that fits in int64, else nothing.
  std::optional<int64_t> as_int() const;
  // A number of any numeric type.
  std::optional<double> as_number() const;
  const std::string* as_string() const { return type == GgufType::String ? &s : nullptr; }
};

const char* gguf_type_name(GgufType t);

struct GgufTensor {
  std::string name;
  uint32_t type = 0;           // GgmlType id (runtime/core/ggml_types.h)
  std::vector<int64_t> dims;   // ggml order: dims[0] is the innermost (contiguous) dimension
  uint64_t offset = 0;         // from the start of its file's data section
  uint64_t nbytes = 0;
  const uint8_t* data = nullptr;  // into the mapping
  std::string file;               // file name, for messages

  int64_t numel() const;
};

struct GgufFile {
  uint32_t version = 0;
  uint64_t alignment = 32;
  uint64_t data_offset = 0;  // where the data section starts
  std::map<std::string, GgufValue, std::less<>> kv;
  std::vector<GgufTensor> tensors;  // in the file's order
};

// Parses a whole GGUF file held in memory (`name` is for messages); tensor data pointers point
// into `data`.
Result<GgufFile> parse_gguf(const uint8_t* data, size_t size, const std::string& name);

// Whether a model path names a GGUF file (by its ending), so that the CLI reads it as one.
inline bool is_gguf_path(const std::string& path) {
  return path.size() > 5 && path.compare(path.size() - 5, 5, ".gguf") == 0;
}

// The parts of a split model, in order, given any one of them (or the one file of an unsplit
// model); errors when a part is missing.
Result<std::vector<std::filesystem::path>> gguf_split_paths(const std::filesystem::path& any_part);

// A model in one GGUF file or split over several, mapped. Metadata is the first part's (the
// one llama.cpp writes it to); tensors are every part's.
class GgufModel {
 public:
  static Result<GgufModel> open(const std::filesystem::path& path);

  const std::map<std::string, GgufValue, std::less<>>& metadata() const { return meta_; }
  const GgufValue* find_key(std::string_view key) const;
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* find(std::string_view name) const;
  const std::vector<std::filesystem::path>& files() const { return files_; }
  uint32_t version() const { return version_; }
  uint64_t data_bytes() const;
  // Maps every tensor's pages now (reading them from disk where the page cache lacks them), so
  // that running the model takes no page faults: for a model that fits in RAM. Best effort.
  void prefault() const;
  // Drops the mapped pages wholly inside [p, p + n) of a tensor (MADV_DONTNEED): for data copied
  // elsewhere (row tiles), so a model is not held twice. A later read maps them in again.
  void release(const uint8_t* p, uint64_t n) const;

 private:
  std::vector<std::filesystem::path> files_;
  std::vector<std::shared_ptr<const void>> maps_;
  std::map<std::string, GgufValue, std::less<>> meta_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t, std::less<>> by_name_;
  uint32_t version_ = 0;
};

}  // namespace mt
