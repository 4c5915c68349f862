// The packed expert store: manifest parsing/validation, the writer (staging directory, aligned
// appends, crc32c, fsync + rename on finish) and open() with per-file size checks.
// The on-disk format is described in docs/formats.md.
#include "offload/expert_store.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "runtime/core/expert_format.h"
#include "runtime/core/ggml_tiles.h"
#include "runtime/core/ggml_types.h"
#include "runtime/core/json_fields.h"
#include "runtime/core/text_file.h"

namespace mt::offload {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace {

constexpr const char* kFormatName = "moetier-expert-store";
constexpr const char* kManifestName = "manifest.json";
constexpr uint64_t kMaxManifestBytes = 256ull << 20;
constexpr int kMaxJsonDepth = 128;

std::string errno_text(int e) { return std::strerror(e); }

std::string layer_expert(int64_t layer, int64_t expert) {
  return "layer " + std::to_string(layer) + " expert " + std::to_string(expert);
}

// A file name that stays inside the store directory.
bool plain_name(const std::string& s) {
  if (s.empty() || s.size() > 255 || s == "." || s == "..") return false;
  if (s == kManifestName || s == std::string(kManifestName) + ".tmp") return false;
  for (char c : s)
    if (c == '/' || c == '\0') return false;
  return true;
}

// Deepest {/[ nesting of a JSON text (strings skipped), so that pathological nesting is refused
// before the recursive parts of the JSON library (dump, comparisons) see it.
int json_depth(std::string_view s) {
  int depth = 0, max_depth = 0;
  bool in_string = false, escaped = false;
  for (char c : s) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '{' || c == '[') max_depth = std::max(max_depth, ++depth);
    else if (c == '}' || c == ']') --depth;
  }
  return max_depth;
}

const char* type_name(const ojson& v) { return v.type_name(); }

// The dtypes a dense tensor may have: safetensors' float types and the packed layouts.
std::optional<DType> dense_dtype_from_name(std::string_view n) {
  if (n == "Q4_PACKED") return DType::Q4_PACKED;
  if (n == "Q8_PACKED") return DType::Q8_PACKED;
  if (n == "GGUF") return DType::GGUF;
  auto t = dtype_from_name(n);
  if (t && (*t == DType::F32 || *t == DType::F16 || *t == DType::BF16 || *t == DType::F8_E4M3)) return t;
  return std::nullopt;
}

constexpr int64_t kMaxDim = int64_t{1} << 31;
constexpr size_t kMaxTensorName = 1024;

// Checks shared by the writer's header and the parsed manifest.
Status check_expert_fields(const StoreManifest& m, const std::string& where) {
  if (m.expert_quant.empty()) return make_error(where + ": expert quantisation (\"quant\") is empty");
  if (m.group < 0) return make_error(where + ": \"group\" is " + std::to_string(m.group) + ", must not be negative");
  if (m.hidden <= 0 || m.inter <= 0)
    return make_error(where + ": expert geometry hidden=" + std::to_string(m.hidden) + " inter=" +
                      std::to_string(m.inter) + " must be positive");
  if (m.blob_bytes == 0) return make_error(where + ": \"blob_bytes\" is 0");
  if (m.expert_ggml_tiles && m.expert_quant != "gguf")
    return make_error(where + ": \"ggml_tiles\" is only for \"gguf\" experts, not \"" + m.expert_quant + "\"");
  if (m.blob_bytes % kBlobAlign != 0)
    return make_error(where + ": \"blob_bytes\" " + std::to_string(m.blob_bytes) + " is not a multiple of " +
                      std::to_string(kBlobAlign));
  if (!plain_name(m.dense_file))
    return make_error(where + ": dense_file \"" + m.dense_file + "\" is not a plain file name inside the store");
  if (m.dense_quant.empty()) return make_error(where + ": dense quantisation (\"quant\") is empty");
  if (m.dense_group <= 0 || m.dense_group > 4096 || m.dense_group % 8)
    return make_error(where + ": dense \"group\" is " + std::to_string(m.dense_group) +
                      ", must be a multiple of 8 in 8..4096");
  return ok_status();
}

// The optional "ggml_tiles" flag of `obj` (the experts, or a dense tensor): absent is false; it
// must be a boolean, and only a version-3 store has it.
Result<bool> ggml_tiles_flag(const ojson& obj, const std::string& where, int64_t version) {
  auto tl = obj.find("ggml_tiles");
  if (tl == obj.end()) return false;
  if (!tl->is_boolean()) return make_error(where + ": \"ggml_tiles\" must be true or false");
  if (version < 3)
    return make_error(where + ": \"ggml_tiles\" needs store format version 3 (this store says " + std::to_string(version) + ")");
  return tl->get<bool>();
}

Result<ojson> config_object(const std::string& text, const std::string& where) {
  if (text.empty()) return ojson::object();
  if (json_depth(text) > kMaxJsonDepth) return make_error(where + ": config_json is nested too deeply");
  ojson c;
  try {
    c = ojson::parse(text.begin(), text.end());
  } catch (const std::exception& e) {
    return make_error(where + ": config_json is not valid JSON: " + e.what());
  }
  if (!c.is_object()) return make_error(where + ": config_json must be a JSON object, not " + std::string(type_name(c)));
  return c;
}

// ---- small POSIX helpers; every error names the path ----

Status write_all(int fd, const uint8_t* p, size_t n, uint64_t off, const fs::path& path) {
  while (n > 0) {
    const size_t step = std::min<size_t>(n, size_t{1} << 30);
    const ssize_t w = ::pwrite(fd, p, step, static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      return make_error("writing " + path.string() + " at offset " + std::to_string(off) + ": " + errno_text(errno));
    }
    if (w == 0) return make_error("writing " + path.string() + " at offset " + std::to_string(off) + ": no progress");
    p += w;
    n -= static_cast<size_t>(w);
    off += static_cast<uint64_t>(w);
  }
  return ok_status();
}

