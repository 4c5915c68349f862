#include "tools/moetier/synthetic_model.h"

#include "tools/moetier/dense_writer.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>

#include "cpu_kernels/expert_ffn.h"
#include "cpu_kernels/ops.h"
#include "offload/expert_store.h"
#include "runtime/model/deepseek_weights.h"
#include "runtime/weights/safetensors.h"
#include "runtime/weights/safetensors_stream.h"
#include "tools/moetier/convert.h"
#include "tools/moetier/dense_writer.h"

namespace mt {

namespace fs = std::filesystem;

namespace {

// Counter-based random numbers: every (seed, tensor, row) has its own stream, so the output
// does not depend on thread count, write order or sharding.
uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t hash_name(const std::string& s) {
  uint64_t h = 1469598103934665603ull;  // FNV-1a
  for (unsigned char ch : s) h = (h ^ ch) * 1099511628211ull;
  return h;
}

// Zero-mean, unit-variance values: the sum of two uniforms (a triangular distribution),
// one hash per value. The shape hardly matters for synthetic weights; speed does at 700 GB.
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  float unit() {
    const uint64_t h = splitmix64(s_++);
    const float a = static_cast<float>(h >> 40) * 0x1.0p-24f, b = static_cast<float>((h >> 16) & 0xffffff) * 0x1.0p-24f;
    return (a + b - 1.0f) * 2.449489743f;  // sqrt(6): variance of (a+b-1) is 1/6
  }

 private:
  uint64_t s_;
};

bool is_fp8_candidate(TensorRole r) { return r == TensorRole::Linear; }

DType stored_dtype(const TensorSpec& t, bool fp8) {
  if (t.role == TensorRole::RouterBias) return DType::F32;
  if (t.role == TensorRole::NormBias) return DType::F32;
  // The V3.2 indexer's LayerNorm is stored in F32 in DeepSeek's checkpoints (spec 2.3).
  if (t.name.find(".indexer.k_norm.") != std::string::npos) return DType::F32;
  if (fp8 && is_fp8_candidate(t.role)) return DType::F8_E4M3;
  return DType::BF16;
}

int64_t numel(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

// Standard deviation of the values of one tensor (see the header comment for the intent).
double init_std(const TensorSpec& t, const ModelConfig& c) {
  switch (t.role) {
    case TensorRole::Embedding: return 1.0;
    case TensorRole::LmHead: return 2.0 / std::sqrt(static_cast<double>(c.hidden_size));
    case TensorRole::Norm: return 0.1;        // around 1.0, see fill()
    case TensorRole::NormBias: return 0.1;
    case TensorRole::RouterBias: return 0.15;  // comparable to sigmoid score gaps
    case TensorRole::Router:
    case TensorRole::Linear: return 1.0 / std::sqrt(static_cast<double>(t.shape.back()));
  }
  return 1.0;
}

std::vector<float> fill(const TensorSpec& t, const ModelConfig& c, uint64_t seed) {
  const int64_t n = numel(t.shape);
  const int64_t cols = t.shape.back(), rows = n / cols;
  const auto sd = static_cast<float>(init_std(t, c));
  const float mean = t.role == TensorRole::Norm ? 1.0f : 0.0f;
  std::vector<float> v(static_cast<size_t>(n));
  const uint64_t base = splitmix64(seed ^ hash_name(t.name));
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    Rng rng(splitmix64(base + static_cast<uint64_t>(r)));
    for (int64_t j = 0; j < cols; ++j) v[static_cast<size_t>(r * cols + j)] = mean + sd * rng.unit();
  }
  return v;
}

void quantize_fp8(const std::vector<float>& w, int64_t rows, int64_t cols, int64_t block, bool ue8m0,
                  std::vector<uint8_t>& q, std::vector<uint8_t>& scale_bytes) {
  const int64_t br = (rows + block - 1) / block, bc = (cols + block - 1) / block;
  std::vector<float> scale(static_cast<size_t>(br * bc));
  q.resize(static_cast<size_t>(rows * cols));
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 16))
  for (int64_t b = 0; b < br * bc; ++b) {
    const int64_t r0 = (b / bc) * block, c0 = (b % bc) * block;
    const int64_t r1 = std::min(rows, r0 + block), c1 = std::min(cols, c0 + block);
    float amax = 0.0f;  // over the real (unpadded) elements of the tile
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t j = c0; j < c1; ++j) amax = std::max(amax, std::fabs(w[static_cast<size_t>(r * cols + j)]));
    float s = std::max(amax, 1e-12f) / kFp8E4M3Max;
    if (ue8m0) s = std::exp2(std::ceil(std::log2(s)));
    scale[static_cast<size_t>(b)] = s;
    const float inv = 1.0f / s;  // exact for power-of-two scales; otherwise within an ulp of w/s
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t j = c0; j < c1; ++j)
        q[static_cast<size_t>(r * cols + j)] = f32_to_fp8e4m3(w[static_cast<size_t>(r * cols + j)] * inv);
  }
  scale_bytes.resize(scale.size() * 4);
  std::memcpy(scale_bytes.data(), scale.data(), scale_bytes.size());
}

