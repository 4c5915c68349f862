#include "planner/activation_stats.h"
#include "runtime/core/json_fields.h"
#include "runtime/core/text_file.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>
#include <sstream>
#include <utility>

namespace mt::planner {

namespace {

constexpr const char* kFormat = "moetier-activations";
constexpr int kVersion = 1;
// Bounds that keep a hostile file from asking for absurd allocations before the length checks.
constexpr int64_t kMaxLayers = 1 << 16;
constexpr int64_t kMaxExperts = 1 << 16;

// Largest count first; ties by expert id so files are reproducible.
void sort_followers(std::vector<std::pair<int32_t, uint64_t>>& v) {
  std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
}

std::string shape_text(int64_t layers, int64_t first_moe, int64_t experts, int64_t top_k) {
  return std::to_string(layers) + " layers (first MoE layer " + std::to_string(first_moe) + "), " +
         std::to_string(experts) + " routed experts, top-" + std::to_string(top_k);
}

// Typed field access with messages "WHERE: PATH: problem".
class Reader {
 public:
  explicit Reader(const std::string& where) : where_(where) {}

  Error fail(const std::string& path, const std::string& problem) const {
    return make_error(where_ + ": " + path + ": " + problem);
  }

  Result<const nlohmann::json*> field(const nlohmann::json& obj, const std::string& path, const char* key) const {
    auto it = obj.find(key);
    if (it == obj.end()) return fail(path.empty() ? key : path + "." + key, "missing");
    return &*it;
  }

  // The values through JsonFields (runtime/core/json_fields.h): one range rule and message format.
  Result<int64_t> integer(const nlohmann::json& v, const std::string& path, int64_t lo, int64_t hi) const {
    return JsonFields<nlohmann::json>(v, where_).integer_value(v, path, lo, hi);
  }

  Result<uint64_t> count(const nlohmann::json& v, const std::string& path) const {
    return JsonFields<nlohmann::json>(v, where_).count_value(v, path, 0, std::numeric_limits<uint64_t>::max());
  }

