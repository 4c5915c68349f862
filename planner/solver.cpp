#include "planner/solver.h"

#include "planner/dense_format.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <queue>
#include <tuple>

namespace mt::planner {

namespace {

std::string gb(double bytes) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f GB", bytes / 1e9);
  return b;
}

struct Reserved {
  std::vector<Reservation> items;
  uint64_t total = 0;
  void add(std::string what, double bytes) {
    const auto b = static_cast<uint64_t>(std::max(0.0, bytes));
    items.push_back({std::move(what), b});
    total += b;
  }
  std::string list() const {
    std::string s;
    for (const auto& it : items) s += "\n  " + gb(double(it.bytes)) + "  " + it.what;
    return s;
  }
};

// What must live on the GPU before any routed expert: every weight a token touches outside
// the routed experts, its caches for the context, and room to work.
Reserved gpu_reservations(const CostInputs& in) {
  const ModelConfig& c = in.model;
  const ModelSizes s = compute_model_sizes(c);
  const double layers = double(c.num_hidden_layers), ctx = double(in.context), B = double(std::max<int64_t>(1, in.batch));
  const double routed = double(s.moe_layers) * double(c.n_routed_experts) * double(s.expert.fp8_bytes);
  const double non_expert = double(s.main_model.fp8_bytes) - routed;
  Reserved r;
  r.add("attention, indexer, shared experts, dense layers, routers (FP8 as shipped)",
        non_expert - double(s.embedding.fp8_bytes + s.lm_head.fp8_bytes));
  r.add("embedding and lm_head (BF16)", double(s.embedding.fp8_bytes + s.lm_head.fp8_bytes));
  r.add("latent KV cache (bf16, " + std::to_string(in.context) + " tokens x " + std::to_string(in.batch) + ")",
        ctx * layers * double(c.kv_lora_rank + c.qk_rope_head_dim) * 2.0 * B);
  if (c.arch == ModelArch::V32)
    r.add("indexer key cache (FP8 + scale)", ctx * layers * double(c.index_head_dim + 4) * B);
  r.add("workspace (activations, logits, cuBLAS, CUDA graphs)",
        double(1u << 30) + B * double(c.vocab_size) * 4.0 + double(in.prefill_chunk) * double(c.hidden_size) * 4.0 * 16.0);
  return r;
}

// What the host needs besides routed experts. Without a GPU that is the whole non-expert
// model as the CPU engine holds it (dense weights in the form in.dense_format names, fp32
// caches); its default backend reads kv_b as stored for absorbed attention (only `--backend
// reference` keeps an fp32 copy); with a GPU, staging buffers and workspace.
Reserved ram_reservations(const CostInputs& in, bool gpu) {
  const ModelConfig& c = in.model;
  const double layers = double(c.num_hidden_layers), ctx = double(in.context), B = double(std::max<int64_t>(1, in.batch));
  Reserved r;
  if (gpu) {
    r.add("pinned staging buffers", double(256u << 20));
  } else {
    const std::string f = dense_format_valid(in.dense_format) ? in.dense_format : "fp8";
    r.add(in.dense_override ? std::string("non-expert weights (as the GGUF file holds them, mapped)")
          : f == "q8" || f == "q4" ? "non-expert weights (" + f + ", mapped)" : "non-expert weights (FP8 as shipped, mapped)",
          dense_bytes_of(in).resident);
    r.add("latent KV cache (fp32, " + std::to_string(in.context) + " tokens x " + std::to_string(in.batch) + ")",
          ctx * layers * double(c.kv_lora_rank + c.qk_rope_head_dim) * 4.0 * B);
    if (c.arch == ModelArch::V32) r.add("indexer key cache (fp32)", ctx * layers * double(c.index_head_dim) * 4.0 * B);
  }
  if (gpu) {
    r.add("workspace (activations, logits)",
          double(512u << 20) + B * double(c.vocab_size) * 4.0 + double(in.prefill_chunk) * double(c.hidden_size) * 4.0 * 16.0);
  } else {
    // What the CPU graph holds while a prefill chunk of P rows runs (DeepSeekModel's buffers:
    // residual, norm and delta rows; q latent, q, kv latent and rope, attention heads; the
    // larger FFN's gate and up rows; the routed experts' intermediates; the indexer queries),
    // logits, and the process itself (code, libraries, tokenizer: ~40 MB measured on the wide
    // model, rounded up). Measured on the wide q4 store with a plan (docs/benchmarks.md): RSS
    // within a few percent of everything the plan charges.
    const double P = double(std::max<int64_t>(in.prefill_chunk, in.batch)), H = double(c.num_attention_heads);
    const double ffn = double(std::max(c.intermediate_size, c.n_shared_experts * c.moe_intermediate_size));
    const double per_row = 3.0 * double(c.hidden_size) + double(c.q_lora_rank) + H * double(c.qk_head_dim()) +
                           2.0 * double(c.kv_lora_rank + c.qk_rope_head_dim) + H * double(c.v_head_dim) + 2.0 * ffn +
                           double(c.num_experts_per_tok * c.moe_intermediate_size) +
                           (c.arch == ModelArch::V32 ? double(c.index_n_heads * c.index_head_dim) : 0.0);
    r.add("workspace (activations of a " + std::to_string(in.prefill_chunk) + "-token chunk, logits, the process)",
          double(64u << 20) + 4.0 * P * per_row + B * double(c.vocab_size) * 4.0);
  }
  return r;
}

struct Candidate {
  Plan plan;
  bool ok = false;
};

// Places experts for one NVMe cache size. `slots_*` are expert counts.
Result<Plan> place(const PlanRequest& req, const Plan& base, int64_t vram_slots, int64_t ram_slots,
                   uint64_t nvme_cache_bytes, bool gpu) {
  const CostInputs& in = req.cost;
  const ModelConfig& c = in.model;
  Plan plan = base;
  Placement& p = plan.placement;
  p.nvme_cache_bytes = nvme_cache_bytes;
  const int64_t first = p.first_moe_layer, L = p.moe_layers(), E = p.n_routed_experts;
  std::vector<std::vector<char>> fixed(static_cast<size_t>(L), std::vector<char>(static_cast<size_t>(E), 0));
  for (auto& row : p.tiers) std::fill(row.begin(), row.end(), Tier::Nvme);
  int64_t pins_per_tier[kTierCount] = {0, 0, 0};
  for (const Pin& pin : req.pins) {
    auto& f = fixed[static_cast<size_t>(pin.layer - first)][static_cast<size_t>(pin.expert)];
    if (f && p.at(pin.layer, pin.expert) != pin.tier)
      return make_error("pins disagree about layer " + std::to_string(pin.layer) + " expert " + std::to_string(pin.expert));
    if (!f) ++pins_per_tier[int(pin.tier)];
    f = true;
    p.set(pin.layer, pin.expert, pin.tier);
  }
  if (pins_per_tier[0] > vram_slots)
    return make_error(std::to_string(pins_per_tier[0]) + " experts are pinned to VRAM but it has room for " +
                      std::to_string(std::max<int64_t>(0, vram_slots)) + " after its reservations");
  if (pins_per_tier[1] > ram_slots)
    return make_error(std::to_string(pins_per_tier[1]) + " experts are pinned to RAM but it has room for " +
                      std::to_string(std::max<int64_t>(0, ram_slots)) + " after its reservations and the NVMe cache");

  const double B = double(std::max<int64_t>(1, in.batch));
  auto used = [&](int64_t l, int64_t e) { return expert_use_probability(in.stats.frequency(l, e), B); };
  // Free experts of each layer, most used first.
  std::vector<std::vector<int64_t>> order(static_cast<size_t>(L));
  for (int64_t l = 0; l < L; ++l) {
    for (int64_t e = 0; e < E; ++e)
      if (!fixed[static_cast<size_t>(l)][static_cast<size_t>(e)]) order[static_cast<size_t>(l)].push_back(e);
    std::stable_sort(order[static_cast<size_t>(l)].begin(), order[static_cast<size_t>(l)].end(),
                     [&](int64_t a, int64_t b) { return used(first + l, a) > used(first + l, b); });
  }

  // VRAM: exact marginal gain of the layer's next most-used expert, best layer first.
  int64_t vram_left = vram_slots - pins_per_tier[0];
  if (gpu && vram_left > 0) {
    const CostRates rates = cost_rates(in);  // the same rates predict() will use
    const double gpu_gbs = rates.gpu_gbs, cpu_gbs = rates.cpu_expert_gbs;
    const ModelSizes s = compute_model_sizes(c);
    const double shared_t = double(s.shared_expert.fp8_bytes) / (gpu_gbs * 1e9);
    const double eb = double(p.expert_bytes);
    std::vector<double> g(static_cast<size_t>(L), shared_t), cpu(static_cast<size_t>(L), 0.0);
    for (int64_t l = 0; l < L; ++l)
      for (int64_t e = 0; e < E; ++e) {
        const double u = used(first + l, e);
        (p.tiers[static_cast<size_t>(l)][static_cast<size_t>(e)] == Tier::Vram ? g[static_cast<size_t>(l)] : cpu[static_cast<size_t>(l)]) +=
            u * eb / ((p.tiers[static_cast<size_t>(l)][static_cast<size_t>(e)] == Tier::Vram ? gpu_gbs : cpu_gbs) * 1e9);
      }
    std::vector<size_t> next(static_cast<size_t>(L), 0);
    auto gain = [&](int64_t l) -> double {
      const auto li = static_cast<size_t>(l);
      if (next[li] >= order[li].size()) return -1;
      const double u = used(first + l, order[li][next[li]]);
      const double before = std::max(g[li], cpu[li]);
      const double after = std::max(g[li] + u * eb / (gpu_gbs * 1e9), cpu[li] - u * eb / (cpu_gbs * 1e9));
      return before - after;
    };
    // Largest gain first; on a tie (a uniform prior), the layer with the fewest VRAM experts,
    // so equal layers share the GPU evenly.
    std::priority_queue<std::tuple<double, int64_t, int64_t>> heap;
    for (int64_t l = 0; l < L; ++l) heap.push({gain(l), -int64_t(next[size_t(l)]), -l});
    while (vram_left > 0 && !heap.empty()) {
      auto [gv, nk, nl] = heap.top();
      heap.pop();
      const int64_t l = -nl;
      if (gv <= 0) break;  // the best move no longer shortens any layer
      const auto li = static_cast<size_t>(l);
      const int64_t e = order[li][next[li]++];
      const double u = used(first + l, e);
      g[li] += u * eb / (gpu_gbs * 1e9);
      cpu[li] -= u * eb / (cpu_gbs * 1e9);
      p.set(first + l, e, Tier::Vram);
      --vram_left;
      heap.push({gain(l), -int64_t(next[li]), -l});
    }
    // Erase the VRAM choices from the orders so that RAM sees only what is left.
    for (int64_t l = 0; l < L; ++l) {
      auto& o = order[static_cast<size_t>(l)];
      o.erase(o.begin(), o.begin() + static_cast<std::ptrdiff_t>(next[static_cast<size_t>(l)]));
    }
  }

  // RAM: the most used of everything left, across layers; equally used experts are taken
  // round-robin over layers (by rank within their layer), so that with a uniform prior every
  // layer keeps the same share in RAM and no layer is left to wait on the disk alone.
  struct Left {
    double used;
    size_t rank;
    int64_t layer, expert;
  };
  std::vector<Left> rest;
  for (int64_t l = 0; l < L; ++l) {
    const auto& o = order[static_cast<size_t>(l)];
    for (size_t k = 0; k < o.size(); ++k) rest.push_back({used(first + l, o[k]), k, first + l, o[k]});
  }
  std::stable_sort(rest.begin(), rest.end(), [](const Left& a, const Left& b) {
    return a.used != b.used ? a.used > b.used : a.rank < b.rank;
  });
  int64_t ram_left = ram_slots - pins_per_tier[1];
  for (const Left& x : rest) {
    if (ram_left <= 0) break;
    p.set(x.layer, x.expert, Tier::Ram);
    --ram_left;
  }
  const int64_t on_nvme = p.count(Tier::Nvme);
  if (on_nvme > 0 && in.machine.disk_read_gbs <= 0)
    return make_error("does not fit: " + std::to_string(on_nvme) + " experts (" + gb(double(on_nvme) * double(p.expert_bytes)) +
                      ") fit neither in VRAM nor in RAM, and the machine has no disk to stream them from");
  if (on_nvme == 0) p.nvme_cache_bytes = 0;
  plan.prediction = predict(in, p);
  return plan;
}

}  // namespace

