// What `moetier plan` shows a person: the placement summary per tier, per-layer counts, the
// predicted speeds with their breakdown and bottleneck, notes and warnings (text); and the
// same plan as a heatmap (SVG: layers x experts, colour by tier, intensity by frequency).
#pragma once

#include <string>

#include "planner/solver.h"

namespace mt::planner {

struct ReportContext {
  std::string model_name;      // "deepseek-v3.2 (preset)" or a directory
  std::string machine_name;    // CPU model or hardware description
  std::string dense_note;      // why the dense format was chosen (plan --dense auto), or empty
  std::string prefetch_note;   // the prefetch recall and precision used, and where they came from
  std::string now_utc;         // for the profile's age (empty: no age shown)
};

// "25.5 GB", "430 MB", "57 KB": the decimal units every planner figure is printed in.
std::string format_decimal_bytes(double bytes);

std::string format_plan_report(const Plan& plan, const CostInputs& in, const ReportContext& ctx);
// The summary the runtime prints at start-up: one line per tier.
std::string format_placement_summary(const Placement& p);
std::string render_plan_svg(const Plan& plan, const CostInputs& in, const ReportContext& ctx);
// The prediction and inputs, stored in the placement file under "plan" for people and tools.
nlohmann::json plan_summary_json(const Plan& plan, const CostInputs& in, const ReportContext& ctx);

}  // namespace mt::planner
