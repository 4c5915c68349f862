#include "runtime/core/memory_budget.h"

#include <algorithm>
#include <cstdio>

namespace mt {

namespace {
std::string mb(uint64_t b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MB", double(b) / 1e6);
  return buf;
}
}  // namespace

Status TierBudget::charge(const std::string& what, uint64_t bytes) {
  if (limit_ && (bytes > limit_ || used_ > limit_ - bytes))
    return make_error(what + " needs " + mb(bytes) + " of " + tier_ + ", but " + mb(used_) + " of the " + mb(limit_) +
                      " " + tier_ + " budget is already charged; raise the budget or lower the context");
  used_ += bytes;
  items_.emplace_back(what, bytes);
  return ok_status();
}

void TierBudget::release(const std::string& what, uint64_t bytes) {
  for (auto it = items_.begin(); it != items_.end(); ++it) {
    if (it->first != what) continue;
    const uint64_t b = std::min(bytes, it->second);
    it->second -= b;
    used_ -= b;
    if (it->second == 0) items_.erase(it);
    return;
  }
}

std::string TierBudget::report() const {
  auto sorted = items_;
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  std::string s;
  for (const auto& [what, bytes] : sorted) s += "  " + mb(bytes) + "  " + what + "\n";
  s += "  " + mb(used_) + "  total " + tier_ + (limit_ ? " (budget " + mb(limit_) + ")" : "") + "\n";
  return s;
}

}  // namespace mt