Result<std::vector<Pin>> parse_pin(const std::string& text, const ModelConfig& c) {
  const std::string usage = "--pin '" + text + "': expected LAYER:EXPERT=TIER (TIER vram, ram or nvme; EXPERT may be *)";
  const auto colon = text.find(':'), eq = text.find('=');
  if (colon == std::string::npos || eq == std::string::npos || eq < colon) return make_error(usage);
  const std::string ls = text.substr(0, colon), es = text.substr(colon + 1, eq - colon - 1), ts = text.substr(eq + 1);
  auto to_int = [](const std::string& s, int64_t& v) {
    if (s.empty() || s.size() > 9 || s.find_first_not_of("0123456789") != std::string::npos) return false;
    v = std::stoll(s);
    return true;
  };
  int64_t layer = 0, expert = 0;
  Tier t;
  if (!to_int(ls, layer) || (es != "*" && !to_int(es, expert)) || !tier_from_name(ts, t)) return make_error(usage);
  if (layer >= c.num_hidden_layers || !c.is_moe_layer(layer))
    return make_error("--pin '" + text + "': layer " + ls + " is not a MoE layer of this model (MoE layers are " +
                      std::to_string(c.first_k_dense_replace) + ".." + std::to_string(c.num_hidden_layers - 1) + ")");
  if (es != "*" && expert >= c.n_routed_experts)
    return make_error("--pin '" + text + "': expert " + es + " is out of range (0.." +
                      std::to_string(c.n_routed_experts - 1) + ")");
  std::vector<Pin> pins;
  if (es == "*")
    for (int64_t e = 0; e < c.n_routed_experts; ++e) pins.push_back({layer, e, t});
  else
    pins.push_back({layer, expert, t});
  return pins;
}