Status fsync_fd(int fd, const fs::path& path) {
  while (::fsync(fd) != 0) {
    if (errno == EINTR) continue;
    if (errno == EINVAL || errno == EROFS) return ok_status();  // cannot be synced: nothing to do
    return make_error("fsync " + path.string() + ": " + errno_text(errno));
  }
  return ok_status();
}

Status close_fd(int& fd, const fs::path& path) {
  if (fd < 0) return ok_status();
  const int r = ::close(fd);
  fd = -1;
  if (r != 0 && errno != EINTR) return make_error("closing " + path.string() + ": " + errno_text(errno));
  return ok_status();
}

Status fsync_path(const fs::path& path, bool directory) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | (directory ? O_DIRECTORY : 0));
  if (fd < 0) return make_error("opening " + path.string() + " to fsync it: " + errno_text(errno));
  Status s = fsync_fd(fd, path);
  ::close(fd);
  return s;
}

// A final store directory that may be replaced: an existing store, or an empty directory.
Status check_replaceable(const fs::path& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return make_error(dir.string() + " exists and is not a directory; refusing to replace it");
  if (ExpertStore::looks_like_store(dir)) return ok_status();
  if (fs::is_empty(dir, ec) && !ec) return ok_status();
  return make_error("refusing to overwrite " + dir.string() +
                    ": it is neither a moetier expert store (no manifest.json) nor empty");
}

fs::path normalised_dir(const fs::path& dir) {
  fs::path d = dir.lexically_normal();
  if (!d.has_filename() && d.has_parent_path() && d != d.root_path()) d = d.parent_path();
  return d;
}

}  // namespace

std::string blob_file_name(int32_t layer) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "experts-L%03d.bin", static_cast<int>(layer));
  return buf;
}

uint64_t dense_tensor_bytes(DType dtype, const std::vector<int64_t>& shape, int64_t group, std::string* why,
                            uint32_t ggml_type, bool ggml_tiles) {
  auto fail = [&](const std::string& w) {
    if (why) *why = w;
    return uint64_t{0};
  };
  if (ggml_tiles && dtype != DType::GGUF) return fail("only GGUF blocks are held as row tiles");
  if (shape.empty() || shape.size() > 2) return fail("shape must have 1 or 2 dimensions");
  for (int64_t d : shape)
    if (d <= 0 || d > kMaxDim) return fail("dimension " + std::to_string(d) + " is out of range 1..2^31");
  if (dtype == DType::GGUF) {
    const GgmlTypeInfo* t = ggml_type_info(ggml_type);
    if (!t) return fail("unknown ggml type " + std::to_string(ggml_type));
    if (shape.back() % t->block)
      return fail(std::string(t->name) + " rows of " + std::to_string(shape.back()) + " values are not whole blocks");
    if (ggml_tiles) {
      if (shape.size() != 2 || !store_tiled_matrix(ggml_type, shape[0]))
        return fail(std::string("row tiles need a matrix of Q2_K..Q6_K or Q8_0 with rows a multiple of 16, not ") + t->name +
                    " with " + std::to_string(shape[0]) + " rows");
      return uint64_t(ggml_tiled_bytes(ggml_type, shape[0], shape[1], t->block));
    }
    return uint64_t(shape.size() == 2 ? shape[0] : 1) * ggml_row_bytes(ggml_type, shape.back());  // < 2^31 * 2^33
  }
  if (is_packed(dtype)) {
    const int64_t ck = dtype == DType::Q4_PACKED ? 8 : 4;
    if (shape.size() != 2) return fail("a packed tensor must be a matrix");
    if (group <= 0 || group % ck || shape[1] % group)
      return fail("the dense group " + std::to_string(group) + " does not divide the " + std::to_string(shape[1]) +
                  " columns of a packed tensor");
    return packed_matrix_bytes(dtype == DType::Q4_PACKED ? ExpertQuant::Q4 : ExpertQuant::Q8, shape[0], shape[1],
                               group);
  }
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16 && dtype != DType::F8_E4M3)
    return fail("dtype " + std::string(dtype_name(dtype)) + " cannot be a dense tensor");
  const size_t es = dtype_size(dtype);
  uint64_t n = es;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);  // < 2^66 cannot happen: each dim <= 2^31, es <= 4, two dims
  return n;
}

// ---------------------------------------------------------------------------------------------
// manifest.json

