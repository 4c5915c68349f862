// One cached position of the CUDA backend's FP8 latent cache (`--gpu-cache fp8`), and the
// conversions its kernels use: __host__ __device__, so tests/unit/test_gpu_layout.cpp checks on
// the CPU exactly what the GPU writes and reads.
//
// Row: the normalised latent as FP8 E4M3 in blocks of 128 values, each block with one fp32
// scale (its largest |value| / 448, so the block fills the format's range); then the rotated
// key as BF16, since RoPE dimensions carry position and lose too much in FP8 (FlashMLA's FP8
// cache makes the same split). 656 bytes a position for V3 (512 + 4 * 4 + 64 * 2), against
// 1152 in BF16. Attention dequantises the rows it reads to BF16 and runs as on a BF16 cache.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "gpu_kernels/gpu_layout.h"  // MT_HD, gpu_bits_to_f32, gpu_bf16_to_f32

namespace mt::gpu {

constexpr int64_t kFp8CacheBlock = 128;

struct Fp8Row {
  int64_t latent = 0, rope = 0, blocks = 0;
  uint64_t scales = 0, rope_off = 0, bytes = 0;  // byte offsets in the row, and its size
};

MT_HD Fp8Row fp8_row(int64_t latent, int64_t rope) {
  Fp8Row r;
  r.latent = latent;
  r.rope = rope;
  r.blocks = (latent + kFp8CacheBlock - 1) / kFp8CacheBlock;
  r.scales = (uint64_t(latent) + 3) / 4 * 4;
  r.rope_off = r.scales + uint64_t(r.blocks) * 4;
  r.bytes = (r.rope_off + uint64_t(rope) * 2 + 15) / 16 * 16;
  return r;
}

// fp32 -> E4M3, round to nearest even, saturating at +-448; NaN -> 0x7f. Bit for bit
// runtime/core/dtype.cpp's f32_to_fp8e4m3 (the test checks).
MT_HD uint8_t gpu_f32_to_fp8(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  const uint8_t sign = static_cast<uint8_t>((u >> 24) & 0x80);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return 0x7f;
  if (u >= 0x43e00000u) return sign | 0x7e;
  if (u < 0x3c800000u) {  // subnormal: steps of 2^-9, to nearest even
    const float a = gpu_bits_to_f32(u) * 512.0f;  // exact: a power of two
    return sign | static_cast<uint8_t>(static_cast<int>(rintf(a)));
  }
  const uint32_t r = u + 0x7ffffu + ((u >> 20) & 1u);
  const uint32_t exp = (r >> 23) - 127 + 7, man = (r >> 20) & 7u;
  return sign | static_cast<uint8_t>((exp << 3) | man);
}

MT_HD float gpu_fp8_to_f32(uint8_t v) {
  const uint32_t sign = uint32_t(v & 0x80u) << 24, exp = (v >> 3) & 15u, man = v & 7u;
  if (exp == 15 && man == 7) return gpu_bits_to_f32(sign | 0x7fc00000u);  // NaN
  if (exp == 0) {
    const float m = float(man) * (1.0f / 512.0f);
    return sign ? -m : m;
  }
  return gpu_bits_to_f32(sign | ((exp + 120u) << 23) | (man << 20));
}

// fp32 -> bf16, round to nearest even; NaN stays NaN.
MT_HD uint16_t gpu_f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Block b of a row's latent (x: the row's fp32 latent) into `row`.
MT_HD void fp8_store_block(const float* x, const Fp8Row& L, int64_t b, uint8_t* row) {
  const int64_t k0 = b * kFp8CacheBlock, k1 = k0 + kFp8CacheBlock < L.latent ? k0 + kFp8CacheBlock : L.latent;
  float amax = 0.0f;
  for (int64_t k = k0; k < k1; ++k) amax = fmaxf(amax, fabsf(x[k]));
  const float scale = amax > 0.0f ? amax / 448.0f : 1.0f;
  for (int64_t k = k0; k < k1; ++k) row[k] = gpu_f32_to_fp8(x[k] / scale);
  memcpy(row + L.scales + uint64_t(b) * 4, &scale, 4);
}

// The rotated key (k_rope, fp32) into `row`.
MT_HD void fp8_store_rope(const float* k_rope, const Fp8Row& L, uint8_t* row) {
  for (int64_t j = 0; j < L.rope; ++j) {
    const uint16_t h = gpu_f32_to_bf16(k_rope[j]);
    memcpy(row + L.rope_off + uint64_t(j) * 2, &h, 2);
  }
}

// Element j of a row as fp32: j < latent the dequantised latent, else the rotated key.
MT_HD float fp8_load(const uint8_t* row, const Fp8Row& L, int64_t j) {
  if (j < L.latent) {
    float scale;
    memcpy(&scale, row + L.scales + uint64_t(j / kFp8CacheBlock) * 4, 4);
    return gpu_fp8_to_f32(row[j]) * scale;
  }
  uint16_t h;
  memcpy(&h, row + L.rope_off + uint64_t(j - L.latent) * 2, 2);
  return gpu_bf16_to_f32(h);
}

}  // namespace mt::gpu
