// The packed expert store (format version 2): a directory holding
//   manifest.json          format version, the model's config.json, expert quantisation, the
//                          list of blob files and, per (layer, expert), file/offset/bytes/crc32c;
//                          per dense tensor its dtype, shape, offset, bytes and crc32c
//   dense.bin              every tensor that is not a routed expert, each 4096-aligned, in the
//                          layout its kernel streams (packed Q4/Q8, BF16, or as in the checkpoint)
//   experts-LNNN.bin       the routed experts of layer NNN, one 4096-aligned blob each
// The store knows nothing of the math: a blob is opaque bytes of `blob_bytes`, a dense tensor
// bytes whose size its dtype and shape fix.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/core/dtype.h"
#include "runtime/core/status.h"

namespace mt::offload {

// Version 3 added "ggml_tiles" (GGUF experts held as row tiles); version 2 stores read as before.
inline constexpr int kStoreFormatVersion = 3;
inline constexpr int kOldestStoreFormatVersion = 2;
inline constexpr uint64_t kBlobAlign = 4096;

// CRC-32C (Castagnoli), hardware-accelerated where available. `crc` continues a running
// checksum: crc32c(b, nb, crc32c(a, na)) == crc32c(a ++ b). crc32c("123456789") == 0xE3069283.
uint32_t crc32c(const uint8_t* data, size_t n, uint32_t crc = 0);
// The two implementations behind crc32c(), for tests: the table-driven one, and the SSE4.2 one
// (which is the table-driven one where the CPU lacks SSE4.2; see crc32c_hw_available()).
uint32_t crc32c_portable(const uint8_t* data, size_t n, uint32_t crc = 0);
uint32_t crc32c_hw(const uint8_t* data, size_t n, uint32_t crc = 0);
bool crc32c_hw_available();

struct BlobInfo {
  int32_t layer = 0;
  int32_t expert = 0;
  uint32_t file = 0;     // index into StoreManifest::files
  uint64_t offset = 0;   // multiple of kBlobAlign
  uint64_t bytes = 0;    // == blob_bytes
  uint32_t crc = 0;      // crc32c of the blob's bytes
};

// One non-expert tensor in the dense file.
struct DenseTensorInfo {
  std::string name;
  DType dtype = DType::F32;      // a safetensors dtype, Q4_PACKED / Q8_PACKED, or GGUF (ggml blocks)
  std::vector<int64_t> shape;    // 1 or 2 dims (packed: 2)
  uint64_t offset = 0;           // multiple of kBlobAlign
  uint64_t bytes = 0;            // fixed by dtype, shape and (packed) dense_group
  uint32_t crc = 0;              // crc32c of the bytes
  uint32_t ggml_type = 0;        // GGUF only: the GgmlType id
  bool ggml_tiles = false;       // GGUF only (version 3 on): a matrix held as row tiles (runtime/core/ggml_tiles.h)
};

// Bytes a dense tensor of this dtype and shape must have (packed: with `group`; GGUF: of
// `ggml_type`, as row tiles with `ggml_tiles`: a matrix store_tiled_matrix allows); 0 when the
// combination is invalid (and `why` says why).
uint64_t dense_tensor_bytes(DType dtype, const std::vector<int64_t>& shape, int64_t group, std::string* why,
                            uint32_t ggml_type = 0, bool ggml_tiles = false);

struct StoreManifest {
  int version = kStoreFormatVersion;
  std::string config_json;            // the model's HF config.json text
  std::string expert_quant;           // "q4" | "q8" | "bf16" | "gguf"
  // "gguf" (convert FILE.gguf): per MoE layer, the GgmlType ids of its experts' gate, up and
  // down, as the GGUF holds them; blob_bytes is the largest layer's blob (the others padded).
  std::map<int32_t, std::array<uint32_t, 3>> expert_ggml_types;
  // "gguf" (version 3 on): the matrices with a tile form are held as row tiles
  // (ExpertGeometry::ggml_tiles, runtime/core/expert_format.h), not as the file's blocks.
  bool expert_ggml_tiles = false;
  int64_t group = 0;
  int64_t hidden = 0, inter = 0;      // expert geometry, for checking
  uint64_t blob_bytes = 0;
  std::string dense_file = "dense.bin";
  std::string dense_quant = "bf16";          // how convert stored the dense weights: "q8" | "q4" | "bf16"
  int64_t dense_group = 32;                  // quantisation group of the packed dense tensors
  std::vector<DenseTensorInfo> dense;        // in file order
  std::vector<std::string> files;     // blob files, relative to the store directory
  std::vector<BlobInfo> blobs;        // sorted by (layer, expert)
};

// "experts-L007.bin": the blob file of a layer.
std::string blob_file_name(int32_t layer);

// Parses and validates manifest.json text (everything that does not need the files): format,
// version, field types and ranges, blob_bytes, file indices, alignment, duplicates. Blobs come
// back sorted by (layer, expert). Every error starts with `label`.
Result<StoreManifest> parse_manifest(std::string_view json, const std::string& label);
// The manifest.json text of `m` (config_json must be a JSON object, or empty for {}).
Result<std::string> manifest_to_json(const StoreManifest& m);

// Writes a store into "<dir>.partial" and renames it to <dir> in finish(): an interrupted
// conversion never leaves a directory that opens as a store.
class ExpertStoreWriter {
 public:
  static Result<ExpertStoreWriter> create(const std::filesystem::path& dir, StoreManifest header, bool overwrite);
  ExpertStoreWriter(ExpertStoreWriter&&) noexcept;
  ExpertStoreWriter& operator=(ExpertStoreWriter&&) noexcept;
  ~ExpertStoreWriter();  // without finish(): removes the partial directory

  // The directory files are written into now (config.json, the tokenizer).
  const std::filesystem::path& staging_dir() const;
  // Appends one dense tensor (bytes.size() == dense_tensor_bytes) to the dense file, 4096-aligned.
  Status add_dense(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const uint8_t* data,
                   size_t bytes, uint32_t ggml_type = 0, bool ggml_tiles = false);
  // Appends one blob (bytes.size() == blob_bytes) to experts-L<layer>.bin.
  Status add_blob(int32_t layer, int32_t expert, const uint8_t* data, size_t bytes);
  // Writes manifest.json, fsyncs, renames the staging directory to the final one.
  Status finish();

 private:
  ExpertStoreWriter() = default;
  struct Impl;
  Impl* impl_ = nullptr;
};

class ExpertStore {
 public:
  // Reads and validates the manifest: version, every listed file present with the size the
  // blobs and dense tensors need, offsets aligned and in range, no duplicate (layer, expert) or
  // tensor name. Errors name the file and the layer/expert or tensor. Contents (crc32c) are
  // checked where they are first loaded: blobs by the blob loader, dense tensors by the engine.
  static Result<ExpertStore> open(const std::filesystem::path& dir);
  static bool looks_like_store(const std::filesystem::path& dir);  // manifest.json exists

  const StoreManifest& manifest() const { return m_; }
  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path file_path(uint32_t file) const { return dir_ / m_.files[file]; }
  const BlobInfo* find(int32_t layer, int32_t expert) const;
  std::filesystem::path dense_path() const { return dir_ / m_.dense_file; }

 private:
  std::filesystem::path dir_;
  StoreManifest m_;
  std::map<std::pair<int32_t, int32_t>, size_t> index_;
};

}  // namespace mt::offload
