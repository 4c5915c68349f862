// The engine over synthetic checkpoints: make-model output binds completely, forward rejects
// bad requests without touching the cache, and outputs are sane and deterministic.
#include <catch2/catch.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <unistd.h>
#include <sstream>
#include <csignal>
#include <sys/wait.h>

#include "cpu_kernels/expert_ffn.h"
#include "cpu_kernels/ops.h"
#include "cpu_kernels/cpu_backend.h"
#include "cpu_kernels/reference_backend.h"
#include "offload/expert_store.h"
#include "planner/model_size.h"
#include "runtime/core/ggml_types.h"
#include "runtime/engine/engine.h"
#include "runtime/engine/expert_scheduler.h"
#include "runtime/model/deepseek_model.h"
#include "tools/moetier/convert.h"
#include "tools/moetier/synthetic_model.h"
#include "tests/unit/guarded_backend.h"

using namespace mt;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("moetier_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p;
}

fs::path make(const std::string& name, ModelArch arch, bool fp8, uint64_t seed, int64_t shard_bytes = 8'000'000) {
  SyntheticModelOptions o;
  o.config = *preset_config("tiny", arch);
  o.fp8 = fp8;
  o.seed = seed;
  o.shard_bytes = shard_bytes;
  o.tokenizer = fs::path(MOETIER_TEST_DATA) / "tokenizer-deepseek-v3";
  o.out = temp_dir(name);
  Status st = write_synthetic_model(o, nullptr);
  INFO((st.ok() ? std::string() : st.error()));
  REQUIRE(st.ok());
  return o.out;
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

}  // namespace

TEST_CASE("make-model output holds exactly the expected tensors and binds", "[runtime]") {
  for (auto arch : {ModelArch::V3, ModelArch::V32}) {
    for (bool fp8 : {true, false}) {
      const fs::path dir = make("bind", arch, fp8, 7);
      auto w = ModelWeights::load(dir);
      INFO((w.ok() ? std::string() : w.error()));
      REQUIRE(w.ok());
      const ModelConfig& c = w->config;
      std::set<std::string> names;
      for (const auto& [name, info] : w->store.tensors()) names.insert(name);
      std::set<std::string> expected;
      for (const auto& t : checkpoint_layout(c)) {
        expected.insert(t.name);
        if (fp8 && t.role == TensorRole::Linear) expected.insert(t.name + "_scale_inv");
      }
      CHECK(names == expected);
      CHECK(fs::exists(dir / "model.safetensors.index.json"));
      CHECK(fs::exists(dir / "tokenizer.json"));
      // The planner's closed-form size equals what was written (FP8 layout only).
      if (fp8) {
        int64_t bytes = 0;
        for (const auto& [name, info] : w->store.tensors()) bytes += static_cast<int64_t>(info.nbytes);
        CHECK(bytes == planner::compute_model_sizes(c).main_model.fp8_bytes);
      }
      fs::remove_all(dir);
    }
  }
}

TEST_CASE("make-model is deterministic by seed and independent of sharding", "[runtime]") {
  const fs::path a = make("seed_a", ModelArch::V3, true, 11);
  const fs::path b = make("seed_b", ModelArch::V3, true, 11, 0);  // single file
  const fs::path c = make("seed_c", ModelArch::V3, true, 12);
  auto wa = ModelWeights::load(a), wb = ModelWeights::load(b), wc = ModelWeights::load(c);
  REQUIRE(wa.ok());
  REQUIRE(wb.ok());
  REQUIRE(wc.ok());
  CHECK(fs::exists(b / "model.safetensors"));
  bool all_same = true, any_diff = false;
  for (const auto& [name, ta] : wa->store.tensors()) {
    const TensorInfo* tb = wb->store.find(name);
    const TensorInfo* tc = wc->store.find(name);
    REQUIRE(tb);
    REQUIRE(tc);
    all_same = all_same && ta.nbytes == tb->nbytes && std::equal(ta.data, ta.data + ta.nbytes, tb->data);
    any_diff = any_diff || !std::equal(ta.data, ta.data + ta.nbytes, tc->data);
  }
  CHECK(all_same);
  CHECK(any_diff);
  CHECK(slurp(a / "config.json") == slurp(c / "config.json"));
  for (auto& d : {a, b, c}) fs::remove_all(d);
}

