// The CUDA backend (DESIGN.md, "The backend seam"): activations in VRAM, and every op on the
// GPU (dense matmuls from VRAM copies of the model's weights, the norms, RoPE, the latent KV
// cache and MLA attention over it, the V3.2 indexer with its top-k and sparse attention), all
// queued on one stream without waiting; the host is waited for only where it needs a result
// (the router's choices, the indexer's selection, the routed experts' input, the logits). A
// host backend computes what stays in RAM (dense weights that did not fit, the embedding
// table). The VRAM tier's experts run through make_cuda_expert_runner,
// asynchronously, while the CPU computes the RAM tier.
// Every VRAM allocation is charged to one budget (vram_accounting).
//
// Compiled wherever nvcc is found; a build without it gets the same functions returning an
// error (gpu_kernels/no_cuda.cpp). Not verified on a GPU yet: docs/architecture.md.
#pragma once

#include <memory>

#include "gpu_kernels/graph_policy.h"
#include "runtime/backend/backend.h"
#include "runtime/backend/expert_runner.h"
#include "runtime/core/memory_budget.h"
#include "runtime/core/status.h"

namespace mt::gpu {

struct CudaOptions {
  uint64_t vram_limit = 0;           // bytes the backend may allocate; 0: free VRAM at start-up less 1 GiB
  DType cache_dtype = DType::BF16;   // the latent cache: BF16 or F32
  uint64_t keep_free = 0;            // VRAM that dense weights leave free (for the attention caches)
  bool graphs = true;                // record decode steps' attention blocks as CUDA graphs (graph_policy.h)
};

// Errors when this build has no CUDA, or no usable GPU (with the probe's reason).
Result<std::unique_ptr<backend::Backend>> make_cuda_backend(std::unique_ptr<backend::Backend> host, const CudaOptions& o);
// The VRAM tier's runner, on `be`'s device and charged to its budget; `be` must be a CUDA
// backend and outlive the runner.
Result<std::unique_ptr<ExpertRunner>> make_cuda_expert_runner(backend::Backend& be);
// What a CUDA backend holds in VRAM, item by item; null for any other backend.
const TierBudget* vram_accounting(const backend::Backend& be);
// The first failure of a model-time preparation (a layer's kv_b that did not fit in VRAM), or ok.
Status setup_status(const backend::Backend& be);
// Bytes of prepared dense weights that did not fit in VRAM and run on the host backend.
uint64_t dense_bytes_on_host(const backend::Backend& be);
// Waits until a CUDA backend's queued ops have finished (a benchmark's clock); nothing for any
// other backend, whose ops finish before they return.
void synchronize(backend::Backend& be);
// How a CUDA backend ran its attention regions (eager, recorded, updated, instantiated); false
// for any other backend.
bool graph_stats(const backend::Backend& be, GraphPolicyStats& out);

}  // namespace mt::gpu
