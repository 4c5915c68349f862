// Fuzz target: activation trace parsing (planner/activation_stats) must never crash, every
// error must name the file, and whatever it accepts must satisfy the invariants the planner
// relies on and survive a round trip unchanged.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "planner/activation_stats.h"

using namespace mt;
using namespace mt::planner;

namespace {

void check_invariants(const ActivationStats& s) {
  if (s.version != 1 || s.num_hidden_layers <= 0 || s.n_routed_experts <= 0) std::abort();
  if (s.top_k < 1 || s.top_k > s.n_routed_experts) std::abort();
  if (s.first_moe_layer < 0 || s.first_moe_layer > s.num_hidden_layers) std::abort();
  if (s.uniform_prior && s.tokens != 0) std::abort();
  const auto E = static_cast<size_t>(s.n_routed_experts);
  int64_t prev = -1;
  for (const LayerActivations& la : s.layers) {
    if (la.layer <= prev || la.layer < s.first_moe_layer || la.layer >= s.num_hidden_layers) std::abort();
    prev = la.layer;
    if (s.find(la.layer) != &la) std::abort();
    if (la.counts.size() != E) std::abort();
    if (!la.next.empty() && la.next.size() != E) std::abort();
    unsigned __int128 sum = 0;
    for (uint64_t c : la.counts) sum += c;
    if (s.uniform_prior ? sum != 0 : sum != static_cast<unsigned __int128>(s.tokens) * static_cast<uint64_t>(s.top_k))
      std::abort();
    for (size_t e = 0; e < la.next.size(); ++e)
      for (size_t i = 0; i < la.next[e].size(); ++i) {
        const auto& [f, c] = la.next[e][i];
        if (f < 0 || f >= s.n_routed_experts || c == 0 || c > la.counts[e]) std::abort();
        if (i > 0 && la.next[e][i - 1].second < c) std::abort();  // heaviest first
      }
    // Frequencies sum to top_k per layer (a token chooses top_k experts).
    if (s.uniform_prior || s.tokens > 0) {
      double f = 0;
      for (int64_t e = 0; e < s.n_routed_experts; ++e) f += s.frequency(la.layer, e);
      if (std::fabs(f - static_cast<double>(s.top_k)) > 1e-6 * static_cast<double>(s.top_k)) std::abort();
    }
  }
}

bool same(const ActivationStats& a, const ActivationStats& b) {
  if (a.model != b.model || a.tokens != b.tokens || a.top_k != b.top_k || a.n_routed_experts != b.n_routed_experts ||
      a.num_hidden_layers != b.num_hidden_layers || a.first_moe_layer != b.first_moe_layer ||
      a.uniform_prior != b.uniform_prior || a.layers.size() != b.layers.size())
    return false;
  for (size_t i = 0; i < a.layers.size(); ++i)
    if (a.layers[i].layer != b.layers[i].layer || a.layers[i].counts != b.layers[i].counts ||
        a.layers[i].next != b.layers[i].next)
      return false;
  return true;
}

ModelConfig tiny() {
  ModelConfig c;
  c.num_hidden_layers = 3;
  c.first_k_dense_replace = 1;
  c.n_routed_experts = 16;
  c.num_experts_per_tok = 4;
  return c;
}

void run(std::string_view text) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return;
  static const ModelConfig expect = tiny();
  for (const ModelConfig* e : {static_cast<const ModelConfig*>(nullptr), &expect}) {
    auto r = activations_from_json(j, "fuzz/trace.json", e);
    if (!r.ok()) {
      if (r.error().find("fuzz/trace.json") == std::string::npos) std::abort();  // every error names the file
      continue;
    }
    check_invariants(*r);
    auto again = activations_from_json(activations_to_json(*r), "roundtrip", e);
    if (!again.ok() || !same(*r, *again)) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  run(std::string_view(reinterpret_cast<const char*>(data), size));
  // The shared mutator (replay_main.cpp) often puts an 8-byte length prefix in front of a JSON
  // object; parse what follows it too, so those mutants still reach the trace checks.
  if (size > 8) run(std::string_view(reinterpret_cast<const char*>(data) + 8, size - 8));
  return 0;
}

std::vector<std::vector<uint8_t>> fuzz_seed_corpus() {
  std::vector<std::vector<uint8_t>> seeds;
  auto add = [&](const ActivationStats& s) {
    const std::string t = activations_to_json(s).dump();
    seeds.emplace_back(t.begin(), t.end());
  };
  const ModelConfig c = tiny();
  add(uniform_activations(c));
  // A recorded trace with a fixed pseudo-random routing, then one of a single token.
  ActivationRecorder rec(c, "tiny");
  uint32_t x = 12345;
  for (int pass = 0; pass < 6; ++pass) {
    const int64_t n = pass == 0 ? 5 : 1;
    for (int64_t L = 1; L < 3; ++L) {
      std::vector<int32_t> ids;
      for (int64_t t = 0; t < n; ++t)
        for (int k = 0; k < 4; ++k) {
          x = x * 1664525u + 1013904223u;
          ids.push_back(static_cast<int32_t>((x >> 16) % 4 + 4 * k));  // distinct per token
        }
      rec.record(L, ids.data(), n, 4);
    }
  }
  add(rec.stats());
  ActivationRecorder one(c, "one");
  const std::vector<int32_t> a = {0, 5, 10, 15}, b = {1, 2, 3, 4};
  one.record(1, a.data(), 1, 4);
  one.record(2, b.data(), 1, 4);
  add(one.stats());
  return seeds;
}
