#include "tools/moetier/machine_probe.h"

#include <hwloc.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <sstream>

#include "gpu_kernels/gpu_probe.h"
#include "runtime/core/process_memory.h"
#include "tools/moetier/machine_probe_rates.h"
#include "tools/moetier/other_cpu_use.h"
#include "tools/moetier/progress.h"

namespace mt::cli {

namespace {

using planner::MachineProfile;

constexpr const char* kMeasured = "measured";
constexpr const char* kMeasuredQuick = "measured (quick)";

// What the OS tells without measuring anything.
struct HostFacts {
  std::string cpu_model = "unknown CPU";
  int physical_cores = 0;
  int logical_cpus = 0;
  bool avx2 = false, avx512 = false, avx512_vnni = false, avx512_bf16 = false, amx = false;
  uint64_t mem_total = 0;
  uint64_t mem_available = 0;
  std::vector<planner::NumaNodeInfo> nodes;
  gpu::GpuInfo gpu;
};

// First "model name" line of /proc/cpuinfo, and whether any "flags" line lists `flag`.
void read_cpuinfo(HostFacts& f) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  bool have_model = false;
  while (std::getline(in, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
    std::string value = line.substr(colon + 1);
    if (!value.empty() && value[0] == ' ') value.erase(0, 1);
    if (key == "model name" && !have_model && !value.empty()) {
      f.cpu_model = value;
      have_model = true;
    } else if (key == "flags" && (" " + value + " ").find(" amx_tile ") != std::string::npos) {
      f.amx = true;
    }
  }
}

void read_meminfo(HostFacts& f) {
  const SystemMemory m = system_memory();
  f.mem_total = m.total_bytes;
  f.mem_available = m.available_bytes;
}

// Cores, logical CPUs (those this process may use) and NUMA nodes from hwloc.
void read_topology(HostFacts& f) {
  struct Topology {
    hwloc_topology_t t = nullptr;
    ~Topology() {
      if (t) hwloc_topology_destroy(t);
    }
  } topo;
  hwloc_topology_t t = nullptr;
  if (hwloc_topology_init(&t) == 0) {
    topo.t = t;
    if (hwloc_topology_load(t) == 0) {
      f.physical_cores = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE);
      f.logical_cpus = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PU);
      const int n = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE);
      for (int i = 0; i < n; ++i) {
        hwloc_obj_t o = hwloc_get_obj_by_type(t, HWLOC_OBJ_NUMANODE, static_cast<unsigned>(i));
        if (o) f.nodes.push_back({static_cast<int>(o->os_index), o->attr ? o->attr->numanode.local_memory : 0, 0.0});
      }
    }
  }
  if (f.logical_cpus <= 0) f.logical_cpus = static_cast<int>(std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN)));
  if (f.physical_cores <= 0 || f.physical_cores > f.logical_cpus) f.physical_cores = f.logical_cpus;
  if (f.nodes.empty()) f.nodes.push_back({0, f.mem_total, 0.0});
}

HostFacts host_facts() {
  HostFacts f;
  read_cpuinfo(f);
  read_meminfo(f);
  read_topology(f);
  f.avx2 = __builtin_cpu_supports("avx2");
  f.avx512 = __builtin_cpu_supports("avx512f");
  f.avx512_vnni = __builtin_cpu_supports("avx512vnni");
  f.avx512_bf16 = __builtin_cpu_supports("avx512bf16");
  f.gpu = gpu::probe_gpu();
  return f;
}

// Bumped when what the probe measures changes (the kernels it times), so cached profiles of
// the same hardware are measured again: 2 = dense rates from the cpu backend's decode GEMV;
// 3 = repeats with spreads, packed dense rates, attention through the backend, loader-sized disk reads;
// 4 = the GGUF row-tile kernels' rates by block type; 5 = their software prefetch chosen per
// type and CPU (tile_prefetch_auto); 6 = AMD's table of those plans remeasured; 7 = one token of
// Q4_K-Q6_K (two of Q4_K) on the AVX2 tile kernel at AVX-512 on AMD (tile_kernel_level).
constexpr int kProbeRevision = 7;

std::string fingerprint_of(const HostFacts& f) {
  const uint64_t gib = (f.mem_total + (uint64_t{1} << 29)) >> 30;
  const std::string id = f.cpu_model + "|" + std::to_string(f.logical_cpus) + "|" + std::to_string(gib) + "|" +
                         std::to_string(f.nodes.size()) + "|" + (f.gpu.available ? f.gpu.name : "no gpu") + "|v" +
                         std::to_string(MachineProfile{}.version) + "|probe" + std::to_string(kProbeRevision);
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a: stable across builds and platforms
  for (unsigned char c : id) h = (h ^ c) * 0x100000001b3ull;
  char buf[40];
  std::snprintf(buf, sizeof buf, "v%d-%016llx", MachineProfile{}.version, static_cast<unsigned long long>(h));
  return buf;
}

std::string utc_now() { return planner::utc_now_iso(); }

