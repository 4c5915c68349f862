// Safetensors parsing (one in-memory image) and TensorStore (one file or a sharded set).
#include "runtime/weights/safetensors.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <limits>
#include <numeric>
#include <set>
#include <system_error>
#include <utility>

#include <nlohmann/json.hpp>

namespace mt {

namespace {

using json = nlohmann::json;

constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";
constexpr const char* kRedownload = "the file is truncated or corrupt — re-download it";

std::string quote(std::string_view s) {
  std::string out = "'";
  out.append(s);
  out += '\'';
  return out;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

std::string offsets_str(uint64_t b, uint64_t e) {
  std::string s = "[";
  s += std::to_string(b);
  s += ", ";
  s += std::to_string(e);
  s += ']';
  return s;
}

std::string supported_dtypes() {
  std::string s;
  for (DType t : {DType::F32, DType::F16, DType::BF16, DType::F8_E4M3, DType::I32, DType::I64,
                  DType::U8}) {
    if (!s.empty()) s += ", ";
    s += dtype_name(t);
  }
  return s;
}

// Returns the offset of the first byte that is not part of well-formed UTF-8 (no overlong
// forms, no surrogates, nothing above U+10FFFF), or npos when all of `s` is valid.
size_t first_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (n - i < len) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
    }
    i += len;
  }
  return std::string_view::npos;
}

const char* json_kind(const json& j) {
  switch (j.type()) {
    case json::value_t::null: return "null";
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    case json::value_t::string: return "a string";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    case json::value_t::number_float: return "a non-integer number";
    case json::value_t::binary: return "binary";
    case json::value_t::discarded: return "invalid";
  }
  return "unknown";
}

struct DuplicateKey {
  std::string key;        // the repeated key; empty when there is none
  std::string top_level;  // the top-level key it sits under (empty when it is itself top-level)
};

// Parses JSON text, also reporting the first key repeated within one object (nlohmann keeps
// only the last one, which would silently hide a tensor or a field).
Result<json> parse_json(std::string_view text, const std::string& label, const char* what,
                        DuplicateKey* duplicate) {
  DuplicateKey dup;
  std::vector<std::set<std::string>> open_objects;  // keys seen so far in each open object
  std::string top_key;
  try {
    json j = json::parse(
        text.begin(), text.end(),
        [&](int depth, json::parse_event_t ev, json& parsed) {
          if (ev == json::parse_event_t::object_start) {
            open_objects.emplace_back();
          } else if (ev == json::parse_event_t::object_end) {
            if (!open_objects.empty()) open_objects.pop_back();
          } else if (ev == json::parse_event_t::key && parsed.is_string() && dup.key.empty() &&
                     !open_objects.empty()) {
            const auto& k = parsed.get_ref<const std::string&>();
            if (depth == 1) top_key = k;
            if (!open_objects.back().insert(k).second) {
              dup.key = k;
              if (depth != 1) dup.top_level = top_key;
            }
          }
          return true;
        },
        /*allow_exceptions=*/true, /*ignore_comments=*/false);
    if (duplicate) *duplicate = std::move(dup);
    return j;
  } catch (const json::parse_error& e) {
    return make_error(label + ": " + what + " is not valid JSON (" + e.what() + "); " +
                      kRedownload);
  } catch (const std::exception& e) {
    return make_error(label + ": cannot parse " + what + ": " + e.what());
  }
}

// Reads a JSON integer that must be a non-negative integer (nlohmann stores those as unsigned).
bool get_u64(const json& j, uint64_t* out) {
  if (!j.is_number_unsigned()) return false;
  *out = j.get<uint64_t>();
  return true;
}

