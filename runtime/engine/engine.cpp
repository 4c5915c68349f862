#include "runtime/engine/engine.h"

#include <cstdio>

#include <nlohmann/json.hpp>

#include "cpu_kernels/cpu_backend.h"
#include "cpu_kernels/expert_ffn.h"
#include "cpu_kernels/ggml_gemv_tiles.h"
#include "cpu_kernels/reference_backend.h"
#include "gpu_kernels/cuda_backend.h"
#include "gpu_kernels/fp8_cache_layout.h"
#include "gpu_kernels/gpu_probe.h"
#include "planner/dense_format.h"
#include "planner/plan_report.h"
#include "planner/solver.h"
#include "runtime/core/process_memory.h"
#include "runtime/core/progress_line.h"
#include "runtime/engine/store_dense.h"
#include "runtime/model/gguf_tiles.h"
#include "runtime/model/gguf_weights.h"
#include "runtime/weights/gguf_deepseek.h"
#include "runtime/weights/gguf_tokenizer.h"

namespace mt {

namespace {

// A packed store: config from the manifest, dense tensors from its dense file (checksummed), routed
// experts through the RAM cache.
// The placement `--plan auto` uses: the store's model and blob size, a uniform prior, the
// runtime's default context, the GPU when the CUDA backend runs (--gpu on); `expert_ram`
// (0: what the machine has) bounds RAM for experts.
Result<planner::Placement> plan_at_startup(const offload::StoreManifest& m, const ModelConfig& cfg,
                                           const planner::MachineProfile& machine, uint64_t expert_ram, bool gpu) {
  planner::PlanRequest req;
  planner::CostInputs& in = req.cost;
  in.model = cfg;
  in.expert_format = m.expert_quant;
  in.expert_bytes = m.blob_bytes;
  in.dense_format = planner::dense_format_of_store(m.dense_quant);
  in.context = std::min<int64_t>(4096, cfg.max_position_embeddings);
  in.machine = machine;
  in.use_gpu = gpu;
  in.stats = planner::uniform_activations(cfg);
  req.expert_ram_budget = expert_ram;
  MT_ASSIGN(planner::Plan plan, planner::make_plan(req));
  return plan.placement;
}


Result<std::pair<ModelWeights, std::unique_ptr<ExpertScheduler>>> open_packed(
    const std::filesystem::path& dir, ExpertSchedulerOptions o,
    const std::function<Result<planner::MachineProfile>()>& plan_auto_profile, bool gpu) {
  MT_ASSIGN(offload::ExpertStore store, offload::ExpertStore::open(dir));
  const std::string label = (dir / "manifest.json").string();
  MT_ASSIGN(ModelConfig cfg, parse_config_json(store.manifest().config_json, label));
  if (store.manifest().hidden != cfg.hidden_size || store.manifest().inter != cfg.moe_intermediate_size)
    return make_error(label + ": expert geometry does not match the model config");
  for (int64_t L = 0; L < cfg.num_hidden_layers; ++L)
    for (int64_t e = 0; cfg.is_moe_layer(L) && e < cfg.n_routed_experts; ++e)
      if (!store.find(static_cast<int32_t>(L), static_cast<int32_t>(e)))
        return make_error(label + ": layer " + std::to_string(L) + " expert " + std::to_string(e) +
                          " is missing from the store; re-run moetier convert");
  MT_ASSIGN(TensorStore dense, open_store_dense(store));
  if (plan_auto_profile) {
    MT_ASSIGN(planner::MachineProfile machine, plan_auto_profile());
    MT_ASSIGN(o.placement, plan_at_startup(store.manifest(), cfg, machine, o.ram_budget, gpu));
    std::fprintf(stderr, "moetier: expert placement from this machine's profile:\n%s  %s\n",
                 planner::format_placement_summary(*o.placement).c_str(),
                 planner::profile_provenance(machine, planner::utc_now_iso()).c_str());
  }
  MT_ASSIGN(ModelWeights w, ModelWeights::bind(std::move(cfg), std::move(dense), dir.string(), true));
  MT_ASSIGN(std::unique_ptr<ExpertScheduler> experts, ExpertScheduler::open(std::move(store), o));
  return std::make_pair(std::move(w), std::move(experts));
}

}  // namespace

Result<ModelConfig> peek_model_config(const std::filesystem::path& model) {
  if (is_gguf_path(model.string())) {
    MT_ASSIGN(GgufModel g, GgufModel::open(model));
    MT_ASSIGN(GgufDeepSeek d, read_gguf_deepseek(g));
    return d.config;
  }
  if (!offload::ExpertStore::looks_like_store(model)) return load_config(model);
  MT_ASSIGN(offload::ExpertStore store, offload::ExpertStore::open(model));
  return parse_config_json(store.manifest().config_json, (model / "manifest.json").string());
}

Result<Tokenizer> load_model_tokenizer(const std::filesystem::path& model) {
  std::filesystem::path gguf = model;
  if (!is_gguf_path(model.string())) {
    // A store converted from a GGUF keeps the file's tokenizer as tokenizer.gguf.
    std::error_code ec;
    gguf = model / "tokenizer.gguf";
    if (std::filesystem::exists(model / "tokenizer.json", ec) || !std::filesystem::exists(gguf, ec))
      return Tokenizer::load(model);
  }
  MT_ASSIGN(GgufModel g, GgufModel::open(gguf));
  return load_gguf_tokenizer(g, gguf);
}

Result<std::unique_ptr<Engine>> Engine::open(const std::filesystem::path& model_dir, const EngineOptions& opt) {
  if (model_dir.filename().string().ends_with(".partial") || model_dir.string().ends_with(".partial/"))
    return make_error(model_dir.string() + " is an unfinished conversion or make-model (.partial); re-run it");
  auto e = std::unique_ptr<Engine>(new Engine());
  e->dir_ = model_dir;
  const bool gguf = is_gguf_path(model_dir.string());
  if (gguf && opt.gpu)
    return make_error(model_dir.string() + ": --gpu on does not take GGUF models yet (the CUDA backend has no "
                      "kernels for ggml's block formats); run it on the CPU (--gpu off)");
  if (gguf && (opt.packed.placement || opt.plan_auto_profile))
    return make_error(model_dir.string() + " is a GGUF file, which runs from RAM as mapped; a placement needs the "
                      "packed store (moetier plan --model " + model_dir.string() + " shows how it would be placed)");
  // The backend first: with --gpu on, the expert scheduler needs its VRAM runner.
  std::unique_ptr<backend::Backend> be;
  if (opt.backend == "cpu") be = cpu::make_cpu_backend(opt.packed.kernels);
  else if (opt.backend == "reference") be = cpu::make_reference_backend();
  else return make_error("unknown backend '" + opt.backend + "' (cpu or reference)");
  ExpertSchedulerOptions packed_opt = opt.packed;
  if (opt.gpu) {
    // Dense weights leave room for one sequence's attention caches and the ops' scratch.
    gpu::CudaOptions co{opt.gpu_vram, opt.gpu_cache, 0, opt.gpu_graphs};
    if (auto c = peek_model_config(model_dir); c.ok()) {
      const uint64_t ctx_tokens = uint64_t(opt.context > 0 ? opt.context : std::min<int64_t>(4096, c->max_position_embeddings));
      const uint64_t row = opt.gpu_cache == DType::F8_E4M3
                               ? gpu::fp8_row(c->kv_lora_rank, c->qk_rope_head_dim).bytes
                               : uint64_t(c->kv_lora_rank + c->qk_rope_head_dim) * (opt.gpu_cache == DType::BF16 ? 2 : 4);
      const uint64_t per_token = row + (c->arch == ModelArch::V32 ? uint64_t(c->index_head_dim) * 4 : 0);
      co.keep_free = uint64_t(c->num_hidden_layers) * ctx_tokens * per_token + (uint64_t{512} << 20);
    }
    MT_ASSIGN(be, gpu::make_cuda_backend(std::move(be), co));
    MT_ASSIGN(e->vram_runner_, gpu::make_cuda_expert_runner(*be));
    packed_opt.vram_runner = e->vram_runner_.get();
    if (opt.announce_device)
      std::fprintf(stderr,
                   "moetier: --gpu on: %s. EXPERIMENTAL: the CUDA backend has not yet been run on a GPU by its "
                   "developers; check its answers against --gpu off (docs/gpu.md)\n",
                   be->name());
  }
  std::optional<ModelWeights> weights;
  std::unique_ptr<ExpertScheduler> packed;
  // The level the cpu backend's kernels dispatch to, and the GGUF types with a tile kernel there
  // (a GGUF's matrices are tiled only for those; a store's tiles of the others go back to blocks).
  int isa = 0;
  cpu::isa_level_from_name(cpu::expert_kernel_isa(opt.packed.kernels), isa);
  const auto native = [isa](uint32_t type) { return cpu::ggml_gemv_tiles_native(type, isa); };
  if (offload::ExpertStore::looks_like_store(model_dir)) {
    MT_ASSIGN(auto wp, open_packed(model_dir, packed_opt, opt.plan_auto_profile, opt.gpu));
    weights.emplace(std::move(wp.first));
    packed = std::move(wp.second);
    // A converted GGUF's dense tiles where the cpu backend has no tile kernel at this ISA (the
    // reference backend decodes tiles row by row as it decodes blocks): blocks again, once.
    if (opt.backend == "cpu") {
      const int64_t n = untile_gguf_weights(*weights, native);
      if (n > 0 && opt.announce_device)
        std::fprintf(stderr, "moetier: %lld of the store's row-tile matrices back to blocks (no tile kernel at this ISA)\n",
                     static_cast<long long>(n));
    }
  } else if (gguf) {
    GgufLoadInfo info;
    MT_ASSIGN(ModelWeights w, load_gguf_weights(model_dir, &info));
    // A model that fits in RAM is mapped in now: page faults on first use would otherwise cost
    // the first tokens (a minor fault per 4 KiB page even from the page cache).
    if (const uint64_t bytes = w.gguf->data_bytes(); gguf_fits_in_ram(bytes, system_memory().available_bytes)) {
      if (opt.announce_device)
        std::fprintf(stderr, "moetier: mapping %.1f GB of GGUF weights into memory\n", double(bytes) / 1e9);
      w.gguf->prefault();
      // Only the types whose tiles have a kernel at this level: others would be unpacked per call.
      if (opt.gguf_tiles && opt.backend == "cpu" && isa >= 1) {
        uint64_t shown = 0;
        const ProgressLine line;
        const GgufTileInfo ti = tile_gguf_weights(w, native, [&](uint64_t done, uint64_t total) {
          if (!opt.announce_device || done * 10 / total == shown * 10 / total) return;
          shown = done;
          line.show("K-quant and Q8_0 matrices to row tiles:", double(done * 100 / total));
        });
        if (opt.announce_device && ti.matrices > 0)
          std::fprintf(stderr,
                       "%smoetier: %lld K-quant and Q8_0 matrices as row tiles (%.1f GB; --gguf-tiles off keeps "
                       "the blocks)\n",
                       line.line_start(), static_cast<long long>(ti.matrices), double(ti.bytes) / 1e9);
      }
    }
    if (opt.announce_device)
      for (const std::string& n : info.notes) std::fprintf(stderr, "moetier: %s: %s\n", model_dir.string().c_str(), n.c_str());
    weights.emplace(std::move(w));
  } else {
    if (opt.packed.placement || opt.plan_auto_profile)
      return make_error(model_dir.string() + " is a Hugging Face checkpoint; a placement needs the packed store "
                        "(moetier convert " + model_dir.string() + " DST --experts q4)");
    MT_ASSIGN(ModelWeights w, ModelWeights::load(model_dir));
    weights.emplace(std::move(w));
  }
  ModelWeights& w = *weights;
  const int64_t max_pos = w.config.max_position_embeddings;
  int64_t ctx = opt.context > 0 ? opt.context : std::min<int64_t>(4096, max_pos);
  if (ctx > max_pos)
    return make_error("context of " + std::to_string(ctx) + " tokens exceeds the model's max_position_embeddings (" +
                      std::to_string(max_pos) + ")");
  e->packed_ = packed.get();
  e->model_ = std::make_unique<DeepSeekModel>(std::move(w), std::move(be), std::move(packed));
  if (opt.gpu) {
    MT_TRY(gpu::setup_status(e->model_->backend()));
    if (const uint64_t host = gpu::dense_bytes_on_host(e->model_->backend()); host > 0)
      std::fprintf(stderr,
                   "moetier: %.1f GB of dense weights did not fit in VRAM beside the attention cache and run on the "
                   "CPU (the GPU holds them as BF16)\n",
                   double(host) / 1e9);
    if (e->packed_) {
      const ExpertSchedulerStats st = e->packed_->stats();
      if (st.vram_on_cpu > 0)
        std::fprintf(stderr,
                     "moetier: %lld VRAM-tier experts did not fit on the GPU after its dense weights and caches, and "
                     "run on the CPU from RAM (first refusal: %s); plan with a smaller --vram-budget\n",
                     static_cast<long long>(st.vram_on_cpu), st.vram_refusal.c_str());
    }
    try {
      e->cache_ = e->model_->make_cache(ctx);
    } catch (const std::exception& ex) {
      return make_error(std::string("the attention cache of ") + std::to_string(ctx) + " tokens: " + ex.what());
    }
    return e;
  }
  e->cache_ = e->model_->make_cache(ctx);
  if (opt.announce_device) {
    const gpu::GpuInfo g = gpu::probe_gpu();
    if (!g.available) std::fprintf(stderr, "moetier: no usable GPU (%s); running on the CPU\n", g.reason.c_str());
    else std::fprintf(stderr, "moetier: found %s; this build runs the model on the CPU\n", g.name.c_str());
  }
  return e;
}

uint64_t Engine::mapped_weight_bytes() const {
  if (model_->weights().gguf) return model_->weights().gguf->data_bytes() - model_->weights().tiled_mapped_bytes;
  uint64_t b = 0;
  for (const auto& [name, t] : model_->weights().store.tensors()) b += t.nbytes;
  return b;
}

const TierBudget* Engine::vram_accounting() const { return gpu::vram_accounting(model_->backend()); }

bool Engine::graph_stats(gpu::GraphPolicyStats& out) const { return gpu::graph_stats(model_->backend(), out); }

Result<TierBudget> Engine::ram_accounting() const {
  TierBudget ram("RAM");
  backend::Backend& be = model_->backend();
  MT_TRY(ram.charge(std::string("derived weights of the ") + be.name() + " backend (fp32 kv_b for absorbed attention)",
                    be.weight_bytes()));
  uint64_t rebuilt = 0;
  for (const std::vector<float>& v : model_->weights().derived) rebuilt += v.size() * sizeof(float);
  if (rebuilt > 0) MT_TRY(ram.charge("kv_b rejoined from the GGUF's attn_k_b and attn_v_b (fp32)", rebuilt));
  uint64_t tiled = 0;
  for (const AlignedBuffer& t : model_->weights().tiles) tiled += t.size();
  if (tiled > 0)
    MT_TRY(ram.charge(model_->weights().gguf ? "a GGUF's matrices as row tiles (their mapped pages dropped)"
                                             : "the store's row-tile matrices as blocks (no tile kernel at this ISA)",
                      tiled));
  if (!vram_accounting())  // a CUDA backend's cache is in VRAM, charged there
    MT_TRY(ram.charge("attention cache (" + std::to_string(cache_->max_tokens()) + " tokens)", cache_->bytes()));
  if (packed_) MT_TRY(packed_->charge_memory(ram));
  return ram;
}

Result<const Tokenizer*> Engine::tokenizer() {
  if (!tokenizer_ && model_->weights().gguf) {
    MT_ASSIGN(Tokenizer t, load_gguf_tokenizer(*model_->weights().gguf, dir_));
    tokenizer_.emplace(std::move(t));
  }
  if (!tokenizer_) {
    MT_ASSIGN(Tokenizer t, load_model_tokenizer(dir_));
    tokenizer_.emplace(std::move(t));
  }
  return &*tokenizer_;
}

Status Engine::eval(std::span<const int32_t> ids, bool all_logits, std::vector<float>& logits) {
  return model_->forward(ids, *cache_, all_logits, logits);
}

Result<std::vector<int32_t>> build_prompt(const Tokenizer& tok, const std::string& text, const PromptOptions& o) {
  if (text.empty()) return make_error("the prompt is empty (pass --prompt TEXT)");
  if (!o.chat) {
    std::vector<int32_t> ids;
    if (tok.add_bos()) ids.push_back(tok.bos_id());
    const std::vector<int32_t> body = tok.encode(text);
    ids.insert(ids.end(), body.begin(), body.end());
    return ids;
  }
  nlohmann::json messages = nlohmann::json::array();
  if (!o.system.empty()) messages.push_back({{"role", "system"}, {"content", o.system}});
  messages.push_back({{"role", "user"}, {"content", text}});
  ChatOptions co;
  co.add_generation_prompt = true;
  co.style = detect_chat_style(tok.chat_template());
  co.thinking = o.thinking;
  if (o.thinking && co.style != ChatStyle::V31)
    return make_error("--think needs a V3.1/V3.2 chat template; this model's tokenizer has the V3 template");
  MT_ASSIGN(std::string rendered, render_chat(messages, co));
  return tok.encode(rendered);  // the template writes BOS itself
}

namespace {
// Length of the longest prefix of s that ends on a complete UTF-8 sequence.
size_t complete_utf8_prefix(const std::string& s) {
  size_t i = s.size();
  size_t back = 0;
  while (i > 0 && back < 4) {
    const auto ch = static_cast<unsigned char>(s[i - 1]);
    if ((ch & 0xC0) != 0x80) {  // lead byte (or ASCII)
      const size_t need = ch < 0x80 ? 1 : (ch >> 5) == 6 ? 2 : (ch >> 4) == 14 ? 3 : (ch >> 3) == 30 ? 4 : 1;
      return (back + 1 >= need) ? s.size() : i - 1;
    }
    --i;
    ++back;
  }
  return s.size();  // not UTF-8 continuation structure: emit as is
}
}  // namespace

std::string TextStream::push(int32_t id) {
  pending_ += tok_.token_text(id);
  const size_t n = complete_utf8_prefix(pending_);
  std::string out = pending_.substr(0, n);
  pending_.erase(0, n);
  return out;
}

std::string TextStream::flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace mt
