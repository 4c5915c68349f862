// Routed experts from the packed expert store: blobs in exactly the layout the CPU kernels
// stream, held in a RAM cache under a byte budget and read from NVMe with io_uring on a miss.
// With a budget that holds every expert, all are loaded once at start-up (RAM-resident).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cpu_kernels/expert_ffn.h"
#include "offload/blob_loader.h"
#include "offload/expert_cache.h"
#include "offload/expert_store.h"
#include "planner/placement.h"
#include "runtime/model/routed_experts.h"

namespace mt {

struct PackedExpertsOptions {
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
};

struct PackedExpertsStats {
  offload::CacheStats cache;
  uint64_t predicted = 0;          // distinct (layer, expert) prefetch predictions
  uint64_t used = 0;               // distinct (layer, expert) actually used, in predicted layers
  uint64_t predicted_and_used = 0;
  bool all_resident = false;
  int64_t resident_experts = 0;    // held for the whole run (all of them, or a plan's VRAM + RAM tiers)
  int64_t streamed_experts = 0;    // read on demand through the cache
  double prefetch_precision() const { return predicted ? double(predicted_and_used) / double(predicted) : 0.0; }
  double prefetch_recall() const { return used ? double(predicted_and_used) / double(used) : 0.0; }
};

class PackedExperts final : public RoutedExperts {
 public:
  static Result<std::unique_ptr<PackedExperts>> open(offload::ExpertStore store, const PackedExpertsOptions& o);

  Status apply(int64_t layer, const float* x, int64_t n, const int32_t* experts, const float* weights,
               int64_t top_k, float* out) override;
  void prefetch(int64_t layer, std::span<const int32_t> experts) override;
  bool wants_prefetch() const override { return prefetch_enabled_; }

  PackedExpertsStats stats() const;
  void reset_stats();
  const ExpertGeometry& geometry() const { return geom_; }
  const offload::ExpertStore& store() const { return store_; }
  const char* io_backend() const { return loader_->backend(); }

 private:
  PackedExperts() = default;
  offload::ExpertStore store_;
  std::unique_ptr<offload::BlobLoader> loader_;
  std::unique_ptr<offload::ExpertCache> cache_;      // streamed experts (all of them without a plan)
  std::unique_ptr<offload::ExpertCache> resident_;   // a plan's VRAM + RAM experts; null without a plan
  std::vector<std::vector<char>> is_resident_;       // [layer][expert], with a plan
  offload::ExpertCache& cache_for(int64_t layer, int32_t expert) const;
  Status load_all(offload::ExpertCache& c, const std::vector<offload::BlobInfo>& blobs, bool progress);
  ExpertGeometry geom_;
  cpu::ExpertKernelConfig kernels_;
  cpu::ExpertWorkspace workspace_;  // the kernels' scratch, reused so decode allocates nothing
  bool prefetch_enabled_ = false;
  bool all_resident_ = false;
  int64_t stats_resident_ = 0, stats_streamed_ = 0;
  size_t slots_ = 0;
  // Prefetch bookkeeping: the predicted experts of each layer, compared with those used.
  std::vector<std::vector<int32_t>> predicted_;
  uint64_t ready_ = 0, waited_ = 0;  // experts resident when their layer started / read for it
  uint64_t n_predicted_ = 0, n_used_ = 0, n_hit_ = 0;
};

}  // namespace mt