Result<TensorInfo> parse_entry(const std::string& label, const std::string& name, const json& v,
                               const uint8_t* base, uint64_t data_size, uint64_t* begin_out,
                               uint64_t* end_out) {
  const std::string who = label + ": tensor " + quote(name);
  if (!v.is_object()) {
    return make_error(who + ": header entry is " + json_kind(v) +
                      ", expected an object with dtype, shape and data_offsets; " + kRedownload);
  }
  TensorInfo info;
  info.name = name;
  info.file = label;

  // dtype
  auto it = v.find("dtype");
  if (it == v.end()) return make_error(who + ": header entry has no \"dtype\"; " + kRedownload);
  if (!it->is_string()) {
    return make_error(who + ": \"dtype\" is " + json_kind(*it) + ", expected a string");
  }
  const auto& dname = it->get_ref<const std::string&>();
  auto dt = dtype_from_name(dname);
  if (!dt) {
    return make_error(who + ": unknown dtype " + quote(dname) + " (supported: " +
                      supported_dtypes() + ")");
  }
  info.dtype = *dt;

  // shape
  it = v.find("shape");
  if (it == v.end()) return make_error(who + ": header entry has no \"shape\"; " + kRedownload);
  if (!it->is_array()) {
    return make_error(who + ": \"shape\" is " + json_kind(*it) + ", expected an array of integers");
  }
  uint64_t numel = 1;
  bool overflow = false;
  info.shape.reserve(it->size());
  for (size_t d = 0; d < it->size(); ++d) {
    const json& e = (*it)[d];
    if (e.is_number_integer() && !e.is_number_unsigned()) {
      return make_error(who + ": shape dimension " + std::to_string(d) + " is negative (" +
                        e.dump() + ")");
    }
    uint64_t dim;
    if (!get_u64(e, &dim)) {
      return make_error(who + ": shape dimension " + std::to_string(d) + " is " + json_kind(e) +
                        " (" + e.dump() + "), expected a non-negative integer");
    }
    if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return make_error(who + ": shape dimension " + std::to_string(d) + " (" +
                        std::to_string(dim) + ") is too large");
    }
    info.shape.push_back(static_cast<int64_t>(dim));
    if (!overflow && __builtin_mul_overflow(numel, dim, &numel)) overflow = true;
  }
  const uint64_t esize = dtype_size(info.dtype);
  uint64_t need = 0;
  if (overflow || numel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
      __builtin_mul_overflow(numel, esize, &need)) {
    // A zero dimension anywhere makes the product 0 regardless of the others.
    const bool has_zero = std::find(info.shape.begin(), info.shape.end(), 0) != info.shape.end();
    if (!has_zero) {
      return make_error(who + ": shape " + shape_str(info.shape) + " of dtype " + dname +
                        " has a size that does not fit in 64 bits; " + kRedownload);
    }
    numel = 0;
    need = 0;
  }

  // data_offsets
  it = v.find("data_offsets");
  if (it == v.end()) {
    return make_error(who + ": header entry has no \"data_offsets\"; " + kRedownload);
  }
  uint64_t b = 0, e = 0;
  if (!it->is_array() || it->size() != 2 || !get_u64((*it)[0], &b) || !get_u64((*it)[1], &e)) {
    return make_error(who + ": \"data_offsets\" is " + it->dump() +
                      ", expected [begin, end] with two non-negative integers; " + kRedownload);
  }
  if (e < b) {
    return make_error(who + ": data_offsets " + offsets_str(b, e) + " end before they begin; " +
                      kRedownload);
  }
  if (e - b != need) {
    return make_error(who + ": dtype " + dname + " and shape " + shape_str(info.shape) + " need " +
                      std::to_string(numel) + " x " + std::to_string(esize) + " = " +
                      std::to_string(need) + " bytes but data_offsets " + offsets_str(b, e) +
                      " span " + std::to_string(e - b) + " bytes; " + kRedownload);
  }
  if (e > data_size) {
    return make_error(who + ": data_offsets " + offsets_str(b, e) + " exceed the data section (" +
                      std::to_string(data_size) + " bytes); " + kRedownload);
  }
  info.data = base + b;
  info.nbytes = static_cast<size_t>(need);
  *begin_out = b;
  *end_out = e;
  return info;
}

