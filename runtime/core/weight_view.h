// A non-owning view of a 2-D weight matrix [rows, cols] (PyTorch [out, in] order) as stored in a
// checkpoint: F32, BF16, F16, or F8_E4M3 with one fp32 multiplier per block x block tile
// (DeepSeek's weight_scale_inv, shape [ceil(rows/block), ceil(cols/block)]); or, from a packed
// store, Q4_PACKED / Q8_PACKED: the packed-matrix layout of runtime/core/expert_format.h starting
// at `data`, with `block` the quantisation group along cols; or, from a GGUF file, GGUF: rows of
// ggml blocks of type `ggml_type` (runtime/core/ggml_types.h) back to back, or (tiled) the same
// blocks as row tiles of 16 (runtime/core/ggml_tiles.h). The currency of the
// backend interface: backends read weights through it, whatever they were loaded from.
#pragma once

#include <cstdint>

#include "runtime/core/dtype.h"
#include "runtime/core/expert_format.h"
#include "runtime/core/ggml_tiles.h"
#include "runtime/core/ggml_types.h"

namespace mt {

struct WeightView {
  DType dtype = DType::F32;
  const uint8_t* data = nullptr;  // rows*cols elements, row-major, may be unaligned
  int64_t rows = 0;
  int64_t cols = 0;
  const float* scale = nullptr;   // only for F8_E4M3
  int64_t block = 128;            // tile edge of `scale`; packed: the quantisation group
  uint32_t ggml_type = 0;         // GGUF only: the GgmlType id of the blocks
  bool tiled = false;             // GGUF only: data holds row tiles (runtime/core/ggml_tiles.h)

  int64_t scale_cols() const { return (cols + block - 1) / block; }
  // Bytes a full pass over the weights reads (data and scales).
  uint64_t stored_bytes() const {
    if (dtype == DType::GGUF && tiled)
      return uint64_t(ggml_tiled_bytes(ggml_type, rows, cols, ggml_type_info(ggml_type)->block));
    if (dtype == DType::GGUF) return uint64_t(rows) * ggml_row_bytes(ggml_type, cols);
    if (is_packed(dtype))
      return packed_matrix_bytes(dtype == DType::Q4_PACKED ? ExpertQuant::Q4 : ExpertQuant::Q8, rows, cols, block);
    uint64_t b = uint64_t(rows) * uint64_t(cols) * dtype_size(dtype);
    if (dtype == DType::F8_E4M3) b += uint64_t((rows + block - 1) / block) * uint64_t(scale_cols()) * 4;
    return b;
  }
};

}  // namespace mt