std::vector<uint8_t> encode(const std::vector<float>& v, DType dt) {  // F32 or BF16
  std::vector<uint8_t> out(v.size() * dtype_size(dt));
  if (dt == DType::F32) {
    std::memcpy(out.data(), v.data(), out.size());
  } else {  // BF16
    for (size_t i = 0; i < v.size(); ++i) {
      const uint16_t h = f32_to_bf16(v[i]);
      std::memcpy(&out[2 * i], &h, 2);
    }
  }
  return out;
}

// Bytes of one tensor plus its scale tensor, as stored.
int64_t stored_bytes(const TensorSpec& t, const SyntheticModelOptions& o) {
  const DType dt = stored_dtype(t, o.fp8);
  int64_t b = numel(t.shape) * static_cast<int64_t>(dtype_size(dt));
  if (dt == DType::F8_E4M3) {
    const int64_t blk = o.config.quant.block_rows;
    b += ((t.shape[0] + blk - 1) / blk) * ((t.shape[1] + blk - 1) / blk) * 4;
  }
  return b;
}

// Copies tokenizer.json and, when present, tokenizer_config.json into dir.
Status copy_tokenizer(const std::pair<fs::path, fs::path>& tok, const fs::path& dir) {
  std::error_code ec;
  for (const auto& [from, name] : {std::pair{tok.first, "tokenizer.json"}, std::pair{tok.second, "tokenizer_config.json"}}) {
    if (name == std::string("tokenizer_config.json") && !fs::is_regular_file(from, ec)) continue;
    fs::copy_file(from, dir / name, fs::copy_options::overwrite_existing, ec);
    if (ec) return make_error("make-model: cannot copy " + from.string() + " to " + dir.string() + ": " + ec.message());
  }
  return ok_status();
}


bool is_routed_expert(const TensorSpec& t) { return t.name.find(".mlp.experts.") != std::string::npos; }

// The tokenizer's tokenizer.json and (optional) tokenizer_config.json.
Result<std::pair<fs::path, fs::path>> tokenizer_files(const fs::path& tok) {
  fs::path json = tok, cfg;
  std::error_code ec;
  if (fs::is_directory(tok, ec)) {
    json = tok / "tokenizer.json";
    cfg = tok / "tokenizer_config.json";
  } else {
    cfg = tok.parent_path() / "tokenizer_config.json";
  }
  if (!fs::is_regular_file(json, ec))
    return make_error("make-model: tokenizer file " + json.string() + " not found (pass --tokenizer DIR)");
  return std::make_pair(json, cfg);
}

