// Random GGUF blocks and activations shared by the GGUF GEMV tests.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "runtime/core/ggml_types.h"

namespace mt::test {

// rows x cols of type t in random blocks (fp16 scales kept finite).
inline std::vector<uint8_t> random_blocks(GgmlType t, int64_t rows, int64_t cols, std::mt19937& rng) {
  const GgmlTypeInfo* ti = ggml_type_info(uint32_t(t));
  const int64_t blocks = rows * cols / ti->block;
  std::vector<uint8_t> w(static_cast<size_t>(blocks * ti->bytes));
  ggml_fill_random_blocks(uint32_t(t), w.data(), blocks, rng());
  return w;
}

// Activations whose blocks differ in scale (so a per-block scale mixed up shows).
inline std::vector<float> random_x(int64_t cols, std::mt19937& rng) {
  std::vector<float> x(static_cast<size_t>(cols));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int64_t k = 0; k < cols; ++k) x[size_t(k)] = nd(rng) * (1.0f + float((k / 32) % 5));
  return x;
}

}  // namespace mt::test
