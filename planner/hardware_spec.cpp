// describe_hardware: a MachineProfile for a machine the user does not have, from a short spec
// ("gpu=24G,ram=512G@300GB/s,disk=7GB/s,cores=32,isa=avx512") or a named preset. Rates not
// given are derived from the others by fixed rules, each written into `source`.
#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>

#include "planner/machine_profile.h"

namespace mt::planner {

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

const char* kGrammar =
    "expected comma-separated key=value: ram=SIZE[@GB/s] cores=N [gpu=SIZE|none] [disk=GB/s|none] "
    "[isa=avx2|avx512|avx512-bf16|amx] [gpu-bw=GB/s] [pcie=GB/s] [gpu-tflops=T] [numa=N], "
    "e.g. \"gpu=24G,ram=512G@300GB/s,disk=7GB/s,cores=32,isa=avx512\", or a preset name";

struct Preset {
  const char* name;
  const char* spec;
  const char* cpu;
  const char* gpu;
  const char* help;
};

// Rough but typical machines; the spec is what a user would write for them.
const Preset kPresets[] = {
    {"rtx4090-ddr5-8ch", "gpu=24G,ram=512G@250GB/s,disk=7GB/s,cores=32,isa=avx512", "32-core AVX-512 server CPU (preset)",
     "NVIDIA GeForce RTX 4090 (preset)",
     "RTX 4090 24 GB, 512 GB DDR5-4800 x 8 channels (307 GB/s peak, 250 as measured), 32 cores AVX-512, "
     "PCIe 4 NVMe 7 GB/s"},
    {"h100-epyc-256g", "gpu=80G,ram=256G@200GB/s,disk=12GB/s,cores=64,isa=avx512,pcie=50GB/s",
     "64-core EPYC (preset)", "NVIDIA H100 80GB (preset)",
     "H100 80 GB on PCIe 5 (50 GB/s), 256 GB RAM at 200 GB/s, 64 cores AVX-512, NVMe RAID 12 GB/s"},
    {"cpu-only-768g", "gpu=none,ram=768G@350GB/s,disk=7GB/s,cores=96,isa=avx512", "96-core AVX-512 CPU (preset)", "",
     "no GPU, 768 GB RAM at 350 GB/s, 96 cores AVX-512, NVMe 7 GB/s"},
    {"workstation-3090-128g", "gpu=24G,ram=128G@80GB/s,disk=3.5GB/s,cores=16,isa=avx2,gpu-bw=936GB/s,gpu-tflops=71",
     "16-core AVX2 workstation CPU (preset)", "NVIDIA GeForce RTX 3090 (preset)",
     "RTX 3090 24 GB (936 GB/s, 71 TFLOPS bf16), 128 GB DDR4 at 80 GB/s, 16 cores AVX2, NVMe 3.5 GB/s"},
};

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return s.substr(a, b - a);
}

// Splits "12.5GB/s" into 12.5 and "gb/s" (lower case). Only plain decimal numbers: no sign,
// hex, inf or nan.
bool split_number(const std::string& text, double& value, std::string& unit) {
  size_t i = 0;
  bool digits = false;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) {
    digits |= text[i] != '.';
    ++i;
  }
  if (!digits) return false;
  const std::string num = text.substr(0, i);
  if (std::count(num.begin(), num.end(), '.') > 1) return false;
  value = std::strtod(num.c_str(), nullptr);
  unit = lower(trim(text.substr(i)));
  return std::isfinite(value);
}

class SpecParser {
 public:
  explicit SpecParser(std::string spec) : spec_(std::move(spec)) {}

  Error fail(const std::string& key, const std::string& what) const {
    return make_error("hardware '" + spec_ + "': " + (key.empty() ? "" : "key '" + key + "': ") + what + "; " + kGrammar);
  }

  // Sizes are binary, as for --ram-budget: 24G = 24 GiB.
  Result<double> size(const std::string& key, const std::string& text) const {
    double v = 0;
    std::string unit;
    if (!split_number(text, v, unit)) return fail(key, "'" + text + "' is not a size (e.g. 24G, 512GB, 1.5T)");
    double mult = 0;
    if (unit == "k" || unit == "kb" || unit == "kib") mult = 1024.0;
    else if (unit == "m" || unit == "mb" || unit == "mib") mult = 1024.0 * 1024;
    else if (unit == "g" || unit == "gb" || unit == "gib") mult = kGiB;
    else if (unit == "t" || unit == "tb" || unit == "tib") mult = kGiB * 1024;
    else if (unit.empty() && v == 0) mult = 1;
    else return fail(key, "'" + text + "' needs a unit K, M, G or T (e.g. 24G)");
    if (v * mult > 1024.0 * 1024 * kGiB) return fail(key, "'" + text + "' is larger than 1 PiB");
    return v * mult;
  }

