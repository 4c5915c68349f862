// Fuzz target for the GGUF parser (runtime/weights/gguf.h). Built as the CMake target fuzz_gguf
// (replaying the seeds below plus random mutations; under -DMOETIER_SANITIZE=ON in
// scripts/test.sh's ASan pass) and under libFuzzer by scripts/fuzz.sh.
//
// On a successful parse every tensor's bytes are read (checksum), so an offset past the end of
// the buffer shows up as an ASan report, and the invariants the parser promises are checked
// (a violation traps): each tensor inside the buffer, aligned, of the size its type and shape
// give, none overlapping.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "runtime/core/ggml_types.h"
#include "runtime/weights/gguf.h"

namespace {

volatile uint64_t g_sink = 0;
constexpr const char* kLabel = "fuzz.gguf";

void check(bool ok) {
  if (!ok) __builtin_trap();
}

// A GGUF image, little-endian, built field by field.
struct Image {
  std::vector<uint8_t> b;
  template <class T>
  Image& put(T v) {
    const auto* p = reinterpret_cast<const uint8_t*>(&v);
    b.insert(b.end(), p, p + sizeof(T));
    return *this;
  }
  Image& str(const std::string& s) {
    put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
  Image& header(uint64_t tensors, uint64_t kv, uint32_t version = 3) {
    b.insert(b.end(), {'G', 'G', 'U', 'F'});
    return put(version).put(tensors).put(kv);
  }
  Image& kv_u32(const std::string& k, uint32_t v) { return str(k).put<uint32_t>(4).put(v); }
  Image& kv_str(const std::string& k, const std::string& v) { return str(k).put<uint32_t>(8).str(v); }
  Image& tensor(const std::string& name, uint32_t type, std::vector<uint64_t> dims, uint64_t off) {
    str(name).put<uint32_t>(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) put(d);
    return put(type).put(off);
  }
  Image& pad(size_t align) {
    while (b.size() % align) b.push_back(0);
    return *this;
  }
  Image& data(size_t n) {
    for (size_t i = 0; i < n; ++i) b.push_back(static_cast<uint8_t>(i * 7 + 1));
    return *this;
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto r = mt::parse_gguf(data, size, kLabel);
  if (!r.ok()) {
    check(r.error().find(kLabel) != std::string::npos);  // every error names the file
    return 0;
  }
  const mt::GgufFile& f = r.value();
  check(f.alignment > 0 && (f.alignment & (f.alignment - 1)) == 0);
  uint64_t sum = 0;
  std::vector<std::pair<const uint8_t*, const uint8_t*>> spans;
  for (const mt::GgufTensor& t : f.tensors) {
    const mt::GgmlTypeInfo* ti = mt::ggml_type_info(t.type);
    check(ti != nullptr);
    check(!t.dims.empty() && t.dims.size() <= 4 && t.dims[0] % ti->block == 0);
    // In 128 bits, so that a byte count that wrapped in the parser cannot agree by wrapping here.
    check((unsigned __int128)(uint64_t(t.numel()) / uint64_t(ti->block)) * uint64_t(ti->bytes) == t.nbytes);
    check(t.name.size() < 64);
    check(t.offset % f.alignment == 0);
    check(t.data >= data + f.data_offset && t.nbytes <= size && t.data <= data + size - t.nbytes);
    for (uint64_t i = 0; i < t.nbytes; ++i) sum = sum * 31 + t.data[i];
    if (t.nbytes > 0) spans.emplace_back(t.data, t.data + t.nbytes);
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) check(spans[i - 1].second <= spans[i].first);
  for (const auto& [k, v] : f.kv) {
    if (v.type == mt::GgufType::Array)
      check(v.count == v.ints.size() + v.floats.size() + v.strings.size());
    sum += k.size() + v.s.size();
  }
  g_sink = g_sink + sum;
  return 0;
}

std::vector<std::vector<uint8_t>> fuzz_seed_corpus() {
  std::vector<std::vector<uint8_t>> seeds;
  using mt::GgmlType;
  // A deepseek2-like file: metadata of every kind, tensors of several types.
  {
    Image im;
    im.header(4, 9)
        .kv_str("general.architecture", "deepseek2")
        .kv_u32("deepseek2.block_count", 61)
        .str("deepseek2.rope.freq_base").put<uint32_t>(6).put(10000.0f)
        .str("deepseek2.expert_weights_norm").put<uint32_t>(7).put<uint8_t>(1)
        .str("general.size").put<uint32_t>(10).put<uint64_t>(671000000000ull)
        .str("general.delta").put<uint32_t>(11).put<int64_t>(-5)
        .str("general.ratio").put<uint32_t>(12).put(0.25)
        .str("tokenizer.ggml.tokens").put<uint32_t>(9).put<uint32_t>(8).put<uint64_t>(3).str("a").str("b").str("<s>")
        .str("tokenizer.ggml.scores").put<uint32_t>(9).put<uint32_t>(6).put<uint64_t>(2).put(0.5f).put(-1.0f);
    im.tensor("token_embd.weight", uint32_t(GgmlType::F32), {4, 2}, 0)
        .tensor("blk.0.q8.weight", uint32_t(GgmlType::Q8_0), {32, 2}, 32)
        .tensor("blk.0.q4k.weight", uint32_t(GgmlType::Q4_K), {256}, 128)
        .tensor("blk.0.bf16.weight", uint32_t(GgmlType::BF16), {3}, 288);
    im.pad(32).data(320);
    seeds.push_back(im.b);
  }
  // Custom alignment, split keys, nested arrays (refused), version 2.
  {
    Image im;
    im.header(1, 4, 2)
        .kv_u32("general.alignment", 64)
        .str("split.no").put<uint32_t>(2).put<uint16_t>(0)
        .str("split.count").put<uint32_t>(2).put<uint16_t>(1)
        .str("nested").put<uint32_t>(9).put<uint32_t>(9).put<uint64_t>(2)
        .put<uint32_t>(0).put<uint64_t>(2).put<uint8_t>(1).put<uint8_t>(2)
        .put<uint32_t>(5).put<uint64_t>(1).put<int32_t>(-3);
    im.tensor("w", uint32_t(GgmlType::F16), {8, 1, 1, 1}, 0);
    im.pad(64).data(16);
    seeds.push_back(im.b);
  }
  // Broken ones: overlap, misaligned, past the end, unknown type, huge counts, bad magic.
  {
    Image im;
    im.header(2, 0).tensor("a", 0, {8}, 0).tensor("b", 0, {8}, 0).pad(32).data(64);
    seeds.push_back(im.b);
  }
  {
    Image im;
    im.header(1, 0).tensor("a", 0, {8}, 4).pad(32).data(64);
    seeds.push_back(im.b);
  }
  {
    Image im;
    im.header(1, 0).tensor("a", 0, {1 << 20}, 0).pad(32).data(64);
    seeds.push_back(im.b);
  }
  {
    Image im;
    im.header(1, 0).tensor("a", 99, {8}, 0).pad(32).data(64);
    seeds.push_back(im.b);
  }
  {
    Image im;
    im.header(uint64_t{1} << 40, uint64_t{1} << 40);
    seeds.push_back(im.b);
  }
  {
    Image im;
    im.header(0, 1).str("arr").put<uint32_t>(9).put<uint32_t>(4).put<uint64_t>(uint64_t{1} << 40);
    seeds.push_back(im.b);
  }
  seeds.push_back({'G', 'G', 'U', 'F', 3, 0, 0, 0});
  seeds.push_back({'G', 'G', 'U', 'X'});
  seeds.push_back({});
  return seeds;
}
