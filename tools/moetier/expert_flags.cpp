#include "tools/moetier/expert_flags.h"

#include <cstdio>
#include <cstdlib>

#include "planner/plan_report.h"
#include "tools/moetier/machine_probe.h"

namespace mt::cli {

void add_expert_streaming_flags(std::vector<FlagSpec>& flags) {
  flags.push_back({"ram-budget"});
  flags.push_back({"cache-policy"});
  flags.push_back({"no-prefetch", false});
  flags.push_back({"pread", false});
  flags.push_back({"plan"});
  flags.push_back({"isa"});
  flags.push_back({"backend"});
  flags.push_back({"gpu"});
  flags.push_back({"gpu-vram"});
  flags.push_back({"gpu-cache"});
  flags.push_back({"gpu-graphs"});
  flags.push_back({"gguf-tiles"});
}

Result<cpu::ExpertKernelConfig> expert_kernel_config(const Args& a) {
  cpu::ExpertKernelConfig k;
  const char* env_isa = std::getenv("MOETIER_ISA");
  if (auto isa = a.get("isa")) {
    if (!cpu::isa_level_from_name(*isa, k.isa_level)) return make_error("--isa must be scalar, avx2 or avx512, got '" + *isa + "'");
  } else if (env_isa && *env_isa) {
    if (!cpu::isa_level_from_name(env_isa, k.isa_level))
      return make_error(std::string("MOETIER_ISA must be scalar, avx2 or avx512, got '") + env_isa + "'");
  }
  if (const char* e = std::getenv("MOETIER_PREFILL_MIN"); e && *e) {
    char* end = nullptr;
    const long long v = std::strtoll(e, &end, 10);
    if (*end != '\0' || v < 0 || v > (1LL << 30))
      return make_error(std::string("MOETIER_PREFILL_MIN must be a token count (0: never), got '") + e + "'");
    k.prefill_min = v;
  }
  return k;
}

Status read_expert_streaming_flags(const Args& a, EngineOptions& eo) {
  ExpertSchedulerOptions& o = eo.packed;
  if (auto b = a.get("ram-budget")) {
    auto bytes = parse_bytes(*b);
    if (!bytes) return make_error("--ram-budget: " + bytes.error());
    if (*bytes == 0) return make_error("--ram-budget must be greater than 0");
    o.ram_budget = static_cast<uint64_t>(*bytes);
  }
  o.policy = a.get_or("cache-policy", "lfru");
  o.prefetch = !a.has("no-prefetch");
  o.io.force_pread = a.has("pread");
  MT_ASSIGN(o.kernels, expert_kernel_config(a));
  eo.backend = a.get_or("backend", "cpu");
  if (eo.backend != "cpu" && eo.backend != "reference")
    return make_error("--backend must be cpu or reference, got '" + eo.backend + "'");
  const std::string gpu = a.get_or("gpu", "off");
  if (gpu != "on" && gpu != "off") return make_error("--gpu must be on or off, got '" + gpu + "'");
  eo.gpu = gpu == "on";
  if (auto v = a.get("gpu-vram")) {
    if (!eo.gpu) return make_error("--gpu-vram needs --gpu on");
    auto bytes = parse_bytes(*v);
    if (!bytes) return make_error("--gpu-vram: " + bytes.error());
    if (*bytes == 0) return make_error("--gpu-vram must be greater than 0");
    eo.gpu_vram = static_cast<uint64_t>(*bytes);
  }
  if (auto v = a.get("gpu-cache")) {
    if (!eo.gpu) return make_error("--gpu-cache needs --gpu on");
    if (*v != "bf16" && *v != "f32" && *v != "fp8")
      return make_error("--gpu-cache must be bf16, f32 or fp8, got '" + *v + "'");
    eo.gpu_cache = *v == "bf16" ? DType::BF16 : *v == "fp8" ? DType::F8_E4M3 : DType::F32;
  }
  if (auto v = a.get("gpu-graphs")) {
    if (!eo.gpu) return make_error("--gpu-graphs needs --gpu on");
    if (*v != "on" && *v != "off") return make_error("--gpu-graphs must be on or off, got '" + *v + "'");
    eo.gpu_graphs = *v == "on";
  }
  if (auto v = a.get("gguf-tiles")) {
    if (*v != "on" && *v != "off") return make_error("--gguf-tiles must be on or off, got '" + *v + "'");
    eo.gguf_tiles = *v == "on";
  }
  if (auto plan = a.get("plan")) {
    if (*plan == "auto") {
      if (!a.has("model")) return make_error("--plan auto needs --model DIR (a packed store)");
      // The engine plans from the manifest it reads anyway; the machine comes from our probe.
      eo.plan_auto_profile = [dir = *a.get("model")]() {
        ProbeOptions po;
        po.model_dir = dir;
        return load_or_measure_profile(po, /*force=*/false, /*quiet=*/false);
      };
      return ok_status();
    }
    MT_ASSIGN(o.placement, planner::load_placement(*plan));
    std::fprintf(stderr, "moetier: expert placement from %s:\n%s", plan->c_str(),
                 planner::format_placement_summary(*o.placement).c_str());
    if (o.placement->count(planner::Tier::Vram) > 0 && !eo.gpu)
      std::fprintf(stderr, "moetier: without --gpu on, the %lld VRAM-tier experts run on the CPU from RAM\n",
                   static_cast<long long>(o.placement->count(planner::Tier::Vram)));
  }
  return ok_status();
}

Result<std::unique_ptr<Engine>> open_engine_from_flags(const Args& a, int64_t context, bool show_progress) {
  if (!a.has("model")) return make_error("--model DIR is required");
  EngineOptions eo;
  eo.context = context;
  MT_TRY(read_expert_streaming_flags(a, eo));
  eo.packed.show_progress = show_progress;
  return Engine::open(*a.get("model"), eo);
}

}  // namespace mt::cli
