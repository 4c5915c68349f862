// Where every routed expert lives: the placement file the planner writes (`moetier plan
// --json`) and the runtime reads (`moetier generate --plan`). Data only; docs/formats.md
// describes the JSON.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/core/status.h"

namespace mt::planner {

enum class Tier : uint8_t { Vram = 0, Ram = 1, Nvme = 2 };
constexpr int kTierCount = 3;

const char* tier_name(Tier t);   // "vram", "ram", "nvme"
char tier_letter(Tier t);        // 'G', 'R', 'N' (the placement file's per-layer strings)
bool tier_from_name(const std::string& name, Tier& out);  // also accepts gpu, disk and the letters

struct Placement {
  int64_t num_hidden_layers = 0;
  int64_t first_moe_layer = 0;
  int64_t n_routed_experts = 0;
  std::string expert_format;            // q4, q8, bf16, fp8
  uint64_t expert_bytes = 0;            // one expert in that format
  uint64_t nvme_cache_bytes = 0;        // RAM set aside to cache the experts that live on NVMe
  // tiers[l - first_moe_layer][e]
  std::vector<std::vector<Tier>> tiers;

  Tier at(int64_t layer, int64_t expert) const {
    return tiers[static_cast<size_t>(layer - first_moe_layer)][static_cast<size_t>(expert)];
  }
  void set(int64_t layer, int64_t expert, Tier t) {
    tiers[static_cast<size_t>(layer - first_moe_layer)][static_cast<size_t>(expert)] = t;
  }
  int64_t moe_layers() const { return num_hidden_layers - first_moe_layer; }
  int64_t count(Tier t) const;
  int64_t count(int64_t layer, Tier t) const;
};

// Every expert in `t`.
Placement uniform_placement(int64_t layers, int64_t first_moe_layer, int64_t experts, const std::string& format,
                            uint64_t expert_bytes, Tier t);

// `extra` (the planner's prediction and inputs, for people) is stored under "plan" and ignored
// on reading.
nlohmann::json placement_to_json(const Placement& p, const nlohmann::json& extra = nlohmann::json::object());
Result<Placement> placement_from_json(const nlohmann::json& j, const std::string& where);
Result<Placement> load_placement(const std::filesystem::path& file);
Status save_placement(const std::filesystem::path& file, const Placement& p,
                      const nlohmann::json& extra = nlohmann::json::object());

}  // namespace mt::planner