TEST_CASE("forward rejects bad requests and leaves the cache untouched", "[runtime]") {
  const fs::path dir = make("reject", ModelArch::V3, true, 3);
  auto w = ModelWeights::load(dir);
  REQUIRE(w.ok());
  DeepSeekModel model(std::move(*w), cpu::make_reference_backend());
  auto cache_ptr = model.make_cache(8);
  backend::AttentionCache& cache = *cache_ptr;
  std::vector<float> logits;
  std::vector<int32_t> none;
  auto st = model.forward(none, cache, false, logits);
  CHECK_FALSE(st.ok());
  std::vector<int32_t> bad = {0, 5, static_cast<int32_t>(model.config().vocab_size)};
  st = model.forward(bad, cache, false, logits);
  REQUIRE_FALSE(st.ok());
  CHECK_THAT(st.error(), Catch::Contains("outside the model's vocabulary"));
  std::vector<int32_t> long_prompt(9, 5);
  st = model.forward(long_prompt, cache, false, logits);
  REQUIRE_FALSE(st.ok());
  CHECK_THAT(st.error(), Catch::Contains("exceed the context"));
  CHECK(cache.size() == 0);
  std::vector<int32_t> ok = {0, 1000, 2000};
  REQUIRE(model.forward(ok, cache, false, logits).ok());
  CHECK(cache.size() == 3);
  fs::remove_all(dir);
}

TEST_CASE("synthetic models produce sane, position-dependent logits", "[runtime]") {
  for (auto arch : {ModelArch::V3, ModelArch::V32}) {
    const fs::path dir = make("sane", arch, true, 5);
    auto w = ModelWeights::load(dir);
    REQUIRE(w.ok());
    DeepSeekModel model(std::move(*w), cpu::make_reference_backend());
    const int64_t n = 24, V = model.config().vocab_size;
    auto cache_ptr = model.make_cache(n);
    backend::AttentionCache& cache = *cache_ptr;
    std::vector<int32_t> ids;
    for (int64_t i = 0; i < n; ++i) ids.push_back(static_cast<int32_t>((i * 7919 + 13) % 128000));
    std::vector<float> logits;
    REQUIRE(model.forward(ids, cache, true, logits).ok());
    REQUIRE(static_cast<int64_t>(logits.size()) == n * V);
    std::set<int64_t> argmaxes;
    for (int64_t t = 0; t < n; ++t) {
      const float* row = &logits[t * V];
      double sum = 0, sq = 0;
      int64_t best = 0, non_finite = 0;
      for (int64_t v = 0; v < V; ++v) {
        non_finite += !std::isfinite(row[v]);
        sum += row[v];
        sq += double(row[v]) * row[v];
        if (row[v] > row[best]) best = v;
      }
      REQUIRE(non_finite == 0);
      const double sd = std::sqrt(sq / V - (sum / V) * (sum / V));
      CHECK(sd > 0.5);   // not collapsed
      CHECK(sd < 50.0);  // not exploding
      argmaxes.insert(best);
    }
    CHECK(argmaxes.size() > n / 2);  // no collapse to one token
    fs::remove_all(dir);
  }
}

