// The placement solver and cost model: budgets, pins, monotonicity in VRAM, hot experts in
// faster tiers, clear refusals, and the cost model against hand-computed and simulated figures.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <list>
#include <random>
#include <unordered_map>

#include "planner/dense_format.h"
#include "planner/placement.h"
#include "planner/solver.h"
#include "tests/unit/temp_dir.h"

using namespace mt;
using namespace mt::planner;

namespace {

constexpr uint64_t GB = 1000000000ull;

MachineProfile machine(double vram_gb, double ram_gb, double disk_gbs) {
  MachineProfile m;
  m.source = "measured (test)";
  m.cpu_model = "test CPU";
  m.physical_cores = m.logical_cpus = 32;
  m.ram_total_bytes = m.ram_available_bytes = static_cast<uint64_t>(ram_gb * 1e9);
  m.ram_read_gbs = 200;
  m.disk_read_gbs = disk_gbs;
  m.kernels = {{"q4", 180, 2000}, {"q8", 180, 2000}, {"bf16", 180, 2000}};
  m.dense_bf16_gbs = 100;
  m.dense_fp8_gbs = 100;
  m.attention_gflops = 500;
  if (vram_gb > 0) {
    m.gpu.present = true;
    m.gpu.name = "test GPU";
    m.gpu.vram_total_bytes = m.gpu.vram_free_bytes = static_cast<uint64_t>(vram_gb * 1e9);
    m.gpu.hbm_gbs = 3000;
    m.gpu.h2d_gbs = 25;
    m.gpu.gemm_tflops = 500;
  }
  return m;
}

// The `wide` synthetic shape (2 MoE layers, real expert size) with 64 experts per layer.
ModelConfig wide64() {
  ModelConfig c = *preset_config("wide");
  c.n_routed_experts = 64;
  return c;
}

// counts[l][e] proportional to 1/(rank+1)^s with a per-layer permutation, top_k per token.
ActivationStats skewed(const ModelConfig& c, double s, uint64_t tokens, uint32_t seed) {
  ActivationStats a = uniform_activations(c);
  a.uniform_prior = false;
  a.tokens = tokens;
  std::mt19937 rng(seed);
  for (auto& la : a.layers) {
    std::vector<int> perm(static_cast<size_t>(c.n_routed_experts));
    for (size_t i = 0; i < perm.size(); ++i) perm[i] = static_cast<int>(i);
    std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<double> w(perm.size());
    double sum = 0;
    for (size_t r = 0; r < perm.size(); ++r) sum += w[r] = 1.0 / std::pow(double(r + 1), s);
    la.counts.assign(perm.size(), 0);
    const uint64_t choices = tokens * static_cast<uint64_t>(c.num_experts_per_tok);
    uint64_t given = 0;
    for (size_t r = 0; r < perm.size(); ++r) {
      const auto n = static_cast<uint64_t>(std::floor(double(choices) * w[r] / sum));
      la.counts[static_cast<size_t>(perm[r])] = n;
      given += n;
    }
    la.counts[static_cast<size_t>(perm[0])] += choices - given;
    la.next.assign(perm.size(), {});
  }
  return a;
}

PlanRequest request(const ModelConfig& c, const MachineProfile& m, const ActivationStats& st, uint64_t expert_bytes) {
  PlanRequest r;
  r.cost.model = c;
  r.cost.expert_format = "q4";
  r.cost.expert_bytes = expert_bytes;
  r.cost.context = 1024;
  r.cost.machine = m;
  r.cost.stats = st;
  return r;
}

// An LRU cache of `capacity` items, counting the hits of the references it is asked to count:
// the simulation the cache-hit approximations are checked against.
class LruSim {
 public:
  explicit LruSim(int capacity) : capacity_(capacity) {}
  void touch(int64_t k, bool count) {
    auto it = where_.find(k);
    if (it != where_.end()) {
      hits_ += count;
      lru_.erase(it->second);
    } else if (static_cast<int>(lru_.size()) == capacity_) {
      where_.erase(lru_.back());
      lru_.pop_back();
    }
    lru_.push_front(k);
    where_[k] = lru_.begin();
    refs_ += count;
  }
  double hit_rate() const { return refs_ ? double(hits_) / double(refs_) : 0.0; }

