// Fuzz target: a sharded checkpoint's model.safetensors.index.json, through TensorStore::open
// on a directory that holds two real shards (tensors "a" and "b"): never a crash; an accepted
// index maps every tensor it names to a tensor of its shard; every error names a file.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "runtime/weights/safetensors.h"

namespace {

const std::filesystem::path& shard_dir() {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("moetier_fuzz_index_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    const std::vector<uint8_t> four(16, 1);
    // The shards every input's index points at: without them the fuzzer would test nothing past the index.
    if (!mt::SafetensorsWriter::write_file(d / "model-00001-of-00002.safetensors", {{"a", mt::DType::F32, {2, 2}, four}}) ||
        !mt::SafetensorsWriter::write_file(d / "model-00002-of-00002.safetensors", {{"b", mt::DType::F32, {4}, four}}))
      std::abort();
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(std::filesystem::temp_directory_path() /
                                      ("moetier_fuzz_index_" + std::to_string(::getpid())),
                                  ec);
    });
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& dir = shard_dir();
  {
    std::ofstream f(dir / "model.safetensors.index.json", std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  auto r = mt::TensorStore::open(dir);
  if (r.ok()) {
    for (const auto& [name, t] : r->tensors())
      if (t.name != name || (name != "a" && name != "b")) std::abort();
  } else if (r.error().find(dir.string()) == std::string::npos) {
    std::abort();  // every error names the file at fault
  }
  return 0;
}

std::vector<std::vector<uint8_t>> fuzz_seed_corpus() {
  std::vector<std::vector<uint8_t>> seeds;
  auto add = [&](const std::string& s) { seeds.emplace_back(s.begin(), s.end()); };
  add(R"({"metadata":{"total_size":32},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}})");
  add(R"({"weight_map":{"a":"model-00001-of-00002.safetensors"}})");
  add(R"({"metadata":{},"weight_map":{"b":"model-00002-of-00002.safetensors","a":"../model-00001-of-00002.safetensors"}})");
  return seeds;
}