TEST_CASE("convert to a bf16 store round-trips a BF16 checkpoint's experts exactly", "[runtime][convert]") {
  const fs::path hf = make("bf16_src", ModelArch::V3, /*fp8=*/false, 9);
  const fs::path dst = temp_dir("bf16_store");
  ConvertOptions co;
  co.src = hf;
  co.dst = dst;
  co.quant = ExpertQuant::BF16;
  Status st = convert_to_store(co, nullptr);
  INFO((st.ok() ? std::string() : st.error()));
  REQUIRE(st.ok());
  auto w = ModelWeights::load(hf);
  auto store = offload::ExpertStore::open(dst);
  REQUIRE(w.ok());
  REQUIRE(store.ok());
  const ModelConfig& c = w->config;
  const ExpertGeometry g{ExpertQuant::BF16, c.hidden_size, c.moe_intermediate_size, 32};
  const int64_t D = c.hidden_size, W = c.moe_intermediate_size;
  std::vector<float> gate(static_cast<size_t>(W * D)), up(gate.size()), down(gate.size());
  std::vector<float> rg(gate.size()), ru(gate.size()), rd(gate.size());
  int64_t checked = 0;
  for (const auto& b : store->manifest().blobs) {
    std::ifstream f(store->file_path(b.file), std::ios::binary);
    std::vector<uint8_t> blob(b.bytes);
    f.seekg(static_cast<std::streamoff>(b.offset));
    f.read(reinterpret_cast<char*>(blob.data()), static_cast<std::streamsize>(b.bytes));
    REQUIRE(f.good());
    cpu::unpack_expert(g, blob.data(), gate.data(), up.data(), down.data());
    const FfnWeights& e = w->layers[static_cast<size_t>(b.layer)].experts[static_cast<size_t>(b.expert)];
    cpu::dequantize_rows(e.gate.view(), 0, W, rg.data());
    cpu::dequantize_rows(e.up.view(), 0, W, ru.data());
    cpu::dequantize_rows(e.down.view(), 0, D, rd.data());
    CHECK(gate == rg);
    CHECK(up == ru);
    CHECK(down == rd);
    ++checked;
  }
  CHECK(checked == (c.num_hidden_layers - c.first_k_dense_replace) * c.n_routed_experts);
  fs::remove_all(hf);
  fs::remove_all(dst);
}

TEST_CASE("the graph names its intermediates, and the names carry the tensors it computes", "[runtime]") {
  for (auto arch : {ModelArch::V3, ModelArch::V32}) {
    const fs::path dir = make("named", arch, true, 9);
    auto w = ModelWeights::load(dir);
    REQUIRE(w.ok());
    DeepSeekModel model(std::move(*w), cpu::make_reference_backend());
    const ModelConfig& c = model.config();
    const int64_t n = 12;  // more than the tiny V3.2's index_topk of 8
    auto cache = model.make_cache(n);
    std::map<std::string, int> count;
    std::vector<float> named_logits, last_residual, last_attn_out, last_ffn_out, prev_residual;
    model.set_tensor_callback([&](const char* name, int64_t layer, TensorView t) {
      ++count[name];
      const std::vector<float> v(t.all().begin(), t.all().end());
      const int64_t rows = t.rows, cols = t.cols;
      const std::string s(name);
      if (s == "logits") named_logits = v;
      if (s == "residual") prev_residual = last_residual, last_residual = v;
      if (s == "attn_out" && layer == c.num_hidden_layers - 1) last_attn_out = v;
      if (s == "ffn_out" && layer == c.num_hidden_layers - 1) last_ffn_out = v;
      CHECK(rows > 0);
      CHECK(cols > 0);
    });
    std::vector<int32_t> ids;
    for (int64_t i = 0; i < n; ++i) ids.push_back(static_cast<int32_t>((i * 7919 + 13) % 128000));
    std::vector<float> logits;
    REQUIRE(model.forward(ids, *cache, true, logits).ok());
    const auto L = static_cast<int>(c.num_hidden_layers);
    CHECK(count["embed"] == 1);
    CHECK(count["logits"] == 1);
    for (const char* per_layer : {"attn_norm", "q", "kv_latent", "attn_heads", "attn_out", "ffn_norm", "ffn_out", "residual"})
      CHECK(count[per_layer] == L);
    const int moe = static_cast<int>(c.num_hidden_layers - c.first_k_dense_replace);
    CHECK(count["routed_out"] == moe);
    CHECK(count["index_q"] == (arch == ModelArch::V32 ? L : 0));
    // The named logits are the returned ones, and the last residual is the previous one plus
    // the last layer's attention and FFN outputs (the graph's own sums, recomputed here).
    CHECK(named_logits == logits);
    REQUIRE(last_residual.size() == prev_residual.size());
    double worst = 0;
    for (size_t i = 0; i < last_residual.size(); ++i)
      worst = std::max(worst, std::fabs(double(prev_residual[i]) + last_attn_out[i] + last_ffn_out[i] - last_residual[i]) /
                                  (1.0 + std::fabs(double(last_residual[i]))));
    CHECK(worst < 1e-5);
    fs::remove_all(dir);
  }
}

