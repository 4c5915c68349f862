// Activation statistics (planner/activation_stats.h): the recorder against counts worked out by
// hand, frequencies, the uniform prior, the JSON file and every kind of malformed file.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "planner/activation_stats.h"
#include "tests/unit/temp_dir.h"

using namespace mt;
using namespace mt::planner;
using Followers = std::vector<std::pair<int32_t, uint64_t>>;

namespace {

// 4 layers: layer 0 dense, layers 1..3 MoE with 4 experts, top-2.
ModelConfig small_config() {
  ModelConfig c;
  c.num_hidden_layers = 4;
  c.first_k_dense_replace = 1;
  c.moe_layer_freq = 1;
  c.n_routed_experts = 4;
  c.num_experts_per_tok = 2;
  return c;
}

// Two forward passes: 2 tokens, then 1 token (decode), plus calls the recorder must ignore.
ActivationRecorder recorded() {
  ActivationRecorder rec(small_config(), "small");
  const std::vector<int32_t> p1_l1 = {0, 1, 2, 3}, p1_l2 = {1, 2, 1, 3}, p1_l3 = {0, 3, 0, 1};
  const std::vector<int32_t> p2_l1 = {0, 2}, p2_l2 = {1, 0}, p2_l3 = {2, 3};
  const std::vector<int32_t> bad_id = {0, 4}, three = {0, 1, 2};
  rec.record(0, p1_l1.data(), 2, 2);  // dense layer: ignored
  rec.record(1, p1_l1.data(), 2, 2);
  rec.record(2, p1_l2.data(), 2, 2);
  rec.record(3, p1_l3.data(), 2, 2);
  rec.record(1, bad_id.data(), 1, 2);  // expert 4 of 4: ignored
  rec.record(1, three.data(), 1, 3);   // top_k 3, not 2: ignored
  rec.record(1, p2_l1.data(), 1, 2);
  rec.record(2, p2_l2.data(), 1, 2);
  rec.record(3, p2_l3.data(), 1, 2);
  return rec;
}

ActivationStats good_stats() {
  ActivationRecorder rec = recorded();
  return rec.stats();
}

// The error of reading `j` (with `expect` if given); fails the test if it is accepted.
std::string error_of(const nlohmann::json& j, const ModelConfig* expect = nullptr) {
  auto r = activations_from_json(j, "t.json", expect);
  REQUIRE_FALSE(r.ok());
  return r.error();
}

}  // namespace

TEST_CASE("the recorder counts choices and co-occurrences as worked out by hand", "[planner]") {
  ActivationRecorder rec = recorded();
  const ActivationStats& s = rec.stats();
  CHECK(s.model == "small");
  CHECK(s.tokens == 3);
  CHECK(s.top_k == 2);
  CHECK(s.n_routed_experts == 4);
  CHECK(s.num_hidden_layers == 4);
  CHECK(s.first_moe_layer == 1);
  CHECK_FALSE(s.uniform_prior);
  REQUIRE(s.layers.size() == 3);
  CHECK(s.find(0) == nullptr);
  REQUIRE(s.find(2) == &s.layers[1]);

  // L1: {0,1} {2,3} | {0,2};  L2: {1,2} {1,3} | {1,0};  L3: {0,3} {0,1} | {2,3}
  CHECK(s.layers[0].counts == std::vector<uint64_t>{2, 1, 2, 1});
  CHECK(s.layers[1].counts == std::vector<uint64_t>{1, 3, 1, 1});
  CHECK(s.layers[2].counts == std::vector<uint64_t>{2, 1, 1, 2});

  // L1 -> L2 pairs: (0,1)(0,2)(1,1)(1,2) (2,1)(2,3)(3,1)(3,3) (0,1)(0,0)(2,1)(2,0)
  REQUIRE(s.layers[0].next.size() == 4);
  CHECK(s.layers[0].next[0] == Followers{{1, 2}, {0, 1}, {2, 1}});
  CHECK(s.layers[0].next[1] == Followers{{1, 1}, {2, 1}});
  CHECK(s.layers[0].next[2] == Followers{{1, 2}, {0, 1}, {3, 1}});
  CHECK(s.layers[0].next[3] == Followers{{1, 1}, {3, 1}});
  // L2 -> L3 pairs: (1,0)(1,3)(2,0)(2,3) (1,0)(1,1)(3,0)(3,1) (1,2)(1,3)(0,2)(0,3)
  REQUIRE(s.layers[1].next.size() == 4);
  CHECK(s.layers[1].next[0] == Followers{{2, 1}, {3, 1}});
  CHECK(s.layers[1].next[1] == Followers{{0, 2}, {3, 2}, {1, 1}, {2, 1}});
  CHECK(s.layers[1].next[2] == Followers{{0, 1}, {3, 1}});
  CHECK(s.layers[1].next[3] == Followers{{0, 1}, {1, 1}});
  CHECK(s.layers[2].next.empty());  // the last MoE layer

  CHECK(s.frequency(1, 0) == Approx(2.0 / 3.0));
  CHECK(s.frequency(2, 1) == Approx(1.0));
  CHECK(s.frequency(0, 0) == 0.0);   // dense layer
  CHECK(s.frequency(1, 4) == 0.0);   // no such expert
  CHECK(s.frequency(1, -1) == 0.0);
  CHECK(s.frequency(9, 0) == 0.0);   // no such layer
  for (const auto& la : s.layers) {
    double sum = 0;
    for (int e = 0; e < 4; ++e) sum += s.frequency(la.layer, e);
    CHECK(sum == Approx(2.0));  // top_k per token
  }
}