probe::Say sayer(bool quiet) {
  if (quiet) return [](const std::string&) {};
  return [](const std::string& line) { std::fprintf(stderr, "moetier profile: %s\n", line.c_str()); };
}

std::filesystem::path profile_file(const ProbeOptions& o) {
  return o.profile_path.empty() ? planner::default_profile_path() : o.profile_path;
}

std::filesystem::path disk_dir_of(const ProbeOptions& o) {
  if (!o.disk_dir.empty()) return o.disk_dir;
  const auto file = profile_file(o);
  return file.has_parent_path() ? file.parent_path() : std::filesystem::path(".");
}

bool same_place(const std::string& a, const std::filesystem::path& b) {
  std::error_code e1, e2;
  const auto ca = std::filesystem::weakly_canonical(a, e1);
  const auto cb = std::filesystem::weakly_canonical(b, e2);
  return !e1 && !e2 && ca == cb;
}

Status save_or_warn(const ProbeOptions& o, const MachineProfile& p, bool quiet) {
  const auto file = profile_file(o);
  Status s = planner::save_profile(file, p);
  if (!s.ok()) {
    if (o.require_save) return s;
    std::fprintf(stderr, "moetier: warning: %s (the profile is used but not cached)\n", s.error().c_str());
  } else if (!quiet) {
    std::fprintf(stderr, "moetier profile: saved %s\n", file.string().c_str());
  }
  return ok_status();
}

std::string cached_disk_text(const planner::DiskFigures& d) {
  return d.path + (d.device.empty() ? "" : ", device " + d.device);
}

}  // namespace

std::string machine_fingerprint() { return fingerprint_of(host_facts()); }

Result<MachineProfile> measure_machine(const ProbeOptions& opts, bool quiet) {
  const auto t0 = std::chrono::steady_clock::now();
  const probe::Say say = sayer(quiet);
  const probe::ProbeSettings d{opts.quick, opts.kernels};
  const HostFacts f = host_facts();

  MachineProfile p;
  p.source = opts.quick ? kMeasuredQuick : kMeasured;
  if (opts.kernels.isa_level != cpu::ExpertKernelConfig{}.isa_level)
    p.source += " with kernels capped at " + std::string(cpu::expert_kernel_isa(opts.kernels));
  p.fingerprint = fingerprint_of(f);
  p.measured_at = utc_now();
  p.cpu_model = f.cpu_model;
  p.physical_cores = f.physical_cores;
  p.logical_cpus = f.logical_cpus;
  p.avx2 = f.avx2;
  p.avx512 = f.avx512;
  p.avx512_vnni = f.avx512_vnni;
  p.avx512_bf16 = f.avx512_bf16;
  p.amx = f.amx;
  p.ram_total_bytes = f.mem_total;
  p.ram_available_bytes = f.mem_available;
  p.numa_nodes = f.nodes;
  p.gpu.present = f.gpu.available;
  p.gpu.name = f.gpu.name;
  p.gpu.vram_total_bytes = static_cast<uint64_t>(std::max<int64_t>(0, f.gpu.total_bytes));
  p.gpu.vram_free_bytes = std::min(p.gpu.vram_total_bytes, static_cast<uint64_t>(std::max<int64_t>(0, f.gpu.free_bytes)));
  p.gpu.reason = f.gpu.reason;
  if (p.ram_total_bytes == 0) return make_error("/proc/meminfo: no MemTotal line; cannot profile this machine");

  say(std::string("[1/5] ") + p.cpu_model + ": " + std::to_string(p.physical_cores) + " cores, " +
      std::to_string(p.logical_cpus) + " logical CPUs, ISA " + probe::isa_text(p) +
      ", " + format_bytes(double(p.ram_total_bytes)) + " RAM, " + std::to_string(p.numa_nodes.size()) +
      " NUMA node(s), GPU: " + (p.gpu.present ? p.gpu.name : "none (" + p.gpu.reason + ")") +
      (opts.quick ? " [quick]" : ""));
  // Other work on the machine lowers every figure: the other processes' share of CPU time
  // while the probe measures, and (for the record) the 1-minute load average at its start.
  double load = 0;
  if (std::ifstream la("/proc/loadavg"); la >> load) p.load_per_cpu = load / std::max(1, p.logical_cpus);
  const OtherCpuUse others;
  say("[2/5] RAM read bandwidth (all threads) ...");
  probe::measure_ram(d, p, say);
  say("[3/5] disk: sequential O_DIRECT reads at 1 MiB and expert-sized blocks, queue depths 1, 4, 16, 32 ...");
  if (Status s = probe::measure_disk(d, opts.model_dir, disk_dir_of(opts), p, say); !s.ok())
    return make_error("measuring the disk: " + s.error());
  say("[4/5] expert kernels q4, q8, bf16 at hidden 7168, width 2048 (decode: 8 experts x 1 token; prefill: 8 x " +
      std::to_string(d.prefill_tokens()) + " tokens) ...");
  probe::measure_expert_kernels(d, p, say);
  say("      GGUF row-tile kernels Q2_K..Q6_K, Q8_0 at the same shape (decode: 8 experts x 1 token; prefill: 1 x " +
      std::to_string(d.prefill_tokens()) + " tokens) ...");
  probe::measure_gguf_kernels(d, p, say);
  say("[5/5] dense matmul (bf16, fp8 with 128x128 block scales) and MLA attention ...");
  probe::measure_dense(d, p, say);
  probe::measure_attention(d, p, say);
  p.others_cpu_share = others.share();
  // The share measured over the probe itself decides; the load average (the past minute,
  // which may be a build that just ended) only when /proc/stat gave no share.
  if (p.others_cpu_share > planner::kBusyOthersShare ||
      (p.others_cpu_share < 0 && p.load_per_cpu > planner::kBusyLoadPerCpu)) {
    p.provisional = true;
    char note[320];
    std::snprintf(note, sizeof note,
                  "note: the machine was busy (load average %.1f on %d CPUs; other processes used %.0f%% of the CPUs "
                  "while measuring): the figures are likely low; the profile is saved as PROVISIONAL and measured "
                  "again at its next use (run `moetier profile --force` on a quiet machine)",
                  load, p.logical_cpus, 100.0 * std::max(0.0, p.others_cpu_share));
    say(note);
  }
  p.measure_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  char done[64];
  std::snprintf(done, sizeof done, "done in %.1f s", p.measure_seconds);
  say(done);
  return p;
}