// A routed expert matrix as the checkpoint would store it (FP8 with block scales, or BF16),
// decoded back to fp32: what `moetier convert` would read.
void round_trip_as_stored(std::vector<float>& v, const TensorSpec& t, const SyntheticModelOptions& o) {
  const ModelConfig& c = o.config;
  if (o.fp8) {
    std::vector<uint8_t> q, sb;
    quantize_fp8(v, t.shape[0], t.shape[1], c.quant.block_rows, c.quant.scale_fmt == "ue8m0", q, sb);
    std::vector<float> scale(sb.size() / 4);
    std::memcpy(scale.data(), sb.data(), sb.size());
    const WeightView wv{DType::F8_E4M3, q.data(), t.shape[0], t.shape[1], scale.data(), c.quant.block_rows};
    cpu::dequantize_rows(wv, 0, t.shape[0], v.data());
  } else {
    for (float& x : v) x = bf16_to_f32(f32_to_bf16(x));
  }
}

Status write_packed(const SyntheticModelOptions& o, const ProgressFn& progress) {
  const ModelConfig& c = o.config;
  MT_ASSIGN(auto tok, tokenizer_files(o.tokenizer));
  const ExpertGeometry g{o.packed_quant, c.hidden_size, c.moe_intermediate_size, o.packed_group};
  std::string why;
  if (!expert_geometry_valid(g, &why)) return make_error("make-model: " + why);
  offload::StoreManifest header;
  header.config_json = config_to_json(c);
  header.expert_quant = std::string(expert_quant_name(g.quant));
  header.group = g.group;
  header.hidden = g.hidden;
  header.inter = g.inter;
  header.blob_bytes = expert_blob_layout(g).total_bytes;
  header.dense_quant = o.packed_dense;
  header.dense_group = o.packed_group;
  MT_ASSIGN(offload::ExpertStoreWriter writer, offload::ExpertStoreWriter::create(o.out, header, o.overwrite));

  const std::vector<TensorSpec> layout = checkpoint_layout(c);
  std::vector<float> gate, up;
  std::vector<uint8_t> blob(header.blob_bytes);
  const bool ue8m0 = c.quant.scale_fmt == "ue8m0";
  for (const auto& t : layout) {
    std::vector<float> v = fill(t, c, o.seed);
    if (progress) progress(stored_bytes(t, o));
    if (!is_routed_expert(t)) {
      // The tensor as the checkpoint would store it, then into the store as convert writes it.
      const DType dt = stored_dtype(t, o.fp8);
      std::vector<uint8_t> bytes, sb;
      TensorInfo scale;
      StoredTensor st{t.name, dt, t.shape, nullptr, 0};
      if (dt == DType::F8_E4M3) {
        quantize_fp8(v, t.shape[0], t.shape[1], c.quant.block_rows, ue8m0, bytes, sb);
        const int64_t blk = c.quant.block_rows;
        scale = TensorInfo{t.name + "_scale_inv", DType::F32,
                           {(t.shape[0] + blk - 1) / blk, (t.shape[1] + blk - 1) / blk}, sb.data(), sb.size(), "", 0};
        st.scale = &scale;
      } else {
        bytes = encode(v, dt);
      }
      st.data = bytes.data();
      st.nbytes = bytes.size();
      MT_TRY(write_dense_tensor(writer, t, st, o.packed_dense, o.packed_group, c.quant.block_rows));
      continue;
    }
    round_trip_as_stored(v, t, o);
    // checkpoint_layout lists each expert's gate, up, down in that order.
    if (t.name.ends_with(".gate_proj.weight")) gate = std::move(v);
    else if (t.name.ends_with(".up_proj.weight")) up = std::move(v);
    else {
      cpu::pack_expert(g, gate.data(), up.data(), v.data(), blob.data());
      const size_t e0 = t.name.find(".experts.") + 9;
      const auto expert = static_cast<int32_t>(std::stol(t.name.substr(e0)));
      MT_TRY(writer.add_blob(static_cast<int32_t>(t.layer), expert, blob.data(), blob.size()));
    }
  }
  MT_TRY(copy_tokenizer(tok, writer.staging_dir()));
  MT_TRY(write_text_file(writer.staging_dir() / "config.json", header.config_json));
  return writer.finish();
}

}  // namespace

int64_t synthetic_model_bytes(const SyntheticModelOptions& o) {
  int64_t total = 0;
  for (const auto& t : checkpoint_layout(o.config)) total += stored_bytes(t, o);
  return total;
}