 private:
  const std::string& where_;
};

Result<LayerActivations> read_layer(const Reader& r, const nlohmann::json& jl, const std::string& path,
                                    const ActivationStats& s) {
  if (!jl.is_object()) return r.fail(path, "expected an object, found " + std::string(jl.type_name()));
  LayerActivations la;
  MT_ASSIGN(const nlohmann::json* layer, r.field(jl, path, "layer"));
  MT_ASSIGN(int64_t L, r.integer(*layer, path + ".layer", s.first_moe_layer, s.num_hidden_layers - 1));
  la.layer = static_cast<int32_t>(L);

  MT_ASSIGN(const nlohmann::json* counts, r.field(jl, path, "counts"));
  if (!counts->is_array()) return r.fail(path + ".counts", "expected an array, found " + std::string(counts->type_name()));
  if (static_cast<int64_t>(counts->size()) != s.n_routed_experts)
    return r.fail(path + ".counts", "expected " + std::to_string(s.n_routed_experts) +
                                        " entries (n_routed_experts), found " + std::to_string(counts->size()));
  la.counts.reserve(counts->size());
  uint64_t sum = 0;
  for (size_t e = 0; e < counts->size(); ++e) {
    MT_ASSIGN(uint64_t c, r.count((*counts)[e], path + ".counts[" + std::to_string(e) + "]"));
    if (__builtin_add_overflow(sum, c, &sum)) return r.fail(path + ".counts", "the counts overflow 64 bits");
    la.counts.push_back(c);
  }
  if (s.uniform_prior && sum != 0) return r.fail(path + ".counts", "a uniform prior has no counts (all must be 0)");
  uint64_t choices = 0;
  if (!s.uniform_prior &&
      (__builtin_mul_overflow(s.tokens, static_cast<uint64_t>(s.top_k), &choices) || sum != choices))
    return r.fail(path + ".counts", "the counts sum to " + std::to_string(sum) + ", not tokens x top_k = " +
                                        std::to_string(s.tokens) + " x " + std::to_string(s.top_k));

  MT_ASSIGN(const nlohmann::json* next, r.field(jl, path, "next"));
  if (!next->is_array()) return r.fail(path + ".next", "expected an array, found " + std::string(next->type_name()));
  if (!next->empty() && static_cast<int64_t>(next->size()) != s.n_routed_experts)
    return r.fail(path + ".next", "expected 0 or " + std::to_string(s.n_routed_experts) +
                                      " lists (one per expert), found " + std::to_string(next->size()));
  if (s.uniform_prior && !next->empty()) return r.fail(path + ".next", "a uniform prior has no followers (must be [])");
  la.next.resize(next->size());
  for (size_t e = 0; e < next->size(); ++e) {
    const std::string pe = path + ".next[" + std::to_string(e) + "]";
    const nlohmann::json& list = (*next)[e];
    if (!list.is_array()) return r.fail(pe, "expected an array of [expert, count] pairs, found " + std::string(list.type_name()));
    std::set<int64_t> seen;
    for (size_t i = 0; i < list.size(); ++i) {
      const std::string pi = pe + "[" + std::to_string(i) + "]";
      const nlohmann::json& pair = list[i];
      if (!pair.is_array() || pair.size() != 2) return r.fail(pi, "expected a pair [expert, count]");
      MT_ASSIGN(int64_t f, r.integer(pair[0], pi + "[0] (expert)", 0, s.n_routed_experts - 1));
      MT_ASSIGN(uint64_t c, r.count(pair[1], pi + "[1] (count)"));
      if (c == 0) return r.fail(pi, "a follower listed with count 0");
      if (c > la.counts[e])
        return r.fail(pi, "follows expert " + std::to_string(e) + " " + std::to_string(c) + " times, but that expert was chosen only " +
                              std::to_string(la.counts[e]) + " times");
      if (!seen.insert(f).second) return r.fail(pi, "expert " + std::to_string(f) + " listed twice");
      la.next[e].emplace_back(static_cast<int32_t>(f), c);
    }
    sort_followers(la.next[e]);
  }
  // Optional (traces before 2026-12-03 have no predictions).
  if (jl.contains("predicted") || jl.contains("predicted_used")) {
    MT_ASSIGN(const nlohmann::json* pred, r.field(jl, path, "predicted"));
    MT_ASSIGN(la.predicted, r.count(*pred, path + ".predicted"));
    MT_ASSIGN(const nlohmann::json* used, r.field(jl, path, "predicted_used"));
    MT_ASSIGN(la.predicted_used, r.count(*used, path + ".predicted_used"));
    if (la.predicted_used > la.predicted)
      return r.fail(path + ".predicted_used", "is " + std::to_string(la.predicted_used) + ", more than predicted (" +
                                                  std::to_string(la.predicted) + ")");
    uint64_t choices = 0;
    if (!__builtin_mul_overflow(s.tokens, static_cast<uint64_t>(s.top_k), &choices) && la.predicted > choices)
      return r.fail(path + ".predicted", "is " + std::to_string(la.predicted) + ", more than tokens x top_k = " +
                                             std::to_string(choices));
  }
  return la;
}

}  // namespace

int64_t first_moe_layer(const ModelConfig& c) {
  for (int64_t L = 0; L < c.num_hidden_layers; ++L)
    if (c.is_moe_layer(L)) return L;
  return c.num_hidden_layers;
}

const LayerActivations* ActivationStats::find(int64_t layer) const {
  auto it = std::lower_bound(layers.begin(), layers.end(), layer,
                             [](const LayerActivations& a, int64_t l) { return a.layer < l; });
  return it != layers.end() && it->layer == layer ? &*it : nullptr;
}

double ActivationStats::frequency(int64_t layer, int64_t expert) const {
  const LayerActivations* la = find(layer);
  if (!la || expert < 0 || expert >= n_routed_experts) return 0.0;
  if (uniform_prior) return static_cast<double>(top_k) / static_cast<double>(n_routed_experts);
  if (tokens == 0 || static_cast<size_t>(expert) >= la->counts.size()) return 0.0;
  return static_cast<double>(la->counts[static_cast<size_t>(expert)]) / static_cast<double>(tokens);
}

double ActivationStats::prediction_agreement() const {
  uint64_t predicted = 0, used = 0;
  for (const auto& la : layers) predicted += la.predicted, used += la.predicted_used;
  return predicted ? double(used) / double(predicted) : -1.0;
}

ActivationStats uniform_activations(const ModelConfig& c) {
  ActivationStats s;
  s.model = "uniform prior";
  s.num_hidden_layers = c.num_hidden_layers;
  s.first_moe_layer = first_moe_layer(c);
  s.n_routed_experts = c.n_routed_experts;
  s.top_k = c.num_experts_per_tok;
  s.uniform_prior = true;
  for (int64_t L = 0; L < c.num_hidden_layers; ++L) {
    if (!c.is_moe_layer(L)) continue;
    LayerActivations la;
    la.layer = static_cast<int32_t>(L);
    la.counts.assign(static_cast<size_t>(c.n_routed_experts), 0);
    s.layers.push_back(std::move(la));
  }
  return s;
}

// ---- recorder ----

ActivationRecorder::ActivationRecorder(const ModelConfig& c, std::string model_name) {
  s_.model = std::move(model_name);
  s_.num_hidden_layers = c.num_hidden_layers;
  s_.first_moe_layer = first_moe_layer(c);
  s_.n_routed_experts = c.n_routed_experts;
  s_.top_k = c.num_experts_per_tok;
  const auto E = static_cast<size_t>(c.n_routed_experts);
  moe_index_.assign(static_cast<size_t>(c.num_hidden_layers), -1);
  for (int64_t L = 0; L < c.num_hidden_layers; ++L) {
    if (!c.is_moe_layer(L)) continue;
    moe_index_[static_cast<size_t>(L)] = static_cast<int32_t>(s_.layers.size());
    LayerActivations la;
    la.layer = static_cast<int32_t>(L);
    la.counts.assign(E, 0);
    s_.layers.push_back(std::move(la));
  }
  // The last MoE layer has no follower layer.
  next_dense_.resize(s_.layers.empty() ? 0 : s_.layers.size() - 1,
                     std::vector<std::vector<uint64_t>>(E, std::vector<uint64_t>(E, 0)));
}

void ActivationRecorder::record(int64_t layer, const int32_t* experts, int64_t n, int64_t top_k) {
  if (layer < 0 || layer >= static_cast<int64_t>(moe_index_.size()) || top_k != s_.top_k || n < 0) return;
  const int32_t idx = moe_index_[static_cast<size_t>(layer)];
  if (idx < 0) return;
  const size_t count = static_cast<size_t>(n * top_k);
  for (size_t i = 0; i < count; ++i)
    if (experts[i] < 0 || experts[i] >= s_.n_routed_experts) return;

  dirty_ = true;
  LayerActivations& la = s_.layers[static_cast<size_t>(idx)];
  for (size_t i = 0; i < count; ++i) ++la.counts[static_cast<size_t>(experts[i])];
  if (idx == 0) s_.tokens += static_cast<uint64_t>(n);

  // Same tokens in the previous MoE layer of this forward pass: pair every expert a token chose
  // there with every expert it chooses here.
  if (idx > 0 && prev_layer_ == s_.layers[static_cast<size_t>(idx) - 1].layer && prev_rows_.size() == count) {
    auto& dense = next_dense_[static_cast<size_t>(idx) - 1];
    const auto K = static_cast<size_t>(top_k);
    for (size_t t = 0; t < static_cast<size_t>(n); ++t)
      for (size_t a = 0; a < K; ++a)
        for (size_t b = 0; b < K; ++b)
          ++dense[static_cast<size_t>(prev_rows_[t * K + a])][static_cast<size_t>(experts[t * K + b])];
  }
  if (predicted_layer_ == layer && predicted_rows_.size() == count) {
    const auto K = static_cast<size_t>(top_k);
    for (size_t t = 0; t < static_cast<size_t>(n); ++t)
      for (size_t a = 0; a < K; ++a)
        la.predicted_used += std::count(experts + t * K, experts + (t + 1) * K, predicted_rows_[t * K + a]) > 0;
    la.predicted += count;
  }
  // A prediction is for one routing of its layer (this layer's own routing may come between
  // the prediction of the next one and its routing).
  if (predicted_layer_ == layer) predicted_layer_ = -1;
  prev_layer_ = layer;
  prev_rows_.assign(experts, experts + count);
}

void ActivationRecorder::record_prediction(int64_t layer, const int32_t* experts, int64_t n, int64_t top_k) {
  predicted_layer_ = -1;
  if (layer < 0 || layer >= static_cast<int64_t>(moe_index_.size()) || top_k != s_.top_k || n < 0) return;
  if (moe_index_[static_cast<size_t>(layer)] < 0) return;
  predicted_layer_ = layer;
  predicted_rows_.assign(experts, experts + static_cast<size_t>(n * top_k));
}

const ActivationStats& ActivationRecorder::stats() {
  if (!dirty_) return s_;
  for (size_t i = 0; i < s_.layers.size(); ++i) {
    LayerActivations& la = s_.layers[i];
    la.next.clear();
    if (i >= next_dense_.size()) continue;
    la.next.resize(next_dense_[i].size());
    for (size_t e = 0; e < next_dense_[i].size(); ++e) {
      auto& out = la.next[e];
      for (size_t f = 0; f < next_dense_[i][e].size(); ++f)
        if (next_dense_[i][e][f]) out.emplace_back(static_cast<int32_t>(f), next_dense_[i][e][f]);
      sort_followers(out);
      if (out.size() > kMaxFollowers) out.resize(kMaxFollowers);
    }
  }
  dirty_ = false;
  return s_;
}

// ---- JSON ----

nlohmann::json activations_to_json(const ActivationStats& s) {
  nlohmann::json j;
  j["format"] = kFormat;
  j["version"] = s.version;
  j["model"] = s.model;
  j["num_hidden_layers"] = s.num_hidden_layers;
  j["first_moe_layer"] = s.first_moe_layer;
  j["n_routed_experts"] = s.n_routed_experts;
  j["top_k"] = s.top_k;
  j["tokens"] = s.tokens;
  j["uniform_prior"] = s.uniform_prior;
  nlohmann::json layers = nlohmann::json::array();
  for (const LayerActivations& la : s.layers) {
    nlohmann::json next = nlohmann::json::array();
    for (const auto& list : la.next) {
      nlohmann::json jl = nlohmann::json::array();
      for (const auto& [f, c] : list) jl.push_back({f, c});
      next.push_back(std::move(jl));
    }
    layers.push_back({{"layer", la.layer},
                      {"counts", la.counts},
                      {"next", std::move(next)},
                      {"predicted", la.predicted},
                      {"predicted_used", la.predicted_used}});
  }
  j["layers"] = std::move(layers);
  return j;
}

Result<ActivationStats> activations_from_json(const nlohmann::json& j, const std::string& where,
                                              const ModelConfig* expect) {
  const Reader r(where);
  if (!j.is_object()) return r.fail("top level", "expected an object, found " + std::string(j.type_name()));
  ActivationStats s;

  MT_ASSIGN(const nlohmann::json* format, r.field(j, "", "format"));
  if (!format->is_string() || format->get<std::string>() != kFormat)
    return r.fail("format", std::string("expected \"") + kFormat + "\" (not a `moetier trace` file?)");
  MT_ASSIGN(const nlohmann::json* version, r.field(j, "", "version"));
  MT_ASSIGN(int64_t v, r.integer(*version, "version", kVersion, kVersion));
  s.version = static_cast<int>(v);
  MT_ASSIGN(const nlohmann::json* model, r.field(j, "", "model"));
  if (!model->is_string()) return r.fail("model", "expected a string, found " + std::string(model->type_name()));
  s.model = model->get<std::string>();

  auto int_field = [&](const char* key, int64_t lo, int64_t hi, int64_t& out) -> Status {
    MT_ASSIGN(const nlohmann::json* f, r.field(j, "", key));
    MT_ASSIGN(out, r.integer(*f, key, lo, hi));
    return ok_status();
  };
  MT_TRY(int_field("num_hidden_layers", 1, kMaxLayers, s.num_hidden_layers));
  MT_TRY(int_field("first_moe_layer", 0, s.num_hidden_layers, s.first_moe_layer));
  MT_TRY(int_field("n_routed_experts", 1, kMaxExperts, s.n_routed_experts));
  MT_TRY(int_field("top_k", 1, s.n_routed_experts, s.top_k));
  MT_ASSIGN(const nlohmann::json* tokens, r.field(j, "", "tokens"));
  MT_ASSIGN(s.tokens, r.count(*tokens, "tokens"));
  MT_ASSIGN(const nlohmann::json* uniform, r.field(j, "", "uniform_prior"));
  if (!uniform->is_boolean()) return r.fail("uniform_prior", "expected true or false, found " + std::string(uniform->type_name()));
  s.uniform_prior = uniform->get<bool>();
  if (s.uniform_prior && s.tokens != 0) return r.fail("tokens", "a uniform prior has no traced tokens (must be 0)");

  if (expect) {
    const int64_t first = first_moe_layer(*expect);
    if (s.num_hidden_layers != expect->num_hidden_layers || s.first_moe_layer != first ||
        s.n_routed_experts != expect->n_routed_experts || s.top_k != expect->num_experts_per_tok)
      return make_error(where + ": the trace is of a model with " +
                        shape_text(s.num_hidden_layers, s.first_moe_layer, s.n_routed_experts, s.top_k) +
                        " but this model has " +
                        shape_text(expect->num_hidden_layers, first, expect->n_routed_experts,
                                   expect->num_experts_per_tok) +
                        "; re-run `moetier trace` on this model");
  }

  MT_ASSIGN(const nlohmann::json* layers, r.field(j, "", "layers"));
  if (!layers->is_array()) return r.fail("layers", "expected an array, found " + std::string(layers->type_name()));
  for (size_t i = 0; i < layers->size(); ++i) {
    const std::string path = "layers[" + std::to_string(i) + "]";
    MT_ASSIGN(LayerActivations la, read_layer(r, (*layers)[i], path, s));
    if (!s.layers.empty() && la.layer <= s.layers.back().layer)
      return r.fail(path + ".layer", "layer " + std::to_string(la.layer) + " after layer " +
                                         std::to_string(s.layers.back().layer) + " (layers must increase)");
    s.layers.push_back(std::move(la));
  }
  if (s.layers.empty() && s.first_moe_layer < s.num_hidden_layers)
    return r.fail("layers", "empty, but the model has MoE layers from layer " + std::to_string(s.first_moe_layer));
  if (expect) {
    for (int64_t L = 0; L < expect->num_hidden_layers; ++L)
      if (expect->is_moe_layer(L) != (s.find(L) != nullptr))
        return r.fail("layers", "layer " + std::to_string(L) +
                                    (s.find(L) ? " is listed but is a dense layer of this model"
                                               : " is an MoE layer of this model but is missing") +
                                    "; re-run `moetier trace` on this model");
  }
  return s;
}

Result<ActivationStats> load_activations(const std::filesystem::path& file, const ModelConfig* expect) {
  std::error_code ec;
  if (std::filesystem::is_directory(file, ec)) return make_error(file.string() + ": is a directory, not an activation trace");
  auto text = read_text_file(file);
  if (!text) return make_error(text.error() + " (the activation trace)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(*text);
  } catch (const nlohmann::json::exception& e) {
    return make_error(file.string() + ": not valid JSON (" + e.what() + ")");
  }
  return activations_from_json(j, file.string(), expect);
}

Status save_activations(const std::filesystem::path& file, const ActivationStats& s) {
  const nlohmann::json j = activations_to_json(s);
  auto dump = [](const nlohmann::json& v) { return v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); };
  // One top-level field per line and one line per layer: readable, and diff-friendly.
  std::string out = "{\n";
  for (const char* key : {"format", "version", "model", "num_hidden_layers", "first_moe_layer", "n_routed_experts",
                          "top_k", "tokens", "uniform_prior"})
    out += std::string("  \"") + key + "\": " + dump(j[key]) + ",\n";
  out += "  \"layers\": [";
  const auto& layers = j["layers"];
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& l = layers[i];
    out += std::string(i ? ",\n    " : "\n    ") + "{\"layer\":" + dump(l["layer"]) + ",\"counts\":" + dump(l["counts"]) +
           ",\"next\":" + dump(l["next"]) + ",\"predicted\":" + dump(l["predicted"]) +
           ",\"predicted_used\":" + dump(l["predicted_used"]) + "}";
  }
  out += layers.empty() ? "]\n}\n" : "\n  ]\n}\n";

  return write_file_atomic(file, out);
}

}  // namespace mt::planner
