// planner::dense_bytes (what the planner charges for the non-expert weights in each form)
// against a tensor-by-tensor enumeration of the checkpoint layout with the rules convert
// follows (tools/moetier/dense_writer.cpp): matrices packed with the exact packed size (tile
// padding, scale parts rounded to 64 bytes) except kv_b, routers, norms, biases, which keep their
// shipped bytes.
#include <catch2/catch.hpp>

#include "planner/dense_format.h"
#include "runtime/core/expert_format.h"
#include "runtime/model/deepseek_weights.h"

using namespace mt;

namespace {

double enumerate(const ModelConfig& c, const std::string& format) {
  const int64_t B = 128;
  auto fp8 = [&](int64_t r, int64_t k) { return double(r * k + 4 * ((r + B - 1) / B) * ((k + B - 1) / B)); };
  double total = 0;
  for (const TensorSpec& t : checkpoint_layout(c)) {
    if (t.name.find(".mlp.experts.") != std::string::npos) continue;
    const bool matrix = t.role == TensorRole::Linear || t.role == TensorRole::LmHead || t.role == TensorRole::Embedding;
    const bool kvb = t.name.find("kv_b_proj") != std::string::npos;
    if (matrix && !kvb && format != "fp8" && t.shape[1] % 32 == 0) {
      total += double(packed_matrix_bytes(format == "q8" ? ExpertQuant::Q8 : ExpertQuant::Q4, t.shape[0], t.shape[1], 32));
    } else if (t.role == TensorRole::Linear) {
      total += fp8(t.shape[0], t.shape[1]);  // FP8 as shipped, with its block scales
    } else {
      double n = 1;
      for (int64_t d : t.shape) n *= double(d);
      total += n * (t.role == TensorRole::RouterBias || t.role == TensorRole::NormBias ? 4.0 : 2.0);
    }
  }
  return total;
}

}  // namespace

TEST_CASE("dense_bytes matches a tensor-by-tensor enumeration of the stored forms", "[planner][dense]") {
  for (const char* preset : {"deepseek-v3", "deepseek-v3.2", "wide"}) {
    auto c = preset_config(preset);
    REQUIRE(c.ok());
    for (const char* f : {"fp8", "q8", "q4"}) {
      const double want = enumerate(*c, f), got = planner::dense_bytes(*c, f).resident;
      INFO(preset << " " << f << ": planner " << got << " vs enumerated " << want);
      CHECK(std::abs(got - want) <= 0.005 * want);
    }
  }
}

TEST_CASE("default_dense_format: q8 unless it fills more than half the RAM", "[planner][dense]") {
  auto c = preset_config("deepseek-v3.2");
  REQUIRE(c.ok());
  const double q8 = planner::dense_bytes(*c, "q8").resident;
  std::string why;
  CHECK(planner::default_dense_format(*c, uint64_t(2.5 * q8), &why) == "q8");
  CHECK(why.find("at most half") != std::string::npos);
  CHECK(planner::default_dense_format(*c, uint64_t(1.5 * q8), &why) == "q4");
  CHECK(why.find("more than half") != std::string::npos);
  CHECK(planner::dense_bytes(*c, "q4").resident < 0.55 * q8);
  CHECK_THROWS(planner::dense_bytes(*c, "q5"));
  CHECK(planner::dense_format_of_store("bf16") == "fp8");
}
