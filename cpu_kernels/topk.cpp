// Deterministic top-k selection.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "cpu_kernels/ops.h"

namespace mt::cpu {

void topk(const float* x, int64_t n, int64_t k, int32_t* idx) {
  if (k < 0 || k > n) throw std::invalid_argument("topk: need 0 <= k <= n");
  if (k == 0) return;
  // Strict total order: larger value first, NaN after every number, ties -> lower index.
  // (-0.0 and +0.0 compare equal and so fall back to the index.)
  auto before = [x](int32_t a, int32_t b) {
    const float va = x[a], vb = x[b];
    const bool na = std::isnan(va), nb = std::isnan(vb);
    if (na || nb) return na == nb ? a < b : nb;
    if (va != vb) return va > vb;
    return a < b;
  };
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  if (k < n) std::nth_element(order.begin(), order.begin() + k, order.end(), before);
  std::sort(order.begin(), order.begin() + k, before);
  std::copy(order.begin(), order.begin() + k, idx);
}

}  // namespace mt::cpu