 private:
  int capacity_;
  std::list<int64_t> lru_;
  std::unordered_map<int64_t, std::list<int64_t>::iterator> where_;
  int64_t hits_ = 0, refs_ = 0;
};

constexpr uint64_t kWideQ4 = 23855104;  // q4 blob of a 7168 x 2048 expert (any size works here)

// The wide model on a CPU-only test machine, decode at 64 tokens of context, uniform routing.
CostInputs wide_cpu_inputs() {
  CostInputs in;
  in.model = wide64();
  in.expert_bytes = kWideQ4;
  in.context = 1024;
  in.decode_fill = 64;
  in.machine = machine(0, 100, 3.0);
  in.use_gpu = false;
  in.stats = uniform_activations(in.model);
  return in;
}

void check_budgets(const Plan& p, uint64_t eb) {
  const Placement& pl = p.placement;
  if (p.gpu) CHECK(p.vram_reserved_bytes + uint64_t(pl.count(Tier::Vram)) * eb <= p.vram_budget);
  else CHECK(pl.count(Tier::Vram) == 0);
  CHECK(p.ram_reserved_bytes + uint64_t(pl.count(Tier::Ram)) * eb + pl.nvme_cache_bytes <= p.ram_budget);
}

}  // namespace

TEST_CASE("budgets are never exceeded", "[planner][solver]") {
  const ModelConfig c = wide64();
  for (double vram : {0.0, 20.0, 23.0, 30.0})
    for (double ram : {8.0, 9.5, 12.0, 40.0})
      for (double skew : {0.0, 1.2}) {
        const ActivationStats st = skew > 0 ? skewed(c, skew, 1000, 7) : uniform_activations(c);
        PlanRequest r = request(c, machine(vram, ram, 3.0), st, kWideQ4);
        r.ram_headroom = 0;
        auto p = make_plan(r);
        INFO("vram " << vram << " ram " << ram << " skew " << skew);
        if (!p) {
          CHECK(p.error().find("does not fit") != std::string::npos);
          continue;
        }
        check_budgets(*p, kWideQ4);
        CHECK(p->placement.count(Tier::Vram) + p->placement.count(Tier::Ram) + p->placement.count(Tier::Nvme) == 2 * 64);
        if (p->placement.count(Tier::Nvme) > 0) CHECK(p->placement.nvme_cache_bytes >= 16 * kWideQ4);
      }
}

TEST_CASE("the full 671B model is planned within a described machine's budgets", "[planner][solver]") {
  const ModelConfig c = *preset_config("deepseek-v3.2");
  const uint64_t eb = 23855104;
  auto p = make_plan(request(c, machine(80, 256, 7), uniform_activations(c), eb));
  REQUIRE(p.ok());
  check_budgets(*p, eb);
  CHECK(p->placement.count(Tier::Nvme) > 0);  // 256 GB cannot hold 58 x 256 q4 experts (~354 GB)
  CHECK(p->prediction.decode_tokens_per_s > 0);
  for (auto& n : p->notes) UNSCOPED_INFO(n);
  CHECK(std::find_if(p->notes.begin(), p->notes.end(), [](const std::string& n) {
          return n.find("uniform") != std::string::npos;
        }) != p->notes.end());
}

