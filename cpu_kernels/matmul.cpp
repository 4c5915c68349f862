// Weight decoding (F32 / BF16 / F16 / block-scaled F8_E4M3) and the reference GEMM y = x W^T.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_kernels/ggml_dequant.h"
#include "cpu_kernels/ops.h"
#include "runtime/core/ggml_tiles.h"
#include "runtime/core/ggml_types.h"

namespace mt::cpu {

namespace {

constexpr int64_t kParallelWork = int64_t{1} << 15;

// IEEE binary16 -> binary32, exact, branch-light so the row loop vectorises. Shifting the
// 15 magnitude bits into a float's exponent/mantissa position and multiplying by 2^112 re-biases
// the exponent (15 -> 127) for normals and subnormals alike; Inf/NaN are patched afterwards.
inline float half_bits_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t mag = h & 0x7fffu;
  const uint32_t rebias = std::bit_cast<uint32_t>(std::bit_cast<float>(mag << 13) * 0x1p112f);
  const uint32_t special = 0x7f800000u | ((mag & 0x3ffu) << 13);  // Inf / NaN (payload kept)
  const uint32_t is_special = 0u - static_cast<uint32_t>(mag >= 0x7c00u);  // all ones or zero
  return std::bit_cast<float>(((special & is_special) | (rebias & ~is_special)) | sign);
}

void check_view(const WeightView& w) {
  if (w.rows < 0 || w.cols < 0) throw std::invalid_argument("WeightView: negative shape");
  if (w.rows > 0 && w.cols > 0 && w.data == nullptr)
    throw std::invalid_argument("WeightView: null data");
  switch (w.dtype) {
    case DType::F32:
    case DType::BF16:
    case DType::F16:
      return;
    case DType::F8_E4M3:
      if (w.block <= 0) throw std::invalid_argument("WeightView: F8_E4M3 needs block > 0");
      if (w.rows > 0 && w.cols > 0 && w.scale == nullptr)
        throw std::invalid_argument("WeightView: F8_E4M3 needs a scale tensor");
      return;
    case DType::Q4_PACKED:
    case DType::Q8_PACKED: {
      const int64_t ck = w.dtype == DType::Q4_PACKED ? 8 : 4;
      if (w.block <= 0 || w.block % ck || w.cols % w.block)
        throw std::invalid_argument("WeightView: packed weights need a group that divides cols and is a multiple of " +
                                    std::to_string(ck));
      return;
    }
    case DType::GGUF: {
      const GgmlTypeInfo* ti = ggml_type_info(w.ggml_type);
      if (!ti || !ggml_can_dequantize(w.ggml_type))
        throw std::invalid_argument("WeightView: no decoder for ggml type " + ggml_type_name(w.ggml_type));
      if (w.cols % ti->block)
        throw std::invalid_argument("WeightView: " + ggml_type_name(w.ggml_type) + " rows of " + std::to_string(w.cols) +
                                    " values are not whole blocks of " + std::to_string(ti->block));
      if (w.tiled && (!ggml_tile_supported(w.ggml_type) || w.rows % kTileRows))
        throw std::invalid_argument("WeightView: " + std::to_string(w.rows) + " rows of " + ggml_type_name(w.ggml_type) +
                                    " cannot be row tiles");
      return;
    }
    default:
      break;
  }
  throw std::invalid_argument("WeightView: unsupported weight dtype " +
                              std::string(dtype_name(w.dtype)));
}

// Row r of a packed matrix (runtime/core/expert_format.h; the in-tile code order is documented in
// cpu_kernels/expert_ffn_internal.h and docs/kernels.md), decoded element by element from the
// format's description: row tiles of 16, each a run of 64-byte chunks in k order, the row's four
// bytes of a chunk at 4*(r % 16); then the scales [tile][group][16 rows] (fp16 for Q4, fp32 for Q8).
void decode_packed_row(const WeightView& w, int64_t r, float* out) {
  const bool q4 = w.dtype == DType::Q4_PACKED;
  const int64_t cols = w.cols, ck = q4 ? 8 : 4, groups = cols / w.block;
  const int64_t tiles = (w.rows + 15) / 16, tile = r / 16, lane = r % 16;
  const int64_t tile_code_bytes = cols / ck * 64;
  const int64_t scale_start = (tile_code_bytes * tiles + 63) / 64 * 64;
  const uint8_t* codes = w.data + tile * tile_code_bytes;
  for (int64_t k = 0; k < cols; ++k) {
    const int64_t c = k / ck, j = k % ck;
    int q;
    if (q4) {
      const uint8_t b = codes[c * 64 + 4 * lane + (j & 3)];
      q = (j < 4 ? (b & 15) : (b >> 4)) - 8;
    } else {
      q = static_cast<int>(codes[c * 64 + 4 * lane + j]) - 128;
    }
    const int64_t si = (tile * groups + k / w.block) * 16 + lane;
    float d;
    if (q4) {
      uint16_t h;
      std::memcpy(&h, w.data + scale_start + 2 * si, 2);
      d = half_bits_to_f32(h);
    } else {
      std::memcpy(&d, w.data + scale_start + 4 * si, 4);
    }
    out[k] = static_cast<float>(q) * d;
  }
}

// Decode row r of w into out[0, cols). Unaligned data is read with memcpy.
void decode_row(const WeightView& w, int64_t r, float* out) {
  const int64_t cols = w.cols;
  switch (w.dtype) {
    case DType::F32:
      std::memcpy(out, w.data + r * cols * 4, static_cast<size_t>(cols) * 4);
      return;
    case DType::BF16: {
      const uint8_t* p = w.data + r * cols * 2;
      for (int64_t j = 0; j < cols; ++j) {
        uint16_t h;
        std::memcpy(&h, p + 2 * j, 2);
        const uint32_t u = static_cast<uint32_t>(h) << 16;
        std::memcpy(out + j, &u, 4);
      }
      return;
    }
    case DType::F16: {
      const uint8_t* p = w.data + r * cols * 2;
      for (int64_t j = 0; j < cols; ++j) {
        uint16_t h;
        std::memcpy(&h, p + 2 * j, 2);
        out[j] = half_bits_to_f32(h);
      }
      return;
    }
    case DType::F8_E4M3: {
      // W[r, j] = fp8(W8[r, j]) * scale[(r / block) * scale_cols + j / block]; the last row and
      // column tiles may be partial.
      const uint8_t* p = w.data + r * cols;
      const int64_t block = w.block;
      const float* srow = w.scale + (r / block) * w.scale_cols();
      for (int64_t j0 = 0; j0 < cols; j0 += block) {
        float s;
        std::memcpy(&s, srow + j0 / block, 4);
        const int64_t j1 = std::min(cols, j0 + block);
        for (int64_t j = j0; j < j1; ++j) out[j] = kFp8E4M3ToF32[p[j]] * s;
      }
      return;
    }
    case DType::Q4_PACKED:
    case DType::Q8_PACKED:
      decode_packed_row(w, r, out);
      return;
    case DType::GGUF: {
      const uint64_t row_bytes = ggml_row_bytes(w.ggml_type, cols);
      if (w.tiled) {  // the row's blocks back out of its tile, then decoded as stored
        const int64_t blocks = cols / ggml_type_info(w.ggml_type)->block;
        std::vector<uint8_t> row(row_bytes);
        ggml_tile_unpack_row(w.ggml_type, w.data + (r / kTileRows) * blocks * ggml_tile_block_bytes(w.ggml_type),
                             blocks, r % kTileRows, row.data());
        ggml_dequantize(w.ggml_type, row.data(), cols, out);
        return;
      }
      ggml_dequantize(w.ggml_type, w.data + uint64_t(r) * row_bytes, cols, out);
      return;
    }
    default:
      return;  // rejected by check_view
  }
}

inline float dot(const float* a, const float* b, int64_t n) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

// Eight dot products of consecutive rows w[0..8) (stride n) with one x: eight independent
// accumulators hide the add latency and x is loaded once per column.
inline void dot8(const float* w, const float* x, int64_t n, float* out) {
  const float *w0 = w, *w1 = w + n, *w2 = w + 2 * n, *w3 = w + 3 * n;
  const float *w4 = w + 4 * n, *w5 = w + 5 * n, *w6 = w + 6 * n, *w7 = w + 7 * n;
  float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f, a4 = 0.0f, a5 = 0.0f, a6 = 0.0f, a7 = 0.0f;
#pragma omp simd reduction(+ : a0, a1, a2, a3, a4, a5, a6, a7)
  for (int64_t i = 0; i < n; ++i) {
    const float xi = x[i];
    a0 += w0[i] * xi;
    a1 += w1[i] * xi;
    a2 += w2[i] * xi;
    a3 += w3[i] * xi;
    a4 += w4[i] * xi;
    a5 += w5[i] * xi;
    a6 += w6[i] * xi;
    a7 += w7[i] * xi;
  }
  out[0] = a0; out[1] = a1; out[2] = a2; out[3] = a3;
  out[4] = a4; out[5] = a5; out[6] = a6; out[7] = a7;
}

}  // namespace