Result<std::vector<TensorInfo>> parse_impl(const uint8_t* data, size_t size,
                                           const std::string& label,
                                           std::map<std::string, std::string>* metadata_out) {
  if (data == nullptr || size < 8) {
    return make_error(label + ": file is " + std::to_string(size) +
                      " bytes, too short to be a safetensors file (the 8-byte header length "
                      "alone needs 8); " +
                      kRedownload);
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];
  if (n > kSafetensorsMaxHeaderBytes) {
    return make_error(label + ": header length " + std::to_string(n) + " is absurdly large (the "
                      "limit is " + std::to_string(kSafetensorsMaxHeaderBytes) +
                      " bytes); this is not a safetensors file or its first 8 bytes are "
                      "corrupt");
  }
  if (n > size - 8) {
    return make_error(label + ": header length " + std::to_string(n) + " exceeds the " +
                      std::to_string(size - 8) + " bytes that follow it in the " +
                      std::to_string(size) + "-byte file; " + kRedownload);
  }
  const std::string_view header(reinterpret_cast<const char*>(data + 8), static_cast<size_t>(n));
  if (size_t bad = first_invalid_utf8(header); bad != std::string_view::npos) {
    return make_error(label + ": header is not valid UTF-8 (bad byte 0x" +
                      [](unsigned c) {
                        const char* hx = "0123456789abcdef";
                        return std::string{hx[c >> 4], hx[c & 15]};
                      }(static_cast<unsigned char>(header[bad])) +
                      " at header offset " + std::to_string(bad) + "); " + kRedownload);
  }
  DuplicateKey dup;
  auto parsed = parse_json(header, label, "header", &dup);
  if (!parsed.ok()) return std::move(parsed).take_error();
  const json& root = parsed.value();
  if (!root.is_object()) {
    return make_error(label + ": header JSON is " + json_kind(root) +
                      ", expected an object mapping tensor names to {dtype, shape, "
                      "data_offsets}; " +
                      kRedownload);
  }
  if (!dup.key.empty()) {
    if (dup.top_level.empty()) {
      return make_error(label + ": tensor " + quote(dup.key) +
                        " appears more than once in the header; " + kRedownload);
    }
    return make_error(label + ": tensor " + quote(dup.top_level) + ": key " + quote(dup.key) +
                      " appears more than once in its header entry; " + kRedownload);
  }

  const uint8_t* base = data + 8 + n;
  const uint64_t data_size = size - 8 - n;
  std::vector<TensorInfo> out;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  out.reserve(root.size());
  ranges.reserve(root.size());
  for (auto it = root.begin(); it != root.end(); ++it) {
    if (it.key() == "__metadata__") {
      const json& m = it.value();
      if (!m.is_object()) {
        return make_error(label + ": \"__metadata__\" is " + json_kind(m) +
                          ", expected an object of strings; " + kRedownload);
      }
      for (auto mi = m.begin(); mi != m.end(); ++mi) {
        if (!mi.value().is_string()) {
          return make_error(label + ": \"__metadata__\" entry " + quote(mi.key()) + " is " +
                            json_kind(mi.value()) + ", expected a string; " + kRedownload);
        }
        if (metadata_out) (*metadata_out)[mi.key()] = mi.value().get<std::string>();
      }
      continue;
    }
    uint64_t b = 0, e = 0;
    auto info = parse_entry(label, it.key(), it.value(), base, data_size, &b, &e);
    if (!info.ok()) return std::move(info).take_error();
    out.push_back(std::move(info).value());
    ranges.emplace_back(b, e);
  }

  // Overlaps: walk the tensors in offset order; gaps between tensors are allowed.
  std::vector<size_t> order(out.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return ranges[a] != ranges[b] ? ranges[a] < ranges[b] : out[a].name < out[b].name;
  });
  uint64_t max_end = 0;
  size_t max_owner = SIZE_MAX;
  for (size_t idx : order) {
    const auto [b, e] = ranges[idx];
    if (b == e) continue;  // empty tensors occupy no bytes
    if (max_owner != SIZE_MAX && b < max_end) {
      const auto& prev = out[max_owner];
      return make_error(label + ": tensors " + quote(prev.name) + " (data_offsets " +
                        offsets_str(ranges[max_owner].first, ranges[max_owner].second) +
                        ") and " + quote(out[idx].name) + " (data_offsets " + offsets_str(b, e) +
                        ") overlap; " + kRedownload);
    }
    if (e > max_end || max_owner == SIZE_MAX) {
      max_end = e;
      max_owner = idx;
    }
  }
  std::vector<TensorInfo> sorted;
  sorted.reserve(out.size());
  for (size_t idx : order) sorted.push_back(std::move(out[idx]));
  return sorted;
}

bool is_plain_file_name(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos &&
         s.find('\\') == std::string::npos && s.find('\0') == std::string::npos;
}

bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(),
                                                suffix.data(), suffix.size()) == 0;
}

}  // namespace

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Result<std::vector<TensorInfo>> parse_safetensors(const uint8_t* data, size_t size,
                                                  const std::string& file_label) {
  return parse_safetensors(data, size, file_label, nullptr);
}

Result<std::vector<TensorInfo>> parse_safetensors(const uint8_t* data, size_t size,
                                                  const std::string& file_label,
                                                  std::map<std::string, std::string>* metadata) {
  try {
    return parse_impl(data, size, file_label, metadata);
  } catch (const std::exception& e) {
    return make_error(file_label + ": cannot parse safetensors header: " + e.what());
  }
}