TEST_CASE("pins are honoured", "[planner][solver]") {
  const ModelConfig c = wide64();
  const ActivationStats st = skewed(c, 1.5, 1000, 3);
  PlanRequest r = request(c, machine(24, 9, 3.0), st, kWideQ4);
  r.ram_headroom = 0;
  // The hottest expert of layer 0 pinned to NVMe, a cold one to VRAM, all of layer 1 to RAM
  // would not fit; pin a handful instead.
  int64_t hottest = 0, coldest = 0;
  const auto& counts = st.layers[0].counts;
  for (int64_t e = 0; e < 64; ++e) {
    if (counts[size_t(e)] > counts[size_t(hottest)]) hottest = e;
    if (counts[size_t(e)] < counts[size_t(coldest)]) coldest = e;
  }
  r.pins = {{0, hottest, Tier::Nvme}, {0, coldest, Tier::Vram}, {1, 5, Tier::Ram}, {1, 6, Tier::Nvme}};
  auto p = make_plan(r);
  INFO((p.ok() ? std::string() : p.error()));
  REQUIRE(p.ok());
  CHECK(p->placement.at(0, hottest) == Tier::Nvme);
  CHECK(p->placement.at(0, coldest) == Tier::Vram);
  CHECK(p->placement.at(1, 5) == Tier::Ram);
  CHECK(p->placement.at(1, 6) == Tier::Nvme);
  check_budgets(*p, kWideQ4);

  SECTION("pins that cannot be honoured are errors") {
    PlanRequest bad = r;
    bad.cost.use_gpu = false;
    auto q = make_plan(bad);
    REQUIRE_FALSE(q.ok());
    CHECK(q.error().find("no GPU") != std::string::npos);
    bad = r;
    bad.cost.machine.gpu.vram_free_bytes = 7500000000ull;  // room for ~20 experts after reservations
    bad.pins.clear();
    for (int64_t e = 0; e < 64; ++e) bad.pins.push_back({0, e, Tier::Vram});
    q = make_plan(bad);
    REQUIRE_FALSE(q.ok());
    CHECK(q.error().find("pinned to VRAM") != std::string::npos);
  }
}

TEST_CASE("parse_pin reads LAYER:EXPERT=TIER and refuses the rest", "[planner][solver]") {
  const ModelConfig c = *preset_config("deepseek-v3");
  auto one = parse_pin("3:17=vram", c);
  REQUIRE(one.ok());
  REQUIRE(one->size() == 1);
  CHECK((*one)[0].layer == 3);
  CHECK((*one)[0].expert == 17);
  CHECK((*one)[0].tier == Tier::Vram);
  auto all = parse_pin("10:*=disk", c);
  REQUIRE(all.ok());
  CHECK(all->size() == 256);
  CHECK((*all)[255].tier == Tier::Nvme);
  for (const char* bad : {"", "3", "3:17", "3:17=", "3:17=ssd", "x:1=ram", "3:-1=ram", "1:0=ram", "61:0=ram",
                          "3:256=ram", "3=ram:1"}) {
    INFO(bad);
    CHECK_FALSE(parse_pin(bad, c).ok());
  }
  CHECK(parse_pin("1:0=ram", c).error().find("not a MoE layer") != std::string::npos);
}

TEST_CASE("more VRAM never predicts slower decode", "[planner][solver]") {
  for (const char* preset : {"wide", "deepseek-v3.2"}) {
    ModelConfig c = *preset_config(preset);
    if (std::string(preset) == "wide") c.n_routed_experts = 64;
    const ActivationStats st = skewed(c, 1.0, 2000, 11);
    double last = 0;
    for (double vram = 24; vram <= 160; vram += 8) {
      PlanRequest r = request(c, machine(vram, std::string(preset) == "wide" ? 8.0 : 300.0, 5.0), st, kWideQ4);
      r.ram_headroom = 0;
      auto p = make_plan(r);
      if (!p) continue;  // the GPU reservations do not fit yet
      INFO(preset << " vram " << vram);
      CHECK(p->prediction.decode_tokens_per_s >= last * (1 - 1e-12));
      last = p->prediction.decode_tokens_per_s;
    }
    CHECK(last > 0);
  }
}

