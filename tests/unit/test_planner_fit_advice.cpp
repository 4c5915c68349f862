// Fit advice ("what RAM would make the 671B model run?") against the solver's own rules written
// out by hand: the smallest budget is the runtime's reservations plus the NVMe cache's minimum
// (two layers of top-k experts), the all-in-RAM budget adds every expert; both within the 1%
// the search promises, and a budget 1% lower really fails.
#include <catch2/catch.hpp>

#include "planner/fit_advice.h"
#include "planner/model_size.h"

using namespace mt;
using namespace mt::planner;

namespace {

MachineProfile small_machine() {
  MachineProfile m;
  m.source = "measured (test)";
  m.cpu_model = "test CPU";
  m.physical_cores = m.logical_cpus = 8;
  m.ram_total_bytes = m.ram_available_bytes = 20ull << 30;
  m.ram_read_gbs = 50;
  m.disk_read_gbs = 3;
  m.kernels = {{"q4", 40, 500}, {"q8", 40, 500}, {"bf16", 40, 200}};
  m.dense_bf16_gbs = 20;
  m.dense_fp8_gbs = 10;
  m.attention_gflops = 50;
  return m;
}

PlanRequest v32_request(const std::string& fmt, uint64_t expert_bytes) {
  PlanRequest req;
  req.cost.model = *preset_config("deepseek-v3.2");
  req.cost.expert_format = fmt;
  req.cost.expert_bytes = expert_bytes;
  req.cost.context = 4096;
  req.cost.machine = small_machine();
  req.cost.stats = uniform_activations(req.cost.model);
  return req;
}

}  // namespace

TEST_CASE("fit advice: the smallest RAM budget is the reservations plus the minimum NVMe cache") {
  const uint64_t eb = 25'000'000;
  PlanRequest req = v32_request("q4", eb);
  REQUIRE_FALSE(make_plan(req).ok());  // 20 GiB is short for the 671B model with FP8 dense weights

  const FitAdvice a = fit_advice(req);
  REQUIRE(a.min_ram_budget);
  REQUIRE(a.at_min);
  const ModelConfig& c = req.cost.model;
  const double expected = double(a.at_min->ram_reserved_bytes) + 2.0 * double(c.num_experts_per_tok) * double(eb);
  CHECK(double(*a.min_ram_budget) >= expected);
  CHECK(double(*a.min_ram_budget) <= expected * 1.0101);
  CHECK(a.at_min->placement.count(Tier::Nvme) > 0);

  PlanRequest lower = req;
  lower.ram_budget = static_cast<uint64_t>(double(*a.min_ram_budget) * 0.99);
  CHECK_FALSE(make_plan(lower).ok());
  PlanRequest at = req;
  at.ram_budget = *a.min_ram_budget;
  CHECK(make_plan(at).ok());
  CHECK(a.ram_headroom == req.ram_headroom);
}

TEST_CASE("fit advice: every expert in RAM costs the reservations plus every expert") {
  const uint64_t eb = 25'000'000;
  PlanRequest req = v32_request("q4", eb);
  const FitAdvice a = fit_advice(req);
  REQUIRE(a.all_in_ram_budget);
  REQUIRE(a.all_in_ram);
  const ModelConfig& c = req.cost.model;
  const double experts = double(c.num_hidden_layers - c.first_k_dense_replace) * double(c.n_routed_experts);
  const double expected = double(a.all_in_ram->ram_reserved_bytes) + experts * double(eb);
  CHECK(double(*a.all_in_ram_budget) >= expected);
  CHECK(double(*a.all_in_ram_budget) <= expected * 1.0101);
  CHECK(a.all_in_ram->placement.count(Tier::Nvme) == 0);
  CHECK(a.all_in_ram->placement.count(Tier::Ram) == static_cast<int64_t>(experts));
  // All in RAM predicts no slower decode than the minimum, which waits on the disk.
  CHECK(a.all_in_ram->prediction.decode_tokens_per_s >= a.at_min->prediction.decode_tokens_per_s);

  PlanRequest lower = req;
  lower.ram_budget = static_cast<uint64_t>(double(*a.all_in_ram_budget) * 0.99);
  auto p = make_plan(lower);
  REQUIRE(p.ok());
  CHECK(p->placement.count(Tier::Nvme) > 0);
}

TEST_CASE("fit advice: no RAM helps a GPU reservation that does not fit, and it says so by having no advice") {
  PlanRequest req = v32_request("q4", 25'000'000);
  req.cost.machine.gpu.present = true;
  req.cost.machine.gpu.name = "tiny GPU";
  req.cost.machine.gpu.vram_total_bytes = req.cost.machine.gpu.vram_free_bytes = 2ull << 30;
  req.cost.machine.gpu.hbm_gbs = 1000;
  req.cost.machine.gpu.h2d_gbs = 25;
  req.cost.machine.gpu.gemm_tflops = 100;
  const FitAdvice a = fit_advice(req);
  CHECK_FALSE(a.min_ram_budget);
  CHECK_FALSE(a.at_min);
  CHECK_FALSE(a.all_in_ram_budget);
}

TEST_CASE("packed store bytes: the FP8 checkpoint's size when experts keep their FP8 size") {
  for (const char* preset : {"deepseek-v3", "deepseek-v3.2", "demo"}) {
    CostInputs in;
    in.model = *preset_config(preset);
    const ModelSizes s = compute_model_sizes(in.model);
    in.expert_bytes = static_cast<uint64_t>(s.expert.fp8_bytes);
    const double main = double(s.main_model.fp8_bytes);
    CHECK(std::abs(double(packed_store_bytes(in)) - main) <= 1e-9 * main + 1.0);
    // Halving every expert removes half of the routed experts' bytes, nothing else.
    in.expert_bytes = static_cast<uint64_t>(s.expert.fp8_bytes / 2);
    const double routed = double(s.moe_layers) * double(in.model.n_routed_experts) * double(s.expert.fp8_bytes);
    CHECK(std::abs(double(packed_store_bytes(in)) - (main - routed / 2)) <= 1e-9 * main + double(s.moe_layers * in.model.n_routed_experts));
  }
}
