#include "cpu_kernels/ggml_gemv.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_kernels/expert_ffn_internal.h"  // cpu_isa_level
#include "cpu_kernels/ggml_dequant.h"
#include "runtime/core/dtype.h"
#include "runtime/core/ggml_types.h"

namespace mt::cpu {

namespace {

using ggml_gemv_detail::IntRowDot;
using ggml_gemv_detail::kMaxTokens;
using ggml_gemv_detail::Q8Act;
using ggml_gemv_detail::RowDot;

// The scalar path: each block decoded by the reference decoder, then dotted in fp32.
void rows_scalar(uint32_t type, const GgmlTypeInfo& ti, const uint8_t* w, int64_t r0, int64_t r1, int64_t cols,
                 const float* x, float* y) {
  const int64_t blocks = cols / ti.block, row_bytes = blocks * ti.bytes;
  float tmp[256];
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = w + r * row_bytes;
    float acc = 0.0f;
    for (int64_t b = 0; b < blocks; ++b) {
      ggml_dequantize(type, row + b * ti.bytes, ti.block, tmp);
      const float* xb = x + b * ti.block;
      for (int64_t k = 0; k < ti.block; ++k) acc += tmp[k] * xb[k];
    }
    y[r] = acc;
  }
}

bool is_block_quant(uint32_t type) {
  switch (GgmlType(type)) {
    case GgmlType::Q8_0: case GgmlType::Q2_K: case GgmlType::Q3_K: case GgmlType::Q4_K: case GgmlType::Q5_K:
    case GgmlType::Q6_K: return true;
    default: return false;
  }
}

const GgmlTypeInfo& checked_info(uint32_t type, int64_t cols, const char* who) {
  const GgmlTypeInfo* ti = ggml_type_info(type);
  if (!ti || !ggml_can_dequantize(type) || cols % ti->block != 0)
    throw std::invalid_argument(std::string(who) + ": " + ggml_type_name(type) + " rows of " + std::to_string(cols));
  return *ti;
}

// Chunks of rows big enough that a thread streams, small enough to balance.
constexpr int64_t kChunk = 16;

bool worth_threads(int64_t rows, int64_t row_bytes) { return rows * row_bytes > (int64_t{1} << 18); }

// The Fp32 path (and level 0) for one token.
void gemv_fp32(uint32_t type, const GgmlTypeInfo& ti, const uint8_t* w, int64_t rows, int64_t cols, const float* x,
               float* y, int level) {
  const RowDot dot = level >= 2 ? ggml_gemv_detail::avx512_row_dot(type)
                     : level == 1 ? ggml_gemv_detail::avx2_row_dot(type)
                                  : nullptr;
  const int64_t blocks = cols / ti.block, row_bytes = blocks * ti.bytes;
  const int64_t chunks = (rows + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(dynamic, 4) if (worth_threads(rows, row_bytes))
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t r0 = c * kChunk, r1 = std::min(rows, r0 + kChunk);
    if (!dot) {
      rows_scalar(type, ti, w, r0, r1, cols, x, y);
      continue;
    }
    for (int64_t r = r0; r < r1; ++r) y[r] = dot(w + r * row_bytes, x, blocks);
  }
}

// The Int8 path for nt <= kMaxTokens tokens: quantise each token's x, then the rows.
void gemv_int8(uint32_t type, const GgmlTypeInfo& ti, const uint8_t* w, int64_t rows, int64_t cols, int64_t nt,
               const float* x, float* y, IntRowDot dot) {
  // In the calling thread, before the rows' parallel loop (a few microseconds for 7168 values):
  // a barrier here would make every call wait for the slowest thread to be scheduled.
  ggml_gemv_detail::QuantisedActs qa;
  ggml_gemv_detail::quantise_acts(type, x, cols, nt, qa);
  const Q8Act* act = qa.act;
  const int64_t blocks = cols / ti.block, row_bytes = blocks * ti.bytes;
  const int64_t chunks = (rows + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(dynamic, 4) if (worth_threads(rows, row_bytes))
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t r0 = c * kChunk, r1 = std::min(rows, r0 + kChunk);
    // The chunk's rows are one stream: its first kPrefetch bytes at once (the hardware
    // prefetcher's ramp-up), then each kernel kPrefetch bytes ahead.
    const uint8_t* start = w + r0 * row_bytes;
    const uint8_t* end = w + r1 * row_bytes;
    for (const uint8_t* p = start; p < end && p < start + ggml_gemv_detail::kPrefetch; p += 64)
      __builtin_prefetch(p, 0, 3);
    float out[kMaxTokens];
    for (int64_t r = r0; r < r1; ++r) {
      dot(w + r * row_bytes, act, blocks, out, end);
      for (int64_t t = 0; t < nt; ++t) y[t * rows + r] = out[t];
    }
  }
}

IntRowDot int_row_dot(uint32_t type, int level, int nt) {
  if (level >= 2) return ggml_gemv_detail::avx512_int_row_dot(type, nt);
  if (level == 1) return ggml_gemv_detail::avx2_int_row_dot(type, nt);
  return nullptr;
}

}  // namespace