Result<std::string> manifest_to_json(const StoreManifest& m) {
  const std::string where = "manifest";
  MT_TRY(check_expert_fields(m, where));
  MT_ASSIGN(ojson config, config_object(m.config_json, where));
  try {
    ojson experts = ojson::object();
    experts["quant"] = m.expert_quant;
    experts["group"] = m.group;
    experts["hidden"] = m.hidden;
    experts["inter"] = m.inter;
    experts["blob_bytes"] = m.blob_bytes;
    if (!m.expert_ggml_types.empty()) {
      ojson types = ojson::array();
      for (const auto& [layer, t] : m.expert_ggml_types) types.push_back({layer, t[0], t[1], t[2]});
      experts["ggml_types"] = types;
    }
    if (m.expert_ggml_tiles) experts["ggml_tiles"] = true;
    ojson files = ojson::array();
    for (const auto& f : m.files) files.push_back(f);

    // One top-level key per line and one blob per line: readable and diffable.
    std::string out = "{\n";
    out += " \"format\": " + ojson(kFormatName).dump() + ",\n";
    out += " \"version\": " + std::to_string(kStoreFormatVersion) + ",\n";
    out += " \"config\": " + config.dump() + ",\n";
    out += " \"experts\": " + experts.dump() + ",\n";
    out += " \"dense_file\": " + ojson(m.dense_file).dump() + ",\n";
    out += " \"dense\": {\"quant\": " + ojson(m.dense_quant).dump() + ", \"group\": " + std::to_string(m.dense_group) +
           ", \"tensors\": [";
    for (size_t i = 0; i < m.dense.size(); ++i) {
      const DenseTensorInfo& t = m.dense[i];
      ojson e = ojson::object();
      e["name"] = t.name;
      e["dtype"] = std::string(dtype_name(t.dtype));
      if (t.dtype == DType::GGUF) e["ggml_type"] = t.ggml_type;
      if (t.ggml_tiles) e["ggml_tiles"] = true;
      e["shape"] = t.shape;
      e["offset"] = t.offset;
      e["bytes"] = t.bytes;
      e["crc32c"] = t.crc;
      out += (i ? ",\n  " : "\n  ") + e.dump();
    }
    out += m.dense.empty() ? "]},\n" : "\n ]},\n";
    out += " \"files\": " + files.dump() + ",\n";
    out += " \"blobs\": [";
    for (size_t i = 0; i < m.blobs.size(); ++i) {
      const BlobInfo& b = m.blobs[i];
      ojson e = ojson::object();
      e["layer"] = b.layer;
      e["expert"] = b.expert;
      e["file"] = b.file;
      e["offset"] = b.offset;
      e["bytes"] = b.bytes;
      e["crc32c"] = b.crc;
      out += (i ? ",\n  " : "\n  ") + e.dump();
    }
    out += m.blobs.empty() ? "]\n}\n" : "\n ]\n}\n";
    return out;
  } catch (const std::exception& e) {
    return make_error(where + ": cannot serialise: " + e.what());
  }
}

