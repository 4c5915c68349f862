// Fuzz target for the safetensors parser. Built two ways:
//  - with tests/fuzz/replay_main.cpp (the CMake target fuzz_safetensors): replays the seed
//    corpus below plus random mutations, best run under -DMOETIER_SANITIZE=ON;
//  - with libFuzzer, e.g.
//      clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -I. (one line)
//        tests/fuzz/fuzz_safetensors.cpp runtime/weights/*.cpp runtime/core/dtype.cpp
//        -o fuzz_safetensors_lf && ./fuzz_safetensors_lf -max_len=4096
//
// On a successful parse every tensor's bytes are read (checksum), so that an offset past the
// end of the buffer shows up as an ASan report, and the invariants the parser promises are
// checked (a violation traps).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "runtime/weights/safetensors.h"

namespace {

volatile uint64_t g_sink = 0;

constexpr const char* kLabel = "fuzz.safetensors";

void check(bool ok) {
  if (!ok) __builtin_trap();
}

// An image: 8-byte little-endian header length, `header` padded with `pad` spaces, `data`.
std::vector<uint8_t> image(const std::string& header, const std::vector<uint8_t>& data,
                           size_t pad = 0) {
  const uint64_t n = header.size() + pad;
  std::vector<uint8_t> out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(n >> (8 * i)));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), pad, ' ');
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

std::vector<uint8_t> ramp(size_t n, uint8_t start = 1) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(start + i * 7);
  return v;
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  uint64_t b, uint64_t e) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
         ",\"data_offsets\":[" + std::to_string(b) + "," + std::to_string(e) + "]}";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::map<std::string, std::string> metadata;
  auto r = mt::parse_safetensors(data, size, kLabel, &metadata);
  if (!r.ok()) {
    // Every error names the file.
    check(r.error().find(kLabel) != std::string::npos);
    return 0;
  }
  uint64_t sum = 0;
  std::vector<std::pair<const uint8_t*, const uint8_t*>> spans;
  for (const auto& t : r.value()) {
    check(t.file == kLabel);
    check(t.data >= data + 8 && t.nbytes <= size && t.data <= data + size - t.nbytes);
    check(static_cast<uint64_t>(t.numel()) * mt::dtype_size(t.dtype) == t.nbytes);
    for (int64_t d : t.shape) check(d >= 0);
    for (size_t i = 0; i < t.nbytes; ++i) sum = sum * 31 + t.data[i];
    if (t.nbytes > 0) spans.emplace_back(t.data, t.data + t.nbytes);
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) check(spans[i - 1].second <= spans[i].first);
  g_sink = g_sink + sum;
  return 0;
}

std::vector<std::vector<uint8_t>> fuzz_seed_corpus() {
  std::vector<std::vector<uint8_t>> seeds;
  // One small tensor.
  seeds.push_back(image("{" + entry("w", "F32", "[2,2]", 0, 16) + "}", ramp(16)));
  // Every dtype, metadata, padded header, gaps between tensors (as the writer lays them out).
  {
    std::string h = "{\"__metadata__\":{\"format\":\"pt\",\"note\":\"caf\\u00e9\"},";
    h += entry("model.embed_tokens.weight", "BF16", "[4,3]", 0, 24) + ",";
    h += entry("model.layers.0.mlp.gate_proj.weight", "F8_E4M3", "[2,8]", 64, 80) + ",";
    h += entry("model.layers.0.mlp.gate_proj.weight_scale_inv", "F32", "[1,1]", 128, 132) + ",";
    h += entry("a.f16", "F16", "[3]", 192, 198) + ",";
    h += entry("a.i32", "I32", "[2,1]", 256, 264) + ",";
    h += entry("a.i64", "I64", "[2]", 320, 336) + ",";
    h += entry("a.u8", "U8", "[5]", 384, 389) + "}";
    const size_t pad = (64 - (8 + h.size()) % 64) % 64;
    seeds.push_back(image(h, ramp(389), pad));
  }
  // A header the size of a real 671B shard's (~1,300 tensors, > 64 KiB of JSON: FP8 weights with
  // their scales, DeepSeek's names), pointing at a small data section.
  {
    std::string h = "{\"__metadata__\":{\"format\":\"pt\"}";
    uint64_t off = 0;
    for (int L = 0; L < 20; ++L)
      for (int e = 0; e < 32; ++e)
        for (const char* m : {"gate_proj", "up_proj"}) {
          const std::string name = "model.layers." + std::to_string(L) + ".mlp.experts." + std::to_string(e) + "." + m;
          h += "," + entry(name + ".weight", "F8_E4M3", "[2,2]", off, off + 4);
          h += "," + entry(name + ".weight_scale_inv", "F32", "[1,1]", off + 4, off + 8);
          off += 8;
        }
    h += "}";
    seeds.push_back(image(h, ramp(static_cast<size_t>(off))));
  }
  // Scalars, empty tensors, tensors in reverse offset order.
  seeds.push_back(image("{" + entry("s", "F32", "[]", 8, 12) + "," + entry("z", "BF16", "[0,5]", 4, 4) +
                            "," + entry("b", "U8", "[1,1,1,4]", 0, 4) + "}",
                        ramp(12)));
  // Nothing but metadata; an empty header object; whitespace inside the header.
  seeds.push_back(image("{\"__metadata__\":{}}", {}));
  seeds.push_back(image("{}", {}, 6));
  seeds.push_back(image(" { \"t\" : { \"dtype\" : \"I64\" , \"shape\" : [ 1 ] , "
                        "\"data_offsets\" : [ 0 , 8 ] } } ",
                        ramp(8)));
  // Invalid inputs that exercise the checks.
  seeds.push_back(image("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 4, 12) +
                            "}",
                        ramp(12)));                                                  // overlap
  seeds.push_back(image("{" + entry("a", "F64", "[1]", 0, 8) + "}", ramp(8)));      // dtype
  seeds.push_back(image("{" + entry("a", "F32", "[-1]", 0, 4) + "}", ramp(4)));     // negative
  seeds.push_back(image("{" + entry("a", "F32", "[1.5]", 0, 4) + "}", ramp(4)));    // fraction
  seeds.push_back(image("{" + entry("a", "U8", "[4294967296,4294967296]", 0, 0) + "}", {}));
  seeds.push_back(image("{" + entry("a", "F32", "[4]", 0, 16) + "}", ramp(9)));     // truncated
  seeds.push_back(image("{" + entry("a", "F32", "[1]", 8, 4) + "}", ramp(8)));      // end<begin
  seeds.push_back(image("{" + entry("a", "F32", "[1]", 0, 4) + "," + entry("a", "F32", "[1]", 4, 8) +
                            "}",
                        ramp(8)));                                                   // duplicate
  seeds.push_back(image("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", ramp(4)));     // missing
  seeds.push_back(image("[1,2,3]", {}));
  seeds.push_back(image("{\"a\":", {}));
  seeds.push_back(image("{\"\xff\":1}", {}));
  seeds.push_back({0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'});
  seeds.push_back({});
  return seeds;
}