namespace {

// A stand-in for a GPU runner: keeps its own copies of its experts and computes on the CPU,
// but records what it was given and when.
struct RecordingRunner final : ExpertRunner {
  CpuExpertRunner cpu{cpu::ExpertKernelConfig{}};
  std::map<int64_t, std::vector<uint8_t>> copies;  // by expert_key
  std::vector<std::vector<int32_t>> token_sets;    // per task, the tokens it ran
  std::vector<std::string>* events = nullptr;
  const char* name() const override { return "recording"; }
  Status make_resident(const ExpertGeometry& g, int64_t layer, int64_t expert, const uint8_t* blob) override {
    copies[expert_key(layer, expert)].assign(blob, blob + expert_blob_layout(g).total_bytes);
    return ok_status();
  }
  Status launch(const ExpertGeometry& g, const cpu::ExpertTask* tasks, int64_t n, const float* x, float* y) override {
    events->push_back("vram launch");
    std::vector<cpu::ExpertTask> own(tasks, tasks + n);
    for (auto& t : own) {
      token_sets.emplace_back(t.tokens, t.tokens + t.n);
      t.blob = copies.at(t.key).data();
    }
    return cpu.launch(g, own.data(), n, x, y);
  }
  Status wait() override {
    events->push_back("vram wait");
    return ok_status();
  }
};

}  // namespace

