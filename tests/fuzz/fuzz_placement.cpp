// Fuzz target: placement files (`moetier plan --json`, read by `--plan FILE`) and `--pin`
// specifications must never crash; whatever is accepted is consistent, every error names its
// source. Input: a placement JSON text; its first line is also tried as a pin list.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "planner/placement.h"
#include "planner/solver.h"
#include "runtime/config/model_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const auto j = nlohmann::json::parse(text, nullptr, false);
  if (!j.is_discarded()) {
    auto p = mt::planner::placement_from_json(j, "fuzz/plan.json");
    if (p.ok()) {
      if (static_cast<int64_t>(p->tiers.size()) != p->moe_layers()) std::abort();
      for (const auto& row : p->tiers)
        if (static_cast<int64_t>(row.size()) != p->n_routed_experts) std::abort();
      // What is accepted writes back and reads again.
      if (!mt::planner::placement_from_json(mt::planner::placement_to_json(*p), "again").ok()) std::abort();
    } else if (p.error().find("fuzz/plan.json") == std::string::npos) {
      std::abort();
    }
  }
  static const mt::ModelConfig cfg = *mt::preset_config("tiny");
  auto pins = mt::planner::parse_pin(text.substr(0, text.find('\n')), cfg);
  if (pins.ok())
    for (const auto& pin : *pins)
      if (pin.layer < 0 || pin.layer >= cfg.num_hidden_layers || pin.expert < 0 || pin.expert >= cfg.n_routed_experts)
        std::abort();
  return 0;
}

std::vector<std::vector<uint8_t>> fuzz_seed_corpus() {
  std::vector<std::vector<uint8_t>> seeds;
  auto add = [&](const std::string& s) { seeds.emplace_back(s.begin(), s.end()); };
  mt::planner::Placement p;
  p.num_hidden_layers = 4;
  p.first_moe_layer = 1;
  p.n_routed_experts = 8;
  p.expert_format = "q4";
  p.expert_bytes = 4096;
  p.nvme_cache_bytes = 8192;
  p.tiers.assign(3, std::vector<mt::planner::Tier>(8, mt::planner::Tier::Ram));
  p.tiers[1][3] = mt::planner::Tier::Nvme;
  p.tiers[2][0] = mt::planner::Tier::Vram;
  add(mt::planner::placement_to_json(p).dump());
  add("1:3=ram,2:*=nvme\n" + mt::planner::placement_to_json(p).dump(1));
  add("1:0=vram");
  return seeds;
}