void TensorStore::release(const TensorInfo& t) const {
  if (!releasable_) return;
  if (t.nbytes == 0) return;
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  // Only whole pages inside the tensor: a neighbour may still be in use.
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(t.data) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(t.data) + t.nbytes) / page * page;
  if (end > begin) ::madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

const TensorInfo* TensorStore::find(std::string_view name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : &it->second;
}

Status TensorStore::add_file(const std::filesystem::path& file,
                             std::vector<TensorInfo>* tensors_out) {
  MT_ASSIGN(auto mapped, MappedFile::open(file));
  std::shared_ptr<MappedFile> shared(std::move(mapped));
  MT_ASSIGN(auto infos, parse_safetensors(shared->data(), shared->size(), file.string()));
  const std::string fname = file.filename().string();
  for (auto& t : infos) t.file = fname;
  files_.push_back(std::move(shared));
  *tensors_out = std::move(infos);
  return ok_status();
}

TensorStore TensorStore::from_memory(std::shared_ptr<const void> owner, std::vector<TensorInfo> tensors) {
  TensorStore store;
  store.releasable_ = false;  // anonymous memory: MADV_DONTNEED would lose the weights
  store.files_.push_back(std::move(owner));
  for (auto& t : tensors) {
    std::string name = t.name;
    store.tensors_.emplace(std::move(name), std::move(t));
  }
  return store;
}

Result<TensorStore> TensorStore::open_single(const std::filesystem::path& file) {
  TensorStore store;
  std::vector<TensorInfo> infos;
  MT_TRY(store.add_file(file, &infos));
  for (auto& t : infos) {
    std::string name = t.name;
    store.tensors_.emplace(std::move(name), std::move(t));
  }
  return store;
}

Result<TensorStore> TensorStore::open_index(const std::filesystem::path& index_path) {
  const std::string label = index_path.string();
  const std::filesystem::path dir = index_path.parent_path();
  MT_ASSIGN(auto mapped, MappedFile::open(index_path));
  const std::string_view text(reinterpret_cast<const char*>(mapped->data()), mapped->size());
  const char* fix = "the index is corrupt — re-download it";
  if (first_invalid_utf8(text) != std::string_view::npos) {
    return make_error(label + ": index is not valid UTF-8; " + fix);
  }
  DuplicateKey dup;
  MT_ASSIGN(json root, parse_json(text, label, "index", &dup));
  if (!dup.key.empty()) {
    return make_error(label + ": key " + quote(dup.key) + " appears more than once" +
                      (dup.top_level.empty() ? std::string() : " in " + quote(dup.top_level)) +
                      "; " + fix);
  }
  if (!root.is_object()) {
    return make_error(label + ": index JSON is " + json_kind(root) +
                      ", expected an object with \"weight_map\"; " + fix);
  }
  if (auto m = root.find("metadata"); m != root.end()) {
    if (!m->is_object()) {
      return make_error(label + ": index \"metadata\" is " + json_kind(*m) +
                        ", expected an object; " + fix);
    }
    if (auto ts = m->find("total_size"); ts != m->end() && !ts->is_number()) {
      return make_error(label + ": index \"metadata.total_size\" is " + json_kind(*ts) +
                        ", expected a number; " + fix);
    }
  }
  auto wm = root.find("weight_map");
  if (wm == root.end()) return make_error(label + ": index has no \"weight_map\"; " + fix);
  if (!wm->is_object()) {
    return make_error(label + ": index \"weight_map\" is " + json_kind(*wm) +
                      ", expected an object mapping tensor names to shard file names; " + fix);
  }
  std::map<std::string, std::string> weight_map;  // tensor -> shard
  std::map<std::string, std::vector<std::string>> shards;  // shard -> tensors listed
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    if (!it.value().is_string()) {
      return make_error(label + ": index maps tensor " + quote(it.key()) + " to " +
                        json_kind(it.value()) + ", expected a shard file name; " + fix);
    }
    const auto& shard = it.value().get_ref<const std::string&>();
    if (!is_plain_file_name(shard)) {
      return make_error(label + ": index maps tensor " + quote(it.key()) + " to " + quote(shard) +
                        ", which is not a plain file name in the checkpoint directory; " + fix);
    }
    weight_map.emplace(it.key(), shard);
    shards[shard].push_back(it.key());
  }

  TensorStore store;
  // Every tensor found in any shard, with every shard it was found in.
  std::map<std::string, std::vector<TensorInfo>, std::less<>> found;
  for (const auto& [shard, listed] : shards) {
    const std::filesystem::path p = dir / shard;
    std::error_code ec;
    if (!std::filesystem::exists(p, ec)) {
      const std::string more =
          listed.size() > 1 ? " (and " + std::to_string(listed.size() - 1) + " more)" : "";
      return make_error(label + ": index maps tensor " + quote(listed.front()) + more +
                        " to shard " + quote(shard) +
                        ", but " + p.string() +
                        " does not exist; the download is incomplete — fetch the missing shard");
    }
    std::vector<TensorInfo> infos;
    MT_TRY(store.add_file(p, &infos));
    for (auto& t : infos) {
      std::string name = t.name;
      found[name].push_back(std::move(t));
    }
  }
  for (const auto& [name, copies] : found) {
    if (copies.size() > 1) {
      std::string where;
      for (const auto& c : copies) where += (where.empty() ? "" : ", ") + c.file;
      return make_error(label + ": tensor " + quote(name) + " is stored in more than one shard (" +
                        where + "); the shards come from different checkpoints — re-download "
                        "them");
    }
  }
  for (const auto& [name, copies] : found) {
    auto it = weight_map.find(name);
    if (it == weight_map.end()) {
      return make_error((dir / copies[0].file).string() + ": tensor " + quote(name) +
                        " is not listed in " + label +
                        "; the index and shards come from different checkpoints — re-download "
                        "them");
    }
    if (it->second != copies[0].file) {
      return make_error(label + ": index maps tensor " + quote(name) + " to shard " +
                        quote(it->second) + " but it is stored in " + quote(copies[0].file) +
                        "; the index and shards come from different checkpoints — re-download "
                        "them");
    }
  }
  for (const auto& [name, shard] : weight_map) {
    if (found.find(name) == found.end()) {
      return make_error(label + ": index maps tensor " + quote(name) + " to shard " +
                        quote(shard) + ", but " + (dir / shard).string() +
                        " does not contain it; the shard is truncated or from a different "
                        "checkpoint — re-download it");
    }
  }
  for (auto& [name, copies] : found) store.tensors_.emplace(name, std::move(copies[0]));
  return store;
}