TEST_CASE("with a skewed trace, hot experts land in the faster tier", "[planner][solver]") {
  const ModelConfig c = wide64();
  const ActivationStats st = skewed(c, 1.3, 5000, 5);
  PlanRequest r = request(c, machine(8.0, 2.0, 3.0), st, kWideQ4);
  r.ram_headroom = 0;
  auto p = make_plan(r);
  INFO((p.ok() ? std::string() : p.error()));
  REQUIRE(p.ok());
  INFO(p->vram_reserved_bytes << " " << p->ram_reserved_bytes << " " << p->placement.nvme_cache_bytes);
  const Placement& pl = p->placement;
  REQUIRE(pl.count(Tier::Vram) > 0);
  REQUIRE(pl.count(Tier::Ram) > 0);
  REQUIRE(pl.count(Tier::Nvme) > 0);
  // Within a layer, every VRAM expert is at least as hot as every CPU one; across layers, every
  // RAM expert at least as hot as every NVMe one.
  double min_ram = 1e9, max_nvme = 0;
  for (int64_t l = 0; l < 2; ++l) {
    double min_vram = 1e9, max_cpu = 0;
    for (int64_t e = 0; e < 64; ++e) {
      const double f = st.frequency(l, e);
      if (pl.at(l, e) == Tier::Vram) min_vram = std::min(min_vram, f);
      else max_cpu = std::max(max_cpu, f);
      if (pl.at(l, e) == Tier::Ram) min_ram = std::min(min_ram, f);
      if (pl.at(l, e) == Tier::Nvme) max_nvme = std::max(max_nvme, f);
    }
    if (min_vram < 1e9) CHECK(min_vram >= max_cpu);
  }
  CHECK(min_ram >= max_nvme);
  // And the hot-first plan predicts faster than the same counts placed coldest-first.
  Placement reversed = pl;
  std::vector<std::pair<double, std::pair<int64_t, int64_t>>> all;
  for (int64_t l = 0; l < 2; ++l)
    for (int64_t e = 0; e < 64; ++e) all.push_back({st.frequency(l, e), {l, e}});
  std::sort(all.begin(), all.end());  // coldest first
  size_t i = 0;
  for (Tier t : {Tier::Vram, Tier::Ram, Tier::Nvme})
    for (int64_t k = 0; k < pl.count(t); ++k, ++i) reversed.set(all[i].second.first, all[i].second.second, t);
  CHECK(predict(r.cost, reversed).decode_tokens_per_s < p->prediction.decode_tokens_per_s);
}

TEST_CASE("a model that cannot fit gets an explanation, not a plan", "[planner][solver]") {
  const ModelConfig c = *preset_config("deepseek-v3.2");
  SECTION("GPU too small for what must live there") {
    auto p = make_plan(request(c, machine(8, 1000, 7), uniform_activations(c), 23855104));
    REQUIRE_FALSE(p.ok());
    CHECK(p.error().find("does not fit") != std::string::npos);
    CHECK(p.error().find("GPU") != std::string::npos);
    CHECK(p.error().find("--no-gpu") != std::string::npos);
  }
  SECTION("experts over RAM with no disk") {
    auto p = make_plan(request(c, machine(0, 128, 0), uniform_activations(c), 23855104));
    REQUIRE_FALSE(p.ok());
    CHECK(p.error().find("no disk") != std::string::npos);
  }
  SECTION("RAM below what the runtime itself needs") {
    auto p = make_plan(request(c, machine(0, 16, 7), uniform_activations(c), 23855104));
    REQUIRE_FALSE(p.ok());
    CHECK(p.error().find("RAM budget") != std::string::npos);
  }
}

TEST_CASE("cost model: all-RAM CPU decode equals the hand-computed sum", "[planner][cost]") {
  const ModelConfig c = wide64();
  const MachineProfile m = machine(0, 100, 3.0);
  CostInputs in;
  in.model = c;
  in.expert_bytes = kWideQ4;
  in.context = 1024;
  in.decode_fill = 64;
  in.machine = m;
  in.use_gpu = false;
  in.stats = uniform_activations(c);
  const Placement pl = uniform_placement(2, 0, 64, "q4", kWideQ4, Tier::Ram);
  const Prediction p = predict(in, pl);
  // Independent formulation: per token, top_k experts per layer stream at the kernel rate;
  // the non-expert weights stream at the dense rate; attention flops at the attention rate.
  const ModelSizes s = compute_model_sizes(c);
  const double experts = 2.0 * 8 * double(kWideQ4) / 180e9;
  const double fp8 = 2.0 * double(s.attention.fp8_bytes + s.shared_expert.fp8_bytes) / 100e9;
  const double bf16 = (2.0 * double(s.router.fp8_bytes + s.layer_norms.fp8_bytes) + double(s.lm_head.fp8_bytes)) / 100e9;
  const double R = 512, H = 128;
  const double attn = 2.0 * H * (2 * 128 * R + 2 * R * 128 + 64 * (2 * (R + 64) + 2 * R)) / 500e9;
  const double expect = experts + fp8 + bf16 + attn;
  CHECK(p.decode.total == Approx(expect).epsilon(1e-9));
  CHECK(p.decode_tokens_per_s == Approx(1.0 / expect).epsilon(1e-9));
  CHECK(p.share_ram == Approx(1.0));
  CHECK(p.expert_bytes_from_disk_per_token == 0);

  SECTION("a slower disk never makes an NVMe plan faster") {
    Placement half = pl;
    for (int64_t e = 32; e < 64; ++e) half.set(0, e, Tier::Nvme), half.set(1, e, Tier::Nvme);
    half.nvme_cache_bytes = 16 * kWideQ4;
    CostInputs slow = in;
    slow.machine.disk_read_gbs = 0.5;
    const Prediction fast_p = predict(in, half), slow_p = predict(slow, half);
    CHECK(slow_p.decode_tokens_per_s < fast_p.decode_tokens_per_s);
    CHECK(fast_p.decode_tokens_per_s < p.decode_tokens_per_s);
    CHECK(fast_p.share_ram == Approx(0.5));
    CHECK(fast_p.share_nvme_hit + fast_p.share_nvme_miss == Approx(0.5));
  }
}

