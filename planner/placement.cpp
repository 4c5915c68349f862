#include "planner/placement.h"

#include "runtime/core/json_fields.h"

#include "runtime/core/text_file.h"


namespace mt::planner {

const char* tier_name(Tier t) {
  switch (t) {
    case Tier::Vram: return "vram";
    case Tier::Ram: return "ram";
    case Tier::Nvme: return "nvme";
  }
  return "?";
}

char tier_letter(Tier t) {
  switch (t) {
    case Tier::Vram: return 'G';
    case Tier::Ram: return 'R';
    case Tier::Nvme: return 'N';
  }
  return '?';
}

bool tier_from_name(const std::string& name, Tier& out) {
  if (name == "vram" || name == "gpu" || name == "G") return out = Tier::Vram, true;
  if (name == "ram" || name == "cpu" || name == "R") return out = Tier::Ram, true;
  if (name == "nvme" || name == "disk" || name == "N") return out = Tier::Nvme, true;
  return false;
}

int64_t Placement::count(Tier t) const {
  int64_t n = 0;
  for (const auto& row : tiers)
    for (Tier x : row) n += x == t;
  return n;
}

int64_t Placement::count(int64_t layer, Tier t) const {
  int64_t n = 0;
  for (Tier x : tiers[static_cast<size_t>(layer - first_moe_layer)]) n += x == t;
  return n;
}

Placement uniform_placement(int64_t layers, int64_t first_moe_layer, int64_t experts, const std::string& format,
                            uint64_t expert_bytes, Tier t) {
  Placement p;
  p.num_hidden_layers = layers;
  p.first_moe_layer = first_moe_layer;
  p.n_routed_experts = experts;
  p.expert_format = format;
  p.expert_bytes = expert_bytes;
  p.tiers.assign(static_cast<size_t>(layers - first_moe_layer), std::vector<Tier>(static_cast<size_t>(experts), t));
  return p;
}

nlohmann::json placement_to_json(const Placement& p, const nlohmann::json& extra) {
  nlohmann::json j;
  j["format"] = "moetier-placement";
  j["version"] = 1;
  j["num_hidden_layers"] = p.num_hidden_layers;
  j["first_moe_layer"] = p.first_moe_layer;
  j["n_routed_experts"] = p.n_routed_experts;
  j["expert_format"] = p.expert_format;
  j["expert_bytes"] = p.expert_bytes;
  j["nvme_cache_bytes"] = p.nvme_cache_bytes;
  // One string per layer, one letter per expert: compact, and readable in a diff.
  nlohmann::json layers = nlohmann::json::array();
  for (int64_t l = 0; l < p.moe_layers(); ++l) {
    std::string s;
    for (Tier t : p.tiers[static_cast<size_t>(l)]) s += tier_letter(t);
    layers.push_back({{"layer", p.first_moe_layer + l}, {"tiers", s}});
  }
  j["layers"] = layers;
  if (!extra.empty()) j["plan"] = extra;
  return j;
}

Result<Placement> placement_from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object()) return make_error(where + ": a placement file is a JSON object");
  const JsonFields<nlohmann::json> f(j, where);
  // (nlohmann's j.value("format", "") throws on a non-string: a placement {"format": 5} aborted.)
  const nlohmann::json* fmt_field = f.find("format");
  if (!fmt_field || !fmt_field->is_string() || fmt_field->get<std::string>() != "moetier-placement")
    return make_error(where + ": not a moetier placement file (\"format\" is not \"moetier-placement\")");
  MT_ASSIGN(int64_t version, f.integer("version", 1, 1000));
  if (version != 1) return make_error(where + ": placement version " + std::to_string(version) + " is not supported (1)");
  Placement p;
  MT_ASSIGN(p.num_hidden_layers, f.integer("num_hidden_layers", 1, 100000));
  MT_ASSIGN(p.first_moe_layer, f.integer("first_moe_layer", 0, p.num_hidden_layers - 1));
  MT_ASSIGN(p.n_routed_experts, f.integer("n_routed_experts", 1, 1 << 20));
  MT_ASSIGN(int64_t eb, f.integer("expert_bytes", 1, int64_t(1) << 40));
  MT_ASSIGN(int64_t cb, f.integer("nvme_cache_bytes", 0, int64_t(1) << 50));
  p.expert_bytes = static_cast<uint64_t>(eb);
  p.nvme_cache_bytes = static_cast<uint64_t>(cb);
  MT_ASSIGN(p.expert_format, f.string("expert_format"));
  auto layers = j.find("layers");
  if (layers == j.end() || !layers->is_array()) return make_error(where + ": field 'layers' must be an array");
  if (static_cast<int64_t>(layers->size()) != p.moe_layers())
    return make_error(where + ": 'layers' has " + std::to_string(layers->size()) + " entries, expected " +
                      std::to_string(p.moe_layers()) + " (one per MoE layer)");
  p.tiers.resize(static_cast<size_t>(p.moe_layers()));
  for (int64_t i = 0; i < p.moe_layers(); ++i) {
    const auto& e = (*layers)[static_cast<size_t>(i)];
    const std::string at = where + ": layers[" + std::to_string(i) + "]";
    if (!e.is_object()) return make_error(at + " must be an object");
    const JsonFields<nlohmann::json> fe(e, at);
    MT_ASSIGN(int64_t layer, fe.integer("layer", 0, p.num_hidden_layers - 1));
    if (layer != p.first_moe_layer + i)
      return make_error(at + ": layer " + std::to_string(layer) + ", expected " + std::to_string(p.first_moe_layer + i));
    MT_ASSIGN(const std::string s, fe.string("tiers"));
    if (static_cast<int64_t>(s.size()) != p.n_routed_experts)
      return make_error(at + ": 'tiers' has " + std::to_string(s.size()) + " letters, expected " +
                        std::to_string(p.n_routed_experts));
    auto& row = p.tiers[static_cast<size_t>(i)];
    row.resize(s.size());
    for (size_t k = 0; k < s.size(); ++k)
      if (!tier_from_name(std::string(1, s[k]), row[k]))
        return make_error(at + ": expert " + std::to_string(k) + " has tier letter '" + std::string(1, s[k]) +
                          "' (G, R or N)");
  }
  return p;
}

Result<Placement> load_placement(const std::filesystem::path& file) {
  auto text = read_text_file(file);
  if (!text) return make_error(text.error() + " (write a placement with moetier plan --json)");
  auto j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded()) return make_error(file.string() + ": not valid JSON (truncated?); re-run moetier plan --json");
  return placement_from_json(j, file.string());
}

Status save_placement(const std::filesystem::path& file, const Placement& p, const nlohmann::json& extra) {
  return write_file_atomic(file, placement_to_json(p, extra).dump(1) + "\n");
}

}  // namespace mt::planner