Result<MachineProfile> load_or_measure_profile(const ProbeOptions& opts, bool force, bool quiet) {
  const auto file = profile_file(opts);
  const probe::Say say = sayer(quiet);
  std::error_code ec;
  if (!force && std::filesystem::exists(file, ec)) {
    auto cached = planner::load_profile(file);
    if (!cached.ok()) {
      std::fprintf(stderr, "moetier: warning: ignoring the cached profile: %s\n", cached.error().c_str());
    } else if (cached->fingerprint != machine_fingerprint()) {
      say("the profile in " + file.string() + " is for other hardware (or an older moetier); measuring this machine");
    } else if (cached->source.find("capped") != std::string::npos) {
      say("the profile in " + file.string() + " was measured with the kernels capped (profile --isa); measuring fully");
    } else if (cached->source == kMeasuredQuick && !opts.quick) {
      say("the profile in " + file.string() + " was a --quick one; measuring fully");
    } else if (cached->provisional) {
      char why[256];
      std::snprintf(why, sizeof why, "the profile in %s is provisional (measured under load: %.2f per CPU, other "
                    "processes %.0f%% of the CPUs); measuring again", file.c_str(), cached->load_per_cpu,
                    100.0 * cached->others_cpu_share);
      say(why);
    } else {
      const std::string when = cached->measured_at.empty() ? "" : " (measured " + cached->measured_at + ")";
      const bool disk_asked = !opts.model_dir.empty() || !opts.disk_dir.empty();
      const auto target = probe::disk_target_dir(opts.model_dir, disk_dir_of(opts));
      const std::string device = probe::device_of(target);
      // Disk figures are keyed by device: another directory on the same disk reads as fast.
      if (!disk_asked || same_place(cached->disk_path, target) || (!device.empty() && device == cached->disk_device)) {
        say("using cached profile from " + file.string() + when + "; --force re-measures");
        return cached;
      }
      MachineProfile p = std::move(cached).value();
      const planner::DiskFigures previous = p.current_disk();
      if (const planner::DiskFigures* known = p.disk_for_device(device)) {
        say("using cached profile from " + file.string() + when + " with the disk figures of device " + device +
            " (measured on " + known->path + ")");
        const planner::DiskFigures chosen = *known;
        std::erase_if(p.other_disks, [&](const planner::DiskFigures& d) { return d.device == device; });
        p.use_disk(chosen);
      } else {
        // Only the disk figures are for another device: measure just those.
        say("using cached profile from " + file.string() + when + " but measuring the disk of " + target.string() +
            " (device " + (device.empty() ? std::string("unknown") : device) + "; the cached figures are for " +
            cached_disk_text(previous) + ")");
        if (Status s = probe::measure_disk(probe::ProbeSettings{opts.quick, opts.kernels}, opts.model_dir, disk_dir_of(opts), p, say); !s.ok())
          return make_error("measuring the disk: " + s.error());
      }
      // One record per device: the one in use, and the others in other_disks.
      std::erase_if(p.other_disks, [&](const planner::DiskFigures& d) { return d.device == p.disk_device; });
      if (!previous.device.empty() && previous.device != p.disk_device) p.other_disks.push_back(previous);
      MT_TRY(save_or_warn(opts, p, quiet));
      return p;
    }
  }
  MT_ASSIGN(MachineProfile p, measure_machine(opts, quiet));
  MT_TRY(save_or_warn(opts, p, quiet));
  return p;
}

}  // namespace mt::cli
