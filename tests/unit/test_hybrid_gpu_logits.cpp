// GPU only (hidden tag [.gpu], run by scripts/gpu_check.sh): whole-model logits with the CUDA
// backend and half of every layer's experts in VRAM equal the CPU's, on tiny V3 and V3.2, with
// prompts shorter and longer than the indexer's top-k (so the sparse selection drops keys),
// with each latent-cache precision: same argmax and cosine > 0.999 at every position.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <unistd.h>

#include "offload/expert_store.h"
#include "runtime/engine/engine.h"
#include "tools/moetier/synthetic_model.h"

using namespace mt;
namespace fs = std::filesystem;

namespace {

double cosine(const float* a, const float* b, int64_t n) {
  double ab = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < n; ++i) ab += double(a[i]) * b[i], aa += double(a[i]) * a[i], bb += double(b[i]) * b[i];
  return ab / std::sqrt(aa * bb + 1e-300);
}
int64_t argmax(const float* a, int64_t n) { return std::max_element(a, a + n) - a; }

}  // namespace

TEST_CASE("hybrid CPU/GPU logits equal the CPU's on tiny V3 and V3.2", "[.gpu]") {
  for (ModelArch arch : {ModelArch::V3, ModelArch::V32}) {
    SyntheticModelOptions o;
    o.config = *preset_config("tiny", arch);
    o.seed = 21;
    o.tokenizer = fs::path(MOETIER_TEST_DATA) / "tokenizer-deepseek-v3";
    o.out = fs::temp_directory_path() / ("moetier_test_gpu_logits_" + std::to_string(::getpid()));
    o.packed = true;
    o.packed_quant = ExpertQuant::Q4;
    REQUIRE(write_synthetic_model(o, nullptr).ok());
    const ModelConfig& c = o.config;
    auto store = offload::ExpertStore::open(o.out);
    REQUIRE(store.ok());
    planner::Placement pl = planner::uniform_placement(c.num_hidden_layers, c.first_k_dense_replace, c.n_routed_experts,
                                                       "q4", store->manifest().blob_bytes, planner::Tier::Ram);
    for (int64_t l = c.first_k_dense_replace; l < c.num_hidden_layers; ++l)
      for (int64_t e = 0; e < c.n_routed_experts; e += 2) pl.set(l, e, planner::Tier::Vram);

    EngineOptions cpu_opt;
    cpu_opt.context = 64;
    cpu_opt.announce_device = false;
    cpu_opt.packed.show_progress = false;
    auto cpu = Engine::open(o.out, cpu_opt);
    REQUIRE(cpu.ok());
    // Each cache precision with the decode steps' attention recorded as CUDA graphs, and the
    // bf16 cache with them run op by op.
    for (auto [cache, graphs] : {std::pair{DType::BF16, true}, std::pair{DType::F32, true}, std::pair{DType::BF16, false},
                                 std::pair{DType::F8_E4M3, true}}) {
      EngineOptions gpu_opt = cpu_opt;
      gpu_opt.gpu = true;
      gpu_opt.gpu_cache = cache;
      gpu_opt.gpu_graphs = graphs;
      gpu_opt.packed.placement = pl;
      auto gpu = Engine::open(o.out, gpu_opt);
      if (!gpu.ok()) FAIL(gpu.error());
      const int64_t V = c.vocab_size;
      // Shorter than index_topk (dense attention) and longer (the selection drops keys).
      for (int64_t len : {int64_t{5}, c.index_topk + 13}) {
        CAPTURE(arch == ModelArch::V3 ? "V3" : "V3.2", std::string(dtype_name(cache)), graphs, len);
        std::vector<int32_t> prompt;
        for (int64_t i = 0; i < len; ++i) prompt.push_back(static_cast<int32_t>((i * 613 + 7) % V));
        (*cpu)->reset();
        (*gpu)->reset();
        std::vector<float> a, b;
        REQUIRE((*cpu)->eval(prompt, true, a).ok());
        REQUIRE((*gpu)->eval(prompt, true, b).ok());
        REQUIRE(a.size() == b.size());
        int32_t next = 0;
        for (int step = 0; step <= 4; ++step) {
          const int64_t rows = static_cast<int64_t>(a.size()) / V;
          for (int64_t r = 0; r < rows; ++r) {
            CAPTURE(step, r);
            // FP8 latents (3 mantissa bits) may flip a near tie; the others may not.
            if (cache != DType::F8_E4M3) CHECK(argmax(&a[r * V], V) == argmax(&b[r * V], V));
            CHECK(cosine(&a[r * V], &b[r * V], V) > (cache == DType::F8_E4M3 ? 0.99 : 0.999));
          }
          next = static_cast<int32_t>(argmax(&a[(rows - 1) * V], V));
          if (step == 4) break;
          REQUIRE((*cpu)->eval(std::span<const int32_t>(&next, 1), false, a).ok());
          REQUIRE((*gpu)->eval(std::span<const int32_t>(&next, 1), false, b).ok());
        }
      }
      auto* sched = (*gpu)->expert_scheduler();
      REQUIRE(sched);
      CHECK(sched->stats().uses_vram > 0);
      CHECK(std::string(sched->vram_runner_name()) == "cuda");
      gpu::GraphPolicyStats gs;
      REQUIRE((*gpu)->graph_stats(gs));
      CHECK(gs.failed == 0);
      // V3's decode blocks need nothing from the host, so after the first step they run as
      // graphs; V3.2's indexer selection keeps its blocks eager.
      if (graphs && arch == ModelArch::V3) CHECK(gs.captured > 0);
      if (!graphs) CHECK(gs.captured == 0);
    }
    fs::remove_all(o.out);
  }
}
