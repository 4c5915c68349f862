// write_gguf_metadata (runtime/weights/gguf_writer.h) read back by the GGUF reader: every value
// type, arrays of strings, signed, unsigned, bool and float elements; an inconsistent array is
// refused and leaves no file behind.
#include <catch2/catch.hpp>

#include <filesystem>

#include "runtime/weights/gguf.h"
#include "runtime/weights/gguf_writer.h"
#include "tests/unit/temp_dir.h"

using namespace mt;

namespace {
GgufValue scalar(GgufType t, uint64_t u, int64_t i = 0, double f = 0, std::string s = {}) {
  GgufValue v;
  v.type = t;
  v.u = u, v.i = i, v.f = f, v.s = std::move(s);
  return v;
}
}  // namespace

TEST_CASE("GGUF metadata written by moetier reads back equal", "[weights][gguf]") {
  test::TempDir dir;
  std::map<std::string, GgufValue, std::less<>> kv;
  kv["a.u8"] = scalar(GgufType::U8, 200);
  kv["a.i8"] = scalar(GgufType::I8, 0, -100);
  kv["a.u16"] = scalar(GgufType::U16, 60000);
  kv["a.i16"] = scalar(GgufType::I16, 0, -30000);
  kv["a.u32"] = scalar(GgufType::U32, 4000000000u);
  kv["a.i32"] = scalar(GgufType::I32, 0, -2000000000);
  kv["a.u64"] = scalar(GgufType::U64, uint64_t{1} << 60);
  kv["a.i64"] = scalar(GgufType::I64, 0, -(int64_t{1} << 60));
  kv["a.f32"] = scalar(GgufType::F32, 0, 0, 0.25);
  kv["a.f64"] = scalar(GgufType::F64, 0, 0, -1e300);
  kv["a.bool"] = scalar(GgufType::Bool, 1);
  kv["a.str"] = scalar(GgufType::String, 0, 0, 0, "héllo");
  GgufValue strs;
  strs.type = GgufType::Array, strs.elem = GgufType::String, strs.count = 3, strs.strings = {"x", "", "z z"};
  kv["b.strings"] = strs;
  GgufValue ints;
  ints.type = GgufType::Array, ints.elem = GgufType::I32, ints.count = 3, ints.ints = {-1, 0, 7};
  kv["b.ints"] = ints;
  GgufValue uints;
  uints.type = GgufType::Array, uints.elem = GgufType::U8, uints.count = 2, uints.ints = {255, 3};
  kv["b.u8s"] = uints;
  GgufValue floats;
  floats.type = GgufType::Array, floats.elem = GgufType::F32, floats.count = 2, floats.floats = {1.5, -2.0};
  kv["b.floats"] = floats;
  const auto path = dir.path() / "meta.gguf";
  REQUIRE(write_gguf_metadata(path, kv).ok());
  CHECK_FALSE(std::filesystem::exists(path.string() + ".tmp"));
  auto g = GgufModel::open(path);
  REQUIRE(g.ok());
  CHECK(g->tensors().empty());
  REQUIRE(g->metadata().size() == kv.size());
  for (const auto& [key, want] : kv) {
    INFO(key);
    const GgufValue* got = g->find_key(key);
    REQUIRE(got);
    CHECK(got->type == want.type);
    if (want.type == GgufType::Array) {
      CHECK(got->elem == want.elem);
      CHECK(got->count == want.count);
      CHECK(got->strings == want.strings);
      CHECK(got->ints == want.ints);
      CHECK(got->floats == want.floats);
    } else {
      CHECK(got->as_number() == want.as_number());
      CHECK(got->u == want.u);
      CHECK(got->s == want.s);
    }
  }
  // An array whose count exceeds its elements: an error naming the key, and no file.
  GgufValue bad = strs;
  bad.count = 4;
  const auto bad_path = dir.path() / "bad.gguf";
  auto st = write_gguf_metadata(bad_path, {{"c.bad", bad}});
  REQUIRE_FALSE(st.ok());
  CHECK(st.error().find("c.bad") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(bad_path));
}
