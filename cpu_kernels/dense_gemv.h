// Decode-sized products with dense weights as stored (F32, BF16, F16, F8_E4M3 with block
// scales): y[t, r] = sum_k W[r, k] x[t, k] for a few tokens, streaming each weight row once for
// all of them, by runtime ISA dispatch (AVX-512, AVX2). The fast CPU backend's matmul for
// decode; the reference (cpu::matmul) stays the oracle (tests/unit/test_backend_ops.cpp).
#pragma once

#include <cstdint>

#include "runtime/core/weight_view.h"

namespace mt::cpu {

// Most tokens one dense_gemv call takes; more go to the caller's GEMM path.
inline constexpr int64_t kGemvMaxTokens = 4;

// False (and nothing written) when this ISA level has no kernel for the view (dtype, a scale
// block that is not a multiple of 16, more than kGemvMaxTokens tokens, or level 0): the caller
// falls back to cpu::matmul. isa_level: 1 AVX2, 2 AVX-512, already clamped to the CPU's.
bool dense_gemv(const WeightView& w, const float* x, int64_t n_tokens, float* y, int isa_level);

// Whether dense_decode_rows (and the stored-row attention kernels) take w's format: F32, BF16,
// F16, or FP8 with block scales in multiples of 16.
bool dense_rows_decodable(const WeightView& w);
// Rows [r0, r0 + n) of w decoded to fp32 into out[n, cols], bit-identical to cpu::dequantize_rows,
// on the calling thread with SIMD. False (nothing written) where this ISA level has no kernel
// for the view (packed dtypes, a scale block that is not a multiple of 16, level 0).
bool dense_decode_rows(const WeightView& w, int64_t r0, int64_t n, float* out, int isa_level);

namespace gemv_detail {
// F32 rows are read 4 at a time (8 for one token), as many streams a row's length apart: on the
// Zen 4 VM a plain read loop over 4 rows in lockstep reads 22-24 GB/s a core, over 8 24-26, over
// one 27. Each stream's line this many bytes ahead is prefetched to L2 as the kernel enters a
// line. There, one thread from RAM, the hardware prefetchers alone read 0.78-0.87 of the
// bandwidth for F32, with this (and plain loads for whole chunks at AVX-512) 0.80-0.89, FP8 1.3x
// (compute-bound there: 12-16 GB/s a core in cache); 8 rows for one token another 1.07-1.14x.
// 64-256 KB ahead read the same (docs/benchmarks.md, eighth session). F16 and BF16 read 2 rows at
// a time with 8-wide conversions, and fetch each line to L1 too, kDenseRowPrefetchL1 ahead: one
// token 0.84-0.99 of the bandwidth at one thread, 0.83-0.97 at two, where 8 rows with 16-wide
// conversions read 0.70-0.79 (ninth session). Past a row's end a stream runs on into the row
// its slot reads in the next group (RowPrefetch): no bound at the matrix's end.
inline constexpr int64_t kDenseRowPrefetch = 32768;
inline constexpr int64_t kDenseRowPrefetchL1 = 1024;
// The prefetches of a group of R rows read side by side. Row i's stream runs on into row i + R
// (the next group's), not row i + 1, which the group is reading already: a distance that passes
// the row's end skips the group's other rows (with 32 KB straight ahead, 32 KB BF16 rows read 16
// GB/s against 24).
template <int R, bool ToL1 = false>
class RowPrefetch {
 public:
  explicit RowPrefetch(int64_t row_bytes)
      : row_bytes_(row_bytes), l2_(row_bytes, kDenseRowPrefetch), l1_(row_bytes, kDenseRowPrefetchL1) {}
  // p: the group's first row at byte `at` of the row.
  [[gnu::always_inline]] void operator()(const uint8_t* p, int64_t at) const {
    const int64_t o2 = l2_.offset(at), o1 = l1_.offset(at);
    for (int i = 0; i < R; ++i) {
      __builtin_prefetch(p + i * row_bytes_ + o2, 0, 2);
      if constexpr (ToL1) __builtin_prefetch(p + i * row_bytes_ + o1, 0, 3);
    }
  }

  // The offset from byte `at` of a row to `distance` bytes further along its stream: q whole
  // rows of the stream and a part, q or q + 1 of them by `at` (no division per line).
  struct Ahead {
    int64_t split, near, far;
    Ahead(int64_t row_bytes, int64_t distance)
        : split((distance / row_bytes + 1) * row_bytes - distance),
          near(distance + distance / row_bytes * (R - 1) * row_bytes),
          far(near + (R - 1) * row_bytes) {}
    int64_t offset(int64_t at) const { return at < split ? near : far; }
  };

 private:
  int64_t row_bytes_;
  Ahead l2_, l1_;
};
// Rows [r0, r1) of w for n tokens (n <= kGemvMaxTokens): y[t * ldy + r] for r in [r0, r1).
using RowsFn = void (*)(const WeightView& w, int64_t r0, int64_t r1, const float* x, int64_t n, float* y, int64_t ldy);
RowsFn avx512_rows(DType dt);  // null where the dtype has no kernel
RowsFn avx2_rows(DType dt);
using DecodeRowsFn = void (*)(const WeightView& w, int64_t r0, int64_t n, float* out);  // F32/BF16/F16/F8
DecodeRowsFn avx512_decode_rows();
DecodeRowsFn avx2_decode_rows();
}  // namespace gemv_detail

}  // namespace mt::cpu