Result<StoreManifest> parse_manifest(std::string_view text, const std::string& label) {
  if (json_depth(text) > kMaxJsonDepth) return make_error(label + ": JSON nested too deeply");
  ojson j;
  try {
    j = ojson::parse(text.data(), text.data() + text.size());
  } catch (const std::exception& e) {
    return make_error(label + ": not valid JSON: " + e.what());
  }
  try {
    if (!j.is_object()) return make_error(label + ": must be a JSON object, not " + std::string(type_name(j)));
    StoreManifest m;

    auto fmt = j.find("format");
    if (fmt == j.end() || !fmt->is_string() || fmt->get<std::string>() != kFormatName)
      return make_error(label + ": not a moetier expert store manifest (\"format\" must be \"" + kFormatName + "\")");
    MT_ASSIGN(int64_t version, JsonFields<ojson>(j, label).integer("version", std::numeric_limits<int64_t>::min(),
                                       std::numeric_limits<int64_t>::max()));
    if (version > kStoreFormatVersion)
      return make_error(label + ": store format version " + std::to_string(version) +
                        " is newer than this moetier supports (" + std::to_string(kStoreFormatVersion) +
                        "); upgrade moetier or re-run moetier convert");
    if (version == 1)
      return make_error(label + ": this store has format version 1 (dense tensors as in the checkpoint, no "
                        "checksums); this moetier reads versions " + std::to_string(kOldestStoreFormatVersion) + " to " +
                        std::to_string(kStoreFormatVersion) + ": re-run moetier convert from the checkpoint");
    if (version < kOldestStoreFormatVersion)
      return make_error(label + ": unsupported store format version " + std::to_string(version) + " (this moetier reads versions " +
                        std::to_string(kOldestStoreFormatVersion) + " to " + std::to_string(kStoreFormatVersion) + ")");
    m.version = static_cast<int>(version);

    auto cfg = j.find("config");
    if (cfg == j.end()) return make_error(label + ": missing \"config\"");
    if (!cfg->is_object()) return make_error(label + ": \"config\" must be an object, not " + std::string(type_name(*cfg)));
    m.config_json = cfg->dump();

    auto ex = j.find("experts");
    if (ex == j.end()) return make_error(label + ": missing \"experts\"");
    if (!ex->is_object()) return make_error(label + ": \"experts\" must be an object, not " + std::string(type_name(*ex)));
    const std::string ew = label + ": experts";
    MT_ASSIGN(m.expert_quant, JsonFields<ojson>(*ex, ew).string("quant"));
    MT_ASSIGN(m.group, JsonFields<ojson>(*ex, ew).integer("group", 0, std::numeric_limits<int32_t>::max()));
    MT_ASSIGN(m.hidden, JsonFields<ojson>(*ex, ew).integer("hidden", 1, std::numeric_limits<int32_t>::max()));
    MT_ASSIGN(m.inter, JsonFields<ojson>(*ex, ew).integer("inter", 1, std::numeric_limits<int32_t>::max()));
    MT_ASSIGN(m.blob_bytes, JsonFields<ojson>(*ex, ew).count("blob_bytes", 0, std::numeric_limits<uint64_t>::max()));
    if (m.blob_bytes > (uint64_t{1} << 40))
      return make_error(ew + ": \"blob_bytes\" " + std::to_string(m.blob_bytes) + " is implausibly large");
    if (auto gt = ex->find("ggml_types"); gt != ex->end()) {
      if (!gt->is_array()) return make_error(ew + ": \"ggml_types\" must be an array of [layer, gate, up, down]");
      for (const ojson& row : *gt) {
        if (!row.is_array() || row.size() != 4)
          return make_error(ew + ": \"ggml_types\" must hold [layer, gate, up, down] arrays");
        std::array<int64_t, 4> v{};
        for (size_t k = 0; k < 4; ++k) {
          if (!row[k].is_number_unsigned() || row[k].get<uint64_t>() > uint64_t(std::numeric_limits<int32_t>::max()))
            return make_error(ew + ": \"ggml_types\" holds a value that is not a small non-negative integer");
          v[k] = int64_t(row[k].get<uint64_t>());
        }
        for (size_t k = 1; k < 4; ++k)
          if (!ggml_type_info(uint32_t(v[k])))
            return make_error(ew + ": layer " + std::to_string(v[0]) + " has unknown ggml type " + std::to_string(v[k]));
        if (!m.expert_ggml_types.emplace(int32_t(v[0]), std::array<uint32_t, 3>{uint32_t(v[1]), uint32_t(v[2]), uint32_t(v[3])}).second)
          return make_error(ew + ": \"ggml_types\" lists layer " + std::to_string(v[0]) + " twice");
      }
    }
    if ((m.expert_quant == "gguf") != !m.expert_ggml_types.empty())
      return make_error(ew + ": \"ggml_types\" must be given exactly for \"gguf\" experts");
    MT_ASSIGN(m.expert_ggml_tiles, ggml_tiles_flag(*ex, ew, version));  // on gguf experts only: check_expert_fields

    MT_ASSIGN(m.dense_file, JsonFields<ojson>(j, label).string("dense_file"));
    auto dn = j.find("dense");
    if (dn == j.end()) return make_error(label + ": missing \"dense\"");
    if (!dn->is_object()) return make_error(label + ": \"dense\" must be an object, not " + std::string(type_name(*dn)));
    const std::string dw = label + ": dense";
    MT_ASSIGN(m.dense_quant, JsonFields<ojson>(*dn, dw).string("quant"));
    MT_ASSIGN(m.dense_group, JsonFields<ojson>(*dn, dw).integer("group", 1, 4096));
    MT_TRY(check_expert_fields(m, label));
    auto dts = dn->find("tensors");
    if (dts == dn->end()) return make_error(dw + ": missing \"tensors\"");
    if (!dts->is_array()) return make_error(dw + ": \"tensors\" must be an array, not " + std::string(type_name(*dts)));
    std::set<std::string> tensor_names;
    for (size_t i = 0; i < dts->size(); ++i) {
      const ojson& e = (*dts)[i];
      std::string w = dw + ".tensors[" + std::to_string(i) + "]";
      if (!e.is_object()) return make_error(w + " must be an object, not " + std::string(type_name(e)));
      DenseTensorInfo t;
      MT_ASSIGN(t.name, JsonFields<ojson>(e, w).string("name"));
      if (t.name.empty() || t.name.size() > kMaxTensorName) return make_error(w + ": \"name\" is empty or too long");
      w += " ('" + t.name + "')";
      if (!tensor_names.insert(t.name).second) return make_error(dw + ": tensor '" + t.name + "' is listed twice");
      MT_ASSIGN(std::string dt, JsonFields<ojson>(e, w).string("dtype"));
      auto dtype = dense_dtype_from_name(dt);
      if (!dtype) return make_error(w + ": unknown dtype \"" + dt + "\"");
      t.dtype = *dtype;
      if (t.dtype == DType::GGUF) {
        MT_ASSIGN(int64_t gt, JsonFields<ojson>(e, w).integer("ggml_type", 0, std::numeric_limits<int32_t>::max()));
        t.ggml_type = uint32_t(gt);
      }
      MT_ASSIGN(t.ggml_tiles, ggml_tiles_flag(e, w, version));
      auto sh = e.find("shape");
      if (sh == e.end() || !sh->is_array() || sh->empty() || sh->size() > 2)
        return make_error(w + ": \"shape\" must be an array of 1 or 2 integers");
      for (const ojson& d : *sh) {
        if (!d.is_number_integer()) return make_error(w + ": \"shape\" must hold integers, not " + std::string(type_name(d)));
        const int64_t v = d.is_number_unsigned() ? (d.get<uint64_t>() > uint64_t(kMaxDim) ? -1 : int64_t(d.get<uint64_t>()))
                                                 : d.get<int64_t>();
        if (v <= 0 || v > kMaxDim) return make_error(w + ": a dimension of \"shape\" is out of range 1..2^31");
        t.shape.push_back(v);
      }
      MT_ASSIGN(t.offset, JsonFields<ojson>(e, w).count("offset", 0, std::numeric_limits<uint64_t>::max()));
      MT_ASSIGN(t.bytes, JsonFields<ojson>(e, w).count("bytes", 0, std::numeric_limits<uint64_t>::max()));
      MT_ASSIGN(int64_t crc, JsonFields<ojson>(e, w).integer("crc32c", 0, std::numeric_limits<uint32_t>::max()));
      t.crc = static_cast<uint32_t>(crc);
      std::string why;
      const uint64_t want = dense_tensor_bytes(t.dtype, t.shape, m.dense_group, &why, t.ggml_type, t.ggml_tiles);
      if (want == 0) return make_error(w + ": " + why);
      if (t.bytes != want)
        return make_error(w + ": " + std::to_string(t.bytes) + " bytes, but its dtype and shape need " +
                          std::to_string(want));
      if (t.offset % kBlobAlign != 0)
        return make_error(w + ": offset " + std::to_string(t.offset) + " is not a multiple of " + std::to_string(kBlobAlign));
      if (t.offset > (uint64_t{1} << 62) || t.bytes > (uint64_t{1} << 62))
        return make_error(w + ": offset " + std::to_string(t.offset) + " is out of range");
      m.dense.push_back(std::move(t));
    }
    {
      std::vector<const DenseTensorInfo*> by_pos;
      for (const auto& t : m.dense) by_pos.push_back(&t);
      std::sort(by_pos.begin(), by_pos.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
      for (size_t i = 1; i < by_pos.size(); ++i)
        if (by_pos[i - 1]->offset + by_pos[i - 1]->bytes > by_pos[i]->offset)
          return make_error(dw + ": tensors '" + by_pos[i - 1]->name + "' and '" + by_pos[i]->name + "' overlap in " +
                            m.dense_file);
    }

    auto files = j.find("files");
    if (files == j.end()) return make_error(label + ": missing \"files\"");
    if (!files->is_array()) return make_error(label + ": \"files\" must be an array, not " + std::string(type_name(*files)));
    std::set<std::string> names;
    for (size_t i = 0; i < files->size(); ++i) {
      const ojson& f = (*files)[i];
      const std::string w = label + ": files[" + std::to_string(i) + "]";
      if (!f.is_string()) return make_error(w + " must be a string, not " + std::string(type_name(f)));
      std::string name = f.get<std::string>();
      if (!plain_name(name)) return make_error(w + " \"" + name + "\" is not a plain file name inside the store");
      if (name == m.dense_file) return make_error(w + " \"" + name + "\" is also the dense file");
      if (!names.insert(name).second) return make_error(w + " \"" + name + "\" is listed twice");
      m.files.push_back(std::move(name));
    }

    auto blobs = j.find("blobs");
    if (blobs == j.end()) return make_error(label + ": missing \"blobs\"");
    if (!blobs->is_array()) return make_error(label + ": \"blobs\" must be an array, not " + std::string(type_name(*blobs)));
    m.blobs.reserve(blobs->size());
    std::map<std::pair<int32_t, int32_t>, size_t> seen;
    for (size_t i = 0; i < blobs->size(); ++i) {
      const ojson& e = (*blobs)[i];
      std::string w = label + ": blobs[" + std::to_string(i) + "]";
      if (!e.is_object()) return make_error(w + " must be an object, not " + std::string(type_name(e)));
      BlobInfo b;
      MT_ASSIGN(int64_t layer, JsonFields<ojson>(e, w).integer("layer", 0, std::numeric_limits<int32_t>::max()));
      MT_ASSIGN(int64_t expert, JsonFields<ojson>(e, w).integer("expert", 0, std::numeric_limits<int32_t>::max()));
      b.layer = static_cast<int32_t>(layer);
      b.expert = static_cast<int32_t>(expert);
      w += " (" + layer_expert(layer, expert) + ")";
      MT_ASSIGN(int64_t file, JsonFields<ojson>(e, w).integer("file", 0, std::numeric_limits<uint32_t>::max()));
      if (static_cast<uint64_t>(file) >= m.files.size())
        return make_error(w + ": file index " + std::to_string(file) + " is out of range (the manifest lists " +
                          std::to_string(m.files.size()) + " files)");
      b.file = static_cast<uint32_t>(file);
      MT_ASSIGN(b.offset, JsonFields<ojson>(e, w).count("offset", 0, std::numeric_limits<uint64_t>::max()));
      MT_ASSIGN(b.bytes, JsonFields<ojson>(e, w).count("bytes", 0, std::numeric_limits<uint64_t>::max()));
      MT_ASSIGN(int64_t crc, JsonFields<ojson>(e, w).integer("crc32c", 0, std::numeric_limits<uint32_t>::max()));
      b.crc = static_cast<uint32_t>(crc);
      if (b.offset % kBlobAlign != 0)
        return make_error(w + " in " + m.files[b.file] + ": offset " + std::to_string(b.offset) +
                          " is not a multiple of " + std::to_string(kBlobAlign));
      if (b.bytes != m.blob_bytes)
        return make_error(w + " in " + m.files[b.file] + ": " + std::to_string(b.bytes) +
                          " bytes, but every blob has blob_bytes = " + std::to_string(m.blob_bytes));
      if (b.offset > std::numeric_limits<uint64_t>::max() - b.bytes ||
          b.offset + b.bytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        return make_error(w + " in " + m.files[b.file] + ": offset " + std::to_string(b.offset) + " is out of range");
      auto [it, fresh] = seen.emplace(std::make_pair(b.layer, b.expert), i);
      if (!fresh)
        return make_error(label + ": " + layer_expert(layer, expert) + " is listed twice (blobs[" +
                          std::to_string(it->second) + "] and blobs[" + std::to_string(i) + "])");
      m.blobs.push_back(b);
    }

    // No two blobs may share bytes of a file.
    std::vector<const BlobInfo*> by_pos;
    by_pos.reserve(m.blobs.size());
    for (const auto& b : m.blobs) by_pos.push_back(&b);
    std::sort(by_pos.begin(), by_pos.end(), [](const BlobInfo* a, const BlobInfo* b) {
      return a->file != b->file ? a->file < b->file : a->offset < b->offset;
    });
    for (size_t i = 1; i < by_pos.size(); ++i) {
      const BlobInfo& a = *by_pos[i - 1];
      const BlobInfo& b = *by_pos[i];
      if (a.file == b.file && a.offset + a.bytes > b.offset)
        return make_error(label + ": " + layer_expert(a.layer, a.expert) + " and " + layer_expert(b.layer, b.expert) +
                          " overlap in " + m.files[a.file] + " (offsets " + std::to_string(a.offset) + " and " +
                          std::to_string(b.offset) + ")");
    }

    std::sort(m.blobs.begin(), m.blobs.end(), [](const BlobInfo& a, const BlobInfo& b) {
      return a.layer != b.layer ? a.layer < b.layer : a.expert < b.expert;
    });
    return m;
  } catch (const std::exception& e) {
    return make_error(label + ": " + e.what());
  }
}

// ---------------------------------------------------------------------------------------------
// ExpertStore

bool ExpertStore::looks_like_store(const fs::path& dir) {
  std::error_code ec;
  return fs::is_regular_file(dir / kManifestName, ec);
}

const BlobInfo* ExpertStore::find(int32_t layer, int32_t expert) const {
  auto it = index_.find({layer, expert});
  return it == index_.end() ? nullptr : &m_.blobs[it->second];
}

Result<ExpertStore> ExpertStore::open(const fs::path& dir_in) {
  const fs::path dir = normalised_dir(dir_in);
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    const fs::path partial = dir.string() + ".partial";
    if (fs::exists(partial, ec))
      return make_error(dir.string() + " does not exist (an interrupted conversion left " + partial.string() +
                        "); re-run moetier convert");
    return make_error(dir.string() + " does not exist");
  }
  if (!fs::is_directory(dir, ec)) return make_error(dir.string() + " is not a directory (expected a moetier expert store)");
  const fs::path mpath = dir / kManifestName;
  if (!fs::exists(mpath, ec))
    return make_error(dir.string() + " is not a moetier expert store: it has no manifest.json");
  MT_ASSIGN(std::string text, read_text_file(mpath, kMaxManifestBytes));
  MT_ASSIGN(StoreManifest m, parse_manifest(text, mpath.string()));

  // The dense tensors.
  const fs::path dense = dir / m.dense_file;
  struct stat st {};
  if (::stat(dense.c_str(), &st) != 0) {
    if (errno == ENOENT) return make_error(dense.string() + " is missing (the store's dense tensors); re-run moetier convert");
    return make_error(dense.string() + ": cannot stat: " + errno_text(errno));
  }
  if (!S_ISREG(st.st_mode)) return make_error(dense.string() + " is not a regular file");
  for (const auto& t : m.dense)
    if (t.offset + t.bytes > static_cast<uint64_t>(st.st_size))
      return make_error(dense.string() + " is truncated: tensor '" + t.name + "' needs bytes [" +
                        std::to_string(t.offset) + ", " + std::to_string(t.offset + t.bytes) + ") but the file has " +
                        std::to_string(st.st_size) + " bytes; re-run moetier convert");

  // Every blob file, with the size its blobs need.
  std::vector<uint64_t> sizes(m.files.size(), 0);
  std::vector<const BlobInfo*> first_user(m.files.size(), nullptr);
  for (const auto& b : m.blobs)
    if (!first_user[b.file]) first_user[b.file] = &b;
  for (size_t f = 0; f < m.files.size(); ++f) {
    const fs::path p = dir / m.files[f];
    if (::stat(p.c_str(), &st) != 0) {
      const int e = errno;
      std::string who;
      if (first_user[f]) who = " (it holds " + layer_expert(first_user[f]->layer, first_user[f]->expert) + ")";
      if (e == ENOENT) return make_error(p.string() + " is missing" + who + "; re-run moetier convert");
      return make_error(p.string() + ": cannot stat" + who + ": " + errno_text(e));
    }
    if (!S_ISREG(st.st_mode)) return make_error(p.string() + " is not a regular file");
    sizes[f] = static_cast<uint64_t>(st.st_size);
  }
  for (const auto& b : m.blobs) {
    if (b.offset + b.bytes > sizes[b.file])
      return make_error((dir / m.files[b.file]).string() + " is truncated: " + layer_expert(b.layer, b.expert) +
                        " needs bytes [" + std::to_string(b.offset) + ", " + std::to_string(b.offset + b.bytes) +
                        ") but the file has " + std::to_string(sizes[b.file]) + " bytes; re-run moetier convert");
  }

  ExpertStore s;
  s.dir_ = dir;
  s.m_ = std::move(m);
  for (size_t i = 0; i < s.m_.blobs.size(); ++i) s.index_[{s.m_.blobs[i].layer, s.m_.blobs[i].expert}] = i;
  return s;
}

// ---------------------------------------------------------------------------------------------
// ExpertStoreWriter

struct ExpertStoreWriter::Impl {
  struct LayerFile {
    uint32_t file = 0;  // index into m.files
    int fd = -1;
    uint64_t size = 0;
  };
  fs::path final_dir;
  fs::path staging;
  StoreManifest m;
  bool overwrite = false;
  std::map<int32_t, LayerFile> layers;
  std::set<std::pair<int32_t, int32_t>> seen;
  int dense_fd = -1;
  uint64_t dense_size = 0;
  std::set<std::string> dense_names;
  bool finished = false;
  std::string broken;  // the first write error; the store cannot be finished after it

  // Appends `bytes` at the next kBlobAlign boundary of the file whose length is `size` (the gap
  // zero-filled), advances `size`, returns the offset. A failure marks the writer broken.
  Result<uint64_t> append_aligned(int fd, uint64_t& size, const uint8_t* data, size_t bytes, const fs::path& path,
                                  const std::string& who) {
    const uint64_t offset = (size + kBlobAlign - 1) / kBlobAlign * kBlobAlign;
    if (offset > size) {
      const std::vector<uint8_t> zeros(offset - size, 0);
      Status s = write_all(fd, zeros.data(), zeros.size(), size, path);
      if (!s.ok()) {
        broken = s.error();
        return make_error(s.error());
      }
    }
    Status s = write_all(fd, data, bytes, offset, path);
    if (!s.ok()) {
      broken = s.error();
      return make_error(s.error() + " (" + who + ")");
    }
    size = offset + bytes;
    return offset;
  }

  void close_all() {
    for (auto& [layer, lf] : layers) {
      if (lf.fd >= 0) ::close(lf.fd);
      lf.fd = -1;
    }
    if (dense_fd >= 0) ::close(dense_fd);
    dense_fd = -1;
  }
  ~Impl() {
    close_all();
    if (!finished && !staging.empty()) {
      std::error_code ec;
      fs::remove_all(staging, ec);
    }
  }
};

Result<ExpertStoreWriter> ExpertStoreWriter::create(const fs::path& dir_in, StoreManifest header, bool overwrite) {
  if (dir_in.empty()) return make_error("expert store: no output directory given");
  const fs::path dir = normalised_dir(dir_in);
  const std::string fname = dir.filename().string();
  if (fname.empty() || fname == "." || fname == "..")
    return make_error("expert store: " + dir_in.string() + " does not name a directory to create");
  const std::string where = "expert store " + dir.string();
  MT_TRY(check_expert_fields(header, where));
  MT_TRY(config_object(header.config_json, where));
  header.version = kStoreFormatVersion;
  header.files.clear();
  header.blobs.clear();
  header.dense.clear();

  std::error_code ec;
  if (fs::exists(dir, ec) || fs::is_symlink(dir, ec)) {
    if (!overwrite) return make_error(dir.string() + " already exists; pass --overwrite to replace it");
    MT_TRY(check_replaceable(dir));
  }
  const fs::path staging = dir.string() + ".partial";
  fs::remove_all(staging, ec);
  if (ec) return make_error("removing the stale " + staging.string() + ": " + ec.message());
  if (staging.has_parent_path()) {
    fs::create_directories(staging.parent_path(), ec);
    if (ec) return make_error("creating " + staging.parent_path().string() + ": " + ec.message());
  }
  if (::mkdir(staging.c_str(), 0755) != 0) return make_error("creating " + staging.string() + ": " + errno_text(errno));

  ExpertStoreWriter w;
  w.impl_ = new Impl;
  w.impl_->final_dir = dir;
  w.impl_->staging = staging;
  w.impl_->m = std::move(header);
  w.impl_->overwrite = overwrite;
  return w;
}

ExpertStoreWriter::ExpertStoreWriter(ExpertStoreWriter&& o) noexcept : impl_(o.impl_) { o.impl_ = nullptr; }

ExpertStoreWriter& ExpertStoreWriter::operator=(ExpertStoreWriter&& o) noexcept {
  if (this != &o) {
    delete impl_;
    impl_ = o.impl_;
    o.impl_ = nullptr;
  }
  return *this;
}

ExpertStoreWriter::~ExpertStoreWriter() { delete impl_; }

const fs::path& ExpertStoreWriter::staging_dir() const {
  static const fs::path kNone;
  return impl_ ? impl_->staging : kNone;
}

Status ExpertStoreWriter::add_blob(int32_t layer, int32_t expert, const uint8_t* data, size_t bytes) {
  if (!impl_) return make_error("expert store writer: used after being moved from");
  Impl& w = *impl_;
  const std::string who = layer_expert(layer, expert);
  if (w.finished) return make_error("expert store " + w.final_dir.string() + ": add_blob(" + who + ") after finish()");
  if (!w.broken.empty()) return make_error("expert store " + w.staging.string() + ": an earlier write failed: " + w.broken);
  if (layer < 0 || expert < 0) return make_error("expert store: " + who + " has a negative index");
  if (bytes != w.m.blob_bytes)
    return make_error("expert store: " + who + " is " + std::to_string(bytes) + " bytes, but blob_bytes is " +
                      std::to_string(w.m.blob_bytes));
  if (data == nullptr) return make_error("expert store: " + who + ": no data");
  if (w.seen.count({layer, expert})) return make_error("expert store: " + who + " was already added");

  auto it = w.layers.find(layer);
  if (it == w.layers.end()) {
    const std::string name = blob_file_name(layer);
    const fs::path p = w.staging / name;
    const int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return make_error("creating " + p.string() + ": " + errno_text(errno));
    Impl::LayerFile lf;
    lf.file = static_cast<uint32_t>(w.m.files.size());
    lf.fd = fd;
    w.m.files.push_back(name);
    it = w.layers.emplace(layer, lf).first;
  }
  Impl::LayerFile& lf = it->second;
  const fs::path path = w.staging / w.m.files[lf.file];

  // (Padding is never needed while blob_bytes is a multiple of 4096.)
  MT_ASSIGN(const uint64_t offset, w.append_aligned(lf.fd, lf.size, data, bytes, path, who));

  BlobInfo b;
  b.layer = layer;
  b.expert = expert;
  b.file = lf.file;
  b.offset = offset;
  b.bytes = bytes;
  b.crc = crc32c(data, bytes);
  w.m.blobs.push_back(b);
  w.seen.insert({layer, expert});
  return ok_status();
}

Status ExpertStoreWriter::add_dense(const std::string& name, DType dtype, const std::vector<int64_t>& shape,
                                    const uint8_t* data, size_t bytes, uint32_t ggml_type, bool ggml_tiles) {
  if (!impl_) return make_error("expert store writer: used after being moved from");
  Impl& w = *impl_;
  const std::string who = "dense tensor '" + name + "'";
  if (w.finished) return make_error("expert store " + w.final_dir.string() + ": add_dense(" + name + ") after finish()");
  if (!w.broken.empty()) return make_error("expert store " + w.staging.string() + ": an earlier write failed: " + w.broken);
  if (name.empty() || name.size() > kMaxTensorName) return make_error("expert store: a dense tensor name is empty or too long");
  if (w.dense_names.count(name)) return make_error("expert store: " + who + " was already added");
  std::string why;
  const uint64_t want = dense_tensor_bytes(dtype, shape, w.m.dense_group, &why, ggml_type, ggml_tiles);
  if (want == 0) return make_error("expert store: " + who + ": " + why);
  if (bytes != want)
    return make_error("expert store: " + who + " is " + std::to_string(bytes) + " bytes; its dtype and shape need " +
                      std::to_string(want));
  if (data == nullptr && bytes) return make_error("expert store: " + who + ": no data");
  const fs::path path = w.staging / w.m.dense_file;
  if (w.dense_fd < 0) {
    w.dense_fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w.dense_fd < 0) return make_error("creating " + path.string() + ": " + errno_text(errno));
  }
  MT_ASSIGN(const uint64_t offset, w.append_aligned(w.dense_fd, w.dense_size, data, bytes, path, who));
  DenseTensorInfo t;
  t.name = name;
  t.dtype = dtype;
  t.ggml_type = dtype == DType::GGUF ? ggml_type : 0;
  t.ggml_tiles = ggml_tiles;
  t.shape = shape;
  t.offset = offset;
  t.bytes = bytes;
  t.crc = crc32c(data, bytes);
  w.m.dense.push_back(std::move(t));
  w.dense_names.insert(name);
  return ok_status();
}

