#include "planner/plan_report.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>

namespace mt::planner {

std::string format_decimal_bytes(double bytes) {
  char b[32];
  if (bytes >= 1e9) std::snprintf(b, sizeof b, "%.1f GB", bytes / 1e9);
  else if (bytes >= 1e6) std::snprintf(b, sizeof b, "%.0f MB", bytes / 1e6);
  else std::snprintf(b, sizeof b, "%.0f KB", bytes / 1e3);
  return b;
}

namespace {

void add(std::string& s, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void add(std::string& s, const char* fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  s += buf;
}

std::string gb(double bytes) { return format_decimal_bytes(bytes); }

std::string ms(double s) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f ms", s * 1e3);
  return b;
}

}  // namespace

std::string format_placement_summary(const Placement& p) {
  std::string s;
  const double total = double(p.moe_layers() * p.n_routed_experts);
  for (Tier t : {Tier::Vram, Tier::Ram, Tier::Nvme}) {
    const int64_t n = p.count(t);
    if (n == 0) continue;
    add(s, "  %-5s %7lld experts (%5.1f%%) %10s", tier_name(t), static_cast<long long>(n), 100.0 * double(n) / total,
        gb(double(n) * double(p.expert_bytes)).c_str());
    if (t == Tier::Nvme) add(s, "   behind a RAM cache of %s", gb(double(p.nvme_cache_bytes)).c_str());
    s += "\n";
  }
  return s;
}

std::string format_plan_report(const Plan& plan, const CostInputs& in, const ReportContext& ctx) {
  const Placement& p = plan.placement;
  const Prediction& pr = plan.prediction;
  std::string s;
  // A GGUF's experts: at their block types' own rates where the profile has them (the dense
  // line says which), else at the stand-in format's.
  const bool typed = !in.expert_types.empty() &&
                     mixed_kernel_rate(in.machine, in.expert_types, 0, 0).unmeasured.size() < in.expert_types.size();
  const std::string experts = !in.dense_override ? p.expert_format
                              : typed ? "as the file holds them, planned at their block types' rates"
                                      : "as the file holds them, planned at the rates of " + p.expert_format;
  add(s, "moetier plan: %s, experts %s (%s each), context %lld, batch %lld\n", ctx.model_name.c_str(), experts.c_str(),
      gb(double(p.expert_bytes)).c_str(), static_cast<long long>(in.context), static_cast<long long>(in.batch));
  add(s, "machine: %s%s\n", ctx.machine_name.c_str(), plan.gpu ? "" : " (no GPU in this plan)");
  add(s, "%s\n", profile_provenance(in.machine, ctx.now_utc).c_str());
  if (!plan.gpu)
    add(s, "dense weights: %s%s%s%s\n",
        in.dense_override ? "as the file holds them"
        : in.dense_format == "q8" || in.dense_format == "q4" ? in.dense_format.c_str() : "as shipped (FP8)",
        ctx.dense_note.empty() ? "" : " (", ctx.dense_note.c_str(), ctx.dense_note.empty() ? "" : ")");
  s += "\n";

  auto reservations = [&](const char* tier, uint64_t budget, const std::vector<Reservation>& items, uint64_t total) {
    add(s, "%s budget %s, reserved before experts %s:\n", tier, gb(double(budget)).c_str(), gb(double(total)).c_str());
    for (const auto& r : items) add(s, "  %10s  %s\n", gb(double(r.bytes)).c_str(), r.what.c_str());
  };
  if (plan.gpu) reservations("VRAM", plan.vram_budget, plan.vram_reserved, plan.vram_reserved_bytes);
  reservations("RAM", plan.ram_budget, plan.ram_reserved, plan.ram_reserved_bytes);

  const double read_share[kTierCount] = {pr.share_vram, pr.share_ram, pr.share_nvme_hit + pr.share_nvme_miss};
  const double total = double(p.moe_layers() * p.n_routed_experts);
  add(s, "\n%-6s %9s %8s %11s  %s\n", "tier", "experts", "share", "bytes", "expected share of expert reads");
  for (Tier t : {Tier::Vram, Tier::Ram, Tier::Nvme}) {
    const int64_t n = p.count(t);
    if (n == 0 && t == Tier::Vram && !plan.gpu) continue;
    add(s, "%-6s %9lld %7.1f%% %11s  %5.1f%%", tier_name(t), static_cast<long long>(n), 100.0 * double(n) / total,
        gb(double(n) * double(p.expert_bytes)).c_str(), 100.0 * read_share[int(t)]);
    if (t == Tier::Nvme && n > 0)
      add(s, "  (RAM cache %s: %.1f%% hits, %.1f%% wait for the disk)", gb(double(p.nvme_cache_bytes)).c_str(),
          100.0 * pr.share_nvme_hit, 100.0 * pr.share_nvme_miss);
    s += "\n";
  }

  // Per-layer counts, with runs of identical rows folded.
  add(s, "\nexperts per layer (%s / %s / %s):\n", "vram", "ram", "nvme");
  int64_t l = p.first_moe_layer;
  while (l < p.num_hidden_layers) {
    const int64_t g = p.count(l, Tier::Vram), r = p.count(l, Tier::Ram), n = p.count(l, Tier::Nvme);
    int64_t end = l;
    while (end + 1 < p.num_hidden_layers && p.count(end + 1, Tier::Vram) == g && p.count(end + 1, Tier::Ram) == r &&
           p.count(end + 1, Tier::Nvme) == n)
      ++end;
    char name[64];
    if (end == l) std::snprintf(name, sizeof name, "layer %lld", static_cast<long long>(l));
    else std::snprintf(name, sizeof name, "layers %lld-%lld", static_cast<long long>(l), static_cast<long long>(end));
    add(s, "  %-14s %5lld / %5lld / %5lld\n", name, static_cast<long long>(g), static_cast<long long>(r),
        static_cast<long long>(n));
    l = end + 1;
  }

  const TimeBreakdown& d = pr.decode;
  const int64_t fill = in.decode_fill > 0 ? in.decode_fill : std::max<int64_t>(1, in.context / 2);
  add(s, "\npredicted decode: %.2f tokens/s per sequence (%s per step, %lld tokens of context)\n", pr.decode_tokens_per_s,
      ms(d.total).c_str(), static_cast<long long>(fill));
  if (plan.gpu) {
    add(s, "  GPU: attention, shared experts, lm_head %s; routed experts in VRAM %s\n", ms(d.gpu_dense).c_str(),
        ms(d.gpu_experts).c_str());
    add(s, "  CPU: routed experts %s; waiting for NVMe %s; GPU/CPU hand-offs %s\n", ms(d.cpu_experts).c_str(),
        ms(d.nvme_stall).c_str(), ms(d.sync).c_str());
    add(s, "  overlapped (GPU and CPU at once, not counted twice): %s\n", ms(d.hidden_by_overlap).c_str());
  } else {
    add(s, "  CPU: attention, shared experts, lm_head %s; routed experts %s; waiting for NVMe %s\n",
        ms(d.cpu_dense).c_str(), ms(d.cpu_experts).c_str(), ms(d.nvme_stall).c_str());
    const CpuParts& c = pr.cpu_parts;
    add(s, "  by part: attention %s, dense FFN %s, routers %s, shared experts %s, routed experts %s, lm_head %s\n",
        ms(c.attention).c_str(), ms(c.dense_ffn).c_str(), ms(c.routers).c_str(), ms(c.shared_experts).c_str(),
        ms(c.routed_experts).c_str(), ms(c.lm_head).c_str());
  }
  add(s, "  disk reads per token: %s", gb(pr.expert_bytes_from_disk_per_token).c_str());
  if (pr.wasted_bytes_from_disk_per_token > 0)
    add(s, ", of which %s read ahead and not used", gb(pr.wasted_bytes_from_disk_per_token).c_str());
  add(s, "\n");
  if (p.count(Tier::Nvme) > 0 && !ctx.prefetch_note.empty()) add(s, "  prefetch: %s\n", ctx.prefetch_note.c_str());
  add(s, "predicted prefill: %.1f tokens/s (chunks of %lld tokens)\n", pr.prefill_tokens_per_s,
      static_cast<long long>(in.prefill_chunk));
  add(s, "bottleneck: %s\n", pr.bottleneck.c_str());
  for (const auto& n : plan.notes) add(s, "note: %s\n", n.c_str());
  for (const auto& w : plan.warnings) add(s, "warning: %s\n", w.c_str());
  return s;
}

nlohmann::json plan_summary_json(const Plan& plan, const CostInputs& in, const ReportContext& ctx) {
  const Prediction& pr = plan.prediction;
  auto breakdown = [](const TimeBreakdown& t) {
    return nlohmann::json{{"gpu_dense_s", t.gpu_dense}, {"gpu_experts_s", t.gpu_experts}, {"cpu_dense_s", t.cpu_dense},
                          {"cpu_experts_s", t.cpu_experts}, {"nvme_stall_s", t.nvme_stall},
                          {"overlapped_s", t.hidden_by_overlap}, {"sync_s", t.sync}, {"total_s", t.total}};
  };
  nlohmann::json j;
  j["model"] = ctx.model_name;
  j["machine"] = ctx.machine_name;
  j["context"] = in.context;
  j["batch"] = in.batch;
  j["gpu"] = plan.gpu;
  j["vram_budget_bytes"] = plan.vram_budget;
  j["ram_budget_bytes"] = plan.ram_budget;
  j["vram_reserved_bytes"] = plan.vram_reserved_bytes;
  j["ram_reserved_bytes"] = plan.ram_reserved_bytes;
  j["decode_tokens_per_s"] = pr.decode_tokens_per_s;
  j["prefill_tokens_per_s"] = pr.prefill_tokens_per_s;
  j["decode"] = breakdown(pr.decode);
  j["prefill"] = breakdown(pr.prefill);
  j["bottleneck"] = pr.bottleneck;
  j["share_of_reads"] = {{"vram", pr.share_vram}, {"ram", pr.share_ram}, {"nvme_hit", pr.share_nvme_hit},
                         {"nvme_miss", pr.share_nvme_miss}};
  j["nvme_cache_hit_rate"] = pr.nvme_cache_hit_rate;
  j["disk_bytes_per_token"] = pr.expert_bytes_from_disk_per_token;
  j["wasted_disk_bytes_per_token"] = pr.wasted_bytes_from_disk_per_token;
  j["prefetch"] = {{"recall", in.prefetch_recall}, {"precision", in.prefetch_precision}};
  const CpuParts& c = pr.cpu_parts;
  j["cpu_parts_s"] = {{"attention", c.attention},           {"dense_ffn", c.dense_ffn},
                      {"routers", c.routers},               {"shared_experts", c.shared_experts},
                      {"routed_experts", c.routed_experts}, {"lm_head", c.lm_head}};
  j["uniform_prior"] = in.stats.uniform_prior;
  j["notes"] = plan.notes;
  j["warnings"] = plan.warnings;
  return j;
}

std::string render_plan_svg(const Plan& plan, const CostInputs& in, const ReportContext& ctx) {
  const Placement& p = plan.placement;
  const int64_t L = p.moe_layers(), E = p.n_routed_experts;
  // Cells sized so a 256-expert, 58-layer plan is about 1100 x 700 px.
  const double cw = std::clamp(1024.0 / double(E), 3.0, 24.0), ch = std::clamp(580.0 / double(L), 6.0, 24.0);
  const double left = 80, top = 70, width = left + cw * double(E) + 20, height = top + ch * double(L) + 90;
  double fmax = 0;
  for (int64_t l = p.first_moe_layer; l < p.num_hidden_layers; ++l)
    for (int64_t e = 0; e < E; ++e) fmax = std::max(fmax, in.stats.frequency(l, e));
  // Tier hue; lightness from 88% (rarely chosen) down to 32% (the most chosen), on a sqrt scale
  // so that a skewed trace still shows its middle.
  auto colour = [&](Tier t, double f) {
    const int hue = t == Tier::Vram ? 140 : t == Tier::Ram ? 215 : 25;
    const double x = fmax > 0 ? std::sqrt(std::clamp(f / fmax, 0.0, 1.0)) : 0.5;
    char b[48];
    std::snprintf(b, sizeof b, "hsl(%d,70%%,%.0f%%)", hue, 88.0 - 56.0 * x);
    return std::string(b);
  };
  std::string s;
  add(s, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\" font-size=\"12\">\n",
      width, height);
  add(s, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
  std::string title = "moetier plan: " + ctx.model_name + ", " + p.expert_format + " experts";
  std::string esc;
  for (char c : title) esc += c == '<' ? std::string("&lt;") : c == '&' ? std::string("&amp;") : c == '>' ? std::string("&gt;") : std::string(1, c);
  add(s, "<text x=\"%.0f\" y=\"22\" font-size=\"15\" font-weight=\"bold\">%s</text>\n", left, esc.c_str());
  add(s, "<text x=\"%.0f\" y=\"42\">decode %.2f tokens/s, prefill %.1f tokens/s predicted%s</text>\n", left,
      plan.prediction.decode_tokens_per_s, plan.prediction.prefill_tokens_per_s,
      in.stats.uniform_prior ? " (uniform prior: no trace)" : "");
  add(s, "<text x=\"%.0f\" y=\"%.0f\">expert →</text>\n", left, top - 8);
  for (int64_t li = 0; li < L; ++li) {
    const int64_t l = p.first_moe_layer + li;
    const double y = top + ch * double(li);
    if (li % std::max<int64_t>(1, int64_t(std::ceil(14.0 / ch))) == 0)
      add(s, "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">layer %lld</text>\n", left - 6, y + ch * 0.8,
          static_cast<long long>(l));
    for (int64_t e = 0; e < E; ++e) {
      const double f = in.stats.frequency(l, e);
      add(s, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>layer %lld expert %lld: %s, chosen by %.2f%% of tokens</title></rect>\n",
          left + cw * double(e), y, cw, ch, colour(p.at(l, e), f).c_str(), static_cast<long long>(l),
          static_cast<long long>(e), tier_name(p.at(l, e)), 100.0 * f);
    }
  }
  // Legend: each tier at low and high frequency.
  const double ly = top + ch * double(L) + 25;
  double lx = left;
  for (Tier t : {Tier::Vram, Tier::Ram, Tier::Nvme}) {
    add(s, "<rect x=\"%.0f\" y=\"%.0f\" width=\"14\" height=\"14\" fill=\"%s\"/>", lx, ly, colour(t, fmax * 0.05).c_str());
    add(s, "<rect x=\"%.0f\" y=\"%.0f\" width=\"14\" height=\"14\" fill=\"%s\"/>", lx + 14, ly, colour(t, fmax).c_str());
    add(s, "<text x=\"%.0f\" y=\"%.0f\">%s: %lld experts</text>\n", lx + 34, ly + 12, tier_name(t),
        static_cast<long long>(p.count(t)));
    lx += 190;
  }
  add(s, "<text x=\"%.0f\" y=\"%.0f\" fill=\"#555\">darker = chosen more often (per-cell tooltips give the frequency)</text>\n",
      left, ly + 36);
  s += "</svg>\n";
  return s;
}

}  // namespace mt::planner
