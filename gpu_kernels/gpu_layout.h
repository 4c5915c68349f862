// What the CUDA backend keeps in VRAM, and the host-side packing into it. Compiled in every
// build (tests/unit/test_gpu_layout.cpp checks the packing on the CPU, bit for bit against the
// CPU layouts); the accessors are __host__ __device__, so the kernels index VRAM exactly as the
// tests do.
//
// Dense weights: row-major [rows, cols], BF16 (BF16 as stored; FP8 times its block scale, and
// Q4/Q8 packed rows, rounded to nearest-even BF16) or F32 (F32 and F16 as stored, widened).
// Routed experts: one blob per expert, [gate | up | down], each matrix row-major:
//   Q4:   rows * cols/2 bytes, byte (r, j) = code of k = 2j (low nibble) | code of k = 2j+1
//         (high nibble), value (code - 8) * scale; then rows * cols/group fp16 scales
//   Q8:   rows * cols int8 values; then rows * cols/group fp32 scales
//   BF16: rows * cols bf16 values
// every part on a 256-byte boundary. The CPU blob's 16-row tiles and SIMD interleaving are
// undone (cpu_kernels/expert_pack.cpp's layout); codes and scales are copied, never requantised.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "runtime/core/dtype.h"
#include "runtime/core/expert_format.h"
#include "runtime/core/weight_view.h"

#if defined(__CUDACC__)
#define MT_HD __host__ __device__ __forceinline__
#else
#define MT_HD inline
#endif

namespace mt::gpu {

// Byte offsets of one matrix inside a GPU expert blob.
struct GpuMatrix {
  uint64_t codes = 0, scales = 0;
  int64_t rows = 0, cols = 0, group = 0;
};

struct GpuExpertLayout {
  GpuMatrix mat[3];  // gate, up, down
  uint64_t total_bytes = 0;
};

// The kernels read 8 consecutive k of a row at a time: cols and the group must be multiples of
// 8. False (and why) otherwise; such experts stay on the CPU.
bool gpu_expert_geometry_ok(const ExpertGeometry& g, std::string* why);
GpuExpertLayout gpu_expert_layout(const ExpertGeometry& g);
// Repacks one CPU expert blob (runtime/core/expert_format.h) into `out` (gpu_expert_layout's
// total_bytes).
void pack_expert_for_gpu(const ExpertGeometry& g, const uint8_t* cpu_blob, uint8_t* out);

// A dense weight as the GPU holds it: BF16 or F32 (see above).
DType gpu_dense_dtype(DType stored);
// Decodes `w` into the GPU form, row-major; `out` gets rows * cols * dtype_size(gpu_dense_dtype).
void pack_dense_for_gpu(const WeightView& w, std::vector<uint8_t>& out);

MT_HD float gpu_bits_to_f32(uint32_t b) {
  float f;
  memcpy(&f, &b, 4);
  return f;
}
MT_HD float gpu_bf16_to_f32(uint16_t h) { return gpu_bits_to_f32(uint32_t(h) << 16); }
MT_HD float gpu_f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0) {  // zero or subnormal: man * 2^-24
    const float v = float(man) * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  if (exp == 31) return gpu_bits_to_f32(sign | 0x7f800000u | (man << 13));
  return gpu_bits_to_f32(sign | ((exp + 112u) << 23) | (man << 13));
}

// Weights k0 .. k0+7 of row r of matrix m (k0 a multiple of 8), decoded to fp32.
MT_HD void gpu_expert_row8(ExpertQuant q, const uint8_t* blob, const GpuMatrix& m, int64_t r, int64_t k0, float* w) {
  if (q == ExpertQuant::BF16) {
    uint16_t v[8];
    memcpy(v, blob + m.codes + (uint64_t(r) * uint64_t(m.cols) + uint64_t(k0)) * 2, 16);
    for (int j = 0; j < 8; ++j) w[j] = gpu_bf16_to_f32(v[j]);
    return;
  }
  const uint64_t g = uint64_t(r) * uint64_t(m.cols / m.group) + uint64_t(k0 / m.group);
  if (q == ExpertQuant::Q4) {
    uint8_t c[4];
    uint16_t s;
    memcpy(c, blob + m.codes + (uint64_t(r) * uint64_t(m.cols) + uint64_t(k0)) / 2, 4);
    memcpy(&s, blob + m.scales + g * 2, 2);
    const float d = gpu_f16_to_f32(s);
    for (int j = 0; j < 4; ++j) {
      w[2 * j] = float(int(c[j] & 15) - 8) * d;
      w[2 * j + 1] = float(int(c[j] >> 4) - 8) * d;
    }
    return;
  }
  int8_t c[8];
  float d;
  memcpy(c, blob + m.codes + uint64_t(r) * uint64_t(m.cols) + uint64_t(k0), 8);
  memcpy(&d, blob + m.scales + g * 4, 4);
  for (int j = 0; j < 8; ++j) w[j] = float(c[j]) * d;
}

}  // namespace mt::gpu