Status ExpertStoreWriter::finish() {
  if (!impl_) return make_error("expert store writer: used after being moved from");
  Impl& w = *impl_;
  if (w.finished) return make_error("expert store " + w.final_dir.string() + ": finish() called twice");
  if (!w.broken.empty()) return make_error("expert store " + w.staging.string() + ": an earlier write failed: " + w.broken);

  // The dense file: written by add_dense, or empty (a store of routed experts only, in tests).
  const fs::path dense = w.staging / w.m.dense_file;
  if (w.dense_fd >= 0) {
    Status s = fsync_fd(w.dense_fd, dense);
    if (s.ok()) s = close_fd(w.dense_fd, dense);
    if (!s.ok()) {
      w.broken = s.error();
      return s;
    }
  } else {
    struct stat st {};
    if (::stat(dense.c_str(), &st) != 0) {
      const int fd = ::open(dense.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0) return make_error("creating " + dense.string() + ": " + errno_text(errno));
      ::close(fd);
    }
    MT_TRY(fsync_path(dense, false));
  }

  // Flush and close the blob files.
  for (auto& [layer, lf] : w.layers) {
    const fs::path p = w.staging / w.m.files[lf.file];
    Status s = fsync_fd(lf.fd, p);
    if (s.ok()) s = close_fd(lf.fd, p);
    if (!s.ok()) {
      w.broken = s.error();
      return s;
    }
  }

  // Files in layer order, blobs in (layer, expert) order.
  StoreManifest m = w.m;
  {
    std::vector<uint32_t> remap(m.files.size());
    std::vector<std::string> files;
    for (auto& [layer, lf] : w.layers) {
      remap[lf.file] = static_cast<uint32_t>(files.size());
      files.push_back(m.files[lf.file]);
    }
    m.files = std::move(files);
    for (auto& b : m.blobs) b.file = remap[b.file];
    std::sort(m.blobs.begin(), m.blobs.end(), [](const BlobInfo& a, const BlobInfo& b) {
      return a.layer != b.layer ? a.layer < b.layer : a.expert < b.expert;
    });
  }
  MT_ASSIGN(std::string text, manifest_to_json(m));
  {
    auto check = parse_manifest(text, "manifest.json");
    if (!check.ok()) return make_error("expert store: internal error, the manifest written does not parse: " + check.error());
  }

  // manifest.json via a temporary file and rename, then the directory entry.
  const fs::path tmp = w.staging / (std::string(kManifestName) + ".tmp");
  const fs::path mpath = w.staging / kManifestName;
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return make_error("creating " + tmp.string() + ": " + errno_text(errno));
  Status s = write_all(fd, reinterpret_cast<const uint8_t*>(text.data()), text.size(), 0, tmp);
  if (s.ok()) s = fsync_fd(fd, tmp);
  if (s.ok()) s = close_fd(fd, tmp);
  if (fd >= 0) ::close(fd);
  if (!s.ok()) return s;
  if (::rename(tmp.c_str(), mpath.c_str()) != 0)
    return make_error("renaming " + tmp.string() + " to " + mpath.string() + ": " + errno_text(errno));
  MT_TRY(fsync_path(w.staging, true));

  // Put the store in place; an existing one (overwrite) is moved aside first and removed after.
  std::error_code ec;
  fs::path old;
  if (fs::exists(w.final_dir, ec) || fs::is_symlink(w.final_dir, ec)) {
    if (!w.overwrite) return make_error(w.final_dir.string() + " already exists; pass --overwrite to replace it");
    MT_TRY(check_replaceable(w.final_dir));
    old = w.final_dir.string() + ".old";
    if (fs::exists(old, ec) || fs::is_symlink(old, ec)) {
      MT_TRY(check_replaceable(old));
      fs::remove_all(old, ec);
      if (ec) return make_error("removing the stale " + old.string() + ": " + ec.message());
    }
    if (::rename(w.final_dir.c_str(), old.c_str()) != 0)
      return make_error("moving the old " + w.final_dir.string() + " aside: " + errno_text(errno));
  }
  if (::rename(w.staging.c_str(), w.final_dir.c_str()) != 0) {
    const int e = errno;
    if (!old.empty()) ::rename(old.c_str(), w.final_dir.c_str());
    return make_error("renaming " + w.staging.string() + " to " + w.final_dir.string() + ": " + errno_text(e));
  }
  w.finished = true;
  w.m = std::move(m);
  if (!old.empty()) fs::remove_all(old, ec);
  const fs::path parent = w.final_dir.has_parent_path() ? w.final_dir.parent_path() : fs::path(".");
  MT_TRY(fsync_path(parent, true));
  return ok_status();
}

}  // namespace mt::offload