TEST_CASE("the prefetch prediction is scored against the routing that follows it", "[planner]") {
  ActivationRecorder rec(small_config(), "small");  // MoE layers 1..3, 4 experts, top 2
  const int32_t l1[] = {0, 1, 2, 3};
  const int32_t pred2[] = {1, 2, 0, 3};   // token 0: {1,2}, token 1: {0,3}
  const int32_t l2[] = {2, 3, 3, 0};      // token 0 chose 2 (1 of 2 right), token 1 chose 3, 0 (2 of 2)
  const int32_t pred3[] = {0, 1, 2, 3};
  const int32_t l3[] = {1, 0, 1, 2};      // token 0: {0,1} both right; token 1: {2} right, 3 wrong
  rec.record(1, l1, 2, 2);
  rec.record_prediction(2, pred2, 2, 2);
  rec.record(2, l2, 2, 2);
  rec.record_prediction(3, pred3, 2, 2);
  rec.record(3, l3, 2, 2);
  // The model predicts layer L+1 before it records layer L's routing; a prediction of another
  // shape than the routing that follows is not scored.
  rec.record_prediction(2, pred2, 1, 2);
  rec.record(1, l1, 2, 2);
  rec.record(2, l2, 2, 2);
  rec.record(3, l3, 2, 2);
  const ActivationStats& s = rec.stats();
  CHECK(s.layers[0].predicted == 0);
  CHECK(s.layers[1].predicted == 4);
  CHECK(s.layers[1].predicted_used == 3);
  CHECK(s.layers[2].predicted == 4);
  CHECK(s.layers[2].predicted_used == 3);
  CHECK(s.prediction_agreement() == Approx(6.0 / 8.0));
  CHECK(uniform_activations(small_config()).prediction_agreement() == -1.0);

  // The counts survive the file, and a file that lies about them is refused.
  nlohmann::json j = activations_to_json(s);
  auto back = activations_from_json(j, "t.json", nullptr);
  REQUIRE(back.ok());
  CHECK(back->prediction_agreement() == Approx(0.75));
  j["layers"][1]["predicted_used"] = 5;
  auto bad = activations_from_json(j, "t.json", nullptr);
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().find("layers[1].predicted_used") != std::string::npos);
  j["layers"][1].erase("predicted_used");
  j["layers"][1].erase("predicted");
  auto old = activations_from_json(j, "t.json", nullptr);  // a trace from before predictions
  REQUIRE(old.ok());
  CHECK(old->layers[1].predicted == 0);
}

