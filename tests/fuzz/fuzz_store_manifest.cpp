// Fuzz target: manifest.json parsing and validation (offload/expert_store) must never crash,
// every error must name the file, and whatever it accepts must satisfy the invariants open()
// and the loader rely on, and serialise to a manifest that parses to the same thing.
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "offload/expert_store.h"
#include "runtime/core/expert_format.h"

using namespace mt::offload;
using mt::DType;
using mt::ExpertQuant;
using mt::packed_matrix_bytes;

namespace {

void check_invariants(const StoreManifest& m) {
  if (m.version < kOldestStoreFormatVersion || m.version > kStoreFormatVersion) std::abort();
  if (m.expert_ggml_tiles && (m.expert_quant != "gguf" || m.version < 3)) std::abort();
  if (m.blob_bytes == 0 || m.blob_bytes % kBlobAlign != 0) std::abort();
  if (m.hidden <= 0 || m.inter <= 0 || m.group < 0 || m.expert_quant.empty()) std::abort();
  std::set<std::pair<int32_t, int32_t>> seen;
  const BlobInfo* prev = nullptr;
  for (const auto& b : m.blobs) {
    if (b.layer < 0 || b.expert < 0) std::abort();
    if (b.file >= m.files.size()) std::abort();
    if (b.offset % kBlobAlign != 0 || b.bytes != m.blob_bytes) std::abort();
    if (b.offset + b.bytes < b.offset) std::abort();  // no overflow
    if (!seen.insert({b.layer, b.expert}).second) std::abort();
    if (prev && std::make_pair(prev->layer, prev->expert) >= std::make_pair(b.layer, b.expert)) std::abort();
    prev = &b;
  }
  for (const auto& f : m.files)
    if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..") std::abort();
}

}  // namespace

namespace {

void run(std::string_view text) {
  auto r = parse_manifest(text, "fuzz/manifest.json");
  if (r.ok()) {
    check_invariants(*r);
    auto again = manifest_to_json(*r);
    if (!again.ok()) std::abort();
    auto r2 = parse_manifest(*again, "roundtrip");
    if (!r2.ok()) std::abort();
    if (r2->blobs.size() != r->blobs.size() || r2->files != r->files || r2->config_json != r->config_json) std::abort();
    // Written back as the current version, with what it says about the experts' layout.
    if (r2->version != kStoreFormatVersion || r2->expert_ggml_tiles != r->expert_ggml_tiles ||
        r2->expert_ggml_types != r->expert_ggml_types)
      std::abort();
    for (size_t i = 0; i < r->blobs.size(); ++i) {
      const BlobInfo &a = r->blobs[i], &b = r2->blobs[i];
      if (a.layer != b.layer || a.expert != b.expert || a.file != b.file || a.offset != b.offset ||
          a.crc != b.crc)
        std::abort();
    }
  } else if (r.error().find("fuzz/manifest.json") == std::string::npos) {
    std::abort();  // every error names the file
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  run(std::string_view(reinterpret_cast<const char*>(data), size));
  // The shared mutator (replay_main.cpp) often puts an 8-byte length prefix in front of a JSON
  // object, as safetensors has; parse what follows it too, so those mutants still reach the
  // manifest checks.
  if (size > 8) run(std::string_view(reinterpret_cast<const char*>(data) + 8, size - 8));
  return 0;
}

std::vector<std::vector<uint8_t>> fuzz_seed_corpus() {
  std::vector<std::vector<uint8_t>> seeds;
  auto add = [&](const std::string& s) { seeds.emplace_back(s.begin(), s.end()); };

  StoreManifest m;
  m.config_json = R"({"architectures":["DeepseekV3ForCausalLM"],"model_type":"deepseek_v3","hidden_size":7168,)"
                  R"("num_hidden_layers":61,"n_routed_experts":256,"rope_scaling":{"factor":40,"type":"yarn"}})";
  m.expert_quant = "q4";
  m.group = 32;
  m.hidden = 7168;
  m.inter = 2048;
  m.blob_bytes = 4096 * 3;
  m.files = {"experts-L003.bin", "experts-L004.bin"};
  for (int l = 3; l <= 4; ++l)
    for (int e = 0; e < 4; ++e) {
      BlobInfo b;
      b.layer = l;
      b.expert = e;
      b.file = static_cast<uint32_t>(l - 3);
      b.offset = static_cast<uint64_t>(e) * m.blob_bytes;
      b.bytes = m.blob_bytes;
      b.crc = 0x9e3779b9u * static_cast<uint32_t>(l * 256 + e + 1);
      m.blobs.push_back(b);
    }
  m.dense_quant = "q8";
  m.dense.push_back({"model.norm.weight", DType::BF16, {7168}, 0, 14336, 5});
  m.dense.push_back({"lm_head.weight", DType::Q8_PACKED, {129280, 7168}, 16384,
                     packed_matrix_bytes(ExpertQuant::Q8, 129280, 7168, 32), 6});
  m.dense.push_back({"kv_b.weight", DType::F8_E4M3, {32768, 512}, 16384 + 1048576000ull, 32768ull * 512, 7});
  add(*manifest_to_json(m));
  // A store converted from a GGUF: per-layer ggml block types, dense tensors as GGUF blocks.
  StoreManifest g = m;
  g.expert_quant = "gguf";
  g.group = 0;
  g.dense_quant = "gguf";
  for (int32_t l = 3; l < 6; ++l) g.expert_ggml_types[l] = {12, 12, l % 2 ? 14u : 12u};
  g.dense.push_back({"q_a.weight", DType::GGUF, {1536, 7168}, 16384 + 1048576000ull + 32768ull * 512,
                     1536ull * (7168 / 256) * 144, 8, 12});
  add(*manifest_to_json(g));
  // The same with its experts as row tiles (format 3), and as an older moetier wrote it (format 2).
  StoreManifest gt = g;
  gt.expert_ggml_tiles = true;
  add(*manifest_to_json(gt));
  {
    std::string v2 = *manifest_to_json(g);
    const std::string from = "\"version\": " + std::to_string(kStoreFormatVersion);
    v2.replace(v2.find(from), from.size(), "\"version\": 2");
    add(v2);
  }
  // An empty store, and one blob.
  StoreManifest e = m;
  e.files.clear();
  e.blobs.clear();
  e.config_json = "{}";
  add(*manifest_to_json(e));
  StoreManifest one = m;
  one.blobs.resize(1);
  one.files.resize(1);
  add(*manifest_to_json(one));
  // Compact, hand-written, with fields out of order and extra keys.
  add(R"({"blobs":[{"crc32c":1,"bytes":4096,"offset":0,"file":0,"expert":1,"layer":2}],"files":["a.bin"],)"
      R"("dense_file":"dense.bin","experts":{"blob_bytes":4096,"inter":1,"hidden":1,"group":0,"quant":"bf16"},)"
      R"("dense":{"tensors":[{"crc32c":3,"bytes":1088,"offset":4096,"shape":[16,32],"dtype":"Q4_PACKED","name":"w"},)"
      R"({"name":"n","dtype":"BF16","shape":[7],"offset":0,"bytes":14,"crc32c":0}],"group":32,"quant":"q4"},)"
      R"("config":{},"version":2,"format":"moetier-expert-store","extra":[null,true,1.5]})");
  return seeds;
}
