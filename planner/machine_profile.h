// What the placement planner knows about a machine: measured by `moetier profile` on this one,
// or described (`--hardware "gpu=24G,ram=512G@300GB/s,..."`, named presets) for one the user
// does not have. Plain data plus its JSON form; the measuring lives in tools/ (the planner
// never runs the model or the kernels itself).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/core/status.h"

namespace mt::planner {

struct NumaNodeInfo {
  int os_index = 0;
  uint64_t memory_bytes = 0;
  double read_gbs = 0;  // streaming read bandwidth of this node's memory from its own cores; 0: not measured
};

// Sequential O_DIRECT reads of the model's disk at one block size and queue depth.
struct DiskRate {
  uint64_t block_bytes = 0;
  int queue_depth = 0;
  double gbs = 0;
};

// Our own CPU expert kernels for one packed format ("q4", "q8", "bf16"; "fp8" when described).
struct KernelRate {
  std::string format;
  double decode_gbs = 0;       // expert weight bytes streamed per second, one token, 8 experts at once
  double prefill_gflops = 0;   // GFLOP/s with many tokens per expert
};

struct GpuProfile {
  bool present = false;
  std::string name;
  uint64_t vram_total_bytes = 0;
  uint64_t vram_free_bytes = 0;
  double h2d_gbs = 0;          // pinned host-to-device copy
  double hbm_gbs = 0;          // device memory read bandwidth (decode is bound by it)
  double gemm_tflops = 0;      // dense bf16 GEMM
  std::string reason;          // why absent (no CUDA build, no driver, ...)
};

// One disk's figures, keyed by the device (st_dev "major:minor") they were measured on: a
// model on another device gets its own measurement.
struct DiskFigures {
  std::string path;                  // the directory measured (the model's, or a scratch place)
  std::string device;                // "major:minor" of that directory's filesystem; "" when described
  std::vector<DiskRate> rates;
  double read_gbs = 0;               // the loader's 1 MiB reads at the best queue depth
  double cpu_s_per_gb = 0;           // CPU time (all CPUs) reading costs, per GB; 0: not measured
};

struct MachineProfile {
  int version = 2;
  std::string source;          // "measured", "described: <spec>" or "preset: <name>"
  std::string fingerprint;     // hardware identity; a cached measured profile is reused only while it matches
  std::string measured_at;     // ISO 8601 UTC, empty when described
  double measure_seconds = 0;
  // Other work while it was measured: the 1-minute load average per logical CPU at the start,
  // and (below) the other processes' share of CPU time during the measurement. A profile
  // measured under load (share above kBusyOthersShare) is provisional: its figures are likely
  // low, it is re-measured at its next use, and every plan from it says so.
  double load_per_cpu = -1;  // -1: not recorded (described machines)
  // Share of all CPUs' time that other processes used while the figures were measured (from
  // /proc/stat, our own CPU time taken out): catches a load that starts with the probe, which
  // the 1-minute load average is too slow to show. -1: not recorded.
  double others_cpu_share = -1;
  bool provisional = false;
  // Relative spread ((max - min) / median) of each figure over its repeated measurements, by
  // the figure's JSON path ("ram.read_gbs", "kernels.q4.decode_gbs", ...). Plans print the
  // largest (NOISY above kNoisySpread); the cost model uses the medians as they are.
  std::map<std::string, double> spread;

  std::string cpu_model;
  int physical_cores = 0;
  int logical_cpus = 0;
  bool avx2 = false, avx512 = false, avx512_vnni = false, avx512_bf16 = false, amx = false;

  uint64_t ram_total_bytes = 0;
  uint64_t ram_available_bytes = 0;  // what the OS says can be allocated now
  double ram_read_gbs = 0;           // all cores, all nodes
  std::vector<NumaNodeInfo> numa_nodes;

  std::string disk_path;             // where the disk figures were measured (the model's directory)
  std::string disk_device;           // its device, "major:minor" ("" when described)
  std::vector<DiskRate> disk_rates;
  double disk_read_gbs = 0;          // the loader's 1 MiB reads at the best queue depth
  double disk_cpu_s_per_gb = 0;      // CPU seconds (summed over CPUs) per GB read; 0: not measured
  // Disks measured before on other devices, kept so that switching models between two disks
  // does not re-measure each time.
  std::vector<DiskFigures> other_disks;

  std::vector<KernelRate> kernels;
  // The non-expert path (attention, shared expert, router, lm_head) on the CPU: weight bytes
  // streamed per second by our dense matmul at one token, by weight dtype.
  double dense_bf16_gbs = 0;
  double dense_fp8_gbs = 0;
  // Packed dense weights (store format 2, `--dense q8|q4`) through the cpu backend's matmul at
  // one token over the attention and shared-expert shapes of V3 (short rows included); 0: not
  // measured (the cost model then uses the expert kernel's rate).
  double dense_q8_gbs = 0;
  double dense_q4_gbs = 0;
  // The cpu backend's MLA decode attention (absorbed form, kv_b as stored in bf16) over the
  // latent cache, GFLOP/s; 0: not measured.
  double attention_gflops = 0;

  GpuProfile gpu;

  // The kernel rate for `format`, or null when the profile has none.
  const KernelRate* kernel(const std::string& format) const;
  // The disk figures now in use, as one record; and switching to another disk's.
  DiskFigures current_disk() const;
  void use_disk(const DiskFigures& d);
  // The figures measured on `device`: the current disk's or one of other_disks; null if none.
  const DiskFigures* disk_for_device(const std::string& device) const;
};

// Load average per logical CPU above which a measurement counts as taken under load, when the
// other processes' share of CPU time could not be measured.
inline constexpr double kBusyLoadPerCpu = 0.5;
// Share of the CPUs' time used by other processes during the probe above which it is
// provisional (a quiet machine's daemons use about 1%).
inline constexpr double kBusyOthersShare = 0.10;
// Spread of a figure's repeated measurements above which the plan says it is noisy.
inline constexpr double kNoisySpread = 0.15;

// One line on where a profile's figures come from, for plans: its source, age, the load it was
// measured under (provisional or not), and which of the cost model's figures it leaves to
// rules (assumed, not measured). `now_utc`: ISO 8601, for the age.
std::string profile_provenance(const MachineProfile& p, const std::string& now_utc);
// Now, as ISO 8601 UTC ("2026-12-03T09:18:10Z").
std::string utc_now_iso();

nlohmann::json profile_to_json(const MachineProfile& p);
// Every missing, mistyped or out-of-range field is an error naming the field (and `where`,
// usually the file name).
Result<MachineProfile> profile_from_json(const nlohmann::json& j, const std::string& where);

Result<MachineProfile> load_profile(const std::filesystem::path& file);
// Written to FILE.tmp then renamed, so a crash never leaves a half-written profile.
Status save_profile(const std::filesystem::path& file, const MachineProfile& p);

// $XDG_CACHE_HOME/moetier/profile.json, else ~/.cache/moetier/profile.json.
std::filesystem::path default_profile_path();

// A described machine: "gpu=24G,ram=512G@300GB/s,disk=7GB/s,cores=32,isa=avx512" (keys in any
// order; gpu=none or 0 for no GPU; optional gpu-bw=3350GB/s, pcie=25GB/s, gpu-tflops=165) or a
// preset name (hardware_preset_names()). Rates not given are derived from the others and
// written into the profile's source so the user sees what was assumed.
Result<MachineProfile> describe_hardware(const std::string& spec);
std::vector<std::string> hardware_preset_names();
// One line per preset: name and what it stands for, for --help.
std::string hardware_preset_help();

}  // namespace mt::planner