TEST_CASE("co-occurrence pairs only consecutive MoE layers of the same tokens", "[planner]") {
  ActivationRecorder rec(small_config(), "small");
  const std::vector<int32_t> a = {0, 1}, b = {2, 3}, two_tokens = {0, 1, 2, 3};
  rec.record(1, a.data(), 1, 2);
  rec.record(3, b.data(), 1, 2);           // layer 2 skipped: nothing pairs with layer 3
  rec.record(2, two_tokens.data(), 2, 2);  // previous layer 3 is not layer 1: no pairs
  rec.record(1, a.data(), 1, 2);
  rec.record(2, two_tokens.data(), 2, 2);  // 2 rows after 1: no pairs
  const ActivationStats& s = rec.stats();
  for (const auto& la : s.layers)
    for (const auto& f : la.next) CHECK(f.empty());
  CHECK(s.layers[0].counts == std::vector<uint64_t>{2, 2, 0, 0});
  CHECK(s.tokens == 2);
}

TEST_CASE("each expert keeps its heaviest followers, at most kMaxFollowers", "[planner]") {
  ModelConfig c = small_config();
  c.n_routed_experts = 64;
  c.num_experts_per_tok = 8;
  ActivationRecorder rec(c, "wide");
  // Five tokens choose expert 0 (and 1..7) in layer 1 and 40 different experts (8..47) in
  // layer 2; a sixth makes 8..11 follow twice and adds 60..63: 44 followers in all.
  for (int t = 0; t < 5; ++t) {
    std::vector<int32_t> l1 = {0, 1, 2, 3, 4, 5, 6, 7}, l2;
    for (int k = 0; k < 8; ++k) l2.push_back(8 + t * 8 + k);
    rec.record(1, l1.data(), 1, 8);
    rec.record(2, l2.data(), 1, 8);
  }
  std::vector<int32_t> extra1 = {0, 1, 2, 3, 4, 5, 6, 7}, extra2 = {60, 61, 62, 63, 8, 9, 10, 11};
  rec.record(1, extra1.data(), 1, 8);
  rec.record(2, extra2.data(), 1, 8);
  const Followers& f = rec.stats().layers[0].next[0];
  REQUIRE(f.size() == kMaxFollowers);
  CHECK(f[0].second == 2);
  CHECK(f[0].first == 8);  // ties by expert id
  for (size_t i = 1; i < f.size(); ++i) CHECK(f[i - 1].second >= f[i].second);
}

TEST_CASE("the uniform prior gives top_k / n_routed_experts to every expert of every MoE layer", "[planner]") {
  auto tiny = preset_config("tiny");
  REQUIRE(tiny.ok());
  const ActivationStats u = uniform_activations(*tiny);
  CHECK(u.uniform_prior);
  CHECK(u.tokens == 0);
  REQUIRE(u.layers.size() == 2);
  CHECK(u.layers[0].layer == 1);
  CHECK(u.frequency(1, 0) == Approx(4.0 / 16.0));
  CHECK(u.frequency(2, 15) == Approx(4.0 / 16.0));
  CHECK(u.frequency(0, 0) == 0.0);
  CHECK(u.frequency(2, 16) == 0.0);
  // The uniform prior is a valid file too.
  auto back = activations_from_json(activations_to_json(u), "u.json", &*tiny);
  REQUIRE(back.ok());
  CHECK(back->uniform_prior);
  CHECK(back->frequency(2, 3) == Approx(0.25));

  // A prior with empty count lists (as a hand-built one might have) still answers.
  ActivationStats e = u;
  for (auto& la : e.layers) la.counts.clear();
  CHECK(e.frequency(1, 7) == Approx(0.25));
}

