#include "runtime/engine/expert_scheduler.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>

#include "cpu_kernels/ggml_dequant.h"
#include "runtime/core/ggml_types.h"
#include "runtime/core/progress_line.h"

namespace mt {

Result<std::unique_ptr<ExpertScheduler>> ExpertScheduler::open(offload::ExpertStore store, const ExpertSchedulerOptions& o) {
  auto p = std::unique_ptr<ExpertScheduler>(new ExpertScheduler());
  p->store_ = std::move(store);
  const offload::StoreManifest& m = p->store_.manifest();
  ExpertQuant q;
  if (!expert_quant_from_name(m.expert_quant, q))
    return make_error(p->store_.dir().string() + "/manifest.json: unknown expert format '" + m.expert_quant + "'");
  p->geom_ = ExpertGeometry{q, m.hidden, m.inter, m.group};
  p->geom_.ggml_tiles = m.expert_ggml_tiles;
  p->cpu_runner_ = std::make_unique<CpuExpertRunner>(o.kernels);
  p->vram_runner_ = o.vram_runner ? o.vram_runner : p->cpu_runner_.get();
  std::string why;
  if (q == ExpertQuant::GGUF) {
    // The GGUF's block types, layer by layer; each layer's blob fits the (largest) blob size.
    if (o.vram_runner)
      return make_error(p->store_.dir().string() + ": a store of GGUF blocks runs its experts on the CPU; --gpu on "
                        "does not take it yet");
    for (const auto& [layer, types] : m.expert_ggml_types) {
      ExpertGeometry g = p->geom_;
      for (int k = 0; k < 3; ++k) g.ggml[k] = types[size_t(k)];
      if (!expert_geometry_valid(g, &why))
        return make_error(p->store_.dir().string() + "/manifest.json: layer " + std::to_string(layer) +
                          ": unusable expert geometry: " + why);
      for (uint32_t t : types)
        if (!cpu::ggml_can_dequantize(t))
          return make_error(p->store_.dir().string() + "/manifest.json: layer " + std::to_string(layer) +
                            ": moetier has no kernel for " + ggml_type_name(t) + " experts");
      if (expert_blob_layout(g).total_bytes > m.blob_bytes)
        return make_error(p->store_.dir().string() + "/manifest.json: layer " + std::to_string(layer) +
                          "'s experts need more than blob_bytes " + std::to_string(m.blob_bytes) + "; re-run moetier convert");
      p->layer_geom_[layer] = g;
    }
    for (const auto& b : m.blobs)
      if (!p->layer_geom_.count(b.layer))
        return make_error(p->store_.dir().string() + "/manifest.json: layer " + std::to_string(b.layer) +
                          " has expert blobs but no ggml_types; re-run moetier convert");
  } else {
    if (!expert_geometry_valid(p->geom_, &why))
      return make_error(p->store_.dir().string() + "/manifest.json: unusable expert geometry: " + why);
    if (expert_blob_layout(p->geom_).total_bytes != m.blob_bytes)
      return make_error(p->store_.dir().string() + "/manifest.json: blob_bytes " + std::to_string(m.blob_bytes) +
                        " does not match the " + m.expert_quant + " layout of this build; re-run moetier convert");
  }

  int64_t max_layer = 0, max_expert = 0;
  for (const auto& b : m.blobs) max_layer = std::max<int64_t>(max_layer, b.layer), max_expert = std::max<int64_t>(max_expert, b.expert);
  p->predicted_.resize(static_cast<size_t>(max_layer + 1));
  MT_ASSIGN(p->loader_, offload::make_blob_loader(p->store_, o.io));

  // Each blob's tier: resident in the VRAM or RAM tier for the whole run, or streamed.
  std::vector<offload::BlobInfo> in_vram, in_ram, streamed;
  p->tier_.assign(static_cast<size_t>(max_layer + 1),
                  std::vector<planner::Tier>(static_cast<size_t>(max_expert + 1), planner::Tier::Nvme));
  if (o.placement) {
    const planner::Placement& pl = *o.placement;
    const std::string label = "placement";
    if (pl.expert_format != m.expert_quant || pl.expert_bytes != m.blob_bytes)
      return make_error(label + " is for " + pl.expert_format + " experts of " + std::to_string(pl.expert_bytes) +
                        " bytes, but the store at " + p->store_.dir().string() + " holds " + m.expert_quant + " experts of " +
                        std::to_string(m.blob_bytes) + " bytes; re-run moetier plan --model on this store");
    if (pl.num_hidden_layers != max_layer + 1 || pl.n_routed_experts != max_expert + 1)
      return make_error(label + " is for " + std::to_string(pl.num_hidden_layers) + " layers x " +
                        std::to_string(pl.n_routed_experts) + " experts, but the store has " + std::to_string(max_layer + 1) +
                        " x " + std::to_string(max_expert + 1) + "; re-run moetier plan --model on this store");
    for (const auto& b : m.blobs) {
      if (b.layer < pl.first_moe_layer)
        return make_error(label + ": layer " + std::to_string(b.layer) + " has experts in the store but is dense in the plan");
      const planner::Tier t = pl.at(b.layer, b.expert);
      p->tier_[static_cast<size_t>(b.layer)][static_cast<size_t>(b.expert)] = t;
      (t == planner::Tier::Vram ? in_vram : t == planner::Tier::Ram ? in_ram : streamed).push_back(b);
    }
  } else {
    streamed = m.blobs;
  }

  // Without a plan, a budget that holds every expert makes them all resident.
  const uint64_t all_bytes = m.blob_bytes * streamed.size();
  uint64_t budget = 0;
  if (o.placement) budget = std::min<uint64_t>(o.placement->nvme_cache_bytes, all_bytes);
  else budget = o.ram_budget == 0 ? all_bytes : std::min<uint64_t>(o.ram_budget, all_bytes);
  if (!streamed.empty()) {
    if (budget < 2 * m.blob_bytes)
      return make_error("placement: the RAM cache for the " + std::to_string(streamed.size()) +
                        " experts on NVMe holds fewer than 2 experts; re-plan with a larger --nvme-cache");
    offload::CacheOptions co;
    co.budget_bytes = budget;
    co.policy = o.policy;
    co.preallocate = true;  // fail at start-up, not mid-token; lets io_uring register the slots
    MT_ASSIGN(p->cache_, offload::ExpertCache::create(m.blob_bytes, *p->loader_, co));
    p->slots_ = static_cast<size_t>(budget / m.blob_bytes);
  }
  // The resident tiers: exactly their blobs, loaded once, never evicted.
  auto make_resident = [&](const std::vector<offload::BlobInfo>& blobs) -> Result<std::unique_ptr<offload::ExpertCache>> {
    offload::CacheOptions co;
    co.budget_bytes = m.blob_bytes * blobs.size();
    co.policy = "lru";  // never evicts: the budget holds exactly these blobs
    co.preallocate = true;
    co.register_io_buffers = false;  // read once; the streaming cache keeps the registration
    MT_ASSIGN(std::unique_ptr<offload::ExpertCache> c, offload::ExpertCache::create(m.blob_bytes, *p->loader_, co));
    MT_TRY(p->load_all(*c, blobs, o.show_progress));
    return c;
  };
  if (!in_vram.empty() && p->vram_runner_ != p->cpu_runner_.get()) {
    // A VRAM runner of its own keeps its own copy of each blob, so they stream to it through a
    // small cache and the VRAM tier costs no RAM. One it cannot take (the device is full: the
    // plan's VRAM figure and the backend's differ) runs on the CPU from a RAM copy instead.
    p->on_device_.assign(p->tier_.size(), std::vector<bool>(p->tier_.empty() ? 0 : p->tier_[0].size(), false));
    std::vector<offload::BlobInfo> refused;
    MT_TRY(p->upload_to_runner(in_vram, refused, o.show_progress));
    if (!refused.empty()) {
      MT_ASSIGN(p->vram_, make_resident(refused));
    }
  } else if (!in_vram.empty()) {
    MT_ASSIGN(p->vram_, make_resident(in_vram));
  }
  if (!in_ram.empty()) {
    MT_ASSIGN(p->ram_, make_resident(in_ram));
  }
  const size_t resident_count = in_vram.size() + in_ram.size();
  p->all_resident_ = streamed.empty() || (!o.placement && budget >= all_bytes);
  if (p->all_resident_ && p->cache_) MT_TRY(p->load_all(*p->cache_, streamed, o.show_progress));
  p->stats_resident_ = static_cast<int64_t>(resident_count) + (p->all_resident_ ? static_cast<int64_t>(streamed.size()) : 0);
  p->stats_streamed_ = p->all_resident_ ? 0 : static_cast<int64_t>(streamed.size());
  p->prefetch_enabled_ = o.prefetch && !p->all_resident_;
  if (!p->slots_) p->slots_ = resident_count;
  return p;
}

Status ExpertScheduler::load_all(offload::ExpertCache& c, const std::vector<offload::BlobInfo>& blobs, bool progress) {
  uint64_t total = 0, done = 0;
  for (const auto& b : blobs) total += b.bytes;
  for (const auto& b : blobs) c.prefetch(b.layer, b.expert);
  const ProgressLine line;
  for (const auto& b : blobs) {
    MT_ASSIGN(offload::ExpertHandle h, c.get(b.layer, b.expert));
    done += b.bytes;
    if (progress && (done * 20 / total) != ((done - b.bytes) * 20 / total))
      line.show("loading experts into RAM", 100.0 * double(done) / double(total));
  }
  if (progress) line.end();
  c.reset_stats();
  return ok_status();
}

Status ExpertScheduler::upload_to_runner(const std::vector<offload::BlobInfo>& blobs, std::vector<offload::BlobInfo>& refused,
                                         bool progress) {
  const size_t ahead = 16;  // reads in flight while the runner copies
  offload::CacheOptions co;
  co.budget_bytes = store_.manifest().blob_bytes * std::min<size_t>(blobs.size(), 2 * ahead);
  co.policy = "lru";
  co.register_io_buffers = false;
  MT_ASSIGN(std::unique_ptr<offload::ExpertCache> stage,
            offload::ExpertCache::create(store_.manifest().blob_bytes, *loader_, co));
  for (size_t i = 0; i < std::min(ahead, blobs.size()); ++i) stage->prefetch(blobs[i].layer, blobs[i].expert);
  const ProgressLine line;
  for (size_t i = 0; i < blobs.size(); ++i) {
    const offload::BlobInfo& b = blobs[i];
    if (i + ahead < blobs.size()) stage->prefetch(blobs[i + ahead].layer, blobs[i + ahead].expert);
    MT_ASSIGN(offload::ExpertHandle h, stage->get(b.layer, b.expert));
    const Status st = vram_runner_->make_resident(geometry(b.layer), b.layer, b.expert, h.data());
    if (st.ok()) {
      on_device_[size_t(b.layer)][size_t(b.expert)] = true;
    } else {
      if (refused.empty()) vram_refusal_ = st.error();
      refused.push_back(b);
    }
    if (progress && ((i + 1) * 20 / blobs.size()) != (i * 20 / blobs.size()))
      line.show(std::string("copying the VRAM tier's experts to ") + vram_runner_->name(),
                100.0 * double(i + 1) / double(blobs.size()));
  }
  if (progress) line.end();
  vram_on_cpu_ = static_cast<int64_t>(refused.size());
  return ok_status();
}

offload::ExpertCache& ExpertScheduler::cache_for(int64_t layer, int32_t expert) const {
  switch (tier_[static_cast<size_t>(layer)][static_cast<size_t>(expert)]) {
    case planner::Tier::Vram: return *vram_;
    case planner::Tier::Ram: return *ram_;
    case planner::Tier::Nvme: break;
  }
  return *cache_;
}

void ExpertScheduler::prefetch(int64_t layer, std::span<const int32_t> experts) {
  // Most frequent first; at most half the slots so a prediction never evicts what it needs.
  // Resident experts need no read.
  std::map<int32_t, int> count;
  for (int32_t e : experts) ++count[e];
  std::vector<std::pair<int, int32_t>> order;
  for (auto& [e, c] : count) order.push_back({-c, e});
  std::sort(order.begin(), order.end());
  const size_t limit = std::max<size_t>(1, slots_ / 2);
  auto& pred = predicted_[static_cast<size_t>(layer)];
  pred.clear();
  for (size_t i = 0; i < order.size() && pred.size() < limit; ++i) {
    if (tier_[size_t(layer)][size_t(order[i].second)] != planner::Tier::Nvme) continue;  // resident: no read
    offload::ExpertCache& c = *cache_;
    pred.push_back(order[i].second);
    c.prefetch(static_cast<int32_t>(layer), order[i].second);
  }
  n_predicted_ += pred.size();
}

Status ExpertScheduler::apply(int64_t layer, const float* x, int64_t n, const int32_t* experts, const float* weights,
                            int64_t top_k, float* out) {
  // Tokens per expert, in expert order.
  std::map<int32_t, std::pair<std::vector<int32_t>, std::vector<float>>> users;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t k = 0; k < top_k; ++k) {
      auto& u = users[experts[t * top_k + k]];
      u.first.push_back(static_cast<int32_t>(t));
      u.second.push_back(weights[t * top_k + k]);
    }
  auto& pred = predicted_[static_cast<size_t>(layer)];
  if (!pred.empty()) {
    size_t streamed_used = 0;
    for (auto& [e, u] : users) streamed_used += tier_[size_t(layer)][size_t(e)] == planner::Tier::Nvme;
    n_used_ += streamed_used;
    for (int32_t e : pred) n_hit_ += users.count(e);
    pred.clear();
  }
  // With a VRAM runner of its own, the VRAM tier's experts go to it: pinned and launched first,
  // waited for last, into a separate output (a GPU must not race the CPU on `out`).
  using Item = std::pair<const int32_t, std::pair<std::vector<int32_t>, std::vector<float>>>;
  const bool separate_vram = vram_runner_ != cpu_runner_.get();
  std::vector<Item*> on_vram, ready, missing;
  for (auto& it : users) {
    const planner::Tier t = tier_[static_cast<size_t>(layer)][static_cast<size_t>(it.first)];
    if (t == planner::Tier::Vram) ++uses_vram_;
    else if (t == planner::Tier::Ram) ++uses_ram_;
    if (separate_vram && t == planner::Tier::Vram && on_device_[size_t(layer)][size_t(it.first)]) {
      on_vram.push_back(&it);
      continue;
    }
    const bool resident = cache_for(layer, it.first).resident(static_cast<int32_t>(layer), it.first);
    if (t == planner::Tier::Nvme) ++(resident ? uses_nvme_hit_ : uses_nvme_miss_);
    (resident ? ready : missing).push_back(&it);
  }
  ready_ += ready.size() + on_vram.size();
  waited_ += missing.size();

