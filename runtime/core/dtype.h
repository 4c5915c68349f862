// Element types of checkpoint tensors and scalar conversions between them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace mt {

// Q4_PACKED / Q8_PACKED: a whole matrix in the routed-expert kernels' packed layout
// (runtime/core/expert_format.h: row tiles of 16, codes then per-group scales), written by
// `moetier convert --dense q4|q8`. Never a safetensors dtype: dtype_from_name does not return them,
// and they have no per-element size (dtype_size is 0; see packed_matrix_bytes).
// GGUF: a matrix kept in one of ggml's block formats (a GGUF file's Q8_0, Q4_K, ...), rows of
// whole blocks back to back; which format is WeightView::ggml_type. No per-element size either.
enum class DType : uint8_t { F32, F16, BF16, F8_E4M3, I32, I64, U8, Q4_PACKED, Q8_PACKED, GGUF };

inline bool is_packed(DType t) { return t == DType::Q4_PACKED || t == DType::Q8_PACKED; }

// Safetensors spelling ("F32", "BF16", "F8_E4M3", ...).
std::string_view dtype_name(DType t);
std::optional<DType> dtype_from_name(std::string_view name);
size_t dtype_size(DType t);

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// float8_e4m3fn: bias 7, no infinities, NaN = S.1111.111, max finite 448.
extern const float kFp8E4M3ToF32[256];
inline float fp8e4m3_to_f32(uint8_t v) { return kFp8E4M3ToF32[v]; }
// Round to nearest even, saturating to +-448 (as torch's cast after the clamp DeepSeek applies).
uint8_t f32_to_fp8e4m3(float f);

inline constexpr float kFp8E4M3Max = 448.0f;

}  // namespace mt
