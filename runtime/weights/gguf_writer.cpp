#include "runtime/weights/gguf_writer.h"

#include <cstdio>
#include <cstring>
#include <memory>
#include <system_error>

namespace mt {

namespace {

class Out {
 public:
  template <typename T>
  void put(T v) {
    const auto* p = reinterpret_cast<const char*>(&v);
    buf_.append(p, sizeof v);
  }
  void str(const std::string& s) {
    put(uint64_t(s.size()));
    buf_ += s;
  }
  const std::string& bytes() const { return buf_; }
  void pad(size_t align) { buf_.resize((buf_.size() + align - 1) / align * align, '\0'); }

 private:
  std::string buf_;  // little-endian host (x86-64, as the reader assumes)
};

// One scalar of type t from the value's kind-kept fields.
Status scalar(Out& o, GgufType t, uint64_t u, int64_t i, double f, const std::string& s, const std::string& key) {
  switch (t) {
    case GgufType::U8: o.put(uint8_t(u)); break;
    case GgufType::I8: o.put(int8_t(i)); break;
    case GgufType::U16: o.put(uint16_t(u)); break;
    case GgufType::I16: o.put(int16_t(i)); break;
    case GgufType::U32: o.put(uint32_t(u)); break;
    case GgufType::I32: o.put(int32_t(i)); break;
    case GgufType::U64: o.put(uint64_t(u)); break;
    case GgufType::I64: o.put(int64_t(i)); break;
    case GgufType::F32: o.put(float(f)); break;
    case GgufType::F64: o.put(double(f)); break;
    case GgufType::Bool: o.put(uint8_t(u ? 1 : 0)); break;
    case GgufType::String: o.str(s); break;
    case GgufType::Array: return make_error("key '" + key + "': an array of arrays");
  }
  return ok_status();
}

bool is_unsigned(GgufType t) {
  return t == GgufType::U8 || t == GgufType::U16 || t == GgufType::U32 || t == GgufType::U64 || t == GgufType::Bool;
}

}  // namespace

Status write_gguf_metadata(const std::filesystem::path& path, const std::map<std::string, GgufValue, std::less<>>& kv) {
  Out o;
  o.put(uint32_t(0x46554747));  // "GGUF"
  o.put(uint32_t(3));
  o.put(uint64_t(0));  // tensors
  o.put(uint64_t(kv.size()));
  for (const auto& [key, v] : kv) {
    o.str(key);
    o.put(uint32_t(v.type));
    if (v.type != GgufType::Array) {
      MT_TRY(scalar(o, v.type, v.u, v.i, v.f, v.s, key));
      continue;
    }
    o.put(uint32_t(v.elem));
    o.put(uint64_t(v.count));
    for (uint64_t k = 0; k < v.count; ++k) {
      const size_t j = size_t(k);
      if (v.elem == GgufType::String) {
        if (j >= v.strings.size()) return make_error("key '" + key + "': fewer strings than its count");
        o.str(v.strings[j]);
      } else if (v.elem == GgufType::F32 || v.elem == GgufType::F64) {
        if (j >= v.floats.size()) return make_error("key '" + key + "': fewer values than its count");
        MT_TRY(scalar(o, v.elem, 0, 0, v.floats[j], {}, key));
      } else {
        if (j >= v.ints.size()) return make_error("key '" + key + "': fewer values than its count");
        const int64_t x = v.ints[j];
        MT_TRY(scalar(o, v.elem, is_unsigned(v.elem) ? uint64_t(x) : 0, x, 0, {}, key));
      }
    }
  }
  o.pad(32);  // the (empty) data section starts at the default alignment
  const std::filesystem::path tmp = path.string() + ".tmp";
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(tmp.c_str(), "wb"), &std::fclose);
  if (!f) return make_error("cannot create " + tmp.string() + ": " + std::strerror(errno));
  if (std::fwrite(o.bytes().data(), 1, o.bytes().size(), f.get()) != o.bytes().size() || std::fflush(f.get()) != 0)
    return make_error("cannot write " + tmp.string() + ": " + std::strerror(errno));
  f.reset();
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return make_error("cannot rename " + tmp.string() + " to " + path.string() + ": " + ec.message());
  return ok_status();
}

}  // namespace mt