TEST_CASE("cost model: packed dense at its measured rate; the CPU parts add up to the step", "[planner][cost]") {
  const ModelConfig c = wide64();
  CostInputs in = wide_cpu_inputs();
  in.machine.dense_q8_gbs = 50;
  in.dense_format = "q8";
  const Placement pl = uniform_placement(2, 0, 64, "q4", kWideQ4, Tier::Ram);
  const Prediction p = predict(in, pl);
  const DenseBytes db = dense_bytes(c, "q8");
  // Independent sum: packed bytes at 50 GB/s, kv_b (FP8) at 100, small tensors at 100, the
  // experts at 180, attention flops at 500.
  const double R = 512, H = 128;
  const double attn = 2.0 * H * (2 * 128 * R + 2 * R * 128 + 64 * (2 * (R + 64) + 2 * R)) / 500e9;
  const double expect = 2.0 * 8 * double(kWideQ4) / 180e9 +
                        2.0 * (db.moe_attention_packed + db.moe_shared_packed) / 50e9 + db.lm_head_packed / 50e9 +
                        2.0 * db.moe_attention_fp8 / 100e9 + (2.0 * db.moe_bf16 + db.lm_head_bf16) / 100e9 + attn;
  CHECK(p.decode.total == Approx(expect).epsilon(1e-9));
  const CpuParts& cp = p.cpu_parts;
  CHECK(cp.attention + cp.dense_ffn + cp.routers + cp.shared_experts + cp.routed_experts + cp.lm_head ==
        Approx(p.decode.total).epsilon(1e-9));
  CHECK(cp.lm_head == Approx(db.lm_head_packed / 50e9 + db.lm_head_bf16 / 100e9).epsilon(1e-9));
  CHECK(cp.shared_experts == Approx(2.0 * db.moe_shared_packed / 50e9).epsilon(1e-9));
  // Without a packed dense rate the expert kernel's is used.
  CostInputs no_rate = in;
  no_rate.machine.dense_q8_gbs = 0;
  CHECK(predict(no_rate, pl).cpu_parts.shared_experts == Approx(2.0 * db.moe_shared_packed / 180e9).epsilon(1e-9));
}

