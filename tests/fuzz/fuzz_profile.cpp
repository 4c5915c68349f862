// Fuzz target: the machine profile reader and the hardware description parser must never
// crash; what they accept must be a valid profile that survives its own JSON round trip, and
// every rejection must name where it came from.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "planner/machine_profile.h"

namespace {

void check_accepted(const mt::planner::MachineProfile& p) {
  if (p.physical_cores < 1 || p.logical_cpus < p.physical_cores) std::abort();
  if (p.ram_total_bytes == 0 || p.ram_available_bytes > p.ram_total_bytes) std::abort();
  const nlohmann::json j = mt::planner::profile_to_json(p);
  auto again = mt::planner::profile_from_json(nlohmann::json::parse(j.dump()), "roundtrip");
  if (!again.ok() || mt::planner::profile_to_json(*again) != j) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  // The replay driver often puts an 8-byte length prefix in front (made for safetensors):
  // look past it so that most mutants still reach the field validation.
  if (j.is_discarded() && size > 8) j = nlohmann::json::parse(text.substr(8), nullptr, false);
  if (!j.is_discarded()) {
    auto r = mt::planner::profile_from_json(j, "fuzz/profile.json");
    if (r.ok()) check_accepted(*r);
    else if (r.error().find("fuzz/profile.json") == std::string::npos) std::abort();
  }
  // The same bytes as a --hardware description (short inputs only: specs are one line).
  if (size <= 4096) {
    auto d = mt::planner::describe_hardware(text);
    if (d.ok()) check_accepted(*d);
    else if (d.error().empty()) std::abort();
  }
  return 0;
}

std::vector<std::vector<uint8_t>> fuzz_seed_corpus() {
  std::vector<std::vector<uint8_t>> seeds;
  auto add = [&](const std::string& s) { seeds.emplace_back(s.begin(), s.end()); };
  for (const auto& name : mt::planner::hardware_preset_names()) {
    add(name);
    add(mt::planner::profile_to_json(*mt::planner::describe_hardware(name)).dump());
  }
  add("gpu=24G,ram=512G@300GB/s,disk=7GB/s,cores=32,isa=avx512");
  add("cores=128,ram=1T,isa=amx,gpu=80G,numa=2,gpu-bw=2TB/s,pcie=64,gpu-tflops=700,disk=none");
  // A measured-looking profile with every list filled.
  mt::planner::MachineProfile p = *mt::planner::describe_hardware("cores=4,ram=16G,numa=2,disk=2GB/s,gpu=8G");
  p.source = "measured";
  p.fingerprint = "v1-0011223344556677";
  p.disk_rates.push_back({1 << 20, 16, 1.5});
  add(mt::planner::profile_to_json(p).dump(1));
  return seeds;
}
