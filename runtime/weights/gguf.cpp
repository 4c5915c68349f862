#include "runtime/weights/gguf.h"

#include <algorithm>
#include <cstring>
#include <regex>
#include <set>

#include "runtime/core/ggml_types.h"
#include "runtime/weights/safetensors.h"  // MappedFile

#include <sys/mman.h>

namespace mt {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF", little-endian
constexpr uint64_t kMaxArrayElements = uint64_t{64} << 20;  // over all arrays of a file
constexpr uint32_t kMaxDims = 4;                             // GGML_MAX_DIMS
constexpr size_t kMaxName = 64;                              // GGML_MAX_NAME: llama.cpp refuses longer

// Reads little-endian values from [p, end), failing (once) past the end.
class Cursor {
 public:
  Cursor(const uint8_t* p, size_t n) : base_(p), p_(p), end_(p + n) {}
  uint64_t pos() const { return uint64_t(p_ - base_); }
  uint64_t left() const { return uint64_t(end_ - p_); }
  template <class T>
  bool get(T& v) {
    if (left() < sizeof(T)) return false;
    std::memcpy(&v, p_, sizeof(T));
    p_ += sizeof(T);
    return true;
  }
  bool str(std::string& s) {
    uint64_t n = 0;
    if (!get(n) || n > left()) return false;
    s.assign(reinterpret_cast<const char*>(p_), size_t(n));
    p_ += n;
    return true;
  }

 private:
  const uint8_t* base_;
  const uint8_t* p_;
  const uint8_t* end_;
};

bool valid_type(uint32_t t) { return t <= uint32_t(GgufType::F64); }

// Bytes of one element of a fixed-size type (0 for String and Array).
uint64_t fixed_size(GgufType t) {
  switch (t) {
    case GgufType::U8: case GgufType::I8: case GgufType::Bool: return 1;
    case GgufType::U16: case GgufType::I16: return 2;
    case GgufType::U32: case GgufType::I32: case GgufType::F32: return 4;
    case GgufType::U64: case GgufType::I64: case GgufType::F64: return 8;
    default: return 0;
  }
}

struct Parser {
  Cursor c;
  const std::string& file;
  uint64_t array_elements = 0;

  auto fail(const std::string& what) const {
    return make_error(file + ": " + what + " (at byte " + std::to_string(c.pos()) + "; a truncated or corrupt GGUF file?)");
  }

  // A scalar of type t into v.
  Status scalar(GgufType t, GgufValue& v, const std::string& key) {
    v.type = t;
    bool ok = true;
    switch (t) {
      case GgufType::U8: { uint8_t x{}; ok = c.get(x); v.u = x; break; }
      case GgufType::I8: { int8_t x{}; ok = c.get(x); v.i = x; break; }
      case GgufType::U16: { uint16_t x{}; ok = c.get(x); v.u = x; break; }
      case GgufType::I16: { int16_t x{}; ok = c.get(x); v.i = x; break; }
      case GgufType::U32: { uint32_t x{}; ok = c.get(x); v.u = x; break; }
      case GgufType::I32: { int32_t x{}; ok = c.get(x); v.i = x; break; }
      case GgufType::U64: { uint64_t x{}; ok = c.get(x); v.u = x; break; }
      case GgufType::I64: { int64_t x{}; ok = c.get(x); v.i = x; break; }
      case GgufType::F32: { float x{}; ok = c.get(x); v.f = x; break; }
      case GgufType::F64: { double x{}; ok = c.get(x); v.f = x; break; }
      case GgufType::Bool: {
        uint8_t x = 0;
        ok = c.get(x);
        if (ok && x > 1) return fail("key '" + key + "': a bool of value " + std::to_string(x));
        v.u = x;
        break;
      }
      case GgufType::String: ok = c.str(v.s); break;
      case GgufType::Array: return fail("key '" + key + "': internal: array as scalar");
    }
    if (!ok) return fail("key '" + key + "': its " + gguf_type_name(t) + " value runs past the end of the file");
    return ok_status();
  }

