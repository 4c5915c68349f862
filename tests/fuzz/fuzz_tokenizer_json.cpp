// Fuzz target: the tokenizer.json reader (a SAX pass over model.vocab / model.merges, a DOM for
// the rest) must never crash on any bytes; every error names the file. Seeds: the bundled
// DeepSeek V3 tokenizer.json cut to its first vocabulary entries and merges (the whole file is
// 7.8 MB), and small hand-written ones.
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/tokenizer/tokenizer_json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto r = mt::tok::parse_tokenizer_json(text, "fuzz/tokenizer.json");
  if (r.ok()) {
    if (r->has_vocab != !r->vocab.empty() && !r->vocab.empty()) std::abort();
  } else if (r.error().find("fuzz/tokenizer.json") == std::string::npos) {
    std::abort();
  }
  return 0;
}

std::vector<std::vector<uint8_t>> fuzz_seed_corpus() {
  std::vector<std::vector<uint8_t>> seeds;
  auto add = [&](const std::string& s) { seeds.emplace_back(s.begin(), s.end()); };
  std::ifstream f(std::string(MOETIER_TEST_DATA) + "/tokenizer-deepseek-v3/tokenizer.json", std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  auto j = nlohmann::json::parse(ss.str(), nullptr, false);
  if (!j.is_discarded() && j.contains("model")) {
    nlohmann::json small = j;
    nlohmann::json vocab = nlohmann::json::object();
    int n = 0;
    for (auto it = j["model"]["vocab"].begin(); it != j["model"]["vocab"].end() && n < 400; ++it, ++n) vocab[it.key()] = it.value();
    small["model"]["vocab"] = vocab;
    nlohmann::json merges = nlohmann::json::array();
    for (size_t i = 0; i < j["model"]["merges"].size() && i < 200; ++i) merges.push_back(j["model"]["merges"][i]);
    small["model"]["merges"] = merges;
    add(small.dump());
  }
  add(R"({"model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]},"added_tokens":[]})");
  add(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[["a","a"]]}})");
  return seeds;
}
