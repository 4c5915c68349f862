#include "cpu_kernels/dense_gemm.h"

#include <algorithm>
#include <vector>

#include "cpu_kernels/onednn_gemm.h"
#include "cpu_kernels/ops.h"

namespace mt::cpu {

void dense_gemm(const WeightView& w, const float* x, int64_t n, float* y) {
  if (n <= 0 || w.rows <= 0) return;
  constexpr int64_t kSlabRows = 256;
  const int64_t K = w.cols;
  std::vector<float> slab(static_cast<size_t>(std::min(kSlabRows, w.rows) * K));
  for (int64_t r0 = 0; r0 < w.rows; r0 += kSlabRows) {
    const int64_t nr = std::min(kSlabRows, w.rows - r0);
    dequantize_rows(w, r0, nr, slab.data());  // exact, threaded over rows
    onednn_gemm({n, K, nr, w.rows, false}, x, slab.data(), y + r0);
  }
}

}  // namespace mt::cpu
