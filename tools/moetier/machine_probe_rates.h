// The timed measurements behind `moetier profile` (machine_probe.h): each fills its part of a
// MachineProfile. Internal to the probe.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

#include "cpu_kernels/expert_ffn.h"
#include "planner/machine_profile.h"
#include "runtime/core/status.h"

namespace mt::cli::probe {

// How long the measurements run (the full profile, or `quick` for tests) and which kernels they
// time (`kernels.isa_level`: profile --isa caps the instruction set, to measure another ISA's
// paths on this CPU).
struct ProbeSettings {
  bool quick = false;
  cpu::ExpertKernelConfig kernels;
  double ram_seconds() const { return quick ? 0.2 : 2.0; }
  size_t ram_buffer_bytes() const { return size_t(quick ? 256 : 1024) << 20; }
  double disk_seconds() const { return quick ? 0.08 : 0.5; }
  // Each figure the planner uses is measured this many times; the median is kept and the
  // spread recorded (MachineProfile::spread).
  int repeats() const { return quick ? 2 : 3; }
  uint64_t temp_file_bytes() const { return uint64_t(quick ? 64 : 256) << 20; }
  double decode_seconds() const { return quick ? 0.1 : 0.8; }
  double prefill_seconds() const { return quick ? 0.05 : 1.0; }
  int prefill_tokens() const { return quick ? 32 : 64; }
  size_t expert_working_set() const { return size_t(quick ? 256 : 768) << 20; }
  double dense_seconds() const { return quick ? 0.1 : 0.6; }
  double attention_seconds() const { return quick ? 0.1 : 0.5; }
  int64_t attention_context() const { return quick ? 1024 : 4096; }
};

// Progress and notes for the user (stderr), silent when quiet.
using Say = std::function<void(const std::string&)>;

// The packed q4 blob of one DeepSeek V3 expert (hidden 7168, width 2048, group 32): the read
// size the disk is measured at.
uint64_t expert_blob_bytes();

// ram_read_gbs, and numa_nodes[].read_gbs where it can be attributed (one node).
void measure_ram(const ProbeSettings& d, planner::MachineProfile& p, const Say& say);

// disk_path, disk_device, disk_rates, disk_read_gbs. The file is the largest one of model_dir when that is
// at least 64 MiB, else a temporary file in disk_dir.
Status measure_disk(const ProbeSettings& d, const std::filesystem::path& model_dir, const std::filesystem::path& disk_dir,
                    planner::MachineProfile& p, const Say& say);
// "major:minor" of the filesystem holding `dir` ("" when it cannot be examined): the key of a
// profile's disk figures.
std::string device_of(const std::filesystem::path& dir);
// The directory measure_disk would measure, for comparing with a cached profile's disk_path.
std::filesystem::path disk_target_dir(const std::filesystem::path& model_dir, const std::filesystem::path& disk_dir);

// kernels: q4, q8, bf16 at the real expert shape.
void measure_expert_kernels(const ProbeSettings& d, planner::MachineProfile& p, const Say& say);
// kernels named by GGUF block type (Q2_K..Q6_K, Q8_0): the row-tile kernels at the expert shape,
// for the ISA's types that have one. Appends to p.kernels (after measure_expert_kernels).
void measure_gguf_kernels(const ProbeSettings& d, planner::MachineProfile& p, const Say& say);

// "avx2, avx512, avx512-vnni": the ISA flags a profile has (profile_summary.cpp).
std::string isa_text(const planner::MachineProfile& p);

// " +-N%": half the spread of figure `name` over its repeats (MachineProfile::spread); "" for
// a figure measured once. For the progress lines and the summary.
std::string spread_text(const planner::MachineProfile& p, const std::string& name);

// dense_bf16_gbs, dense_fp8_gbs: cpu::matmul at one token.
void measure_dense(const ProbeSettings& d, planner::MachineProfile& p, const Say& say);

// attention_gflops: our MLA decode attention (absorbed form) at the V3 shape.
void measure_attention(const ProbeSettings& d, planner::MachineProfile& p, const Say& say);

}  // namespace mt::cli::probe