namespace ggml_gemv_detail {

int64_t act_block(uint32_t type) { return GgmlType(type) == GgmlType::Q8_0 ? 32 : 256; }

void quantise_acts(uint32_t type, const float* x, int64_t cols, int64_t nt, QuantisedActs& out) {
  const int64_t ab = act_block(type), ablocks = cols / ab;
  out.q.resize(static_cast<size_t>(nt * cols));
  out.d.resize(static_cast<size_t>(nt * ablocks));
  out.bsum.resize(static_cast<size_t>(nt * cols / 16));
  out.bsum32.resize(static_cast<size_t>(nt * cols / 32));
  quantize_act_avx2(x, nt * ablocks, ab, out.q.data(), out.d.data(), out.bsum.data());
  for (size_t i = 0; i < out.bsum32.size(); ++i)
    out.bsum32[i] = static_cast<int16_t>(out.bsum[2 * i] + out.bsum[2 * i + 1]);
  // bsum_w only for the types whose tile kernels read it (those with 16-value groups).
  const GgmlType gt = GgmlType(type);
  const bool wide_sums = gt == GgmlType::Q2_K || gt == GgmlType::Q3_K || gt == GgmlType::Q6_K;
  out.bsum_w.resize(wide_sums ? out.bsum.size() : 0);
  for (size_t i = 0; i < out.bsum_w.size(); ++i) out.bsum_w[i] = static_cast<uint16_t>(out.bsum[i]);
  for (int64_t t = 0; t < nt; ++t)
    out.act[t] = Q8Act{out.q.data() + t * cols, out.d.data() + t * ablocks, out.bsum.data() + t * cols / 16,
                       out.bsum32.data() + t * cols / 32, wide_sums ? out.bsum_w.data() + t * cols / 16 : nullptr};
}

void quantize_act_scalar(const float* x, int64_t blocks, int64_t block, int8_t* q, float* d, int16_t* bsum) {
  for (int64_t b = 0; b < blocks; ++b) {
    const float* xb = x + b * block;
    int8_t* qb = q + b * block;
    float amax = 0.0f;
    for (int64_t k = 0; k < block; ++k) amax = std::max(amax, std::fabs(xb[k]));
    const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
    d[b] = amax / 127.0f;
    for (int64_t k = 0; k < block; ++k)
      qb[k] = static_cast<int8_t>(std::clamp(static_cast<int>(std::nearbyint(xb[k] * id)), -127, 127));
    for (int64_t g = 0; g < block / 16; ++g) {
      int s = 0;
      for (int k = 0; k < 16; ++k) s += qb[16 * g + k];
      bsum[b * block / 16 + g] = static_cast<int16_t>(s);
    }
  }
}

namespace {

float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// One weight block's contribution, from its codes as integers: the scaled integer sum and the
// scaled min (or 0), as the kernels form them.
struct BlockTerms {
  double main = 0, min = 0;
};

BlockTerms block_terms(GgmlType t, const uint8_t* b, const int8_t* q, float dx, const int16_t* bsum) {
  BlockTerms r;
  const double d2 = dx;
  switch (t) {
    case GgmlType::Q8_0: {
      int64_t s = 0;
      for (int k = 0; k < 32; ++k) s += int64_t(static_cast<int8_t>(b[2 + k])) * q[k];
      r.main = double(f16_at(b)) * d2 * double(s);
      break;
    }
    case GgmlType::Q2_K: {
      int64_t s = 0, m = 0;
      for (int g = 0; g < 16; ++g) {
        int64_t p = 0;
        for (int k = 16 * g; k < 16 * g + 16; ++k) p += int64_t(ggml_q2k_code(b, k)) * q[k];
        s += int64_t(b[g] & 15) * p;
        m += int64_t(b[g] >> 4) * bsum[g];
      }
      r.main = double(f16_at(b + 80)) * d2 * double(s);
      r.min = -double(f16_at(b + 82)) * d2 * double(m);
      break;
    }
    case GgmlType::Q3_K: {
      int64_t s = 0;
      for (int g = 0; g < 16; ++g) {
        const int scale = ggml_q3k_scale(b, g) - 32;
        int64_t p = 0;
        for (int k = 16 * g; k < 16 * g + 16; ++k) p += int64_t(ggml_q3k_code(b, k)) * q[k];
        s += int64_t(scale) * (p - 4 * int64_t(bsum[g]));
      }
      r.main = double(f16_at(b + 108)) * d2 * double(s);
      break;
    }
    case GgmlType::Q4_K: case GgmlType::Q5_K: {
      int sc[8], mn[8];
      ggml_k4_scales(b + 4, sc, mn);
      int64_t s = 0, m = 0;
      for (int g = 0; g < 8; ++g) {
        int64_t p = 0;
        for (int k = 32 * g; k < 32 * g + 32; ++k)
          p += int64_t(t == GgmlType::Q4_K ? ggml_q4k_code(b, k) : ggml_q5k_code(b, k)) * q[k];
        s += int64_t(sc[g]) * p;
        m += int64_t(mn[g]) * (bsum[2 * g] + bsum[2 * g + 1]);
      }
      r.main = double(f16_at(b)) * d2 * double(s);
      r.min = -double(f16_at(b + 2)) * d2 * double(m);
      break;
    }
    case GgmlType::Q6_K: {
      const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
      int64_t s = 0;
      for (int g = 0; g < 16; ++g) {
        int64_t p = 0;
        for (int k = 16 * g; k < 16 * g + 16; ++k) p += int64_t(ggml_q6k_code(b, k)) * q[k];
        s += int64_t(sc[g]) * (p - 32 * int64_t(bsum[g]));
      }
      r.main = double(f16_at(b + 208)) * d2 * double(s);
      break;
    }
    default: break;
  }
  return r;
}

}  // namespace

void int_gemv_model(uint32_t type, const uint8_t* w, int64_t rows, int64_t cols, const float* x, double* y,
                    double* mag) {
  const GgmlTypeInfo& ti = checked_info(type, cols, "int_gemv_model");
  if (!is_block_quant(type)) throw std::invalid_argument("int_gemv_model: " + ggml_type_name(type));
  const int64_t ab = act_block(type), ablocks = cols / ab, blocks = cols / ti.block;
  std::vector<int8_t> q(static_cast<size_t>(cols));
  std::vector<float> d(static_cast<size_t>(ablocks));
  std::vector<int16_t> bsum(static_cast<size_t>(cols / 16));
  quantize_act_scalar(x, ablocks, ab, q.data(), d.data(), bsum.data());
  for (int64_t r = 0; r < rows; ++r) {
    double acc = 0, abs_sum = 0;
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t k0 = b * ti.block;  // weight and activation blocks have the same size
      const BlockTerms bt = block_terms(GgmlType(type), w + (r * blocks + b) * ti.bytes, q.data() + k0, d[size_t(k0 / ab)],
                                        bsum.data() + k0 / 16);
      acc += bt.main + bt.min;
      abs_sum += std::fabs(bt.main) + std::fabs(bt.min);
    }
    y[r] = acc;
    if (mag) mag[r] = abs_sum;
  }
}

}  // namespace ggml_gemv_detail