  std::chrono::steady_clock::time_point before_launch{};
  std::vector<cpu::ExpertTask> vram_tasks;
  if (!on_vram.empty()) {
    for (Item* it : on_vram)  // the runner's own copies, by key
      vram_tasks.push_back(cpu::ExpertTask{nullptr, it->second.first.data(), it->second.second.data(),
                                           static_cast<int64_t>(it->second.first.size()), expert_key(layer, it->first)});
    vram_out_.assign(static_cast<size_t>(n * geom_.hidden), 0.0f);
    before_launch = std::chrono::steady_clock::now();
    MT_TRY(vram_runner_->launch(geometry(layer), vram_tasks.data(), static_cast<int64_t>(vram_tasks.size()), x,
                                vram_out_.data()));
  }
  using clock = std::chrono::steady_clock;
  const auto launched = clock::now();

  // Resident blobs next, pinned before any read starts (so a read cannot evict them); then
  // every missing read is started at once, so the disk works while the resident ones compute.
  // At most half the streaming slots are pinned at once, so a prefill that touches every
  // expert streams them through the cache in batches.
  const size_t batch = std::max<size_t>(1, slots_ / 2);
  std::vector<offload::ExpertHandle> pins;
  std::vector<cpu::ExpertTask> tasks;
  auto run = [&](std::vector<Item*>& items, size_t& i, bool start_reads_after_pinning) -> Status {
    pins.clear();
    tasks.clear();
    for (; i < items.size() && tasks.size() < batch; ++i) {
      Item& it = *items[i];
      auto h = cache_for(layer, it.first).get(static_cast<int32_t>(layer), it.first);
      if (!h.ok()) return make_error(h.error());
      tasks.push_back(cpu::ExpertTask{h->data(), it.second.first.data(), it.second.second.data(),
                                      static_cast<int64_t>(it.second.first.size())});
      pins.push_back(std::move(*h));
    }
    if (start_reads_after_pinning)
      for (size_t k = 0; k < missing.size() && k < batch; ++k) cache_->prefetch(static_cast<int32_t>(layer), missing[k]->first);
    return cpu_runner_->launch(geometry(layer), tasks.data(), static_cast<int64_t>(tasks.size()), x, out);
  };
  size_t i = 0;
  bool started = ready.empty();
  if (started)
    for (size_t k = 0; k < missing.size() && k < batch; ++k) cache_->prefetch(static_cast<int32_t>(layer), missing[k]->first);
  while (i < ready.size()) {
    MT_TRY(run(ready, i, !started));
    started = true;
  }
  i = 0;
  while (i < missing.size()) MT_TRY(run(missing, i, false));

