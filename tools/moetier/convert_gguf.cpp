// GGUF (llama.cpp's deepseek2) -> packed store, keeping every tensor's GGUF blocks: the routed
// experts as blobs of their gate, up and down blocks copied from the stacked *_exps tensors
// (ExpertQuant::GGUF, the block types per layer in the manifest, every blob padded to the
// largest layer's size; by default each matrix with a row-tile form as its tiles, the same bytes
// rearranged for the tile GEMV), every other weight in dense.bin under its Hugging Face name, as its
// blocks (DType::GGUF) or as F32/F16/BF16; norms and biases as F32, kv_b as the fp32 matrix
// rejoined from attn_k_b / attn_v_b at load (runtime/model/gguf_weights.h). No value is decoded
// and re-encoded, so the store computes exactly what the GGUF does.
#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "offload/expert_store.h"
#include "runtime/core/ggml_tiles.h"
#include "runtime/core/ggml_types.h"
#include "runtime/model/gguf_weights.h"
#include "runtime/weights/gguf_writer.h"
#include "tools/moetier/convert.h"

namespace mt {

namespace {

// The ggml type id of a GGUF matrix as its view holds it.
uint32_t ggml_id(const Linear& l) { return ggml_float_type(l.dtype).value_or(l.ggml_type); }

struct DenseSource {
  const Linear* linear = nullptr;
  const std::vector<float>* vec = nullptr;
};

// Every non-expert tensor of the model under its Hugging Face name (checkpoint_layout's).
std::map<std::string, DenseSource> dense_sources(const ModelWeights& w) {
  std::map<std::string, DenseSource> m;
  auto lin = [&](const std::string& n, const Linear& l) { m[n].linear = &l; };
  auto vec = [&](const std::string& n, const std::vector<float>& v) { m[n].vec = &v; };
  lin("model.embed_tokens.weight", w.embed);
  vec("model.norm.weight", w.final_norm);
  lin("lm_head.weight", w.lm_head);
  for (size_t L = 0; L < w.layers.size(); ++L) {
    const LayerWeights& lw = w.layers[L];
    const std::string p = "model.layers." + std::to_string(L) + ".", a = p + "self_attn.", f = p + "mlp.";
    vec(p + "input_layernorm.weight", lw.attn_norm);
    vec(p + "post_attention_layernorm.weight", lw.ffn_norm);
    lin(a + "q_a_proj.weight", lw.q_a);
    vec(a + "q_a_layernorm.weight", lw.q_a_norm);
    lin(a + "q_b_proj.weight", lw.q_b);
    lin(a + "kv_a_proj_with_mqa.weight", lw.kv_a);
    vec(a + "kv_a_layernorm.weight", lw.kv_a_norm);
    lin(a + "kv_b_proj.weight", lw.kv_b);
    lin(a + "o_proj.weight", lw.o);
    const FfnWeights* ffn = lw.is_moe ? (lw.has_shared ? &lw.shared : nullptr) : &lw.dense;
    const std::string fp = lw.is_moe ? f + "shared_experts." : f;
    if (ffn) {
      lin(fp + "gate_proj.weight", ffn->gate);
      lin(fp + "up_proj.weight", ffn->up);
      lin(fp + "down_proj.weight", ffn->down);
    }
    if (lw.is_moe) {
      lin(f + "gate.weight", lw.router);
      vec(f + "gate.e_score_correction_bias", lw.router_bias);
    }
  }
  return m;
}

ExpertGeometry layer_geometry(const ModelConfig& c, const LayerWeights& lw, bool tiles) {
  ExpertGeometry g{ExpertQuant::GGUF, c.hidden_size, c.moe_intermediate_size, 0};
  g.ggml_tiles = tiles;
  const FfnWeights& e0 = lw.experts.front();
  g.ggml[0] = ggml_id(e0.gate);
  g.ggml[1] = ggml_id(e0.up);
  g.ggml[2] = ggml_id(e0.down);
  return g;
}

uint64_t linear_bytes(const Linear& l) { return l.view().stored_bytes(); }

}  // namespace

Result<ConvertPlan> plan_gguf_conversion(const ConvertOptions& o) {
  MT_ASSIGN(ModelWeights w, load_gguf_weights(o.src));
  ConvertPlan p;
  p.config = w.config;
  for (const LayerWeights& lw : w.layers) {
    if (!lw.is_moe) continue;
    const ExpertGeometry g = layer_geometry(w.config, lw, o.gguf_tiles);
    p.blob_bytes = std::max<uint64_t>(p.blob_bytes, expert_blob_layout(g).total_bytes);
    p.n_blobs += lw.experts.size();
    for (const FfnWeights& f : lw.experts) p.input_bytes += linear_bytes(f.gate) + linear_bytes(f.up) + linear_bytes(f.down);
  }
  for (const auto& [name, src] : dense_sources(w)) {
    const uint64_t b = src.linear ? linear_bytes(*src.linear) : src.vec->size() * 4;
    p.dense_bytes += b;
    p.input_bytes += b;
    p.dense_params += src.linear ? uint64_t(src.linear->rows * src.linear->cols) : src.vec->size();
  }
  return p;
}

Status convert_gguf_to_store(const ConvertOptions& o, const std::function<void(uint64_t)>& progress) {
  GgufLoadInfo info;
  MT_ASSIGN(ModelWeights w, load_gguf_weights(o.src, &info));
  const ModelConfig& c = w.config;

  offload::StoreManifest header;
  header.config_json = config_to_json(c);
  header.expert_quant = "gguf";
  header.group = 0;
  header.hidden = c.hidden_size;
  header.inter = c.moe_intermediate_size;
  header.dense_quant = "gguf";
  header.dense_group = 32;  // unused: no packed dense tensors
  header.expert_ggml_tiles = o.gguf_tiles;
  std::map<int32_t, ExpertGeometry> geom;
  for (size_t L = 0; L < w.layers.size(); ++L) {
    if (!w.layers[L].is_moe) continue;
    const ExpertGeometry g = layer_geometry(c, w.layers[L], o.gguf_tiles);
    std::string why;
    if (!expert_geometry_valid(g, &why)) return make_error(o.src.string() + ": layer " + std::to_string(L) + ": " + why);
    geom[int32_t(L)] = g;
    header.expert_ggml_types[int32_t(L)] = {g.ggml[0], g.ggml[1], g.ggml[2]};
    header.blob_bytes = std::max<uint64_t>(header.blob_bytes, expert_blob_layout(g).total_bytes);
  }
  if (geom.empty()) return make_error(o.src.string() + ": no MoE layer, nothing to put in an expert store");
  MT_ASSIGN(offload::ExpertStoreWriter writer, offload::ExpertStoreWriter::create(o.dst, header, o.overwrite));

  // Dense part, in checkpoint_layout order (what a packed store binds by). With tiles, the
  // matrices the graph multiplies through the backend's matmul (as generate tiles a GGUF's:
  // not the embedding nor kv_b, which are read by rows) go as row tiles where their type and
  // rows allow.
  const std::map<std::string, DenseSource> sources = dense_sources(w);
  std::set<const Linear*> matmul;
  for_each_model_matmul_weight(w, [&](const Linear& l) { matmul.insert(&l); });
  std::vector<uint8_t> tiles;
  for (const TensorSpec& spec : checkpoint_layout(c)) {
    if (spec.name.find(".mlp.experts.") != std::string::npos) continue;
    auto it = sources.find(spec.name);
    if (it == sources.end()) return make_error("convert: no GGUF tensor for '" + spec.name + "'");
    const DenseSource& s = it->second;
    if (s.vec) {
      MT_TRY(writer.add_dense(spec.name, DType::F32, spec.shape, reinterpret_cast<const uint8_t*>(s.vec->data()),
                              s.vec->size() * 4));
      if (progress) progress(s.vec->size() * 4);
      continue;
    }
    const Linear& l = *s.linear;
    const uint64_t bytes = linear_bytes(l);
    if (o.gguf_tiles && l.dtype == DType::GGUF && matmul.count(&l) && store_tiled_matrix(l.ggml_type, l.rows)) {
      tiles.resize(size_t(ggml_tiled_bytes(l.ggml_type, l.rows, l.cols, ggml_type_info(l.ggml_type)->block)));
      ggml_tile_pack_matrix(l.ggml_type, l.data, l.rows, l.cols, tiles.data());
      MT_TRY(writer.add_dense(spec.name, l.dtype, {l.rows, l.cols}, tiles.data(), tiles.size(), l.ggml_type, true));
    } else {
      MT_TRY(writer.add_dense(spec.name, l.dtype, {l.rows, l.cols}, l.data, bytes, l.ggml_type));
    }
    if (progress) progress(bytes);
  }

  // Routed experts: each blob the expert's three slices of the stacked tensors, byte for byte.
  std::vector<uint8_t> blob(header.blob_bytes);
  for (const auto& [L, g] : geom) {
    const ExpertBlobLayout layout = expert_blob_layout(g);
    const LayerWeights& lw = w.layers[size_t(L)];
    for (size_t e = 0; e < lw.experts.size(); ++e) {
      const FfnWeights& f = lw.experts[e];
      std::fill(blob.begin(), blob.end(), uint8_t{0});
      const Linear* mats[3] = {&f.gate, &f.up, &f.down};
      uint64_t read = 0;
      for (int m = 0; m < 3; ++m) {
        const Linear& l = *mats[m];
        uint8_t* dst = blob.data() + layout.offset(m);
        if (expert_matrix_tiled(g, m)) ggml_tile_pack_matrix(g.ggml[m], l.data, l.rows, l.cols, dst);
        else std::memcpy(dst, l.data, linear_bytes(l));
        read += linear_bytes(l);
      }
      MT_TRY(writer.add_blob(L, int32_t(e), blob.data(), blob.size()));
      if (progress) progress(read);
    }
  }
  MT_TRY(write_text_file(writer.staging_dir() / "config.json", header.config_json));
  // The tokenizer: tokenizer.json beside the GGUF, else the one the file stores, kept as a
  // metadata-only GGUF (tokenizer.gguf) that the store's loader reads.
  std::error_code ec;
  if (std::filesystem::exists(o.src.parent_path() / "tokenizer.json", ec)) {
    MT_TRY(copy_tokenizer_files(o.src.parent_path(), writer.staging_dir()));
  } else if (w.gguf->find_key("tokenizer.ggml.model")) {
    std::map<std::string, GgufValue, std::less<>> kv;
    for (const auto& [key, v] : w.gguf->metadata())
      if (key.rfind("tokenizer.", 0) == 0) kv.emplace(key, v);
    MT_TRY(write_gguf_metadata(writer.staging_dir() / "tokenizer.gguf", kv));
  }
  return writer.finish();
}

}  // namespace mt