  // GB/s (1e9 bytes/s); a bare number means GB/s.
  Result<double> bandwidth(const std::string& key, const std::string& text, bool allow_zero = false) const {
    double v = 0;
    std::string unit;
    if (!split_number(text, v, unit)) return fail(key, "'" + text + "' is not a bandwidth (e.g. 300GB/s)");
    double mult = 0;
    if (unit.empty() || unit == "gb/s" || unit == "g/s" || unit == "gbps") mult = 1;
    else if (unit == "mb/s" || unit == "m/s") mult = 1e-3;
    else if (unit == "tb/s" || unit == "t/s") mult = 1e3;
    else return fail(key, "'" + text + "' is not a bandwidth (units GB/s, MB/s, TB/s; e.g. 300GB/s)");
    if (v < 0 || (v == 0 && !allow_zero)) return fail(key, "'" + text + "' must be positive");
    if (v * mult > 1e5) return fail(key, "'" + text + "' is more than 100 TB/s");
    return v * mult;
  }

  Result<int> integer(const std::string& key, const std::string& text, int lo, int hi) const {
    double v = 0;
    std::string unit;
    if (!split_number(text, v, unit) || !unit.empty() || std::floor(v) != v || text.find('.') != std::string::npos)
      return fail(key, "'" + text + "' is not a whole number");
    if (v < lo || v > hi) return fail(key, "'" + text + "' must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return static_cast<int>(v);
  }

  // key -> value, with unknown keys, duplicates and malformed items rejected.
  Result<std::map<std::string, std::string>> items() const {
    static const char* kKeys[] = {"gpu", "ram", "disk", "cores", "isa", "gpu-bw", "pcie", "gpu-tflops", "numa"};
    std::map<std::string, std::string> out;
    size_t start = 0;
    while (start <= spec_.size()) {
      size_t end = spec_.find(',', start);
      if (end == std::string::npos) end = spec_.size();
      const std::string item = trim(spec_.substr(start, end - start));
      start = end + 1;
      if (item.empty()) return fail("", "empty item (two commas in a row, or a trailing comma)");
      const size_t eq = item.find('=');
      if (eq == std::string::npos) return fail("", "'" + item + "' is not key=value");
      const std::string key = lower(trim(item.substr(0, eq)));
      const std::string value = trim(item.substr(eq + 1));
      if (std::find_if(std::begin(kKeys), std::end(kKeys), [&](const char* k) { return key == k; }) == std::end(kKeys))
        return fail(key, "unknown key");
      if (value.empty()) return fail(key, "has no value");
      if (!out.emplace(key, value).second) return fail(key, "given twice");
    }
    return out;
  }

 private:
  std::string spec_;
};

// The fast cpu backend's measured efficiencies (docs/planner.md, "Rules for described
// hardware": `moetier profile --isa avx2|avx512` with 1 and 2 threads on an Intel Xeon VM with
// AVX-512 VNNI/BF16, 2026-12-03). A rate is min(share x RAM bandwidth, cores x per-core rate):
// the share is what the kernel reached of the bandwidth measured in the same run with every
// core; the per-core rate is one thread's. Where one thread was itself bandwidth-bound (expert
// and packed dense decode: one core read 17 GB/s, and so did the kernels), the per-core rate
// is a lower bound.
struct IsaRates {
  double expert_share, expert_per_core;         // routed-expert decode, every format
  double packed_share, packed_per_core;         // packed dense q8/q4 at one token
  double bf16_share, bf16_per_core;             // dense bf16 GEMV
  double fp8_share, fp8_per_core;               // dense FP8 with block scales (compute-bound)
  double attention_per_core;                    // MLA decode GFLOP/s
  double prefill_q4, prefill_q8, prefill_bf16;  // expert prefill GFLOP/s per core
};
constexpr IsaRates kAvx2Rates{0.98, 17.0, 0.90, 17.0, 0.85, 15.0, 0.48, 8.0, 13.4, 140, 100, 87};
constexpr IsaRates kAvx512Rates{0.98, 17.0, 0.92, 16.5, 0.90, 16.5, 0.50, 8.0, 13.6, 265, 255, 90};

Result<MachineProfile> describe_spec(const std::string& spec) {
  const SpecParser parser(spec);
  MT_ASSIGN(auto items, parser.items());
  auto take = [&](const char* key) -> std::optional<std::string> {
    auto it = items.find(key);
    if (it == items.end()) return std::nullopt;
    return it->second;
  };
  std::vector<std::string> assumed;
  MachineProfile p;
  p.fingerprint = "described";

  // cores, ISA
  const auto cores_text = take("cores");
  if (!cores_text) return parser.fail("cores", "missing (required)");
  MT_ASSIGN(const int cores, parser.integer("cores", *cores_text, 1, 65536));
  p.physical_cores = p.logical_cpus = cores;
  const std::string isa = lower(take("isa").value_or(""));
  if (isa.empty()) assumed.push_back("ISA avx2 (isa not given)");
  if (isa == "amx") p.amx = true;
  if (isa == "avx512-bf16" || p.amx) p.avx512_bf16 = true;
  if (isa == "avx512" || p.avx512_bf16) p.avx512 = p.avx512_vnni = true;
  if (!isa.empty() && isa != "avx2" && !p.avx512) return parser.fail("isa", "'" + isa + "' is not avx2, avx512, avx512-bf16 or amx");
  p.avx2 = true;
  p.cpu_model = "described CPU (" + (isa.empty() ? std::string("avx2") : isa) + ")";

  // RAM: "512G" or "512G@300GB/s"
  const auto ram_text = take("ram");
  if (!ram_text) return parser.fail("ram", "missing (required)");
  const size_t at = ram_text->find('@');
  MT_ASSIGN(const double ram_bytes, parser.size("ram", trim(ram_text->substr(0, at))));
  if (ram_bytes <= 0) return parser.fail("ram", "must be more than 0");
  p.ram_total_bytes = p.ram_available_bytes = static_cast<uint64_t>(ram_bytes);
  if (at != std::string::npos) {
    MT_ASSIGN(p.ram_read_gbs, parser.bandwidth("ram", trim(ram_text->substr(at + 1))));
  } else {
    p.ram_read_gbs = std::min(8.0 * cores, 460.0);
    assumed.push_back("RAM read " + fmt(p.ram_read_gbs) + " GB/s (8 GB/s per core, at most 460)");
  }
  int numa = 1;
  if (auto n = take("numa")) {
    MT_ASSIGN(numa, parser.integer("numa", *n, 1, 1024));
    if (numa > cores) return parser.fail("numa", "more NUMA nodes (" + *n + ") than cores");
  }
  for (int i = 0; i < numa; ++i)
    p.numa_nodes.push_back({i, p.ram_total_bytes / static_cast<uint64_t>(numa), p.ram_read_gbs / numa});
  if (numa > 1) assumed.push_back("memory and bandwidth split evenly over " + std::to_string(numa) + " NUMA nodes");

  // Our kernels: bound by RAM bandwidth or by the cores (IsaRates above). AMX and AVX-512 BF16
  // machines get the AVX-512 figures: the kernels have no AMX path of their own.
  const IsaRates& k = p.avx512 ? kAvx512Rates : kAvx2Rates;
  const double bw = p.ram_read_gbs;
  auto rate = [&](double share, double per_core) { return std::min(share * bw, cores * per_core); };
  p.kernels.push_back({"q4", rate(k.expert_share, k.expert_per_core), cores * k.prefill_q4});
  p.kernels.push_back({"q8", rate(k.expert_share, k.expert_per_core), cores * k.prefill_q8});
  p.kernels.push_back({"bf16", rate(k.expert_share, k.expert_per_core), cores * k.prefill_bf16});
  p.dense_q8_gbs = p.dense_q4_gbs = rate(k.packed_share, k.packed_per_core);
  p.dense_bf16_gbs = rate(k.bf16_share, k.bf16_per_core);
  p.dense_fp8_gbs = rate(k.fp8_share, k.fp8_per_core);
  p.attention_gflops = cores * k.attention_per_core;
  const char* isa_name = p.avx512 ? "AVX-512" : "AVX2";
  char rule[640];
  std::snprintf(rule, sizeof rule,
                "rates of our %s kernels as measured on a 2-core Xeon (docs/planner.md): min(share x RAM bandwidth, "
                "cores x per-core rate) for expert decode (%.2f, %.1f GB/s), packed dense (%.2f, %.1f), bf16 dense "
                "(%.2f, %.1f), fp8 dense (%.2f, %.1f); MLA %.1f GFLOP/s per core; expert prefill q4/q8/bf16 "
                "%.0f/%.0f/%.0f GFLOP/s per core%s",
                isa_name, k.expert_share, k.expert_per_core, k.packed_share, k.packed_per_core, k.bf16_share,
                k.bf16_per_core, k.fp8_share, k.fp8_per_core, k.attention_per_core, k.prefill_q4, k.prefill_q8,
                k.prefill_bf16, p.amx || p.avx512_bf16 ? " (AMX/AVX-512 BF16 not measured apart: AVX-512 figures)" : "");
  assumed.push_back(rule);

  // GPU
  const auto gpu_text = take("gpu");
  double vram = 0;
  if (gpu_text && lower(*gpu_text) != "none") {
    MT_ASSIGN(vram, parser.size("gpu", *gpu_text));
  }
  if (vram > 0) {
    GpuProfile& g = p.gpu;
    g.present = true;
    g.name = "described GPU";
    g.vram_total_bytes = g.vram_free_bytes = static_cast<uint64_t>(vram);
    const double gib = vram / kGiB;
    if (auto bw = take("gpu-bw")) {
      MT_ASSIGN(g.hbm_gbs, parser.bandwidth("gpu-bw", *bw));
    } else {
      g.hbm_gbs = gib <= 24 ? 1000 : gib <= 48 ? 960 : 3350;
      assumed.push_back("GPU memory " + fmt(g.hbm_gbs) + " GB/s by its size (" +
                        (gib <= 24 ? "RTX 4090-like" : gib <= 48 ? "48 GB workstation card" : "H100-like") + ")");
    }
    if (auto pcie = take("pcie")) {
      MT_ASSIGN(g.h2d_gbs, parser.bandwidth("pcie", *pcie));
    } else {
      g.h2d_gbs = 25;
      assumed.push_back("host-to-GPU 25 GB/s (PCIe 4 x16, pinned)");
    }
    if (auto tf = take("gpu-tflops")) {
      double v = 0;
      std::string unit;
      if (!split_number(*tf, v, unit) || !(unit.empty() || unit == "tflops" || unit == "t") || v <= 0 || v > 1e6)
        return parser.fail("gpu-tflops", "'" + *tf + "' is not a positive number of TFLOPS");
      g.gemm_tflops = v;
    } else {
      g.gemm_tflops = gib <= 24 ? 165 : 750;
      assumed.push_back("GPU bf16 GEMM " + fmt(g.gemm_tflops) + " TFLOPS (rough, by memory size)");
    }
  } else {
    for (const char* k : {"gpu-bw", "pcie", "gpu-tflops"})
      if (take(k)) return parser.fail(k, "given without a GPU (gpu=SIZE)");
    p.gpu.reason = gpu_text ? "described without a GPU" : "described without a GPU (gpu not given)";
  }

  // Disk: one sequential rate at the loader's usual read size and depth.
  const auto disk_text = take("disk");
  if (disk_text && lower(*disk_text) != "none") {
    MT_ASSIGN(p.disk_read_gbs, parser.bandwidth("disk", *disk_text, /*allow_zero=*/true));
  }
  if (p.disk_read_gbs > 0) {
    p.disk_rates.push_back({uint64_t{4} << 20, 8, p.disk_read_gbs});
    assumed.push_back("disk rate at 4 MiB reads, queue depth 8");
  } else {
    assumed.push_back("no disk rate (experts cannot be streamed from disk)");
  }

  std::string src = "described: " + spec + "; assumed: ";
  for (size_t i = 0; i < assumed.size(); ++i) src += (i ? "; " : "") + assumed[i];
  p.source = src;
  return p;
}

}  // namespace