  if (!on_vram.empty()) {
    const auto cpu_done = clock::now();
    MT_TRY(vram_runner_->wait());
    const auto waited = clock::now();
    const double launch_s = std::chrono::duration<double>(launched - before_launch).count();
    const double cpu_s = std::chrono::duration<double>(cpu_done - launched).count();
    const double wait_s = std::chrono::duration<double>(waited - cpu_done).count();
    const double busy_s = vram_runner_->last_busy_seconds();
    vram_busy_s_ += busy_s;
    vram_wait_s_ += wait_s;
    if (!ready.empty() || !missing.empty()) {
      // Run one after the other, the two would take busy + cpu; they took launch + cpu + wait.
      hybrid_cpu_s_ += cpu_s;
      overlap_s_ += std::clamp(busy_s + cpu_s - (launch_s + cpu_s + wait_s), 0.0, std::min(cpu_s, busy_s));
    }
    for (int64_t k = 0; k < n * geom_.hidden; ++k) out[k] += vram_out_[static_cast<size_t>(k)];
  }
  return ok_status();
}

ExpertSchedulerStats ExpertScheduler::stats() const {
  ExpertSchedulerStats s;
  if (cache_) s.cache = cache_->stats();
  for (const offload::ExpertCache* r : {vram_.get(), ram_.get()}) {  // resident experts count as hits
    if (!r) continue;
    const offload::CacheStats rs = r->stats();
    s.cache.hits += rs.hits;
    s.cache.resident_bytes += rs.resident_bytes;
    s.cache.budget_bytes += rs.budget_bytes;
    s.cache.allocated_bytes += rs.allocated_bytes;
  }
  // Every needed read is started before the first get(), so the cache's own hit count
  // (a get() that found its blob resident or in flight) says little; count what was resident
  // when its layer began.
  s.cache.hits = ready_;
  s.cache.misses = waited_;
  s.resident_experts = stats_resident_;
  s.streamed_experts = stats_streamed_;
  s.predicted = n_predicted_;
  s.used = n_used_;
  s.predicted_and_used = n_hit_;
  s.all_resident = all_resident_;
  s.uses_vram = uses_vram_;
  s.uses_ram = uses_ram_;
  s.uses_nvme_hit = uses_nvme_hit_;
  s.uses_nvme_miss = uses_nvme_miss_;
  s.vram_on_cpu = vram_on_cpu_;
  s.vram_refusal = vram_refusal_;
  s.vram_busy_s = vram_busy_s_;
  s.hybrid_cpu_s = hybrid_cpu_s_;
  s.vram_wait_s = vram_wait_s_;
  s.overlap_s = overlap_s_;
  return s;
}

