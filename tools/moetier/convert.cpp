#include "tools/moetier/convert.h"

#include <fstream>
#include <sstream>

#include "cpu_kernels/expert_ffn.h"
#include "cpu_kernels/ops.h"
#include "offload/expert_store.h"
#include "runtime/model/deepseek_weights.h"
#include "tools/moetier/dense_writer.h"

namespace mt {

namespace fs = std::filesystem;

namespace {

bool is_routed_expert(const std::string& name) { return name.find(".mlp.experts.") != std::string::npos; }

// Layer id of "model.layers.N...." or -1.
int64_t layer_of(const std::string& name) {
  const std::string p = "model.layers.";
  if (name.rfind(p, 0) != 0) return -1;
  int64_t id = 0;
  size_t i = p.size();
  while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])) && id < (1 << 20)) id = id * 10 + (name[i++] - '0');
  return id;
}

Result<std::string> read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) return make_error(p.string() + ": cannot open");
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

}  // namespace

Status write_text_file(const fs::path& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << text;
  f.close();
  if (!f) return make_error("cannot write " + path.string());
  return ok_status();
}

Status copy_tokenizer_files(const fs::path& from, const fs::path& to) {
  for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
    std::error_code ec;
    if (!fs::exists(from / name, ec)) continue;
    fs::copy_file(from / name, to / name, fs::copy_options::overwrite_existing, ec);
    if (ec) return make_error("cannot copy " + (from / name).string() + ": " + ec.message());
  }
  return ok_status();
}

Result<ConvertPlan> plan_conversion(const ConvertOptions& o) {
  MT_ASSIGN(ModelWeights w, ModelWeights::load(o.src));
  const ModelConfig& c = w.config;
  const ExpertGeometry g{o.quant, c.hidden_size, c.moe_intermediate_size, o.group};
  std::string why;
  if (!expert_geometry_valid(g, &why)) return make_error("convert: " + why);
  ConvertPlan p;
  p.config = c;
  p.blob_bytes = expert_blob_layout(g).total_bytes;
  for (const auto& [name, t] : w.store.tensors()) {
    if (layer_of(name) >= c.num_hidden_layers) continue;  // MTP module: not converted
    p.input_bytes += t.nbytes;
    if (!is_routed_expert(name)) p.dense_bytes += t.nbytes;
    if (!is_routed_expert(name) && !name.ends_with("_scale_inv")) p.dense_params += static_cast<uint64_t>(t.numel());
  }
  for (int64_t L = 0; L < c.num_hidden_layers; ++L)
    if (c.is_moe_layer(L)) p.n_blobs += static_cast<uint64_t>(c.n_routed_experts);
  return p;
}

Status convert_to_store(const ConvertOptions& o, const std::function<void(uint64_t)>& progress) {
  MT_ASSIGN(ModelWeights w, ModelWeights::load(o.src));
  const ModelConfig& c = w.config;
  const ExpertGeometry g{o.quant, c.hidden_size, c.moe_intermediate_size, o.group};
  std::string why;
  if (!expert_geometry_valid(g, &why)) return make_error("convert: " + why);
  const ExpertBlobLayout layout = expert_blob_layout(g);
  if (o.dense != "q8" && o.dense != "q4" && o.dense != "bf16")
    return make_error("convert: --dense must be q8, q4 or bf16, got '" + o.dense + "'");

  offload::StoreManifest header;
  header.dense_quant = o.dense;
  header.dense_group = o.group;
  MT_ASSIGN(header.config_json, read_text(fs::is_directory(o.src) ? o.src / "config.json" : o.src));
  header.expert_quant = std::string(expert_quant_name(o.quant));
  header.group = o.group;
  header.hidden = c.hidden_size;
  header.inter = c.moe_intermediate_size;
  header.blob_bytes = layout.total_bytes;
  MT_ASSIGN(offload::ExpertStoreWriter writer, offload::ExpertStoreWriter::create(o.dst, header, o.overwrite));

  // Dense part: every tensor but the routed experts (and the unused MTP module), in
  // checkpoint_layout order (the order make-model --packed writes): matrices packed or as BF16
  // (dense_class), everything else with the bytes as stored.
  for (const TensorSpec& spec : checkpoint_layout(c)) {
    if (is_routed_expert(spec.name)) continue;
    const TensorInfo* t = w.store.find(spec.name);
    const TensorInfo* sc = w.store.find(spec.name + "_scale_inv");
    StoredTensor st{t->name, t->dtype, t->shape, t->data, t->nbytes};
    if (sc) st.scale = sc;
    MT_TRY(write_dense_tensor(writer, spec, st, o.dense, o.group, c.quant.block_rows));
    w.store.release(*t);
    if (progress) progress(t->nbytes + (sc ? sc->nbytes : 0));
    if (sc) w.store.release(*sc);
  }

  // Routed experts: decode exactly to fp32, pack in the kernel layout, one blob each.
  const int64_t D = c.hidden_size, W = c.moe_intermediate_size;
  std::vector<float> gate(static_cast<size_t>(W * D)), up(gate.size()), down(gate.size());
  std::vector<uint8_t> blob(layout.total_bytes);
  for (int64_t L = 0; L < c.num_hidden_layers; ++L) {
    const LayerWeights& lw = w.layers[static_cast<size_t>(L)];
    if (!lw.is_moe) continue;
    for (int64_t e = 0; e < c.n_routed_experts; ++e) {
      const FfnWeights& f = lw.experts[static_cast<size_t>(e)];
      cpu::dequantize_rows(f.gate.view(), 0, W, gate.data());
      cpu::dequantize_rows(f.up.view(), 0, W, up.data());
      cpu::dequantize_rows(f.down.view(), 0, D, down.data());
      cpu::pack_expert(g, gate.data(), up.data(), down.data(), blob.data());
      MT_TRY(writer.add_blob(static_cast<int32_t>(L), static_cast<int32_t>(e), blob.data(), blob.size()));
      const std::string p = "model.layers." + std::to_string(L) + ".mlp.experts." + std::to_string(e) + ".";
      uint64_t bytes = 0;
      for (const char* m : {"gate_proj.weight", "up_proj.weight", "down_proj.weight"})
        for (const std::string& name : {p + m, p + m + "_scale_inv"})
          if (const TensorInfo* t = w.store.find(name)) {
            bytes += t->nbytes;
            w.store.release(*t);
          }
      if (progress) progress(bytes);
    }
  }
  if (fs::is_directory(o.src)) MT_TRY(copy_tokenizer_files(o.src, writer.staging_dir()));
  MT_TRY(write_text_file(writer.staging_dir() / "config.json", header.config_json));
  return writer.finish();
}

}  // namespace mt
