#include "tools/moetier/plan_inputs.h"

#include <algorithm>
#include <cstdio>
#include <optional>
#include <sstream>

#include "runtime/core/expert_format.h"
#include "offload/expert_store.h"
#include "planner/dense_format.h"
#include "planner/model_size.h"
#include "runtime/core/ggml_types.h"
#include "runtime/core/text_file.h"
#include "runtime/model/gguf_tiles.h"
#include "runtime/weights/gguf_deepseek.h"
#include "tools/moetier/machine_probe.h"
#include "tools/moetier/progress.h"

namespace mt::cli {

namespace {

// The stand-in rates for a GGUF's types the profile has not measured, by bits per weight:
// moetier's own q4/q8 kernels (bf16's for wider experts; the dense weights then take fp8's).
std::string rate_format_for_bits(double bpw) { return bpw <= 5.0 ? "q4" : bpw <= 9.0 ? "q8" : "bf16"; }

// GgmlType id -> bytes, as the planner's per-type shares (ggml names, bytes and parameters);
// `blocks_only`: the quantised block types alone (F32/F16/BF16 are norms and small matrices
// the dense rates already cover).
std::map<std::string, planner::TypeShare> type_shares(const std::map<uint32_t, uint64_t>& types, bool blocks_only) {
  std::map<std::string, planner::TypeShare> out;
  for (const auto& [t, b] : types) {
    const GgmlTypeInfo* ti = ggml_type_info(t);
    if (!ti || ti->bytes <= 0 || (blocks_only && ti->block <= 1)) continue;
    out[ti->name] = {double(b), double(b) / double(ti->bytes) * double(ti->block)};
  }
  return out;
}

// "Q4_K 38.1, Q6_K 35.0 GB/s -> 36.8 GB/s": each type's rate in `m`, the types without one named
// apart (they run at the stand-in's), and the mixed rate the plan uses.
std::string mix_text(const planner::MachineProfile& m, const std::map<std::string, planner::TypeShare>& types,
                     double mixed_gbs, const std::string& stand_in_rate,
                     const std::string& why_unmeasured = "no tile rate in this profile (described, older than revision 4, or capped below AVX2)") {
  std::string s, unmeasured;
  for (const auto& [name, share] : types) {
    const planner::KernelRate* k = m.kernel(name);
    if (!k || k->decode_gbs <= 0) {
      unmeasured += (unmeasured.empty() ? "" : ", ") + name;
      continue;
    }
    char b[64];
    std::snprintf(b, sizeof b, "%s%s %.1f", s.empty() ? "" : ", ", name.c_str(), k->decode_gbs);
    s += b;
  }
  if (!s.empty()) s += " GB/s";
  if (!unmeasured.empty())
    s += std::string(s.empty() ? "" : "; ") + why_unmeasured + ", so at " + stand_in_rate + ": " + unmeasured;
  char b[48];
  std::snprintf(b, sizeof b, " -> %.1f GB/s", mixed_gbs);
  return s + b;
}

std::string types_text(const std::map<uint32_t, uint64_t>& types) {
  uint64_t total = 0;
  for (const auto& [t, b] : types) total += b;
  std::string s;
  for (const auto& [t, b] : types) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s%s %.0f%%", s.empty() ? "" : ", ", ggml_type_name(t).c_str(),
                  total ? 100.0 * double(b) / double(total) : 0.0);
    s += buf;
  }
  return s;
}

// A tiled GGUF store's routed experts as the planner's per-type shares, by the bytes of their
// blocks (what the tile rates count): a matrix held as tiles under its type's name, one held as
// blocks (no tile form, or rows not a multiple of 16) as "<type> blocks", which no profile rates.
std::map<std::string, planner::TypeShare> store_expert_shares(const offload::StoreManifest& m, const ModelConfig& c) {
  std::map<std::string, planner::TypeShare> out;
  const double experts = double(std::max<int64_t>(c.n_routed_experts, 0));
  for (const auto& [layer, t] : m.expert_ggml_types) {
    ExpertGeometry g{ExpertQuant::GGUF, m.hidden, m.inter, 0};
    g.ggml_tiles = m.expert_ggml_tiles;
    for (int k = 0; k < 3; ++k) {
      g.ggml[k] = t[size_t(k)];
      const GgmlTypeInfo* ti = ggml_type_info(t[size_t(k)]);
      if (!ti) continue;
      const auto [rows, cols] = expert_matrix_shape(g, k);
      const double bytes = experts * double(rows) * double(ggml_row_bytes(t[size_t(k)], cols));
      planner::TypeShare& s = out[std::string(ti->name) + (expert_matrix_tiled(g, k) ? "" : " blocks")];
      s.bytes += bytes;
      s.params += experts * double(rows) * double(cols);
    }
  }
  return out;
}