  Status value(GgufType t, GgufValue& v, const std::string& key) {
    if (t != GgufType::Array) return scalar(t, v, key);
    v.type = GgufType::Array;
    uint32_t et = 0;
    uint64_t n = 0;
    if (!c.get(et) || !c.get(n)) return fail("key '" + key + "': its array header runs past the end of the file");
    if (!valid_type(et)) return fail("key '" + key + "': an array of unknown value type " + std::to_string(et));
    // As llama.cpp: no arrays of arrays (no model key uses them, and each would cost far more
    // memory than its bytes in the file).
    if (GgufType(et) == GgufType::Array) return fail("key '" + key + "': an array of arrays (not supported)");
    v.elem = GgufType(et);
    v.count = n;
    // Every element takes at least a byte (8 for a string's length).
    const uint64_t min_size = v.elem == GgufType::String ? 8 : fixed_size(v.elem);
    if (n > c.left() / min_size)
      return fail("key '" + key + "': an array of " + std::to_string(n) + " elements cannot fit in the rest of the file");
    array_elements += n;
    if (array_elements > kMaxArrayElements)
      return fail("key '" + key + "': more than " + std::to_string(kMaxArrayElements) + " array elements in the metadata");
    GgufValue e;
    for (uint64_t k = 0; k < n; ++k) {
      MT_TRY(value(v.elem, e, key));
      switch (v.elem) {
        case GgufType::String: v.strings.push_back(std::move(e.s)); break;
        case GgufType::F32: case GgufType::F64: v.floats.push_back(e.f); break;
        case GgufType::I8: case GgufType::I16: case GgufType::I32: case GgufType::I64: v.ints.push_back(e.i); break;
        default: v.ints.push_back(static_cast<int64_t>(e.u)); break;
      }
    }
    return ok_status();
  }
};

}  // namespace

const char* gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::U8: return "uint8";
    case GgufType::I8: return "int8";
    case GgufType::U16: return "uint16";
    case GgufType::I16: return "int16";
    case GgufType::U32: return "uint32";
    case GgufType::I32: return "int32";
    case GgufType::F32: return "float32";
    case GgufType::Bool: return "bool";
    case GgufType::String: return "string";
    case GgufType::Array: return "array";
    case GgufType::U64: return "uint64";
    case GgufType::I64: return "int64";
    case GgufType::F64: return "float64";
  }
  return "?";
}

std::optional<int64_t> GgufValue::as_int() const {
  switch (type) {
    case GgufType::U8: case GgufType::U16: case GgufType::U32: case GgufType::U64: case GgufType::Bool:
      if (u > uint64_t(INT64_MAX)) return std::nullopt;
      return static_cast<int64_t>(u);
    case GgufType::I8: case GgufType::I16: case GgufType::I32: case GgufType::I64: return i;
    default: return std::nullopt;
  }
}

std::optional<double> GgufValue::as_number() const {
  if (type == GgufType::F32 || type == GgufType::F64) return f;
  if (type == GgufType::U64) return static_cast<double>(u);
  if (auto v = as_int()) return static_cast<double>(*v);
  return std::nullopt;
}

int64_t GgufTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