Result<Plan> make_plan(const PlanRequest& req) {
  const CostInputs& in = req.cost;
  const ModelConfig& c = in.model;
  const MachineProfile& m = in.machine;
  if (in.expert_bytes == 0) return make_error("planner: expert size is 0 (unknown expert format?)");
  if (in.context < 1 || in.batch < 1) return make_error("planner: context and batch must be at least 1");

  Plan base;
  base.gpu = in.use_gpu && m.gpu.present;
  base.placement = uniform_placement(c.num_hidden_layers, c.first_k_dense_replace, c.n_routed_experts,
                                     in.expert_format, in.expert_bytes, Tier::Nvme);
  for (const Pin& pin : req.pins) {
    if (pin.tier == Tier::Vram && !base.gpu)
      return make_error("--pin " + std::to_string(pin.layer) + ":" + std::to_string(pin.expert) +
                        "=vram, but this plan has no GPU");
    if (pin.tier == Tier::Nvme && m.disk_read_gbs <= 0)
      return make_error("--pin " + std::to_string(pin.layer) + ":" + std::to_string(pin.expert) +
                        "=nvme, but this machine has no disk figures (run moetier profile --model DIR, or give disk= in --hardware)");
  }

  // VRAM.
  int64_t vram_slots = 0;
  if (base.gpu) {
    const uint64_t free = m.gpu.vram_free_bytes ? m.gpu.vram_free_bytes : m.gpu.vram_total_bytes;
    base.vram_budget = req.vram_budget ? req.vram_budget : (free > req.vram_headroom ? free - req.vram_headroom : 0);
    Reserved r = gpu_reservations(in);
    base.vram_reserved = r.items;
    base.vram_reserved_bytes = r.total;
    if (r.total > base.vram_budget)
      return make_error("does not fit: the GPU budget is " + gb(double(base.vram_budget)) + " but what must live on the GPU needs " +
                        gb(double(r.total)) + ":" + r.list() +
                        "\nlower --context or --batch, raise --vram-budget, or plan without the GPU (--no-gpu)");
    vram_slots = static_cast<int64_t>((base.vram_budget - r.total) / in.expert_bytes);
  }
  // RAM.
  const uint64_t avail = m.ram_available_bytes ? m.ram_available_bytes : m.ram_total_bytes;
  base.ram_budget = req.ram_budget ? req.ram_budget : (avail > req.ram_headroom ? avail - req.ram_headroom : 0);
  Reserved rr = ram_reservations(in, base.gpu);
  if (req.expert_ram_budget) base.ram_budget = rr.total + req.expert_ram_budget;
  base.ram_reserved = rr.items;
  base.ram_reserved_bytes = rr.total;
  if (rr.total > base.ram_budget)
    return make_error("does not fit: the RAM budget is " + gb(double(base.ram_budget)) + " but the runtime itself needs " +
                      gb(double(rr.total)) + ":" + rr.list() + "\nlower --context or --batch, or raise --ram-budget");
  const uint64_t ram_room = base.ram_budget - rr.total;

  const int64_t total = base.placement.moe_layers() * c.n_routed_experts;
  const auto eb = in.expert_bytes;
  // The cache must hold the experts one layer pins at once plus the next layer's prefetch.
  const uint64_t min_cache = 2 * uint64_t(std::max<int64_t>(1, c.num_experts_per_tok)) *
                             uint64_t(std::min<int64_t>(in.batch, 4)) * eb;
  std::vector<uint64_t> caches;
  if (req.nvme_cache_bytes >= 0) {
    caches.push_back(static_cast<uint64_t>(req.nvme_cache_bytes));
  } else if (vram_slots + int64_t(ram_room / eb) >= total &&
             std::none_of(req.pins.begin(), req.pins.end(), [](const Pin& p) { return p.tier == Tier::Nvme; })) {
    caches.push_back(0);  // everything fits without NVMe
  } else {
    for (double f : {0.0, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0}) {
      const uint64_t cb = std::max<uint64_t>(min_cache, static_cast<uint64_t>(f * double(ram_room)));
      if (cb <= ram_room && (caches.empty() || caches.back() != cb)) caches.push_back(cb);
    }
    if (caches.empty())
      return make_error("does not fit: RAM has " + gb(double(ram_room)) + " left for experts, less than the " + gb(double(min_cache)) +
                        " the NVMe experts' cache needs (two layers of " + std::to_string(c.num_experts_per_tok) + " experts)");
  }
  Result<Plan> best = make_error("no candidate plan");
  for (uint64_t cb : caches) {
    const int64_t ram_slots = static_cast<int64_t>((ram_room - std::min(ram_room, cb)) / eb);
    Result<Plan> p = place(req, base, vram_slots, ram_slots, cb, base.gpu);
    if (!p) {
      if (caches.size() == 1) return p;
      if (!best.ok()) best = std::move(p);  // keep the first reason in case no size works
      continue;
    }
    if (p->placement.count(Tier::Nvme) > 0 && p->placement.nvme_cache_bytes > 0 &&
        p->placement.nvme_cache_bytes < min_cache && req.nvme_cache_bytes >= 0)
      return make_error("--nvme-cache " + gb(double(cb)) + " is too small: it must hold at least " +
                        std::to_string(min_cache / eb) + " experts (" + gb(double(min_cache)) + ")");
    if (p->placement.count(Tier::Nvme) > 0 && p->placement.nvme_cache_bytes == 0)
      return make_error("--nvme-cache 0 leaves no RAM cache for the " + std::to_string(p->placement.count(Tier::Nvme)) +
                        " experts on NVMe; give at least " + gb(double(min_cache)));
    // Candidates come smallest cache first; a larger cache must win by a clear margin, since
    // static residence costs no cache bookkeeping and is what the model is surest about.
    if (!best.ok() || p->prediction.decode_tokens_per_s > best->prediction.decode_tokens_per_s * 1.005)
      best = std::move(p);
  }
  if (!best) return best;
  Plan& plan = *best;

  // Notes and warnings for people.
  if (in.stats.uniform_prior)
    plan.notes.push_back("no activation trace: a uniform prior, every expert equally likely (moetier trace --model DIR "
                         "--prompts FILE records real frequencies and improves the plan)");
  if (m.source.rfind("measured", 0) != 0) plan.notes.push_back("hardware: " + m.source);
  if (plan.gpu)
    plan.notes.push_back("GPU figures assume the hybrid GPU+CPU runtime (attention and VRAM experts on the GPU, "
                         "overlapped with CPU experts); this build runs VRAM-tier experts on the CPU from RAM");
  if (in.expert_format == "fp8")
    plan.notes.push_back("fp8 experts on the CPU are costed at the bf16 kernel's bytes/s (no fp8 CPU kernel yet)");
  const Prediction& pr = plan.prediction;
  if (pr.share_nvme_miss > 0.25) {
    char b[256];
    std::snprintf(b, sizeof b,
                  "%.0f%% of expert reads miss the RAM cache and wait for NVMe (%.1f MB per token): decode is "
                  "disk-bound; more RAM or a faster disk helps most",
                  100 * pr.share_nvme_miss, pr.expert_bytes_from_disk_per_token / 1e6);
    plan.warnings.push_back(b);
  }
  if (pr.decode_tokens_per_s < 1.0) {
    char b[160];
    std::snprintf(b, sizeof b, "predicted decode is %.2f tokens/s: usable for batch jobs, too slow for chat",
                  pr.decode_tokens_per_s);
    plan.warnings.push_back(b);
  }
  return best;
}

}  // namespace mt::planner
