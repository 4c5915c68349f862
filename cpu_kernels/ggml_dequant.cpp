#include "cpu_kernels/ggml_dequant.h"

#include <cstring>
#include <stdexcept>

#include "runtime/core/dtype.h"
#include "runtime/core/ggml_types.h"

namespace mt::cpu {

namespace {

constexpr int64_t QK = 256;  // the K-quants' super-block

float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// Q8_0: [d f16][32 x int8]
void q8_0(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  for (int i = 0; i < 32; ++i) y[i] = float(static_cast<int8_t>(b[2 + i])) * d;
}

// The legacy 32-value formats (llama.cpp falls back to them for rows that are not whole K-quant
// blocks, e.g. DeepSeek's 128-wide attn_k_b in Q4_K_M files). Value i of a block: the low nibble
// of byte i (i < 16) or the high nibble of byte i - 16; Q5's fifth bit is bit i of qh (LE u32).
//   Q4_0: [d][qs 16]            (q - 8) * d
//   Q4_1: [d][m][qs 16]         q * d + m
//   Q5_0: [d][qh 4][qs 16]      (q - 16) * d
//   Q5_1: [d][m][qh 4][qs 16]   q * d + m
void legacy_32(const uint8_t* b, float* y, bool has_min, bool five_bits) {
  const float d = f16_at(b);
  const float m = has_min ? f16_at(b + 2) : 0.0f;
  const uint8_t* p = b + (has_min ? 4 : 2);
  uint32_t qh = 0;
  if (five_bits) {
    std::memcpy(&qh, p, 4);
    p += 4;
  }
  const int offset = has_min ? 0 : (five_bits ? 16 : 8);
  for (int i = 0; i < 32; ++i) {
    int q = i < 16 ? (p[i] & 15) : (p[i - 16] >> 4);
    if (five_bits) q |= int((qh >> i) & 1) << 4;
    const float v = float(q - offset) * d;
    y[i] = has_min ? v + m : v;
  }
}

// Q2_K: [scales 16][qs 64][d f16][dmin f16]; 16 groups of 16, 2-bit codes; scale byte: low
// nibble the group's scale, high nibble its min.
void q2_k(const uint8_t* b, float* y) {
  const uint8_t* sc = b;
  const uint8_t* qs = b + 16;
  const float d = f16_at(b + 80), dmin = f16_at(b + 82);
  for (int64_t t = 0; t < QK; ++t) {
    const int64_t h = t / 128, j = (t % 128) / 32, i = t % 32;  // half, shift, byte
    const int q = (qs[h * 32 + i] >> (2 * j)) & 3;
    const float dl = d * float(sc[t / 16] & 15), ml = dmin * float(sc[t / 16] >> 4);
    y[t] = dl * float(q) - ml;
  }
}

// Q3_K: [hmask 32][qs 64][scales 12][d f16]; 16 groups of 16; 3-bit codes (2 low bits in qs,
// the high bit in hmask, set meaning no offset), 6-bit signed scales packed in 12 bytes.
void q3_k(const uint8_t* b, float* y) {
  const uint8_t* hmask = b;
  const uint8_t* qs = b + 32;
  const uint8_t* s = b + 96;
  const float d = f16_at(b + 108);
  float dl[16];
  for (int g = 0; g < 16; ++g) {
    const int low = (s[g % 8] >> (4 * (g / 8))) & 15;
    const int high = (s[8 + g % 4] >> (2 * (g / 4))) & 3;
    dl[g] = d * float((low | (high << 4)) - 32);
  }
  for (int64_t t = 0; t < QK; ++t) {
    const int64_t h = t / 128, j = (t % 128) / 32, i = t % 32;
    const int ql = (qs[h * 32 + i] >> (2 * j)) & 3;
    const int hb = (hmask[t % 32] >> (t / 32)) & 1;
    y[t] = dl[t / 16] * float(ql - (hb ? 0 : 4));
  }
}

// Q4_K: [d f16][dmin f16][scales 12][qs 128]; group g = 2c + nibble, byte c*32 + i.
void q4_k(const uint8_t* b, float* y) {
  const float d = f16_at(b), dmin = f16_at(b + 2);
  int sc[8], m[8];
  ggml_k4_scales(b + 4, sc, m);
  const uint8_t* qs = b + 16;
  for (int g = 0; g < 8; ++g) {
    const float dl = d * float(sc[g]), ml = dmin * float(m[g]);
    const int c = g / 2, nib = g % 2;
    for (int i = 0; i < 32; ++i) y[g * 32 + i] = dl * float((qs[c * 32 + i] >> (4 * nib)) & 15) - ml;
  }
}

// Q5_K: [d f16][dmin f16][scales 12][qh 32][qs 128]; Q4_K's codes plus a fifth bit, bit g of qh[i].
void q5_k(const uint8_t* b, float* y) {
  const float d = f16_at(b), dmin = f16_at(b + 2);
  int sc[8], m[8];
  ggml_k4_scales(b + 4, sc, m);
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + 48;
  for (int g = 0; g < 8; ++g) {
    const float dl = d * float(sc[g]), ml = dmin * float(m[g]);
    const int c = g / 2, nib = g % 2;
    for (int i = 0; i < 32; ++i) {
      const int q = ((qs[c * 32 + i] >> (4 * nib)) & 15) | (((qh[i] >> g) & 1) << 4);
      y[g * 32 + i] = dl * float(q) - ml;
    }
  }
}

// Q6_K: [ql 128][qh 64][scales 16 x int8][d f16]; 16 groups of 16; 6-bit codes less 32.
void q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = f16_at(b + 208);
  for (int64_t t = 0; t < QK; ++t) {
    const int64_t h = t / 128, r = t % 128;
    const int lo = (ql[h * 64 + r % 64] >> (4 * (r / 64))) & 15;
    const int hi = (qh[h * 32 + r % 32] >> (2 * (r / 32))) & 3;
    y[t] = (d * float(sc[t / 16])) * float((lo | (hi << 4)) - 32);
  }
}

}  // namespace