Result<GgufFile> parse_gguf(const uint8_t* data, size_t size, const std::string& name) {
  Parser p{Cursor(data, size), name};
  GgufFile f;
  uint32_t magic = 0;
  if (!p.c.get(magic) || magic != kMagic) return make_error(name + ": not a GGUF file (no 'GGUF' magic at the start)");
  if (!p.c.get(f.version)) return p.fail("the header is cut short");
  if (f.version == 0x03000000u || f.version == 0x02000000u)
    return make_error(name + ": a big-endian GGUF file; only little-endian files are supported");
  if (f.version != 2 && f.version != 3)
    return make_error(name + ": GGUF version " + std::to_string(f.version) + " is not supported (2 and 3 are)");
  uint64_t n_tensors = 0, n_kv = 0;
  if (!p.c.get(n_tensors) || !p.c.get(n_kv)) return p.fail("the header is cut short");
  // A key takes at least 13 bytes (length, type, one byte of value); a tensor entry 24.
  if (n_kv > p.c.left() / 13) return p.fail("the header claims " + std::to_string(n_kv) + " metadata keys");
  if (n_tensors > p.c.left() / 24) return p.fail("the header claims " + std::to_string(n_tensors) + " tensors");

  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key;
    uint32_t t = 0;
    if (!p.c.str(key)) return p.fail("metadata key " + std::to_string(k) + " runs past the end of the file");
    if (!p.c.get(t)) return p.fail("key '" + key + "': its type runs past the end of the file");
    if (!valid_type(t)) return p.fail("key '" + key + "': unknown value type " + std::to_string(t));
    GgufValue v;
    MT_TRY(p.value(GgufType(t), v, key));
    if (!f.kv.emplace(key, std::move(v)).second) return p.fail("key '" + key + "' appears twice");
  }
  if (auto it = f.kv.find("general.alignment"); it != f.kv.end()) {
    const auto a = it->second.as_int();
    if (it->second.type != GgufType::U32 || !a || *a == 0 || (*a & (*a - 1)) != 0)
      return make_error(name + ": general.alignment must be a uint32 power of two");
    f.alignment = uint64_t(*a);
  }

  std::set<std::string, std::less<>> names;
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensor t;
    t.file = name;
    uint32_t n_dims = 0;
    if (!p.c.str(t.name)) return p.fail("tensor entry " + std::to_string(k) + " runs past the end of the file");
    if (t.name.size() >= kMaxName)
      return p.fail("tensor entry " + std::to_string(k) + ": a name of " + std::to_string(t.name.size()) +
                    " bytes (llama.cpp's limit is " + std::to_string(kMaxName - 1) + ")");
    const std::string what = "tensor '" + t.name + "'";
    if (!names.insert(t.name).second) return p.fail(what + " appears twice");
    if (!p.c.get(n_dims)) return p.fail(what + ": its entry runs past the end of the file");
    if (n_dims == 0 || n_dims > kMaxDims)
      return p.fail(what + ": " + std::to_string(n_dims) + " dimensions (1 to " + std::to_string(kMaxDims) + ")");
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t ne = 0;
      if (!p.c.get(ne)) return p.fail(what + ": its entry runs past the end of the file");
      if (ne == 0 || ne > (uint64_t{1} << 62) / numel) return p.fail(what + ": dimension " + std::to_string(d) + " of " +
                                                                      std::to_string(ne) + " (empty, or too large)");
      numel *= ne;
      t.dims.push_back(static_cast<int64_t>(ne));
    }
    if (!p.c.get(t.type) || !p.c.get(t.offset)) return p.fail(what + ": its entry runs past the end of the file");
    const GgmlTypeInfo* ti = ggml_type_info(t.type);
    if (!ti) return p.fail(what + ": unknown tensor type " + std::to_string(t.type));
    if (t.dims[0] % ti->block != 0)
      return p.fail(what + ": its rows of " + std::to_string(t.dims[0]) + " are not whole " + ti->name + " blocks of " +
                    std::to_string(ti->block));
    if (numel / uint64_t(ti->block) > UINT64_MAX / uint64_t(ti->bytes))
      return p.fail(what + ": " + std::to_string(numel) + " elements of " + ti->name + " overflow a byte count");
    t.nbytes = numel / uint64_t(ti->block) * uint64_t(ti->bytes);
    if (t.offset % f.alignment != 0)
      return p.fail(what + ": its offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
                    std::to_string(f.alignment));
    f.tensors.push_back(std::move(t));
  }
  f.data_offset = (p.c.pos() + f.alignment - 1) / f.alignment * f.alignment;
  if (!f.tensors.empty() && f.data_offset > size)
    return make_error(name + ": the file ends before its data section (" + std::to_string(size) + " bytes, data at " +
                      std::to_string(f.data_offset) + "; truncated?)");
  const uint64_t data_bytes = size - std::min<uint64_t>(size, f.data_offset);
  for (GgufTensor& t : f.tensors) {
    if (t.offset > data_bytes || t.nbytes > data_bytes - t.offset)
      return make_error(name + ": tensor '" + t.name + "' (" + std::to_string(t.nbytes) + " bytes at data offset " +
                        std::to_string(t.offset) + ") runs past the end of the file (" + std::to_string(data_bytes) +
                        " data bytes; truncated download?)");
    t.data = data + f.data_offset + t.offset;
  }
  // No two tensors share bytes.
  std::vector<const GgufTensor*> order;
  for (const GgufTensor& t : f.tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const GgufTensor* a, const GgufTensor* b) { return a->offset < b->offset; });
  for (size_t k = 1; k < order.size(); ++k)
    if (order[k - 1]->offset + order[k - 1]->nbytes > order[k]->offset)
      return make_error(name + ": tensors '" + order[k - 1]->name + "' and '" + order[k]->name + "' overlap");
  return f;
}