void dequantize_rows(const WeightView& w, int64_t row0, int64_t n_rows, float* out) {
  check_view(w);
  if (row0 < 0 || n_rows < 0 || row0 + n_rows > w.rows)
    throw std::out_of_range("dequantize_rows: rows out of range");
  if (n_rows == 0 || w.cols == 0) return;
#pragma omp parallel for schedule(static) if (n_rows > 1 && n_rows * w.cols > kParallelWork)
  for (int64_t r = 0; r < n_rows; ++r) decode_row(w, row0 + r, out + r * w.cols);
}

void matmul(const WeightView& w, const float* x, int64_t n_tokens, float* y) {
  check_view(w);
  const int64_t rows = w.rows, cols = w.cols;
  if (n_tokens <= 0 || rows == 0) return;
  if (cols == 0) {
    std::fill(y, y + n_tokens * rows, 0.0f);
    return;
  }
  // Rows are processed in tiles of kTile: each row is decoded once into a per-thread buffer,
  // then every token's x row is dotted with the kTile decoded rows while it is hot in cache.
  constexpr int64_t kTile = 8;
  const int64_t n_tiles = (rows + kTile - 1) / kTile;
  const bool par = n_tiles > 1 && rows * cols * n_tokens > kParallelWork;
#pragma omp parallel if (par)
  {
    std::vector<float> buf(static_cast<size_t>(kTile * cols));
#pragma omp for schedule(static)
    for (int64_t tile = 0; tile < n_tiles; ++tile) {
      const int64_t r0 = tile * kTile;
      const int64_t nr = std::min(kTile, rows - r0);
      for (int64_t i = 0; i < nr; ++i) decode_row(w, r0 + i, buf.data() + i * cols);
      for (int64_t t = 0; t < n_tokens; ++t) {
        const float* xt = x + t * cols;
        float* yt = y + t * rows + r0;
        if (nr == kTile) dot8(buf.data(), xt, cols, yt);
        else
          for (int64_t i = 0; i < nr; ++i) yt[i] = dot(buf.data() + i * cols, xt, cols);
      }
    }
  }
}

}  // namespace mt::cpu