Status write_synthetic_model(const SyntheticModelOptions& opt, const ProgressFn& progress) {
  SyntheticModelOptions o = opt;
  ModelConfig& c = o.config;
  c.quant.fp8 = o.fp8;
  if (!o.fp8) c.quant.scale_fmt.clear();
  MT_TRY(validate_config(c, "make-model"));
  if (o.packed) return write_packed(o, progress);

  MT_ASSIGN(auto tok, tokenizer_files(o.tokenizer));
  std::error_code ec;

  if (fs::exists(o.out, ec) && !o.overwrite)
    return make_error("make-model: " + o.out.string() + " already exists (pass --force to replace it)");
  const fs::path tmp = fs::path(o.out.string() + ".partial");
  fs::remove_all(tmp, ec);
  if (!fs::create_directories(tmp, ec) || ec)
    return make_error("make-model: cannot create " + tmp.string() + ": " + ec.message());

  const std::vector<TensorSpec> layout = checkpoint_layout(c);
  // Assign tensors to shards by cumulative size so the shard count is known before writing.
  std::vector<int> shard_of(layout.size(), 0);
  int n_shards = 1;
  if (o.shard_bytes > 0) {
    int64_t in_shard = 0;
    for (size_t i = 0; i < layout.size(); ++i) {
      const int64_t b = stored_bytes(layout[i], o);
      if (in_shard > 0 && in_shard + b > o.shard_bytes) {
        ++n_shards;
        in_shard = 0;
      }
      shard_of[i] = n_shards - 1;
      in_shard += b;
    }
  }
  auto shard_name = [&](int s) {
    if (o.shard_bytes <= 0) return std::string("model.safetensors");
    char buf[64];
    std::snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
    return std::string(buf);
  };

  std::map<std::string, std::string> weight_map;
  uint64_t total = 0;
  std::vector<SafetensorsWriter::Entry> entries;
  const bool ue8m0 = c.quant.scale_fmt == "ue8m0";
  for (size_t i = 0; i < layout.size(); ++i) {
    const TensorSpec& t = layout[i];
    const DType dt = stored_dtype(t, o.fp8);
    std::vector<float> v = fill(t, c, o.seed);
    if (dt == DType::F8_E4M3) {
      SafetensorsWriter::Entry w{t.name, dt, t.shape, {}}, s{t.name + "_scale_inv", DType::F32, {}, {}};
      const int64_t blk = c.quant.block_rows;
      s.shape = {(t.shape[0] + blk - 1) / blk, (t.shape[1] + blk - 1) / blk};
      quantize_fp8(v, t.shape[0], t.shape[1], blk, ue8m0, w.bytes, s.bytes);
      entries.push_back(std::move(w));
      entries.push_back(std::move(s));
    } else {
      entries.push_back(SafetensorsWriter::Entry{t.name, dt, t.shape, encode(v, dt)});
    }
    if (progress) progress(stored_bytes(t, o));
    const bool last_in_shard = i + 1 == layout.size() || shard_of[i + 1] != shard_of[i];
    if (!last_in_shard) continue;
    const std::string file = shard_name(shard_of[i]);
    int64_t bytes = 0;
    for (const auto& e : entries) {
      weight_map[e.name] = file;
      bytes += static_cast<int64_t>(e.bytes.size());
    }
    MT_TRY(SafetensorsWriter::write_file(tmp / file, entries, {{"format", "pt"}}));
    total += static_cast<uint64_t>(bytes);
    entries.clear();
  }
  if (o.shard_bytes > 0) MT_TRY(SafetensorsWriter::write_index(tmp, weight_map, total));
  MT_TRY(write_text_file(tmp / "config.json", config_to_json(c)));
  MT_TRY(copy_tokenizer(tok, tmp));

  if (fs::exists(o.out, ec)) fs::remove_all(o.out, ec);
  if (ec) return make_error("make-model: cannot replace " + o.out.string() + ": " + ec.message());
  fs::rename(tmp, o.out, ec);
  if (ec) return make_error("make-model: cannot rename " + tmp.string() + " to " + o.out.string() + ": " + ec.message());
  return ok_status();
}

}  // namespace mt
