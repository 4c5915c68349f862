#include "cpu_kernels/dense_gemv.h"

#include <algorithm>

namespace mt::cpu {

bool dense_gemv(const WeightView& w, const float* x, int64_t n_tokens, float* y, int isa_level) {
  if (isa_level < 1 || n_tokens < 1 || n_tokens > kGemvMaxTokens || w.rows <= 0 || w.cols <= 0 || !w.data) return false;
  if (w.dtype == DType::F8_E4M3 && (!w.scale || w.block <= 0 || w.block % 16)) return false;
  const gemv_detail::RowsFn f = isa_level >= 2 ? gemv_detail::avx512_rows(w.dtype) : gemv_detail::avx2_rows(w.dtype);
  if (!f) return false;
  // Row blocks of 64 (a multiple of every kernel's row group, and of the FP8 scale tiles'
  // 16-row granularity), spread over threads when the matrix is worth it.
  constexpr int64_t kRows = 64;
  const int64_t blocks = (w.rows + kRows - 1) / kRows;
  const bool par = blocks > 1 && w.rows * w.cols > (int64_t{1} << 16);
#pragma omp parallel for schedule(static) if (par)
  for (int64_t b = 0; b < blocks; ++b) f(w, b * kRows, std::min(w.rows, (b + 1) * kRows), x, n_tokens, y, w.rows);
  return true;
}

bool dense_rows_decodable(const WeightView& w) {
  return w.dtype == DType::F32 || w.dtype == DType::BF16 || w.dtype == DType::F16 ||
         (w.dtype == DType::F8_E4M3 && w.scale && w.block > 0 && w.block % 16 == 0);
}

bool dense_decode_rows(const WeightView& w, int64_t r0, int64_t n, float* out, int isa_level) {
  if (isa_level < 1 || r0 < 0 || n < 0 || r0 + n > w.rows || !w.data || !dense_rows_decodable(w)) return false;
  (isa_level >= 2 ? gemv_detail::avx512_decode_rows() : gemv_detail::avx2_decode_rows())(w, r0, n, out);
  return true;
}

}  // namespace mt::cpu