Result<TensorStore> TensorStore::open(const std::filesystem::path& path) {
  try {
    std::error_code ec;
    const auto st = std::filesystem::status(path, ec);
    if (ec || !std::filesystem::exists(st)) {
      return make_error(path.string() + ": checkpoint path does not exist" +
                        (ec && ec != std::errc::no_such_file_or_directory ? " (" + ec.message() + ")"
                                                                          : std::string()));
    }
    if (!std::filesystem::is_directory(st)) {
      if (ends_with(path.filename().string(), ".index.json")) return open_index(path);
      return open_single(path);
    }
    const auto index = path / kIndexName;
    if (std::filesystem::exists(index, ec)) return open_index(index);
    const auto single = path / kSingleName;
    if (std::filesystem::exists(single, ec)) return open_single(single);
    std::vector<std::string> candidates;
    std::filesystem::directory_iterator dit(path, ec);
    if (ec) return make_error(path.string() + ": cannot list directory: " + ec.message());
    for (const std::filesystem::directory_iterator end; dit != end; dit.increment(ec)) {
      if (ec) return make_error(path.string() + ": cannot list directory: " + ec.message());
      const std::string name = dit->path().filename().string();
      if (ends_with(name, ".safetensors") && !dit->is_directory(ec)) candidates.push_back(name);
    }
    if (ec) return make_error(path.string() + ": cannot list directory: " + ec.message());
    std::sort(candidates.begin(), candidates.end());
    if (candidates.empty()) {
      return make_error(path.string() + ": no " + kIndexName + ", " + kSingleName +
                        " or other *.safetensors file in this directory; point at the checkpoint "
                        "directory or at a .safetensors file");
    }
    if (candidates.size() > 1) {
      std::string list;
      for (const auto& c : candidates) list += (list.empty() ? "" : ", ") + c;
      return make_error(path.string() + ": " + std::to_string(candidates.size()) +
                        " .safetensors files (" + list + ") but no " + kIndexName +
                        " to say which tensors each holds; add the index or open one file");
    }
    return open_single(path / candidates[0]);
  } catch (const std::exception& e) {
    return make_error(path.string() + ": cannot open checkpoint: " + e.what());
  }
}

}  // namespace mt