TEST_CASE("cost model: a GGUF's block types at their own kernels' rates", "[planner][cost]") {
  const ModelConfig c = wide64();
  CostInputs in = wide_cpu_inputs();
  in.dense_format = "q8";
  in.machine.dense_q8_gbs = 50;
  // Q4_K: 0.6 of the expert bytes at 120 GB/s and 800 GFLOP/s; Q6_K: 0.3 at 60 and 200; Q2_K
  // (0.1) has no rate in the profile, so it runs at the q4 stand-in's 180 and 2000.
  const double eb = double(kWideQ4);
  in.expert_types = {{"Q4_K", {eb * 0.6, 1000}}, {"Q6_K", {eb * 0.3, 300}}, {"Q2_K", {eb * 0.1, 100}}};
  in.machine.kernels.push_back({"Q4_K", 120, 800});
  in.machine.kernels.push_back({"Q6_K", 60, 200});
  in.machine.kernels.push_back({"Q8_0", 40, 300});
  in.machine.kernels.push_back({"Q5_K", 0, 0});  // listed without rates: as if absent
  in.dense_types = {{"Q8_0", {3e6, 3e6}}, {"Q5_K", {1e6, 1.5e6}}};
  const Placement pl = uniform_placement(2, 0, 64, "q4", kWideQ4, Tier::Ram);
  const Prediction p = predict(in, pl);
  // Independent: each type's share of a token's 16 experts at its own rate, summed as time.
  const double per_expert = eb * 0.6 / 120e9 + eb * 0.3 / 60e9 + eb * 0.1 / 180e9;
  CHECK(p.cpu_parts.routed_experts == Approx(2.0 * 8 * per_expert).epsilon(1e-9));
  const DenseBytes db = dense_bytes(c, "q8");
  // Dense: Q8_0 at its 40 GB/s, Q5_K at the packed q8 rate (50), by time; prompts at Q8_0's
  // 300 GFLOP/s and Q5_K at the bf16 GEMM's 2000, by parameters.
  const double dense_gbs = 4e6 / (3e6 / 40 + 1e6 / 50);
  CHECK(p.cpu_parts.shared_experts == Approx(2.0 * db.moe_shared_packed / (dense_gbs * 1e9)).epsilon(1e-9));
  const CostRates r = cost_rates(in);
  CHECK(r.cpu_expert_gflops == Approx(1400.0 / (1000.0 / 800 + 300.0 / 200 + 100.0 / 2000)).epsilon(1e-12));
  CHECK(r.cpu_gemm_gflops == Approx(4.5e6 / (3e6 / 300 + 1.5e6 / 2000)).epsilon(1e-12));
  // A figure some type has no rate for at all (fallback 0) stays unknown, not inflated.
  CHECK(mixed_kernel_rate(in.machine, in.expert_types, 180, 0).prefill_gflops == 0);
  const MixedRate mix = mixed_kernel_rate(in.machine, in.expert_types, 180, 2000);
  REQUIRE(mix.unmeasured.size() == 1);
  CHECK(mix.unmeasured[0] == "Q2_K");
  SECTION("without the types, the stand-in rates as before") {
    CostInputs plain = in;
    plain.expert_types.clear();
    plain.dense_types.clear();
    const Prediction q = predict(plain, pl);
    CHECK(q.cpu_parts.routed_experts == Approx(2.0 * 8 * eb / 180e9).epsilon(1e-9));
    CHECK(q.cpu_parts.shared_experts == Approx(2.0 * db.moe_shared_packed / 50e9).epsilon(1e-9));
    CHECK(cost_rates(plain).cpu_gemm_gflops == Approx(2000));
  }
  SECTION("a blob bigger than the blocks the types count: measured types cost their blocks' time") {
    CostInputs store = in;
    store.expert_type_bytes = eb * 0.9;  // the blob is 1/0.9 of its blocks: tiles, padding
    const Prediction q = predict(store, pl);
    // Q4_K and Q6_K (measured) on their share of the 0.9 eb of blocks; Q2_K (no rate) at the
    // stand-in 180 GB/s on its share of the blob's eb, as the kernel would stream it.
    const double t = eb * 0.9 * (0.6 / 120e9 + 0.3 / 60e9) + eb * 0.1 / 180e9;
    CHECK(q.cpu_parts.routed_experts == Approx(2.0 * 8 * t).epsilon(1e-9));
    // The rates an expert's time gives: its blocks' bytes (what the report names) and its blob's.
    CHECK(cost_rates(store).cpu_expert_block_gbs == Approx(eb * 0.9 / t / 1e9).epsilon(1e-9));
    CHECK(cost_rates(store).cpu_expert_gbs == Approx(eb / t / 1e9).epsilon(1e-9));
    // No type measured: the stand-in rate (the q4 kernel's 180) on the whole blob, as without
    // the types.
    std::erase_if(store.machine.kernels, [](const KernelRate& k) { return k.format != "q4"; });
    REQUIRE(store.machine.kernels.size() == 1);
    CHECK(cost_rates(store).cpu_expert_gbs == Approx(180).epsilon(1e-12));
    CHECK(cost_rates(store).cpu_expert_block_gbs == Approx(180 * 0.9).epsilon(1e-12));
  }
  SECTION("fp8 dense weights ignore the dense types' rates") {
    CostInputs fp8 = in;
    fp8.dense_format = "fp8";
    CHECK(cost_rates(fp8).cpu_dense_packed_gbs != Approx(dense_gbs));
    CHECK(cost_rates(fp8).cpu_gemm_gflops == Approx(2000));
  }
}

