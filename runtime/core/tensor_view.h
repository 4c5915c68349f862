// A non-owning view of fp32 activations [rows, cols], row-major, no padding: how the graph
// names its intermediates to observers (DeepSeekModel::set_tensor_callback).
#pragma once

#include <cstdint>
#include <span>

namespace mt {

struct TensorView {
  const float* data = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;

  int64_t size() const { return rows * cols; }
  std::span<const float> row(int64_t r) const { return {data + r * cols, static_cast<size_t>(cols)}; }
  std::span<const float> all() const { return {data, static_cast<size_t>(size())}; }
};

}  // namespace mt
