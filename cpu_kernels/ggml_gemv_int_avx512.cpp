// The GGUF block GEMV's Int8 path on AVX-512 VNNI (cpu_kernels/ggml_gemv.h): the row dots of
// ggml_gemv_int_body.h with vpdpbusd (Q8_0: |w| x signed x, 4 products into each int32 lane)
// and vpdpwssd (the K-quants: the int16 pair sums of vpmaddubsw times their scales, accumulated
// in one instruction), on 256-bit vectors (AVX512VL). Level 2 requires VNNI (cpu_isa_level).
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "cpu_kernels/ggml_gemv.h"
#include "runtime/core/ggml_types.h"

namespace mt::cpu::ggml_gemv_detail {

namespace int_avx512 {

inline __m256i dot_u8s8(__m256i acc, __m256i u, __m256i s) { return _mm256_dpbusd_epi32(acc, u, s); }
inline __m256i madd_acc(__m256i acc, __m256i p, __m256i s) { return _mm256_dpwssd_epi32(acc, p, s); }

#include "cpu_kernels/ggml_gemv_int_body.h"

}  // namespace int_avx512

IntRowDot avx512_int_row_dot(uint32_t type, int nt) { return int_avx512::int_kernel_for(type, nt); }

}  // namespace mt::cpu::ggml_gemv_detail