TEST_CASE("the expert scheduler sends each expert to its tier's runner and overlaps the VRAM tier", "[runtime]") {
  SyntheticModelOptions o;
  o.config = *preset_config("tiny", ModelArch::V3);
  o.seed = 4;
  o.tokenizer = fs::path(MOETIER_TEST_DATA) / "tokenizer-deepseek-v3";
  o.out = temp_dir("scheduler");
  o.packed = true;
  o.packed_quant = ExpertQuant::Q8;
  REQUIRE(write_synthetic_model(o, nullptr).ok());
  const ModelConfig& c = o.config;
  const int64_t L = c.first_k_dense_replace, E = c.n_routed_experts, D = c.hidden_size;
  auto store = offload::ExpertStore::open(o.out);
  REQUIRE(store.ok());
  const uint64_t blob = store->manifest().blob_bytes;

  // Layer L: experts 0, 1 in VRAM, 2, 3 in RAM, the rest on NVMe behind a 4-expert cache.
  planner::Placement pl = planner::uniform_placement(c.num_hidden_layers, c.first_k_dense_replace, E, "q8", blob,
                                                     planner::Tier::Nvme);
  for (int64_t e : {0, 1}) pl.set(L, e, planner::Tier::Vram);
  for (int64_t e : {2, 3}) pl.set(L, e, planner::Tier::Ram);
  pl.nvme_cache_bytes = 4 * blob;

  // Four tokens, two experts each; every expert's token set is distinct.
  const int64_t n = 4, K = 2;
  const std::vector<int32_t> chosen = {0, 2, 1, 5, 0, 7, 3, 9};
  const std::vector<float> weight = {0.5f, 0.25f, 0.75f, 0.5f, 1.0f, 0.125f, 0.5f, 0.5f};
  std::vector<float> x(static_cast<size_t>(n * D));
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (float& v : x) v = nd(rng);

  std::vector<std::string> events;
  RecordingRunner gpu;
  gpu.events = &events;
  ExpertSchedulerOptions so;
  so.placement = pl;
  so.vram_runner = &gpu;
  so.show_progress = false;
  auto sched = ExpertScheduler::open(std::move(*store), so);
  REQUIRE(sched.ok());
  CHECK(std::string((*sched)->vram_runner_name()) == "recording");
  std::vector<float> y(x.size(), 0.0f);
  REQUIRE((*sched)->apply(L, x.data(), n, chosen.data(), weight.data(), K, y.data()).ok());

  // Only experts 0 (tokens 0, 2) and 1 (token 1) ran on the VRAM runner, launched once and
  // waited for once.
  std::set<std::vector<int32_t>> vram_sets(gpu.token_sets.begin(), gpu.token_sets.end());
  CHECK(vram_sets == std::set<std::vector<int32_t>>{{0, 2}, {1}});
  CHECK(events == std::vector<std::string>{"vram launch", "vram wait"});
  const ExpertSchedulerStats st = (*sched)->stats();
  CHECK(st.uses_vram == 2);
  CHECK(st.uses_ram == 2);
  CHECK(st.uses_nvme_hit + st.uses_nvme_miss == 3);
  CHECK(st.resident_experts == 4);

  // The same experts with no placement (all through the CPU): the same sums up to rounding.
  auto store2 = offload::ExpertStore::open(o.out);
  REQUIRE(store2.ok());
  ExpertSchedulerOptions plain;
  plain.show_progress = false;
  auto all_cpu = ExpertScheduler::open(std::move(*store2), plain);
  REQUIRE(all_cpu.ok());
  CHECK(std::string((*all_cpu)->vram_runner_name()) == "cpu");
  std::vector<float> y2(x.size(), 0.0f);
  REQUIRE((*all_cpu)->apply(L, x.data(), n, chosen.data(), weight.data(), K, y2.data()).ok());
  double worst = 0, scale = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    worst = std::max(worst, std::fabs(double(y[i]) - double(y2[i])));
    scale = std::max(scale, std::fabs(double(y2[i])));
  }
  CHECK(scale > 0);
  CHECK(worst <= 1e-5 * scale);
  fs::remove_all(o.out);
}

TEST_CASE("the engine charges the reference backend's fp32 kv_b and the attention cache to RAM", "[runtime]") {
  const fs::path dir = make("accounting", ModelArch::V32, true, 8);
  for (const char* backend : {"reference", "cpu"}) {
    EngineOptions eo;
    eo.context = 16;
    eo.announce_device = false;
    eo.backend = backend;
    auto e = Engine::open(dir, eo);
    REQUIRE(e.ok());
    const ModelConfig& c = (*e)->config();
    auto ram = (*e)->ram_accounting();
    REQUIRE(ram.ok());
    // Worked out from the config: kv_b is [heads * (nope + v), kv_lora_rank] per layer, in fp32
    // for the reference backend (the cpu backend reads it as stored: nothing derived); the cache
    // holds latent, k_rope and the indexer key per layer and position, in fp32.
    const bool ref = std::string(backend) == "reference";
    const uint64_t kv_b = ref ? uint64_t(c.num_hidden_layers) * uint64_t(c.num_attention_heads) *
                                    uint64_t(c.qk_nope_head_dim + c.v_head_dim) * uint64_t(c.kv_lora_rank) * 4u
                              : 0u;
    const uint64_t cache = uint64_t(c.num_hidden_layers) * 16u *
                           uint64_t(c.kv_lora_rank + c.qk_rope_head_dim + c.index_head_dim) * 4u;
    INFO(backend);
    REQUIRE(ram->items().size() == 2);
    CHECK(ram->items()[0].second == kv_b);
    CHECK(ram->items()[1].second == cache);
    CHECK(ram->used() == kv_b + cache);
  }
  fs::remove_all(dir);
}

