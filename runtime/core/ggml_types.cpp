#include "runtime/core/ggml_types.h"

#include <cstring>
#include <random>

#include "runtime/core/dtype.h"

namespace mt {

namespace {
constexpr int64_t K = 256;  // QK_K: the super-block of the K-quants
struct Entry {
  uint32_t id;
  GgmlTypeInfo info;
};
constexpr Entry kTypes[] = {
    {0, {"F32", 1, 4}},
    {1, {"F16", 1, 2}},
    {2, {"Q4_0", 32, 2 + 16}},
    {3, {"Q4_1", 32, 2 + 2 + 16}},
    {6, {"Q5_0", 32, 2 + 4 + 16}},
    {7, {"Q5_1", 32, 2 + 2 + 4 + 16}},
    {8, {"Q8_0", 32, 2 + 32}},
    {9, {"Q8_1", 32, 4 + 4 + 32}},
    {10, {"Q2_K", K, 2 + 2 + K / 16 + K / 4}},
    {11, {"Q3_K", K, 2 + K / 4 + K / 8 + 12}},
    {12, {"Q4_K", K, 2 + 2 + K / 2 + 12}},
    {13, {"Q5_K", K, 2 + 2 + K / 2 + K / 8 + 12}},
    {14, {"Q6_K", K, 2 + K / 2 + K / 4 + K / 16}},
    {15, {"Q8_K", K, 4 + K + K / 8}},
    {16, {"IQ2_XXS", K, 2 + K / 4}},
    {17, {"IQ2_XS", K, 2 + K / 4 + K / 32}},
    {18, {"IQ3_XXS", K, 2 + K / 4 + K / 8}},
    {19, {"IQ1_S", K, 2 + K / 8 + K / 16}},
    {20, {"IQ4_NL", 32, 2 + 16}},
    {21, {"IQ3_S", K, 2 + K / 4 + K / 8 + K / 32 + 4}},
    {22, {"IQ2_S", K, 2 + K / 4 + K / 16}},
    {23, {"IQ4_XS", K, 2 + 2 + K / 2 + K / 64}},
    {24, {"I8", 1, 1}},
    {25, {"I16", 1, 2}},
    {26, {"I32", 1, 4}},
    {27, {"I64", 1, 8}},
    {28, {"F64", 1, 8}},
    {29, {"IQ1_M", K, K / 8 + K / 16 + K / 32}},
    {30, {"BF16", 1, 2}},
    {34, {"TQ1_0", K, 2 + 4 * 13}},
    {35, {"TQ2_0", K, 2 + 64}},
};
}  // namespace

const GgmlTypeInfo* ggml_type_info(uint32_t type) {
  for (const Entry& e : kTypes)
    if (e.id == type) return &e.info;
  return nullptr;
}

std::string ggml_type_name(uint32_t type) {
  const GgmlTypeInfo* t = ggml_type_info(type);
  return t ? std::string(t->name) : "type " + std::to_string(type);
}

std::optional<DType> ggml_float_dtype(uint32_t type) {
  switch (GgmlType(type)) {
    case GgmlType::F32: return DType::F32;
    case GgmlType::F16: return DType::F16;
    case GgmlType::BF16: return DType::BF16;
    default: return std::nullopt;
  }
}

std::optional<uint32_t> ggml_float_type(DType dtype) {
  switch (dtype) {
    case DType::F32: return uint32_t(GgmlType::F32);
    case DType::F16: return uint32_t(GgmlType::F16);
    case DType::BF16: return uint32_t(GgmlType::BF16);
    default: return std::nullopt;
  }
}

std::vector<int> ggml_f16_scale_offsets(uint32_t type) {
  switch (GgmlType(type)) {
    case GgmlType::Q8_0: case GgmlType::Q4_0: case GgmlType::Q5_0: return {0};
    case GgmlType::Q4_1: case GgmlType::Q5_1: return {0, 2};
    case GgmlType::Q2_K: return {80, 82};
    case GgmlType::Q3_K: return {108};
    case GgmlType::Q4_K: case GgmlType::Q5_K: return {0, 2};
    case GgmlType::Q6_K: return {208};
    default: return {};
  }
}

void ggml_fill_random_blocks(uint32_t type, uint8_t* dst, int64_t blocks, uint32_t seed, float scale_sd) {
  const GgmlTypeInfo* ti = ggml_type_info(type);
  if (!ti) return;
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> byte(0, 255);
  std::normal_distribution<float> nd(0.0f, scale_sd);
  // The float types: N(0, scale_sd) values (random bytes would hold NaNs and infinities).
  if (const std::optional<DType> dt = ggml_float_dtype(type)) {
    for (int64_t i = 0; i < blocks; ++i) {
      const float v = nd(rng);
      if (*dt == DType::F32) {
        std::memcpy(dst + 4 * i, &v, 4);
      } else {
        const uint16_t h = *dt == DType::F16 ? f32_to_f16(v) : f32_to_bf16(v);
        std::memcpy(dst + 2 * i, &h, 2);
      }
    }
    return;
  }
  const size_t n = size_t(blocks) * size_t(ti->bytes);
  for (size_t i = 0; i < n; ++i) dst[i] = static_cast<uint8_t>(byte(rng));
  const std::vector<int> offsets = ggml_f16_scale_offsets(type);
  for (int64_t b = 0; b < blocks; ++b)
    for (int off : offsets) {
      const uint16_t h = f32_to_f16(nd(rng));
      std::memcpy(dst + size_t(b) * size_t(ti->bytes) + size_t(off), &h, 2);
    }
}

}  // namespace mt
