#include "tools/moetier/plan_inputs.h"

#include <cstdio>
#include <sstream>

#include "runtime/core/expert_format.h"
#include "offload/expert_store.h"
#include "planner/dense_format.h"
#include "planner/model_size.h"
#include "runtime/core/text_file.h"
#include "tools/moetier/machine_probe.h"

namespace mt::cli {

namespace {

Result<planner::MachineProfile> machine_from_args(const Args& a) {
  if (a.has("hardware") && a.has("profile")) return make_error("give --hardware or --profile, not both");
  if (auto spec = a.get("hardware")) return planner::describe_hardware(*spec);
  if (auto file = a.get("profile")) return planner::load_profile(*file);
  ProbeOptions po;
  if (auto m = a.get("model")) po.model_dir = *m;
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
  if (auto dir = a.get("model")) {
    const std::filesystem::path manifest = std::filesystem::path(*dir) / "manifest.json";
    if (std::filesystem::exists(manifest)) {
      MT_ASSIGN(std::string text, read_text_file(manifest));
      MT_ASSIGN(offload::StoreManifest m, offload::parse_manifest(text, manifest.string()));
      MT_ASSIGN(in.model, parse_config_json(m.config_json, manifest.string()));
      store_format = m.expert_quant;
      store_blob = m.blob_bytes;
      store_dense = planner::dense_format_of_store(m.dense_quant);
    } else {
      MT_ASSIGN(in.model, load_config(*dir));
    }
    s.context.model_name = *dir;
  } else {
    MT_ASSIGN(in.model, preset_config(*a.get("preset")));
    s.context.model_name = *a.get("preset");
  }
  const std::string fmt = a.get_or("experts", store_format.empty() ? "q4" : store_format);
  if (!store_format.empty() && fmt != store_format)
    return make_error("--experts " + fmt + ": the store at " + *a.get("model") + " holds " + store_format +
                      " experts (convert it again to plan another format)");
  in.expert_format = fmt;
  if (store_blob) {
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

  // The dense weights' form: the store's, or what convert --dense would write (auto).
  std::string dense = a.get_or("dense", store_dense.empty() ? "auto" : store_dense);
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