Result<std::vector<std::filesystem::path>> gguf_split_paths(const std::filesystem::path& any_part) {
  static const std::regex kSplit(R"((.*)-(\d{5})-of-(\d{5})\.gguf)");
  const std::string fname = any_part.filename().string();
  std::smatch m;
  if (!std::regex_match(fname, m, kSplit)) return std::vector<std::filesystem::path>{any_part};
  const int count = std::stoi(m[3].str()), no = std::stoi(m[2].str());
  if (count < 1 || no < 1 || no > count) return make_error(any_part.string() + ": a split name with part " +
                                                           m[2].str() + " of " + m[3].str());
  std::vector<std::filesystem::path> parts;
  for (int k = 1; k <= count; ++k) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "-%05d-of-%05d.gguf", k, count);
    std::filesystem::path q = any_part.parent_path() / (m[1].str() + buf);
    std::error_code ec;
    if (!std::filesystem::is_regular_file(q, ec))
      return make_error(q.string() + ": part " + std::to_string(k) + " of " + std::to_string(count) +
                        " of this split GGUF model is missing (download every part into one directory)");
    parts.push_back(q);
  }
  return parts;
}

Result<GgufModel> GgufModel::open(const std::filesystem::path& path) {
  GgufModel g;
  MT_ASSIGN(g.files_, gguf_split_paths(path));
  const auto count = static_cast<int64_t>(g.files_.size());
  int64_t declared_total = -1;
  for (int64_t k = 0; k < count; ++k) {
    const std::filesystem::path& file = g.files_[size_t(k)];
    MT_ASSIGN(std::unique_ptr<MappedFile> map, MappedFile::open(file));
    MT_ASSIGN(GgufFile f, parse_gguf(map->data(), map->size(), file.filename().string()));
    const std::string fname = file.filename().string();
    // Split metadata, when present, must agree with the names.
    auto meta_int = [&](const char* key) -> std::optional<int64_t> {
      auto it = f.kv.find(key);
      return it == f.kv.end() ? std::nullopt : it->second.as_int();
    };
    if (auto n = meta_int("split.count"); n && *n != count)
      return make_error(file.string() + ": split.count says " + std::to_string(*n) + " parts, the file names " +
                        std::to_string(count));
    if (auto no = meta_int("split.no"); no && *no != k)
      return make_error(file.string() + ": split.no is " + std::to_string(*no) + " in part " + std::to_string(k + 1));
    if (auto total = meta_int("split.tensors.count"); total && k == 0) declared_total = *total;
    if (k == 0) {
      g.meta_ = std::move(f.kv);
      g.version_ = f.version;
    }
    for (GgufTensor& t : f.tensors) {
      if (g.by_name_.count(t.name))
        return make_error(file.string() + ": tensor '" + t.name + "' is also in an earlier part");
      g.by_name_.emplace(t.name, g.tensors_.size());
      t.file = fname;
      g.tensors_.push_back(std::move(t));
    }
    g.maps_.push_back(std::shared_ptr<const void>(std::move(map)));
  }
  if (declared_total >= 0 && declared_total != static_cast<int64_t>(g.tensors_.size()))
    return make_error(g.files_[0].string() + ": split.tensors.count says " + std::to_string(declared_total) +
                      " tensors, the parts hold " + std::to_string(g.tensors_.size()));
  return g;
}

const GgufValue* GgufModel::find_key(std::string_view key) const {
  auto it = meta_.find(key);
  return it == meta_.end() ? nullptr : &it->second;
}

const GgufTensor* GgufModel::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

uint64_t GgufModel::data_bytes() const {
  uint64_t b = 0;
  for (const GgufTensor& t : tensors_) b += t.nbytes;
  return b;
}

void GgufModel::prefault() const {
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14
#endif
  constexpr uintptr_t kPage = 4096;
  for (const GgufTensor& t : tensors_) {
    if (!t.data || t.nbytes == 0) continue;
    const uintptr_t a = reinterpret_cast<uintptr_t>(t.data) & ~(kPage - 1);
    const uintptr_t e = reinterpret_cast<uintptr_t>(t.data) + t.nbytes;
    if (::madvise(reinterpret_cast<void*>(a), e - a, MADV_POPULATE_READ) == 0) continue;
    // An older kernel: touch one byte per page.
    volatile uint8_t sink = 0;
    for (uintptr_t p = std::max(a, reinterpret_cast<uintptr_t>(t.data)); p < e; p += kPage)
      sink = sink + *reinterpret_cast<const uint8_t*>(p);
  }
}

void GgufModel::release(const uint8_t* p, uint64_t n) const {
  constexpr uintptr_t kPage = 4096;
  const uintptr_t a = (reinterpret_cast<uintptr_t>(p) + kPage - 1) & ~(kPage - 1);
  const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + n) & ~(kPage - 1);
  if (e > a) ::madvise(reinterpret_cast<void*>(a), e - a, MADV_DONTNEED);  // best effort
}

}  // namespace mt