// A GGUF's real sizes as the planner's inputs: the mean routed expert, the non-expert weights
// by part.
Status plan_inputs_from_gguf(const std::string& path, planner::CostInputs& in, planner::ReportContext& ctx,
                             uint64_t& data_bytes) {
  MT_ASSIGN(GgufModel g, GgufModel::open(path));
  data_bytes = g.data_bytes();
  MT_ASSIGN(GgufDeepSeek d, read_gguf_deepseek(g));
  const ModelConfig& c = d.config;
  in.model = c;
  int64_t moe = 0, dense = 0;
  planner::DenseBytes db;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const size_t i = size_t(l);
    if (c.is_moe_layer(l)) {
      ++moe;
      db.moe_attention_packed += double(d.attention[i]);
      db.moe_shared_packed += double(d.shared[i]);
      db.moe_bf16 += double(d.router[i] + d.norms[i]);
    } else {
      ++dense;
      db.dense_layer_packed += double(d.attention[i] + d.dense_ffn[i] + d.shared[i]);
      db.dense_bf16 += double(d.norms[i]);
    }
  }
  if (moe) db.moe_attention_packed /= double(moe), db.moe_shared_packed /= double(moe), db.moe_bf16 /= double(moe);
  if (dense) db.dense_layer_packed /= double(dense), db.dense_bf16 /= double(dense);
  db.lm_head_packed = double(d.lm_head);
  db.lm_head_bf16 = double(d.final_norm);
  db.embedding = double(d.embedding);
  db.resident = double(d.dense_total());
  in.dense_override = db;
  const double experts = double(moe) * double(c.n_routed_experts);
  if (experts == 0) return make_error(path + ": a model without routed experts (nothing for the planner to place)");
  in.expert_bytes = static_cast<uint64_t>((double(d.expert_total()) + experts - 1) / experts);
  const double expert_bpw = 8.0 * double(in.expert_bytes) / (3.0 * double(c.hidden_size) * double(c.moe_intermediate_size));
  const double dense_params = double(planner::compute_model_sizes(c).main_model.params) - experts * 3.0 *
                              double(c.hidden_size) * double(c.moe_intermediate_size);
  const double dense_bpw = dense_params > 0 ? 8.0 * db.resident / dense_params : 16.0;
  in.expert_format = rate_format_for_bits(expert_bpw);
  in.dense_format = rate_format_for_bits(dense_bpw);
  if (in.dense_format == "bf16") in.dense_format = "fp8";
  in.expert_types = type_shares(d.expert_types, false);
  in.dense_types = type_shares(d.matmul_types, true);
  char note[512];
  std::snprintf(note, sizeof note, "sizes as the GGUF holds them: experts %.2f bits/weight (%s), the rest %.2f bits/weight (%s)",
                expert_bpw, types_text(d.expert_types).c_str(), dense_bpw, types_text(d.dense_types).c_str());
  ctx.dense_note = note;
  for (const std::string& n : d.notes) ctx.dense_note += "; " + n;
  return ok_status();
}

Result<planner::MachineProfile> machine_from_args(const Args& a) {
  if (a.has("hardware") && a.has("profile")) return make_error("give --hardware or --profile, not both");
  if (auto spec = a.get("hardware")) return planner::describe_hardware(*spec);
  if (auto file = a.get("profile")) return planner::load_profile(*file);
  ProbeOptions po;
  if (auto m = a.get("model")) po.model_dir = is_gguf_path(*m) ? std::filesystem::path(*m).parent_path() : std::filesystem::path(*m);
  return load_or_measure_profile(po, /*force=*/false, /*quiet=*/a.has("quiet"));
}

}  // namespace

Result<uint64_t> expert_bytes_for(const std::string& format, const ModelConfig& c, int64_t group) {
  if (format == "fp8") return static_cast<uint64_t>(planner::compute_model_sizes(c).expert.fp8_bytes);
  ExpertQuant q;
  if (!expert_quant_from_name(format, q))
    return make_error("unknown expert format '" + format + "' (q4, q8, bf16, fp8)");
  const ExpertGeometry g{q, c.hidden_size, c.moe_intermediate_size, group};
  std::string why;
  if (!expert_geometry_valid(g, &why)) return make_error("expert format " + format + ": " + why);
  return static_cast<uint64_t>(expert_blob_layout(g).total_bytes);
}