Status ExpertScheduler::charge_memory(TierBudget& ram) const {
  if (vram_)
    MT_TRY(ram.charge(vram_runner_ != cpu_runner_.get() ? "VRAM-tier experts the device refused (run on the CPU)"
                                                        : "routed experts of the VRAM tier (held in RAM: no GPU runner)",
                      vram_->stats().allocated_bytes));
  if (ram_) MT_TRY(ram.charge("routed experts of the RAM tier", ram_->stats().allocated_bytes));
  if (cache_)
    MT_TRY(ram.charge(all_resident_ ? "routed experts (all resident)" : "RAM cache of the streamed experts",
                      cache_->stats().allocated_bytes));
  return ram.charge("expert kernels' workspace", cpu_runner_->workspace_bytes());
}

void ExpertScheduler::reset_stats() {
  if (cache_) cache_->reset_stats();
  if (vram_) vram_->reset_stats();
  if (ram_) ram_->reset_stats();
  uses_vram_ = uses_ram_ = uses_nvme_hit_ = uses_nvme_miss_ = 0;
  n_predicted_ = n_used_ = n_hit_ = 0;
  ready_ = waited_ = 0;
  vram_busy_s_ = hybrid_cpu_s_ = vram_wait_s_ = overlap_s_ = 0;
}

}  // namespace mt