TEST_CASE("save and load round-trip the statistics exactly", "[planner]") {
  test::TempDir dir("activations");
  const ActivationStats s = good_stats();
  const auto file = dir / "trace.json";
  REQUIRE(save_activations(file, s).ok());
  CHECK_FALSE(std::filesystem::exists(dir / "trace.json.tmp"));
  const ModelConfig c = small_config();
  auto back = load_activations(file, &c);
  REQUIRE(back.ok());
  CHECK(back->model == s.model);
  CHECK(back->version == 1);
  CHECK(back->tokens == s.tokens);
  CHECK(back->num_hidden_layers == s.num_hidden_layers);
  CHECK(back->first_moe_layer == s.first_moe_layer);
  CHECK(back->n_routed_experts == s.n_routed_experts);
  CHECK(back->top_k == s.top_k);
  CHECK(back->uniform_prior == s.uniform_prior);
  REQUIRE(back->layers.size() == s.layers.size());
  for (size_t i = 0; i < s.layers.size(); ++i) {
    CHECK(back->layers[i].layer == s.layers[i].layer);
    CHECK(back->layers[i].counts == s.layers[i].counts);
    CHECK(back->layers[i].next == s.layers[i].next);
  }
  // Saving again over the file gives the same bytes.
  auto read = [](const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const std::string first = read(file);
  REQUIRE(save_activations(file, *back).ok());
  CHECK(read(file) == first);
  // Follower lists out of order in a file are sorted on load.
  nlohmann::json j = activations_to_json(s);
  std::swap(j["layers"][1]["next"][1][0], j["layers"][1]["next"][1][3]);
  auto sorted = activations_from_json(j, "t.json", nullptr);
  REQUIRE(sorted.ok());
  CHECK(sorted->layers[1].next[1] == s.layers[1].next[1]);
}

TEST_CASE("malformed traces give one error naming the file and the problem", "[planner]") {
  const nlohmann::json good = activations_to_json(good_stats());
  REQUIRE(activations_from_json(good, "t.json", nullptr).ok());
  auto with = [&](auto&& edit) {
    nlohmann::json j = good;
    edit(j);
    return error_of(j);
  };
  using Catch::Matchers::Contains;

  for (const char* key : {"format", "version", "model", "num_hidden_layers", "first_moe_layer", "n_routed_experts",
                          "top_k", "tokens", "uniform_prior", "layers"}) {
    const std::string e = with([&](nlohmann::json& j) { j.erase(key); });
    CHECK_THAT(e, Contains("t.json") && Contains(key) && Contains("missing"));
  }
  CHECK_THAT(with([](nlohmann::json& j) { j["layers"][1].erase("next"); }), Contains("layers[1].next: missing"));
  CHECK_THAT(with([](nlohmann::json& j) { j["layers"][0].erase("counts"); }), Contains("layers[0].counts: missing"));

  // Wrong types.
  CHECK_THAT(with([](nlohmann::json& j) { j["top_k"] = "two"; }), Contains("t.json: field 'top_k' is \"two\"") && Contains("integer"));
  CHECK_THAT(with([](nlohmann::json& j) { j["tokens"] = 3.5; }), Contains("field 'tokens' is 3.5") && Contains("an integer in [0,"));
  CHECK_THAT(with([](nlohmann::json& j) { j["tokens"] = 1e30; }), Contains("field 'tokens' is 1e+30"));
  CHECK_THAT(with([](nlohmann::json& j) { j["uniform_prior"] = 0; }), Contains("uniform_prior"));
  CHECK_THAT(with([](nlohmann::json& j) { j["model"] = 7; }), Contains("model: expected a string"));
  CHECK_THAT(with([](nlohmann::json& j) { j["layers"] = nlohmann::json::object(); }), Contains("layers: expected an array"));
  CHECK_THAT(with([](nlohmann::json& j) { j["layers"][0]["counts"][2] = -1; }),
             Contains("field 'layers[0].counts[2]' is -1") && Contains("an integer in [0,"));
  CHECK_THAT(with([](nlohmann::json& j) { j["layers"][0]["next"][0][0] = 5; }),
             Contains("layers[0].next[0][0]") && Contains("pair"));
  CHECK_THAT(error_of(nlohmann::json::array()), Contains("t.json: top level: expected an object"));
  CHECK_THAT(with([](nlohmann::json& j) { j["format"] = "moetier-expert-store"; }), Contains("format"));
  CHECK_THAT(with([](nlohmann::json& j) { j["version"] = 2; }), Contains("version"));

  // Shapes and ranges.
  CHECK_THAT(with([](nlohmann::json& j) { j["layers"][0]["counts"].erase(3); }),
             Contains("layers[0].counts: expected 4 entries (n_routed_experts), found 3"));
  CHECK_THAT(with([](nlohmann::json& j) { j["layers"][0]["next"][1][0][0] = 4; }),
             Contains("layers[0].next[1][0][0] (expert)") && Contains("is 4; it must be an integer in [0, 3]"));
  CHECK_THAT(with([](nlohmann::json& j) { j["layers"][0]["next"].erase(0); }),
             Contains("layers[0].next: expected 0 or 4 lists"));
  CHECK_THAT(with([](nlohmann::json& j) { j["layers"][0]["next"][0][0][1] = 9; }),
             Contains("layers[0].next[0][0]") && Contains("chosen only 2 times"));
  CHECK_THAT(with([](nlohmann::json& j) { j["layers"][0]["next"][0][1][0] = 1; }), Contains("listed twice"));
  CHECK_THAT(with([](nlohmann::json& j) { j["layers"][0]["counts"][0] = 3; }),
             Contains("layers[0].counts: the counts sum to 7, not tokens x top_k = 3 x 2"));
  CHECK_THAT(with([](nlohmann::json& j) { j["tokens"] = 4; }), Contains("not tokens x top_k = 4 x 2"));
  CHECK_THAT(with([](nlohmann::json& j) { j["layers"][0]["layer"] = 0; }), Contains("layers[0].layer") && Contains("[1, 3]"));
  CHECK_THAT(with([](nlohmann::json& j) { j["layers"][2]["layer"] = 4; }), Contains("layers[2].layer"));
  CHECK_THAT(with([](nlohmann::json& j) { std::swap(j["layers"][0], j["layers"][1]); }),
             Contains("layers[1].layer: layer 1 after layer 2"));
  CHECK_THAT(with([](nlohmann::json& j) { j["top_k"] = 5; }), Contains("top_k") && Contains("[1, 4]"));
  CHECK_THAT(with([](nlohmann::json& j) { j["uniform_prior"] = true; }), Contains("uniform prior"));
  CHECK_THAT(with([](nlohmann::json& j) { j["layers"] = nlohmann::json::array(); }), Contains("layers: empty"));
  CHECK_THAT(with([](nlohmann::json& j) { j["tokens"] = 9223372036854775807ull * 2 + 1; }), Contains("tokens x top_k"));

  // Another model's trace.
  ModelConfig other = small_config();
  other.n_routed_experts = 8;
  const std::string e = error_of(good, &other);
  CHECK_THAT(e, Contains("t.json") && Contains("4 layers (first MoE layer 1), 4 routed experts, top-2") &&
                    Contains("4 layers (first MoE layer 1), 8 routed experts, top-2") &&
                    Contains("re-run `moetier trace` on this model"));
  ModelConfig more_layers = small_config();
  more_layers.num_hidden_layers = 5;
  CHECK_THAT(error_of(good, &more_layers), Contains("5 layers"));
  ModelConfig same = small_config();
  CHECK(activations_from_json(good, "t.json", &same).ok());
  // A layer missing from a file that otherwise matches the model.
  nlohmann::json missing_layer = good;
  missing_layer["layers"].erase(2);
  missing_layer["layers"][1]["next"] = nlohmann::json::array();
  CHECK_THAT(error_of(missing_layer, &same), Contains("layer 3 is an MoE layer of this model but is missing"));
}

TEST_CASE("unreadable or non-JSON trace files give one error naming the file", "[planner]") {
  test::TempDir dir("activations_bad");
  auto missing = load_activations(dir / "nope.json", nullptr);
  REQUIRE_FALSE(missing.ok());
  CHECK_THAT(missing.error(), Catch::Matchers::Contains("nope.json") && Catch::Matchers::Contains("cannot read"));
  {
    std::ofstream(dir / "bad.json") << "{\"format\": \"moetier-activations\", ";
  }
  auto bad = load_activations(dir / "bad.json", nullptr);
  REQUIRE_FALSE(bad.ok());
  CHECK_THAT(bad.error(), Catch::Matchers::Contains("bad.json") && Catch::Matchers::Contains("not valid JSON"));
  auto isdir = load_activations(dir.path(), nullptr);
  REQUIRE_FALSE(isdir.ok());
  CHECK_THAT(isdir.error(), Catch::Matchers::Contains("directory"));
  // Saving into a directory that does not exist fails, naming the file, and leaves nothing.
  auto st = save_activations(dir / "no" / "trace.json", good_stats());
  REQUIRE_FALSE(st.ok());
  CHECK_THAT(st.error(), Catch::Matchers::Contains("trace.json"));
}
