#include "runtime/model/step_profile.h"

namespace mt {

const char* model_part_name(ModelPart p) {
  switch (p) {
    case ModelPart::Embedding: return "embedding";
    case ModelPart::Attention: return "attention (MLA)";
    case ModelPart::Indexer: return "indexer (V3.2)";
    case ModelPart::DenseFfn: return "dense FFN layers";
    case ModelPart::Router: return "routers";
    case ModelPart::SharedExpert: return "shared experts";
    case ModelPart::RoutedExperts: return "routed experts";
    case ModelPart::LmHead: return "final norm + lm_head";
    case ModelPart::Other: return "norms, residuals";
    case ModelPart::kCount: break;
  }
  return "?";
}

double StepProfile::total_seconds() const {
  double s = 0;
  for (double v : seconds) s += v;
  return s;
}

uint64_t StepProfile::total_weight_bytes() const {
  uint64_t b = 0;
  for (uint64_t v : weight_bytes) b += v;
  return b;
}

}  // namespace mt
