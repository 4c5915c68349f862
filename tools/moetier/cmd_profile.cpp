// moetier profile: measure this machine for the placement planner and cache the result.
#include <cstdio>

#include "planner/machine_profile.h"
#include "tools/moetier/args.h"
#include "tools/moetier/commands.h"
#include "tools/moetier/machine_probe.h"

namespace mt::cli {

namespace {

const char* kUsage = R"(usage: moetier profile [--model DIR] [--disk-dir DIR] [--out FILE] [--force] [--quick] [--json]
       moetier profile --show [--out FILE] [--json]

Measures what the placement planner (`moetier plan`) needs to know about this machine, in
well under a minute, and caches it: CPU model, cores, ISA, NUMA nodes; RAM size and read
bandwidth; sequential O_DIRECT disk reads at 1 MiB and expert-sized blocks, queue depths 1, 4
and 16; our expert kernels (q4, q8, bf16) and the GGUF row-tile kernels (Q2_K..Q6_K, Q8_0)
at the real DeepSeek V3 shape: decode GB/s and prefill GFLOP/s; the dense matmul (bf16, fp8)
at one token; the GPU (name, memory).

A cached profile is reused while the hardware matches (CPU, logical CPUs, RAM size, NUMA
nodes, GPU); --force measures again. Run it while the machine is otherwise idle.

  --model DIR     measure the disk the model lives on (its largest file, if >= 64 MiB)
  --disk-dir DIR  else write a temporary 256 MiB file here for the disk figures, then delete
                  it                                        [the profile's directory]
  --out FILE      the profile file                 [$XDG_CACHE_HOME/moetier/profile.json,
                                                    else ~/.cache/moetier/profile.json]
  --force         measure even if a matching profile is cached
  --quick         short measurements (seconds; rougher figures, for tests)
  --json          print the profile as JSON on stdout instead of the summary
  --show          print the cached profile without measuring
  --isa NAME      cap the kernels at scalar, avx2 or avx512 (needs --out): the figures of that
                  ISA's paths on this CPU, e.g. for the described-hardware rules (docs/planner.md)

Machines you do not have are described to `moetier plan --hardware` instead, e.g.
"gpu=24G,ram=512G@300GB/s,disk=7GB/s,cores=32,isa=avx512", or a preset:
)";

int fail(const std::string& m, int code = 1) {
  std::fprintf(stderr, "error: %s\n", m.c_str());
  return code;
}

}  // namespace

int cmd_profile(int argc, char** argv) {
  auto parsed = Args::parse(argc, argv,
                            {{"model"}, {"disk-dir"}, {"out"}, {"force", false}, {"quick", false}, {"json", false},
                             {"show", false}, {"help", false}, {"isa"}},
                            "profile");
  if (!parsed) return fail(parsed.error(), 2);
  const Args& a = *parsed;
  if (a.has("help")) {
    std::fputs(kUsage, stdout);
    std::fputs(planner::hardware_preset_help().c_str(), stdout);
    return 0;
  }
  if (!a.positional().empty()) return fail("profile takes no positional arguments (got '" + a.positional()[0] + "')", 2);

  ProbeOptions o;
  if (auto out = a.get("out")) o.profile_path = *out;
  const auto file = o.profile_path.empty() ? planner::default_profile_path() : o.profile_path;

  if (a.has("show")) {
    for (const char* f : {"model", "disk-dir", "force", "quick"})
      if (a.has(f)) return fail(std::string("--show prints the cached profile; it does not take --") + f, 2);
    auto p = planner::load_profile(file);
    if (!p) return fail(p.error());
    if (a.has("json")) std::printf("%s\n", planner::profile_to_json(*p).dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    else print_profile_summary(*p);
    return 0;
  }

  if (auto m = a.get("model")) o.model_dir = *m;
  if (auto d = a.get("disk-dir")) o.disk_dir = *d;
  o.quick = a.has("quick");
  o.require_save = true;  // the user asked for this file
  if (auto isa = a.get("isa")) {
    if (!cpu::isa_level_from_name(*isa, o.kernels.isa_level))
      return fail("--isa must be scalar, avx2 or avx512, got '" + *isa + "'", 2);
    if (!a.has("out"))
      return fail("--isa measures another instruction set's kernels: give --out FILE, so that the result is not "
                  "cached as this machine's profile", 2);
  }
  auto p = load_or_measure_profile(o, a.has("force") || a.has("isa"), /*quiet=*/false);
  if (!p) return fail(p.error());
  if (a.has("json")) std::printf("%s\n", planner::profile_to_json(*p).dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  else print_profile_summary(*p);
  return 0;
}

}  // namespace mt::cli