Result<PlanSetup> plan_request_from_args(const Args& a) {
  PlanSetup s;
  planner::CostInputs& in = s.request.cost;
  if (a.has("model") == a.has("preset")) return make_error("plan needs exactly one of --model DIR or --preset NAME");
  std::string store_format, store_dense;
  uint64_t store_blob = 0;
  std::optional<offload::StoreManifest> gguf_store;  // a store converted from a GGUF
  const bool gguf = a.has("model") && is_gguf_path(*a.get("model"));
  uint64_t gguf_bytes = 0;  // the file's tensor data
  if (gguf) {
    if (a.has("experts") || a.has("dense"))
      return make_error("--experts and --dense do not apply to a GGUF file: it is planned as it is quantised");
    MT_TRY(plan_inputs_from_gguf(*a.get("model"), in, s.context, gguf_bytes));
    s.context.model_name = *a.get("model");
  } else if (auto dir = a.get("model")) {
    const std::filesystem::path manifest = std::filesystem::path(*dir) / "manifest.json";
    if (std::filesystem::exists(manifest)) {
      MT_ASSIGN(std::string text, read_text_file(manifest));
      MT_ASSIGN(offload::StoreManifest m, offload::parse_manifest(text, manifest.string()));
      MT_ASSIGN(in.model, parse_config_json(m.config_json, manifest.string()));
      store_format = m.expert_quant;
      store_blob = m.blob_bytes;
      store_dense = planner::dense_format_of_store(m.dense_quant);
      if (m.expert_quant == "gguf") gguf_store = std::move(m);
    } else {
      MT_ASSIGN(in.model, load_config(*dir));
    }
    s.context.model_name = *dir;
  } else {
    MT_ASSIGN(in.model, preset_config(*a.get("preset")));
    s.context.model_name = *a.get("preset");
  }
  const std::string fmt = gguf ? in.expert_format : a.get_or("experts", store_format.empty() ? "q4" : store_format);
  if (!store_format.empty() && fmt != store_format)
    return make_error("--experts " + fmt + ": the store at " + *a.get("model") + " holds " + store_format +
                      " experts (convert it again to plan another format)");
  in.expert_format = fmt;
  if (gguf) {
    // expert_bytes: the GGUF's mean expert, set above
  } else if (store_blob) {
    in.expert_bytes = store_blob;
  } else {
    MT_ASSIGN(in.expert_bytes, expert_bytes_for(fmt, in.model, 32));
  }

  MT_ASSIGN(in.context, a.get_int("context", std::min<int64_t>(4096, in.model.max_position_embeddings), 1,
                                  in.model.max_position_embeddings));
  MT_ASSIGN(in.decode_fill, a.get_int("fill", 0, 0, in.context));
  MT_ASSIGN(in.batch, a.get_int("batch", 1, 1, 4096));
  MT_ASSIGN(in.prefill_chunk, a.get_int("prefill-chunk", 512, 1, 1 << 20));

  MT_ASSIGN(in.machine, machine_from_args(a));
  in.use_gpu = !a.has("no-gpu");
  s.context.machine_name = in.machine.cpu_model.empty() ? in.machine.source : in.machine.cpu_model;
  s.context.now_utc = planner::utc_now_iso();
  if (in.machine.gpu.present && in.use_gpu) s.context.machine_name += " + " + in.machine.gpu.name;

  // The dense weights' form: the store's, or what convert --dense would write (auto); a GGUF's
  // as it is.
  std::string dense = gguf ? in.dense_format : a.get_or("dense", store_dense.empty() ? "auto" : store_dense);
  if (dense == "bf16") dense = "fp8";
  if (dense != "auto" && !planner::dense_format_valid(dense))
    return make_error("--dense must be auto, q8, q4 or fp8 (as shipped), got '" + dense + "'");
  if (!store_dense.empty() && dense != store_dense)
    return make_error("--dense " + dense + ": the store at " + *a.get("model") + " holds " + store_dense +
                      " dense weights (convert it again to plan another form)");
  if (dense == "auto") {
    const uint64_t ram = in.machine.ram_total_bytes;
    dense = planner::default_dense_format(in.model, ram, &s.context.dense_note);
    s.context.dense_note = "--dense auto, as convert would choose; " + s.context.dense_note;
  }
  in.dense_format = dense;
  if (gguf) {
    // generate tiles a file that it maps into memory (runtime/model/gguf_tiles.h) on a CPU with
    // AVX2; a bigger one runs its blocks from the page cache, which the tile rates do not
    // describe: it keeps the stand-in rates.
    if (!in.machine.avx2 || !gguf_fits_in_ram(gguf_bytes, in.machine.ram_available_bytes)) {
      in.expert_types.clear();
      in.dense_types.clear();
      s.context.dense_note += in.machine.avx2 ? "; the file is over 0.8 of this machine's available RAM, so it would run "
                                                "from its blocks, not row tiles: planned at moetier's stand-in rates"
                                              : "; no AVX2 here, so no row tiles: planned at moetier's stand-in rates";
    } else {
      // Each block type at its own tile kernel's measured rate (moetier profile times them).
      const planner::CostRates r = planner::cost_rates(in);
      s.context.dense_note += "; CPU decode rates by block type: experts " +
                              mix_text(in.machine, in.expert_types, r.cpu_expert_gbs, "moetier's " + in.expert_format + " rate");
      if (in.dense_format == "q4" || in.dense_format == "q8")
        s.context.dense_note += ", the rest " + mix_text(in.machine, in.dense_types, r.cpu_dense_packed_gbs, "moetier's " + in.dense_format + " rate");
    }
  }

  if (gguf_store) {
    // Its experts' row tiles run the tile kernels, so each block type at its measured rate; blocks
    // (--gguf-tiles off, a store from before format 3) or a CPU without AVX2 run the block GEMV,
    // which the tile rates do not describe.
    if (gguf_store->expert_ggml_tiles && in.machine.avx2) {
      in.expert_types = store_expert_shares(*gguf_store, in.model);
      double blocks = 0;
      for (const auto& [name, share] : in.expert_types) blocks += share.bytes;
      const double experts = double(gguf_store->expert_ggml_types.size()) * double(std::max<int64_t>(in.model.n_routed_experts, 1));
      if (blocks > 0 && experts > 0) in.expert_type_bytes = blocks / experts;
      // The rates count blocks; the plan's expert time is a blob's bytes at the same time.
      const planner::CostRates r = planner::cost_rates(in);
      char blob_rate[96];
      std::snprintf(blob_rate, sizeof blob_rate, " (%.1f GB/s of the store's %s blobs)", r.cpu_expert_gbs,
                    format_bytes(double(in.expert_bytes)).c_str());
      s.context.dense_note += std::string(s.context.dense_note.empty() ? "" : "; ") +
                              "CPU decode rates of the experts' row tiles by block type: " +
                              mix_text(in.machine, in.expert_types, r.cpu_expert_block_gbs, "0.85 of RAM bandwidth",
                                       "no tile rate (matrices kept as blocks, or a profile without them)") +
                              blob_rate;
    } else {
      s.context.dense_note += std::string(s.context.dense_note.empty() ? "" : "; ") + "the experts are GGUF " +
                              (gguf_store->expert_ggml_tiles ? "row tiles, but this CPU has no AVX2 to run them"
                                                             : "blocks (converted with --gguf-tiles off, or before store format 3)") +
                              ": planned at 0.85 of RAM bandwidth";
    }
  }

  if (auto t = a.get("trace")) {
    MT_ASSIGN(in.stats, planner::load_activations(*t, &in.model));
  } else {
    in.stats = planner::uniform_activations(in.model);
  }
  // Prefetch: how often the next layer's prediction is right. A trace measures it (the
  // runtime's recall and precision at one token per step); without one, the defaults are what
  // `bench decode` measured on the wide model.
  const double agreement = in.stats.prediction_agreement();
  const char* prefetch_source = "default, as measured by bench decode on the wide model; a trace measures it";
  if (agreement >= 0) {
    in.prefetch_recall = in.prefetch_precision = agreement;
    prefetch_source = "from the trace";
  }
  const bool recall_given = a.has("prefetch-recall"), precision_given = a.has("prefetch-precision");
  MT_ASSIGN(in.prefetch_recall, a.get_double("prefetch-recall", in.prefetch_recall, 0.0, 1.0));
  MT_ASSIGN(in.prefetch_precision, a.get_double("prefetch-precision", in.prefetch_precision, 0.01, 1.0));
  char note[200];
  std::snprintf(note, sizeof note, "recall %.0f%%, precision %.0f%% (%s)", 100.0 * in.prefetch_recall,
                100.0 * in.prefetch_precision, recall_given || precision_given ? "given" : prefetch_source);
  s.context.prefetch_note = note;
  auto size_flag = [&](const char* name, uint64_t& out) -> Status {
    if (auto v = a.get(name)) {
      auto b = parse_bytes(*v);
      if (!b) return make_error(std::string("--") + name + ": " + b.error());
      if (*b <= 0) return make_error(std::string("--") + name + " must be positive");
      out = static_cast<uint64_t>(*b);
    }
    return ok_status();
  };
  MT_TRY(size_flag("vram-budget", s.request.vram_budget));
  MT_TRY(size_flag("ram-budget", s.request.ram_budget));
  MT_TRY(size_flag("expert-ram", s.request.expert_ram_budget));
  if (auto v = a.get("nvme-cache")) {
    auto b = parse_bytes(*v);
    if (!b) return make_error("--nvme-cache: " + b.error());
    s.request.nvme_cache_bytes = *b;
  }
  if (auto pins = a.get("pin")) {
    std::stringstream ss(*pins);
    std::string item;
    while (std::getline(ss, item, ',')) {
      MT_ASSIGN(std::vector<planner::Pin> p, planner::parse_pin(item, in.model));
      s.request.pins.insert(s.request.pins.end(), p.begin(), p.end());
    }
  }
  return s;
}

}  // namespace mt::cli
