// Measures this machine into a planner::MachineProfile (`moetier profile`, and `moetier plan`
// when no cached profile fits): CPU, ISA, cores, NUMA and RAM from the OS and hwloc; RAM read
// bandwidth; O_DIRECT disk reads by block size and queue depth; our expert kernels (decode
// GB/s, prefill GFLOP/s) at the real DeepSeek V3 expert shape; the dense matmul; the GPU probe.
// The whole run takes well under a minute (a few seconds with `quick`).
#pragma once

#include <filesystem>
#include <string>

#include "cpu_kernels/expert_ffn.h"
#include "planner/machine_profile.h"
#include "runtime/core/status.h"

namespace mt::cli {

struct ProbeOptions {
  std::filesystem::path profile_path;  // the cached profile; empty: planner::default_profile_path()
  // Disk figures come from the largest file (>= 64 MiB) of model_dir when given; otherwise from
  // a temporary file written to disk_dir (empty: the profile's directory) and deleted after.
  std::filesystem::path model_dir;
  std::filesystem::path disk_dir;
  bool quick = false;         // shorter measurements (tests); such a profile says so in `source`
  bool require_save = false;  // a profile that cannot be written is an error (else a warning)
  // Caps the kernels' instruction set (profile --isa): the profile then describes that ISA's
  // paths on this CPU, says so in `source`, and is never taken for this machine's own.
  cpu::ExpertKernelConfig kernels;
};

// Measures now, every step (progress lines on stderr unless quiet). Does not save.
Result<planner::MachineProfile> measure_machine(const ProbeOptions& opts, bool quiet);

// The cached profile when its fingerprint matches this machine (and, when opts names a model or
// disk directory, its disk figures are for that place; otherwise only the disk is measured
// again); else measures and saves. force: always measure. quiet: no progress or "using cached"
// lines (warnings still go to stderr).
Result<planner::MachineProfile> load_or_measure_profile(const ProbeOptions& opts, bool force, bool quiet);

// The hardware identity a cached profile must match: CPU model, logical CPUs, RAM in GiB, NUMA
// nodes, GPU name and the profile version.
std::string machine_fingerprint();

// A readable summary on stdout: CPU, ISA, cores, NUMA, RAM, disk table, kernel table, dense
// rates, GPU.
void print_profile_summary(const planner::MachineProfile& p);

}  // namespace mt::cli