Result<MachineProfile> describe_hardware(const std::string& spec_in) {
  const std::string spec = trim(spec_in);
  if (spec.empty()) return make_error(std::string("hardware description is empty; ") + kGrammar);
  if (spec.find('=') == std::string::npos && spec.find(',') == std::string::npos) {
    const std::string name = lower(spec);
    for (const auto& pr : kPresets) {
      if (name != pr.name) continue;
      auto p = describe_spec(pr.spec);
      if (!p.ok()) return make_error("preset " + name + ": " + p.error());  // a bug in kPresets
      const std::string assumed = p->source.substr(p->source.find("; assumed: "));
      p->source = "preset: " + name + " (" + pr.spec + ")" + assumed;
      p->cpu_model = pr.cpu;
      if (p->gpu.present) p->gpu.name = pr.gpu;
      return p;
    }
    std::string names;
    for (const auto& pr : kPresets) names += std::string(names.empty() ? "" : ", ") + pr.name;
    return make_error("hardware '" + spec + "' is neither a preset (" + names + ") nor key=value pairs; " + kGrammar);
  }
  return describe_spec(spec);
}

std::vector<std::string> hardware_preset_names() {
  std::vector<std::string> names;
  for (const auto& pr : kPresets) names.emplace_back(pr.name);
  return names;
}

std::string hardware_preset_help() {
  std::string out;
  for (const auto& pr : kPresets) {
    char line[320];
    std::snprintf(line, sizeof line, "  %-22s %s\n", pr.name, pr.help);
    out += line;
  }
  return out;
}

}  // namespace mt::planner
