// The CUDA backend's router (gpu_kernels/router_topk.h), run on the CPU through the same
// __host__ __device__ code the kernel runs: it chooses the experts, in the same order, with the
// same weights, bit for bit, as the reference router (cpu_kernels/router.cpp), including ties,
// groups of one expert, NaN logits and no bias.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cpu_kernels/ops.h"
#include "gpu_kernels/router_topk.h"

using namespace mt;

TEST_CASE("gpu router: the same experts and weights as the reference, bit for bit", "[gpu]") {
  const std::vector<RouterParams> params = {
      {256, 8, 4, 8, 2.5f, true},  // DeepSeek V3
      {16, 4, 2, 4, 2.5f, true},   {64, 1, 1, 6, 1.0f, false}, {8, 8, 3, 2, 1.0f, true},  // groups of one
      {72, 9, 9, 5, 1.5f, true},   // every group kept: no group step
      {30, 5, 2, 3, 1.0f, false}};
  std::mt19937 rng(17);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  int64_t compared = 0;
  for (const RouterParams& p : params) {
    REQUIRE(gpu::gpu_router_ok(p));
    for (int trial = 0; trial < 300; ++trial) {
      std::vector<float> logits(static_cast<size_t>(p.n_experts)), bias(logits.size());
      for (float& v : logits) v = nd(rng);
      for (float& v : bias) v = 0.1f * nd(rng);
      if (trial % 3 == 1)  // ties everywhere: a few distinct values
        for (float& v : logits) v = std::round(v);
      if (trial % 7 == 2) logits[static_cast<size_t>(trial) % logits.size()] = NAN;
      const bool with_bias = trial % 5 != 0;
      std::vector<int32_t> ea(static_cast<size_t>(p.top_k)), eb(ea.size());
      std::vector<float> wa(ea.size()), wb(ea.size());
      cpu::route_sigmoid_grouped(logits.data(), with_bias ? bias.data() : nullptr, p, ea.data(), wa.data());
      gpu::route_token(logits.data(), with_bias ? bias.data() : nullptr, p, eb.data(), wb.data());
      INFO("experts " << p.n_experts << " groups " << p.n_group << " trial " << trial);
      CHECK(ea == eb);
      CHECK(std::memcmp(wa.data(), wb.data(), wa.size() * sizeof(float)) == 0);
      ++compared;
    }
  }
  CHECK(compared == 1800);
  CHECK_FALSE(gpu::gpu_router_ok(RouterParams{1024, 8, 4, 8, 1.0f, true}));
  CHECK_FALSE(gpu::gpu_router_ok(RouterParams{256, 7, 4, 8, 1.0f, true}));
}