TEST_CASE("cost model: wasted prefetch reads follow the precision; a step holds its unreadable time", "[planner][cost]") {
  CostInputs in = wide_cpu_inputs();
  Placement pl = uniform_placement(2, 0, 64, "q4", kWideQ4, Tier::Ram);
  for (int64_t e = 32; e < 64; ++e) pl.set(0, e, Tier::Nvme), pl.set(1, e, Tier::Nvme);
  pl.nvme_cache_bytes = 40 * kWideQ4;  // 40 slots: the read-ahead limit (20) is not reached
  in.prefetch_recall = 0.5;

  in.prefetch_precision = 1.0;
  const Prediction exact = predict(in, pl);
  CHECK(exact.wasted_bytes_from_disk_per_token == 0);
  // Layer 1 is predicted from layer 0: its NVMe experts are chosen 32 x 8/64 = 4 times per
  // token; at precision 0.5 half of the 4 read ahead are wasted, each a blob read.
  in.prefetch_precision = 0.5;
  const Prediction half = predict(in, pl);
  CHECK(half.wasted_bytes_from_disk_per_token == Approx(2.0 * double(kWideQ4)).epsilon(1e-9));
  CHECK(half.expert_bytes_from_disk_per_token > exact.expert_bytes_from_disk_per_token);
  CHECK(half.nvme_cache_hit_rate < exact.nvme_cache_hit_rate);  // wasted reads hold cache slots
  CHECK(half.decode_tokens_per_s < exact.decode_tokens_per_s);
  in.prefetch_recall = 0;
  CHECK(predict(in, pl).wasted_bytes_from_disk_per_token == 0);

  SECTION("disk-bound: the reads, plus the time before the first routing and the lm_head") {
    in.prefetch_recall = 0.5;
    in.prefetch_precision = 0.5;
    in.machine.disk_read_gbs = 0.01;
    const Prediction slow = predict(in, pl);
    const double disk_s = slow.expert_bytes_from_disk_per_token / 0.01e9;
    // Both MoE layers have the same attention cost: the first one's is half the part.
    const double no_io = slow.cpu_parts.attention / 2 + slow.cpu_parts.lm_head;
    // The per-layer queue may come out slightly longer than this floor, never shorter.
    CHECK(slow.decode.total >= (disk_s + no_io) * (1 - 1e-12));
    CHECK(slow.decode.total < 1.01 * (disk_s + no_io));
    CHECK(slow.bottleneck.find("NVMe") != std::string::npos);
  }
}

TEST_CASE("cache hit rate: one-off insertions against an LRU simulation", "[planner][cost]") {
  // 200 items with Zipf-like reference probabilities, 8 references per step, plus 3 one-off
  // items per step that are never referenced again (wasted read-ahead), LRU of 40 slots.
  const int N = 200, C = 40, per_step = 8;
  const double one_off = 3;
  std::vector<double> f(N);
  double sum = 0;
  for (int i = 0; i < N; ++i) sum += f[size_t(i)] = 1.0 / std::pow(i + 1.0, 0.8);
  for (double& x : f) x *= per_step / sum;  // expected references per step
  std::vector<double> w(f.begin(), f.end());
  std::discrete_distribution<int> pick(w.begin(), w.end());
  std::mt19937 rng(7);
  LruSim lru(C);
  int64_t next_phantom = N;
  for (int step = 0; step < 60000; ++step) {
    const bool warm = step > 5000;
    // A step's experts are distinct (top-k), as in the runtime.
    std::vector<int> chosen;
    while (int(chosen.size()) < per_step) {
      const int k = pick(rng);
      if (std::find(chosen.begin(), chosen.end(), k) == chosen.end()) chosen.push_back(k);
    }
    for (int k : chosen) lru.touch(k, warm);
    for (int r = 0; r < int(one_off); ++r) lru.touch(next_phantom++, false);
  }
  const double simulated = lru.hit_rate();
  // Che's per-step form: an item referenced with probability 1 - exp(-f) per step.
  std::vector<double> q(f.size());
  for (size_t i = 0; i < f.size(); ++i) q[i] = 1.0 - std::exp(-f[i]);
  const double with = cache_hit_rate(q, C, nullptr, one_off), without = cache_hit_rate(q, C, nullptr);
  CHECK(with < without);
  CHECK(with == Approx(simulated).margin(0.04));
}