bool ggml_gemv_has_kernel(uint32_t type, int isa_level, GgmlGemvPath path) {
  if (isa_level <= 0) return ggml_can_dequantize(type);
  if (path == GgmlGemvPath::Int8) return int_row_dot(type, isa_level, 1) != nullptr;
  if (isa_level >= 2) return ggml_gemv_detail::avx512_row_dot(type) != nullptr;
  return ggml_gemv_detail::avx2_row_dot(type) != nullptr;
}

void ggml_gemv_tokens(uint32_t type, const uint8_t* w, int64_t rows, int64_t cols, int64_t n, const float* x,
                      float* y, int isa_level, GgmlGemvPath path) {
  const GgmlTypeInfo& ti = checked_info(type, cols, "ggml_gemv");
  if (n < 0) throw std::invalid_argument("ggml_gemv: " + std::to_string(n) + " tokens");
  const int level = std::min(isa_level, expert_detail::cpu_isa_level());
  if (path == GgmlGemvPath::Int8 && level >= 1 && is_block_quant(type)) {
    for (int64_t t0 = 0; t0 < n; t0 += kMaxTokens) {
      const int64_t nt = std::min<int64_t>(kMaxTokens, n - t0);
      // Token t's outputs go to y + t * rows, so a group of tokens writes rows apart.
      if (const IntRowDot dot = int_row_dot(type, level, int(nt))) {
        gemv_int8(type, ti, w, rows, cols, nt, x + t0 * cols, y + t0 * rows, dot);
        continue;
      }
      for (int64_t t = t0; t < t0 + nt; ++t) gemv_fp32(type, ti, w, rows, cols, x + t * cols, y + t * rows, level);
    }
    return;
  }
  for (int64_t t = 0; t < n; ++t) gemv_fp32(type, ti, w, rows, cols, x + t * cols, y + t * rows, level);
}

void ggml_gemv(uint32_t type, const uint8_t* w, int64_t rows, int64_t cols, const float* x, float* y, int isa_level,
               GgmlGemvPath path) {
  ggml_gemv_tokens(type, w, rows, cols, 1, x, y, isa_level, path);
}

}  // namespace mt::cpu
