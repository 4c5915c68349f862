// Predicts prefill and decode speed of a placement on a machine, from byte counts and the
// machine's measured (or described) rates: no kernel runs here. docs/planner.md derives every
// term and records how the predictions compare with `moetier bench decode`.
//
// Decode, one step of `batch` tokens, per MoE layer:
//   t_layer = t_attention + max(t_gpu_experts + t_shared, t_cpu_experts + t_nvme_stall) + t_sync
// with a GPU (the CPU experts of a layer run while the GPU runs its own; the router's result
// must reach the host first), and everything summed on one timeline without one. Dense layers,
// embeddings and lm_head add their own weight-streaming time.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <optional>

#include "planner/activation_stats.h"
#include "planner/dense_format.h"
#include "planner/machine_profile.h"
#include "planner/model_size.h"
#include "planner/placement.h"
#include "runtime/config/model_config.h"

namespace mt::planner {

// One block type's share of a model's weights (a GGUF mixes several): stored bytes and parameters.
struct TypeShare {
  double bytes = 0;
  double params = 0;
};

struct CostInputs {
  ModelConfig model;
  std::string expert_format = "q4";   // q4, q8, bf16, fp8
  uint64_t expert_bytes = 0;          // one routed expert in that format (blob size)
  // The non-expert weights on the CPU path: "fp8" (as shipped, = convert --dense bf16), "q8",
  // "q4" (planner/dense_format.h). The GPU path holds them as shipped.
  std::string dense_format = "fp8";
  // The non-expert weights' sizes as a file really holds them (a GGUF's mixed quantisation),
  // instead of what dense_format implies; dense_format then only picks the kernel rates.
  std::optional<DenseBytes> dense_override;
  // A GGUF's block types (ggml names: "Q4_K", "Q6_K", ...) among the routed experts and among the
  // packed non-expert weights. When set, the CPU rates are each type's own measured kernel
  // (profile kernels named by the type), mixed by the time each type's share takes: decode for
  // both, prefill for the experts and (packed dense formats only) the dense GEMM; a type the
  // profile has no rate for runs at expert_format's (dense_format's) rate. Empty: no GGUF, or one
  // that will not run from row tiles (the rates are the tile kernels').
  std::map<std::string, TypeShare> expert_types, dense_types;
  // One routed expert's bytes as expert_types count them (its blocks, mean over the layers) where
  // expert_bytes counts more: a GGUF store's blob holds tiles and padding. The mixed rate counts
  // blocks per second; it is turned into expert_bytes per second, so an expert's time is its
  // blocks' time. 0: the same bytes.
  double expert_type_bytes = 0;
  int64_t context = 4096;             // KV cache length (sized for; reserves memory)
  int64_t decode_fill = 0;            // tokens already in context when decode is predicted; 0: context / 2
  int64_t batch = 1;                  // sequences decoded together
  int64_t prefill_chunk = 512;        // tokens per prefill step
  MachineProfile machine;
  bool use_gpu = true;                // false: plan as if there were no GPU
  ActivationStats stats;              // frequencies (uniform prior when not traced)
  // Share of a layer's missed experts the runtime reads ahead while the previous layer works
  // (it routes layer L+1 on layer L's input); `bench decode` prints the measured recall, and a
  // trace records how often the prediction agrees with the routing. 0: no prefetch.
  double prefetch_recall = 0.6;
  // Share of those read-ahead experts that the layer then uses: the rest are wasted reads
  // that cost disk time and bytes. 1: every prediction is used.
  double prefetch_precision = 0.6;
};

// in.dense_override when set, else dense_bytes(in.model, in.dense_format) (fp8 for an unknown form).
DenseBytes dense_bytes_of(const CostInputs& in);

// The CPU decode step split the way `bench decode` times it (runtime/model/step_profile.h),
// so that `plan --check` can set prediction and measurement side by side. Seconds per step.
struct CpuParts {
  double attention = 0;       // attention and indexer projections, MLA and index compute
  double dense_ffn = 0;       // dense layers' FFN
  double routers = 0;         // routers (and norms)
  double shared_experts = 0;
  double routed_experts = 0;  // routed experts from RAM and the NVMe cache, with the disk stall
  double lm_head = 0;
};

// Seconds per decode step, split by where the time goes.
struct TimeBreakdown {
  double gpu_dense = 0;       // attention, indexer, shared experts, dense layers, lm_head on the GPU
  double gpu_experts = 0;     // routed experts resident in VRAM
  double cpu_dense = 0;       // the same non-expert work when there is no GPU
  double cpu_experts = 0;     // routed experts computed from RAM (RAM tier and NVMe-cache hits)
  double nvme_stall = 0;      // waiting for NVMe reads of missed experts
  double hidden_by_overlap = 0;  // CPU/GPU time that ran concurrently and so is not in `total`
  double sync = 0;            // per-layer hand-offs between GPU and CPU
  double total = 0;
};

struct Prediction {
  double decode_tokens_per_s = 0;       // per sequence: batch / step time
  double prefill_tokens_per_s = 0;
  TimeBreakdown decode;                 // one decode step
  TimeBreakdown prefill;                // one prefill chunk
  std::string bottleneck;               // a sentence naming what bounds decode
  // Expected share of routed-expert reads served by each tier (NVMe split into cache hits
  // and misses).
  double share_vram = 0, share_ram = 0, share_nvme_hit = 0, share_nvme_miss = 0;
  double nvme_cache_hit_rate = 0;       // among reads of NVMe-tier experts
  double expert_bytes_from_disk_per_token = 0;  // misses read on demand or ahead, and wasted reads ahead
  double wasted_bytes_from_disk_per_token = 0;  // of which read ahead and then not used
  CpuParts cpu_parts;                   // one decode step without a GPU
};

// The rates predict() uses: the profile's, with its gaps filled by the rules in cost_model.cpp
// (GPU figures already scaled by the efficiency decode kernels reach; zero without a GPU).
struct CostRates {
  double cpu_expert_gbs = 0;      // decode kernel, expert bytes/s
  double cpu_expert_block_gbs = 0;  // a GGUF's experts (expert_types): their blocks' bytes/s, of
                                    // expert_type_bytes per expert where cpu_expert_gbs counts a
                                    // blob's; otherwise cpu_expert_gbs
  double cpu_expert_gflops = 0;   // prefill kernel
  double cpu_dense_fp8_gbs = 0, cpu_dense_bf16_gbs = 0;
  double cpu_dense_packed_gbs = 0;   // packed dense weights (q8 / q4) at one token
  double disk_cpu_s_per_gb = 0;      // CPU time reading takes from compute
  double cpu_attention_gflops = 0;
  double cpu_gemm_gflops = 0;     // dense prefill on the CPU
  double disk_gbs = 0;
  double gpu_gbs = 0, gpu_gflops = 0;
  bool gpu = false;
};
CostRates cost_rates(const CostInputs& in);

// The decode rate (GB/s) and prefill rate (GFLOP/s) of a mix of block types: each type's bytes at
// its own kernel's decode rate, its parameters at its prefill rate, summed as time; a type without
// a rate in `m` (or with a zero one) at the fallback. Returns the fallbacks for an empty mix, and
// for a figure some type has no rate for at all (its fallback 0).
struct MixedRate {
  double decode_gbs = 0;
  double prefill_gflops = 0;
  std::vector<std::string> unmeasured;  // types that took the fallback
};
MixedRate mixed_kernel_rate(const MachineProfile& m, const std::map<std::string, TypeShare>& types,
                            double fallback_gbs, double fallback_gflops);

// Probability that `tokens` tokens, each choosing an expert with probability f, use it at least once.
double expert_use_probability(double f, double tokens);

// Expected hit rate of an LRU-like cache of `slots` experts over independent references with
// per-expert probabilities `p` (Che's approximation); 1 when everything fits.
// `one_off` more items per step are inserted and never referenced again (wasted prefetch
// reads): each holds a slot for the characteristic time, as any item does.
double cache_hit_rate(const std::vector<double>& p, double slots, std::vector<double>* per_item = nullptr,
                      double one_off = 0);

Prediction predict(const CostInputs& in, const Placement& placement);

}  // namespace mt::planner
