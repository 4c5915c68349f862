// A non-owning view of a 2-D weight matrix [rows, cols] (PyTorch [out, in] order) as stored in a
// checkpoint: F32, BF16, F16, or F8_E4M3 with one fp32 multiplier per block x block tile
// (DeepSeek's weight_scale_inv, shape [ceil(rows/block), ceil(cols/block)]); or, from a packed
// store, Q4_PACKED / Q8_PACKED: the packed-matrix layout of runtime/core/expert_format.h starting
// at `data`, with `block` the quantisation group along cols. The currency of the
// backend interface: backends read weights through it, whatever they were loaded from.
#pragma once

#include <cstdint>

#include "runtime/core/dtype.h"

namespace mt {

struct WeightView {
  DType dtype = DType::F32;
  const uint8_t* data = nullptr;  // rows*cols elements, row-major, may be unaligned
  int64_t rows = 0;
  int64_t cols = 0;
  const float* scale = nullptr;   // only for F8_E4M3
  int64_t block = 128;            // tile edge of `scale`; packed: the quantisation group

  int64_t scale_cols() const { return (cols + block - 1) / block; }
};

}  // namespace mt
