// The expert scheduler: routed experts from the packed expert store, each sent to the runner of
// its tier. With a placement (planner/placement.h) every expert has a tier: VRAM experts are
// resident and run on the VRAM runner (a GPU backend; the CPU runner while there is none), RAM
// experts are resident and run on the CPU, NVMe experts stream through a RAM cache (io_uring
// reads, started before any compute, plus next-layer prefetch) and then run on the CPU. The
// VRAM batch is launched first and waited for last, so a GPU works while the CPU does.
// Without a placement, every expert streams through a cache under a byte budget, and a budget
// that holds them all makes them resident. Blobs are in exactly the layout the kernels stream.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cpu_kernels/expert_ffn.h"
#include "runtime/engine/expert_runner.h"
#include "offload/blob_loader.h"
#include "offload/expert_cache.h"
#include "offload/expert_store.h"
#include "planner/placement.h"
#include "runtime/core/memory_budget.h"
#include "runtime/model/routed_experts.h"

namespace mt {

struct ExpertSchedulerOptions {
  uint64_t ram_budget = 0;        // bytes of expert blobs kept in RAM; 0: all of them
  std::string policy = "lfru";
  bool prefetch = true;           // predict the next layer's experts and read them ahead
  offload::LoaderOptions io;
  bool show_progress = true;      // progress bar while loading every expert up front
  cpu::ExpertKernelConfig kernels;  // ISA cap and prefill threshold (the CLI's --isa, MOETIER_*)
  // A placement from the planner: its VRAM and RAM experts are loaded at start-up and stay;
  // its NVMe experts stream through a cache of placement->nvme_cache_bytes (ram_budget and
  // policy then apply to that cache only). Without a GPU path, VRAM experts run from RAM.
  std::optional<planner::Placement> placement;
  // The runner of the VRAM tier (a GPU backend's; not owned, must outlive the scheduler); each
  // VRAM-tier blob is made resident in it at start-up. Null: the VRAM tier runs on the CPU
  // runner, in the same batch as the RAM tier.
  ExpertRunner* vram_runner = nullptr;
};

struct ExpertSchedulerStats {
  offload::CacheStats cache;
  uint64_t predicted = 0;          // distinct (layer, expert) prefetch predictions
  uint64_t used = 0;               // distinct (layer, expert) actually used, in predicted layers
  uint64_t predicted_and_used = 0;
  bool all_resident = false;
  int64_t resident_experts = 0;    // held for the whole run (all of them, or a plan's VRAM + RAM tiers)
  int64_t streamed_experts = 0;    // read on demand through the cache
  // Expert uses (one per (token chunk, expert) in a layer) by where they ran from.
  uint64_t uses_vram = 0, uses_ram = 0, uses_nvme_hit = 0, uses_nvme_miss = 0;
  // VRAM-tier experts the VRAM runner refused at start-up (they run on the CPU), and why the first was.
  int64_t vram_on_cpu = 0;
  std::string vram_refusal;
  // Overlap of the VRAM tier (a separate runner) with the CPU tiers, over layers that had both:
  // the device's busy time, the CPU tiers' compute time, the time the CPU then waited, and how
  // much of the two ran at once (busy + cpu - the span from launch to the end of the wait).
  double vram_busy_s = 0, hybrid_cpu_s = 0, vram_wait_s = 0, overlap_s = 0;
  // The share of the CPU tiers' expert time hidden behind the device's work.
  double cpu_hidden_fraction() const { return hybrid_cpu_s > 0 ? overlap_s / hybrid_cpu_s : 0.0; }
  double prefetch_precision() const { return predicted ? double(predicted_and_used) / double(predicted) : 0.0; }
  double prefetch_recall() const { return used ? double(predicted_and_used) / double(used) : 0.0; }
};

class ExpertScheduler final : public RoutedExperts {
 public:
  static Result<std::unique_ptr<ExpertScheduler>> open(offload::ExpertStore store, const ExpertSchedulerOptions& o);

  Status apply(int64_t layer, const float* x, int64_t n, const int32_t* experts, const float* weights,
               int64_t top_k, float* out) override;
  void prefetch(int64_t layer, std::span<const int32_t> experts) override;
  bool wants_prefetch() const override { return prefetch_enabled_; }

  ExpertSchedulerStats stats() const;
  // Charges what it holds now to `ram`: each tier's cache memory and the kernels' workspace.
  Status charge_memory(TierBudget& ram) const;
  void reset_stats();
  // The experts' geometry in `layer` (a store of GGUF blocks: that layer's block types).
  const ExpertGeometry& geometry(int64_t layer) const {
    if (layer_geom_.empty()) return geom_;
    auto it = layer_geom_.find(static_cast<int32_t>(layer));
    return it != layer_geom_.end() ? it->second : geom_;
  }
  const offload::ExpertStore& store() const { return store_; }
  const char* io_backend() const { return loader_->backend(); }
  // Names of the runners: the VRAM tier's and the CPU tiers'.
  const char* vram_runner_name() const { return vram_runner_->name(); }
  // Scratch the CPU runner holds (its kernels' workspace).
  size_t workspace_bytes() const { return cpu_runner_->workspace_bytes(); }

 private:
  ExpertScheduler() = default;
  offload::ExpertStore store_;
  std::unique_ptr<offload::BlobLoader> loader_;
  std::unique_ptr<offload::ExpertCache> cache_;      // NVMe tier (every expert without a plan), streamed
  std::unique_ptr<offload::ExpertCache> ram_;        // a plan's RAM tier, resident; null without one
  std::unique_ptr<offload::ExpertCache> vram_;       // a plan's VRAM tier in RAM: all of it without a VRAM
                                                     // runner, else what the runner refused; null if none
  std::vector<std::vector<planner::Tier>> tier_;     // [layer][expert]; every expert Nvme without a plan
  std::unique_ptr<CpuExpertRunner> cpu_runner_;
  ExpertRunner* vram_runner_ = nullptr;              // cpu_runner_ when there is no GPU runner
  std::vector<float> vram_out_;                      // a separate VRAM runner's output, added at the end
  offload::ExpertCache& cache_for(int64_t layer, int32_t expert) const;
  Status load_all(offload::ExpertCache& c, const std::vector<offload::BlobInfo>& blobs, bool progress);
  // Streams `blobs` to the VRAM runner (make_resident); what it refuses goes to `refused`.
  Status upload_to_runner(const std::vector<offload::BlobInfo>& blobs, std::vector<offload::BlobInfo>& refused,
                          bool progress);
  ExpertGeometry geom_;
  std::map<int32_t, ExpertGeometry> layer_geom_;  // GGUF blocks: per MoE layer
  bool prefetch_enabled_ = false;
  bool all_resident_ = false;
  int64_t stats_resident_ = 0, stats_streamed_ = 0;
  size_t slots_ = 0;
  // Prefetch bookkeeping: the predicted experts of each layer, compared with those used.
  std::vector<std::vector<int32_t>> predicted_;
  uint64_t ready_ = 0, waited_ = 0;  // experts resident when their layer started / read for it
  uint64_t uses_vram_ = 0, uses_ram_ = 0, uses_nvme_hit_ = 0, uses_nvme_miss_ = 0;
  uint64_t n_predicted_ = 0, n_used_ = 0, n_hit_ = 0;
  double vram_busy_s_ = 0, hybrid_cpu_s_ = 0, vram_wait_s_ = 0, overlap_s_ = 0;
  std::vector<std::vector<bool>> on_device_;  // [layer][expert]: made resident in a separate VRAM runner
  int64_t vram_on_cpu_ = 0;
  std::string vram_refusal_;
};

}  // namespace mt
