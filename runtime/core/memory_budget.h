// What one memory tier (RAM, VRAM) holds, item by item, against an optional limit: every large
// allocation of the runtime (derived weights, attention caches, expert caches, kernel scratch)
// is charged here, so the planner's reservations and the process's footprint can be compared.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "runtime/core/status.h"

namespace mt {

class TierBudget {
 public:
  explicit TierBudget(std::string tier, uint64_t limit = 0) : tier_(std::move(tier)), limit_(limit) {}

  // Adds `bytes` under `what`; past the limit, an error naming the item, the tier, what is
  // already charged and the limit (and nothing is charged).
  Status charge(const std::string& what, uint64_t bytes);

  // Takes back `bytes` of an item charged under `what` (a freed cache); the item goes when it
  // reaches zero. Releasing what was never charged is ignored.
  void release(const std::string& what, uint64_t bytes);

  const std::string& tier() const { return tier_; }
  uint64_t limit() const { return limit_; }  // 0: none, accounting only
  uint64_t used() const { return used_; }
  const std::vector<std::pair<std::string, uint64_t>>& items() const { return items_; }
  // One line per item, largest first, then the total.
  std::string report() const;

 private:
  std::string tier_;
  uint64_t limit_ = 0, used_ = 0;
  std::vector<std::pair<std::string, uint64_t>> items_;
};

}  // namespace mt