// Batched decode (several sequences, one token each, one step) gives each sequence the logits it
// gets decoding alone: V3 and V3.2 (prompts longer than index_topk, so the sparse selection
// drops keys), reference and CPU backends.
TEST_CASE("forward_batch equals decoding each sequence alone", "[runtime][batch]") {
  for (ModelArch arch : {ModelArch::V3, ModelArch::V32}) {
    const fs::path dir = make(arch == ModelArch::V3 ? "batch3" : "batch32", arch, true, 17);
    for (int be = 0; be < 2; ++be) {
      auto w = ModelWeights::load(dir);
      REQUIRE(w.ok());
      DeepSeekModel model(std::move(*w), be == 0 ? cpu::make_reference_backend() : cpu::make_cpu_backend({}));
      const int64_t V = model.config().vocab_size, topk = std::max<int64_t>(model.config().index_topk, 4);
      const std::vector<int64_t> prompt_len = {3, topk + 5, 1};
      std::vector<std::unique_ptr<backend::AttentionCache>> solo, batch;
      std::vector<float> logits;
      for (size_t s = 0; s < prompt_len.size(); ++s) {
        std::vector<int32_t> p;
        for (int64_t i = 0; i < prompt_len[s]; ++i) p.push_back(static_cast<int32_t>((i * 977 + 31 * s + 5) % V));
        for (auto* set : {&solo, &batch}) {
          set->push_back(model.make_cache(64));
          REQUIRE(model.forward(p, *set->back(), false, logits).ok());
        }
      }
      std::vector<int32_t> next = {11, 22, 33};
      for (int step = 0; step < 4; ++step) {
        std::vector<backend::AttentionCache*> caches = {batch[0].get(), batch[1].get(), batch[2].get()};
        std::vector<float> lb;
        REQUIRE(model.forward_batch(next, caches, lb).ok());
        REQUIRE(lb.size() == static_cast<size_t>(3 * V));
        for (size_t s = 0; s < 3; ++s) {
          std::vector<float> ls;
          REQUIRE(model.forward(std::span<const int32_t>(&next[s], 1), *solo[s], false, ls).ok());
          CHECK(batch[s]->size() == solo[s]->size());
          double dot = 0, na = 0, nb = 0;
          for (int64_t v = 0; v < V; ++v) {
            const double a = ls[size_t(v)], b = lb[s * V + size_t(v)];
            dot += a * b, na += a * a, nb += b * b;
          }
          INFO("arch " << int(arch) << " backend " << be << " step " << step << " sequence " << s);
          CHECK(dot / std::sqrt(na * nb) > 0.99999);
          CHECK(std::max_element(ls.begin(), ls.end()) - ls.begin() ==
                std::max_element(lb.begin() + s * V, lb.begin() + (s + 1) * V) - (lb.begin() + s * V));
          next[s] = static_cast<int32_t>(std::max_element(ls.begin(), ls.end()) - ls.begin());
        }
      }
      // Bad batches change no cache.
      std::vector<int64_t> sizes;
      for (auto& c : batch) sizes.push_back(c->size());
      std::vector<backend::AttentionCache*> dup = {batch[0].get(), batch[0].get()};
      std::vector<int32_t> two = {1, 2};
      auto st = model.forward_batch(two, dup, logits);
      REQUIRE_FALSE(st.ok());
      CHECK_THAT(st.error(), Catch::Contains("share one cache"));
      std::vector<backend::AttentionCache*> one = {batch[1].get()};
      CHECK_FALSE(model.forward_batch(two, one, logits).ok());
      auto full = model.make_cache(1);
      std::vector<int32_t> x = {5};
      REQUIRE(model.forward(x, *full, false, logits).ok());
      std::vector<backend::AttentionCache*> with_full = {batch[2].get(), full.get()};
      st = model.forward_batch(two, with_full, logits);
      REQUIRE_FALSE(st.ok());
      CHECK_THAT(st.error(), Catch::Contains("exceed the context"));
      std::vector<int32_t> bad = {1, static_cast<int32_t>(V)};
      std::vector<backend::AttentionCache*> pair = {batch[0].get(), batch[1].get()};
      CHECK_FALSE(model.forward_batch(bad, pair, logits).ok());
      for (size_t i = 0; i < batch.size(); ++i) CHECK(batch[i]->size() == sizes[i]);
    }
    fs::remove_all(dir);
  }
}