TEST_CASE("cache hit rate: Che's approximation against uniform theory and an LRU simulation", "[planner][cost]") {
  // Uniform references: LRU holding C of N items hits C/N.
  std::vector<double> u(100, 0.08);
  CHECK(cache_hit_rate(u, 25, nullptr) == Approx(0.25).margin(1e-6));
  CHECK(cache_hit_rate(u, 100, nullptr) == 1.0);
  CHECK(cache_hit_rate(u, 0, nullptr) == 0.0);
  // A skewed (Zipf 0.9) independent reference stream through a real LRU list.
  const int N = 400, C = 60;
  std::vector<double> p(N);
  double sum = 0;
  for (int i = 0; i < N; ++i) sum += p[size_t(i)] = 1.0 / std::pow(i + 1.0, 0.9);
  for (double& x : p) x /= sum;
  std::discrete_distribution<int> pick(p.begin(), p.end());
  std::mt19937 rng(42);
  LruSim lru(C);
  for (int t = 0; t < 400000; ++t) lru.touch(pick(rng), t > 20000);
  const double simulated = lru.hit_rate();
  CHECK(cache_hit_rate(p, C, nullptr) == Approx(simulated).margin(0.02));
}

TEST_CASE("placement file round trip and malformed files", "[planner][placement]") {
  mt::test::TempDir dir("placement");
  Placement p = uniform_placement(5, 2, 7, "q8", 12345, Tier::Ram);
  p.set(2, 0, Tier::Vram);
  p.set(4, 6, Tier::Nvme);
  p.nvme_cache_bytes = 999;
  const auto file = dir.path() / "plan.json";
  REQUIRE(save_placement(file, p, {{"decode_tokens_per_s", 3.5}}).ok());
  auto q = load_placement(file);
  REQUIRE(q.ok());
  CHECK(q->tiers == p.tiers);
  CHECK(q->expert_format == "q8");
  CHECK(q->expert_bytes == 12345);
  CHECK(q->nvme_cache_bytes == 999);
  CHECK(q->first_moe_layer == 2);

  const nlohmann::json good = placement_to_json(p);
  auto expect_error = [&](nlohmann::json j, const std::string& needle) {
    auto r = placement_from_json(j, "plan.json");
    INFO(j.dump());
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().find(needle) != std::string::npos);
    CHECK(r.error().find("plan.json") != std::string::npos);
  };
  nlohmann::json j = good;
  j.erase("expert_bytes");
  expect_error(j, "expert_bytes");
  j = good;
  j["format"] = "something-else";
  expect_error(j, "not a moetier placement");
  j = good;
  j["format"] = 5;  // once an uncaught exception (nlohmann's value() on a non-string)
  expect_error(j, "not a moetier placement");
  j = good;
  j["expert_bytes"] = 1e30;  // a float far outside int64: an error, never a conversion
  expect_error(j, "field 'expert_bytes' is 1e+30");
  j = good;
  j["num_hidden_layers"] = "61";
  expect_error(j, "field 'num_hidden_layers'");
  j = good;
  j["layers"][1]["tiers"] = "RRRRRR";
  expect_error(j, "letters");
  j = good;
  j["layers"][0]["tiers"] = "RRRRRRX";
  expect_error(j, "tier letter");
  j = good;
  j["layers"].erase(2);
  expect_error(j, "one per MoE layer");
  j = good;
  j["layers"][1]["layer"] = 7;
  expect_error(j, "layers[1]");
  j = good;
  j["first_moe_layer"] = 9;
  expect_error(j, "first_moe_layer");
  j = good;
  j["n_routed_experts"] = "7";
  expect_error(j, "n_routed_experts");

  // Truncated file.
  {
    std::ofstream f(dir.path() / "cut.json");
    f << good.dump().substr(0, 40);
  }
  auto cut = load_placement(dir.path() / "cut.json");
  REQUIRE_FALSE(cut.ok());
  CHECK(cut.error().find("cut.json") != std::string::npos);
  CHECK_FALSE(load_placement(dir.path() / "absent.json").ok());
}