bool ggml_can_dequantize(uint32_t type) {
  switch (GgmlType(type)) {
    case GgmlType::F32: case GgmlType::F16: case GgmlType::BF16: case GgmlType::Q8_0: case GgmlType::Q2_K:
    case GgmlType::Q3_K: case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K:
    case GgmlType::Q4_0: case GgmlType::Q4_1: case GgmlType::Q5_0: case GgmlType::Q5_1: return true;
    default: return false;
  }
}

void ggml_dequantize(uint32_t type, const uint8_t* src, int64_t n, float* dst) {
  const GgmlTypeInfo* ti = ggml_type_info(type);
  if (!ti || !ggml_can_dequantize(type) || n % ti->block != 0)
    throw std::invalid_argument("ggml_dequantize: " + ggml_type_name(type) + " of " + std::to_string(n) + " values");
  const int64_t blocks = n / ti->block;
  for (int64_t k = 0; k < blocks; ++k) {
    const uint8_t* b = src + k * ti->bytes;
    float* y = dst + k * ti->block;
    switch (GgmlType(type)) {
      case GgmlType::F32: std::memcpy(y, b, 4); break;
      case GgmlType::F16: *y = f16_at(b); break;
      case GgmlType::BF16: { uint16_t h; std::memcpy(&h, b, 2); *y = bf16_to_f32(h); break; }
      case GgmlType::Q8_0: q8_0(b, y); break;
      case GgmlType::Q2_K: q2_k(b, y); break;
      case GgmlType::Q3_K: q3_k(b, y); break;
      case GgmlType::Q4_K: q4_k(b, y); break;
      case GgmlType::Q5_K: q5_k(b, y); break;
      case GgmlType::Q6_K: q6_k(b, y); break;
      case GgmlType::Q4_0: legacy_32(b, y, false, false); break;
      case GgmlType::Q4_1: legacy_32(b, y, true, false); break;
      case GgmlType::Q5_0: legacy_32(b, y, false, true); break;
      case GgmlType::Q5_1: legacy_32(b, y, true, true); break;
      default: break;
    }
  }
}

}  // namespace mt::cpu
