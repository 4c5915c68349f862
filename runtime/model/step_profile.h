// Where forward passes spend their time and which weight bytes they read, by part of the model.
// DeepSeekModel fills one when it is attached (bench decode); with none attached the graph does
// no timing at all.
#pragma once

#include <array>
#include <cstdint>

namespace mt {

enum class ModelPart : uint8_t {
  Embedding, Attention, Indexer, DenseFfn, Router, SharedExpert, RoutedExperts, LmHead, Other, kCount
};
inline constexpr int kModelParts = static_cast<int>(ModelPart::kCount);

const char* model_part_name(ModelPart p);  // "attention", "routed experts", ...

struct StepProfile {
  std::array<double, kModelParts> seconds{};
  std::array<uint64_t, kModelParts> weight_bytes{};  // weights the graph read (a store's routed experts: by the caller)
  void reset() { *this = StepProfile{}; }
  double total_seconds() const;
  uint64_t total_weight_bytes() const;
};

}  // namespace mt