// What lets a GPU backend keep activations in VRAM: the graph reads and writes them only
// through the backend. The guarded backend makes every direct touch fault.
TEST_CASE("the graph touches activations only through the backend", "[runtime][seam]") {
  for (ModelArch arch : {ModelArch::V3, ModelArch::V32}) {
    const fs::path dir = make(arch == ModelArch::V3 ? "guard3" : "guard32", arch, true, 23);
    auto wa = ModelWeights::load(dir), wb = ModelWeights::load(dir);
    REQUIRE(wa.ok());
    REQUIRE(wb.ok());
    DeepSeekModel plain(std::move(*wa), cpu::make_reference_backend());
    auto guarded_be = std::make_unique<test::GuardedBackend>(cpu::make_reference_backend());
    test::GuardedBackend& guard = *guarded_be;
    DeepSeekModel guarded(std::move(*wb), std::move(guarded_be));
    int64_t named = 0;
    guarded.set_tensor_callback([&](const char*, int64_t, TensorView t) { named += t.rows * t.cols > 0; });
    const int64_t V = plain.config().vocab_size, topk = std::max<int64_t>(plain.config().index_topk, 4);
    // A prompt longer than the indexer's top-k (V3.2 selects), then decode steps, then a batch.
    std::vector<int32_t> prompt;
    for (int64_t i = 0; i < topk + 7; ++i) prompt.push_back(static_cast<int32_t>((i * 389 + 3) % V));
    auto ca = plain.make_cache(64), cb = guarded.make_cache(64), ca2 = plain.make_cache(64), cb2 = guarded.make_cache(64);
    std::vector<float> la, lb;
    REQUIRE(plain.forward(prompt, *ca, true, la).ok());
    REQUIRE(guarded.forward(prompt, *cb, true, lb).ok());
    CHECK(la == lb);
    for (int step = 0; step < 3; ++step) {
      const int32_t next[2] = {static_cast<int32_t>(7 + step), static_cast<int32_t>(40 + step)};
      REQUIRE(plain.forward(std::span<const int32_t>(next, 1), *ca2, false, la).ok());
      REQUIRE(guarded.forward(std::span<const int32_t>(next, 1), *cb2, false, lb).ok());
      CHECK(la == lb);
      backend::AttentionCache* pa[2] = {ca.get(), ca2.get()};
      backend::AttentionCache* pb[2] = {cb.get(), cb2.get()};
      REQUIRE(plain.forward_batch(next, pa, la).ok());
      REQUIRE(guarded.forward_batch(next, pb, lb).ok());
      CHECK(la == lb);
    }
    CHECK(named > 0);
    // With the tensor callback set no region opens (its intermediates are read on the host);
    // without it, each layer's attention block is one, and in V3 nothing in it needs the host.
    CHECK(guard.regions(true) + guard.regions(false) == 0);
    guarded.set_tensor_callback(nullptr);
    const int32_t one = 9;
    REQUIRE(plain.forward(std::span<const int32_t>(&one, 1), *ca, false, la).ok());
    REQUIRE(guarded.forward(std::span<const int32_t>(&one, 1), *cb, false, lb).ok());
    CHECK(la == lb);
    REQUIRE(guarded.forward(prompt, *guarded.make_cache(64), false, lb).ok());
    const int64_t layers = plain.config().num_hidden_layers;
    CHECK(guard.regions(true) == layers);
    CHECK(guard.regions(false) == layers);
    std::set<std::string> host_ops(guard.host_results_in_regions().begin(), guard.host_results_in_regions().end());
    if (arch == ModelArch::V3) CHECK(host_ops.empty());
    else CHECK(host_ops == std::set<std::string>{"indexer_topk"});  // the V3.2 selection
    for (const std::string& v : guard.violations()) UNSCOPED_INFO(v);
    CHECK(guard.violations().empty());
    for (const std::string& v : guard.unprepared()) UNSCOPED_INFO(v);
    CHECK(guard.unprepared().empty());  // a GPU would copy such a vector on every use
    CHECK(guard.live_buffers() == 0);  // every activation freed after each forward
    fs::remove_all(dir);
  }
}

