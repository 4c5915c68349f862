// print_profile_summary (machine_probe.h): a machine profile as a readable table.
#include <algorithm>
#include <cstdio>
#include <set>

#include "tools/moetier/machine_probe.h"
#include "tools/moetier/machine_probe_rates.h"
#include "tools/moetier/progress.h"

namespace mt::cli {

namespace probe {

std::string isa_text(const planner::MachineProfile& p) {
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (on) s += (s.empty() ? "" : ", ") + std::string(name);
  };
  add(p.avx2, "avx2");
  add(p.avx512, "avx512");
  add(p.avx512_vnni, "avx512-vnni");
  add(p.avx512_bf16, "avx512-bf16");
  add(p.amx, "amx");
  return s.empty() ? "no avx2/avx512/amx (scalar kernels)" : s;
}

}  // namespace probe

namespace {

void print_disk(const planner::MachineProfile& p) {
  if (p.disk_rates.empty()) {
    std::printf("  %-9s none (experts cannot be streamed from disk)\n", "disk");
    return;
  }
  std::set<uint64_t> blocks;
  std::set<int> depths;
  for (const auto& r : p.disk_rates) {
    blocks.insert(r.block_bytes);
    depths.insert(r.queue_depth);
  }
  std::printf("  %-9s %s, device %s  (sequential O_DIRECT reads, GB/s)\n", "disk",
              p.disk_path.empty() ? "-" : p.disk_path.c_str(), p.disk_device.empty() ? "-" : p.disk_device.c_str());
  std::printf("  %-9s %-10s", "", "block");
  for (int qd : depths) std::printf("  %6s", ("QD " + std::to_string(qd)).c_str());
  std::printf("\n");
  for (uint64_t b : blocks) {
    std::printf("  %-9s %-10s", "", format_bytes(double(b)).c_str());
    for (int qd : depths) {
      auto it = std::find_if(p.disk_rates.begin(), p.disk_rates.end(),
                             [&](const planner::DiskRate& r) { return r.block_bytes == b && r.queue_depth == qd; });
      if (it == p.disk_rates.end()) std::printf("  %6s", "-");
      else std::printf("  %6.2f", it->gbs);
    }
    std::printf("\n");
  }
  std::printf("  %-9s the planner uses %.2f GB/s%s (1 MiB reads, the loader's size, at the best depth)\n", "", p.disk_read_gbs,
              probe::spread_text(p, "disk.read_gbs").c_str());
  for (const auto& d : p.other_disks)
    std::printf("  %-9s also measured: device %s (%s) %.2f GB/s\n", "", d.device.c_str(), d.path.c_str(), d.read_gbs);
}

}  // namespace

void print_profile_summary(const planner::MachineProfile& p) {
  if (!p.measured_at.empty())
    std::printf("machine profile: %s %s in %.1f s (fingerprint %s)\n", p.source.c_str(), p.measured_at.c_str(),
                p.measure_seconds, p.fingerprint.c_str());
  else
    std::printf("machine profile: %s\n", p.source.c_str());
  std::printf("  %-9s %s: %d cores, %d logical CPUs\n", "CPU", p.cpu_model.c_str(), p.physical_cores, p.logical_cpus);
  std::printf("  %-9s %s\n", "ISA", probe::isa_text(p).c_str());
  std::printf("  %-9s %s total, %s available, read %.1f GB/s%s (all cores)\n", "RAM",
              format_bytes(double(p.ram_total_bytes)).c_str(), format_bytes(double(p.ram_available_bytes)).c_str(),
              p.ram_read_gbs, probe::spread_text(p, "ram.read_gbs").c_str());
  std::printf("  %-9s %zu node%s:", "NUMA", p.numa_nodes.size(), p.numa_nodes.size() == 1 ? "" : "s");
  for (const auto& n : p.numa_nodes) {
    std::printf(" #%d %s", n.os_index, format_bytes(double(n.memory_bytes)).c_str());
    if (n.read_gbs > 0) std::printf(" %.1f GB/s", n.read_gbs);
    else std::printf(" (bandwidth not measured per node)");
    if (&n != &p.numa_nodes.back()) std::printf(",");
  }
  std::printf("\n");
  print_disk(p);
  std::printf("  %-9s hidden 7168, width 2048; decode: 8 experts x 1 token; prefill: many tokens per expert\n", "experts");
  std::printf("  %-9s %-8s %18s %16s\n", "", "format", "decode GB/s", "prefill GFLOP/s");
  for (const auto& k : p.kernels) {
    // The spread belongs to the decode figure (the one measured repeatedly).
    char decode[48];
    std::snprintf(decode, sizeof decode, "%.1f%s", k.decode_gbs,
                  probe::spread_text(p, "kernels." + k.format + ".decode_gbs").c_str());
    std::printf("  %-9s %-8s %18s %16.1f\n", "", k.format.c_str(), decode, k.prefill_gflops);
  }
  std::printf("  %-9s matmul at 1 token, GB/s of weights: bf16 %.1f%s, fp8 %.1f%s, packed q8 %.1f%s, q4 %.1f%s\n", "dense",
              p.dense_bf16_gbs, probe::spread_text(p, "dense.bf16_gbs").c_str(), p.dense_fp8_gbs,
              probe::spread_text(p, "dense.fp8_gbs").c_str(), p.dense_q8_gbs, probe::spread_text(p, "dense.q8_gbs").c_str(),
              p.dense_q4_gbs, probe::spread_text(p, "dense.q4_gbs").c_str());
  if (p.attention_gflops > 0)
    std::printf("  %-9s MLA decode %.1f GFLOP/s%s\n", "attention", p.attention_gflops,
                probe::spread_text(p, "dense.attention_gflops").c_str());
  else std::printf("  %-9s not measured\n", "attention");
  if (!p.measured_at.empty())
    std::printf("  %-9s %s\n", "provenance", planner::profile_provenance(p, planner::utc_now_iso()).c_str());
  const auto& g = p.gpu;
  if (!g.present) {
    std::printf("  %-9s none (%s); host-to-GPU, HBM, GEMM: not measured (no GPU)\n", "GPU",
                g.reason.empty() ? "not found" : g.reason.c_str());
  } else {
    std::printf("  %-9s %s, %s (%s free)", "GPU", g.name.c_str(), format_bytes(double(g.vram_total_bytes)).c_str(),
                format_bytes(double(g.vram_free_bytes)).c_str());
    if (g.h2d_gbs > 0 || g.hbm_gbs > 0 || g.gemm_tflops > 0)
      std::printf("; host-to-GPU %.1f GB/s, HBM %.0f GB/s, GEMM %.0f TFLOPS\n", g.h2d_gbs, g.hbm_gbs, g.gemm_tflops);
    else
      std::printf("; host-to-GPU, HBM, GEMM: not measured yet\n");
  }
}

}  // namespace mt::cli
