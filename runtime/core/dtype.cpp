#include "runtime/core/dtype.h"

#include <array>
#include <cmath>

namespace mt {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F8_E4M3: return "F8_E4M3";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
    case DType::U8: return "U8";
    case DType::Q4_PACKED: return "Q4_PACKED";
    case DType::Q8_PACKED: return "Q8_PACKED";
    case DType::GGUF: return "GGUF";
  }
  return "?";
}

std::optional<DType> dtype_from_name(std::string_view n) {
  if (n == "F32") return DType::F32;
  if (n == "F16") return DType::F16;
  if (n == "BF16") return DType::BF16;
  if (n == "F8_E4M3") return DType::F8_E4M3;
  if (n == "I32") return DType::I32;
  if (n == "I64") return DType::I64;
  if (n == "U8") return DType::U8;
  return std::nullopt;
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::F16: case DType::BF16: return 2;
    case DType::F8_E4M3: case DType::U8: return 1;
    case DType::I64: return 8;
    case DType::Q4_PACKED: case DType::Q8_PACKED: case DType::GGUF: return 0;
  }
  return 0;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1u, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  float mag;
  if (exp == 0) mag = std::ldexp(static_cast<float>(man), -24);
  else if (exp == 31) mag = man ? NAN : INFINITY;
  else mag = std::ldexp(static_cast<float>(man | 0x400u), static_cast<int>(exp) - 25);
  return sign ? -mag : mag;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const float a = std::fabs(f);
  if (std::isnan(f)) return sign | 0x7e00u;
  if (a >= 65520.0f) return sign | 0x7c00u;
  if (a < std::ldexp(1.0f, -14)) {  // subnormal: units of 2^-24, RNE via nearbyint
    return sign | static_cast<uint16_t>(std::nearbyint(std::ldexp(a, 24)));
  }
  int e;
  std::frexp(a, &e);                                // a = m * 2^e, m in [0.5,1)
  const float m = std::ldexp(a, 11 - e);            // in [1024, 2048)
  uint32_t q = static_cast<uint32_t>(std::nearbyint(m));
  int exp = e - 1 + 15;
  if (q == 2048) { q = 1024; ++exp; }
  if (exp >= 31) return sign | 0x7c00u;
  return sign | static_cast<uint16_t>((exp << 10) | (q & 0x3ffu));
}

namespace {
constexpr float pow2(int e) {
  float r = 1.0f;
  for (; e > 0; --e) r *= 2.0f;
  for (; e < 0; ++e) r *= 0.5f;
  return r;
}
// Built at compile time, so no other static initialiser can observe an empty table.
constexpr std::array<float, 256> build_fp8_table() {
  std::array<float, 256> t{};
  for (int v = 0; v < 256; ++v) {
    const int sign = v >> 7, exp = (v >> 3) & 0xf, man = v & 7;
    float mag;
    if (exp == 0xf && man == 7) mag = __builtin_nanf("");
    else if (exp == 0) mag = static_cast<float>(man) * pow2(-9);   // subnormal: man/8 * 2^-6
    else mag = static_cast<float>(8 + man) * pow2(exp - 10);       // (1+man/8) * 2^(exp-7)
    t[v] = sign ? -mag : mag;
  }
  return t;
}
constexpr std::array<float, 256> kTable = build_fp8_table();

}  // namespace

constexpr float kFp8E4M3ToF32[256] = {
#define MT_FP8_ROW(i) kTable[i], kTable[i + 1], kTable[i + 2], kTable[i + 3], kTable[i + 4], kTable[i + 5], kTable[i + 6], kTable[i + 7]
    MT_FP8_ROW(0),   MT_FP8_ROW(8),   MT_FP8_ROW(16),  MT_FP8_ROW(24),  MT_FP8_ROW(32),  MT_FP8_ROW(40),
    MT_FP8_ROW(48),  MT_FP8_ROW(56),  MT_FP8_ROW(64),  MT_FP8_ROW(72),  MT_FP8_ROW(80),  MT_FP8_ROW(88),
    MT_FP8_ROW(96),  MT_FP8_ROW(104), MT_FP8_ROW(112), MT_FP8_ROW(120), MT_FP8_ROW(128), MT_FP8_ROW(136),
    MT_FP8_ROW(144), MT_FP8_ROW(152), MT_FP8_ROW(160), MT_FP8_ROW(168), MT_FP8_ROW(176), MT_FP8_ROW(184),
    MT_FP8_ROW(192), MT_FP8_ROW(200), MT_FP8_ROW(208), MT_FP8_ROW(216), MT_FP8_ROW(224), MT_FP8_ROW(232),
    MT_FP8_ROW(240), MT_FP8_ROW(248)
#undef MT_FP8_ROW
};

uint8_t f32_to_fp8e4m3(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return 0x7f;            // NaN
  if (u >= 0x43e00000u) return sign | 0x7e;    // >= 448 (and inf): saturate
  if (u < 0x3c800000u) {                       // below 2^-6: subnormal, step 2^-9
    float a;
    std::memcpy(&a, &u, 4);
    const int q = static_cast<int>(std::nearbyint(std::ldexp(a, 9)));  // 0..8; 8 encodes 2^-6
    return sign | static_cast<uint8_t>(q);
  }
  // Normal: round the 23-bit mantissa to 3 bits, to nearest even; a carry moves into the
  // exponent, which is what rounding up to the next binade should do.
  const uint32_t r = u + 0x7ffffu + ((u >> 20) & 1u);
  const uint32_t exp = (r >> 23) - 127 + 7, man = (r >> 20) & 7u;
  return sign | static_cast<uint8_t>((exp << 3) | man);  // r < 464 here, so exp/man <= 448
}

}  // namespace mt