TEST_CASE("the guarded backend faults a direct read and reports a foreign pointer", "[runtime][seam]") {
  test::GuardedBackend guard(cpu::make_reference_backend());
  auto buf = guard.alloc_activations(37);
  const std::vector<float> ones(37, 1.0f);
  guard.upload(ones.data(), buf->data(), 37);
  std::vector<float> back(37, 0.0f);
  guard.download(buf->data(), back.data(), 37);
  CHECK(back == ones);
  CHECK(guard.violations().empty());
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    signal(SIGSEGV, SIG_DFL);  // die of it, without the test framework's handler
    volatile float v = buf->data()[3];  // a direct read, outside any op
    (void)v;
    _exit(0);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV));
  std::vector<float> host(37, 2.0f);
  guard.add(buf->data(), host.data(), 37);  // x on the host: breaks the contract
  REQUIRE(guard.violations().size() == 1);
  CHECK_THAT(guard.violations()[0], Catch::Contains("add"));
  const float w[3] = {1, 1, 1};
  guard.rmsnorm(buf->data(), w, buf->data(), 1, 3, 1e-6f);  // an unprepared constant vector
  CHECK(guard.violations().size() == 1);
  CHECK(guard.unprepared().size() == 1);
}

TEST_CASE("a store's GGUF row tiles bind as tiles where the graph multiplies, and are refused where rows are read",
          "[runtime]") {
  const ModelConfig c = *preset_config("tiny", ModelArch::V3);
  const std::string kv_b = "model.layers.0.self_attn.kv_b_proj.weight", q_a = "model.layers.0.self_attn.q_a_proj.weight";
  // Every non-expert tensor as zeros in F32, but `tiled` as Q8_0 row tiles (their bytes).
  auto bind_with = [&](const std::string& tiled) {
    std::vector<TensorInfo> ts;
    size_t total = 0;
    for (const TensorSpec& s : checkpoint_layout(c)) {
      if (s.name.find(".mlp.experts.") != std::string::npos) continue;
      TensorInfo t;
      t.name = s.name;
      t.shape = s.shape;
      t.dtype = DType::F32;
      t.nbytes = size_t(t.numel()) * 4;
      if (s.name == tiled) {
        REQUIRE(s.shape.size() == 2);
        REQUIRE(s.shape[0] % 16 == 0);
        REQUIRE(s.shape[1] % 32 == 0);
        t.dtype = DType::GGUF;
        t.ggml_type = uint32_t(GgmlType::Q8_0);
        t.ggml_tiled = true;
        t.nbytes = size_t(s.shape[0] / 16 * (s.shape[1] / 32) * 544);
      }
      total += t.nbytes;
      ts.push_back(std::move(t));
    }
    auto buf = std::shared_ptr<uint8_t[]>(new uint8_t[total]());
    size_t off = 0;
    for (TensorInfo& t : ts) {
      t.data = buf.get() + off;
      off += t.nbytes;
    }
    return ModelWeights::bind(c, TensorStore::from_memory(buf, std::move(ts)), "store", /*routed_experts_external=*/true);
  };
  auto ok = bind_with(q_a);
  INFO((ok ? std::string() : ok.error()));
  REQUIRE(ok);
  CHECK(ok->layers[0].q_a.tiled);
  CHECK(ok->layers[0].q_a.ggml_type == uint32_t(GgmlType::Q8_0));
  CHECK_FALSE(ok->layers[0].q_b.tiled);
  for (const std::string& name : {std::string("model.embed_tokens.weight"), kv_b}) {
    auto bad = bind_with(name);
    REQUIRE_FALSE(bad);
    INFO(bad.error());
    CHECK(bad.error().find("'" + name + "' is stored as row tiles, but it is read by rows") != std::string::npos);
  }
}
