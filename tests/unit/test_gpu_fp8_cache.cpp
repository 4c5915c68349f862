// The FP8 latent cache's row format (gpu_kernels/fp8_cache_layout.h), through the same
// __host__ __device__ functions the CUDA kernels call: its conversions equal the CPU's
// (runtime/core/dtype.h) bit for bit, and a stored row reads back within FP8's error.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "gpu_kernels/fp8_cache_layout.h"
#include "runtime/core/dtype.h"

using namespace mt;
using namespace mt::gpu;

TEST_CASE("fp8 cache: E4M3 and BF16 conversions equal the CPU's bit for bit", "[gpu]") {
  for (int v = 0; v < 256; ++v) {
    const float a = fp8e4m3_to_f32(static_cast<uint8_t>(v)), b = gpu_fp8_to_f32(static_cast<uint8_t>(v));
    INFO(v);
    if (std::isnan(a)) CHECK(std::isnan(b));
    else CHECK(std::memcmp(&a, &b, 4) == 0);
  }
  std::mt19937 rng(5);
  std::vector<float> xs = {0.0f, -0.0f, 448.0f, -448.0f, 460.0f, 1e9f, INFINITY, -INFINITY, NAN,
                           0.001953125f, 0.0009765625f, 0.0029296875f, 0.015625f, 0.0146484375f, 1.0625f, 1.1875f};
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    const uint32_t u = bits(rng);
    float f;
    std::memcpy(&f, &u, 4);
    xs.push_back(f);
    xs.push_back(std::ldexp(std::uniform_real_distribution<float>(-1.0f, 1.0f)(rng), static_cast<int>(u % 24) - 12));
  }
  int64_t fp8_diff = 0, bf16_diff = 0;
  for (float f : xs) {
    fp8_diff += gpu_f32_to_fp8(f) != f32_to_fp8e4m3(f);
    if (!std::isnan(f)) bf16_diff += gpu_f32_to_bf16(f) != f32_to_bf16(f);
    else bf16_diff += !std::isnan(bf16_to_f32(gpu_f32_to_bf16(f)));
  }
  CHECK(fp8_diff == 0);
  CHECK(bf16_diff == 0);
}

TEST_CASE("fp8 cache: the row layout holds every part without overlap", "[gpu]") {
  for (auto [latent, rope] : {std::pair<int64_t, int64_t>{512, 64}, {11, 4}, {130, 6}, {128, 0}}) {
    const Fp8Row L = fp8_row(latent, rope);
    CHECK(L.blocks == (latent + 127) / 128);
    CHECK(L.scales >= uint64_t(latent));
    CHECK(L.scales % 4 == 0);
    CHECK(L.rope_off == L.scales + 4 * uint64_t(L.blocks));
    CHECK(L.bytes >= L.rope_off + 2 * uint64_t(rope));
    CHECK(L.bytes % 16 == 0);
  }
  CHECK(fp8_row(512, 64).bytes == 656);  // V3: 57% of a BF16 row
}

TEST_CASE("fp8 cache: a stored row reads back within FP8's rounding", "[gpu]") {
  std::mt19937 rng(9);
  for (auto [latent, rope] : {std::pair<int64_t, int64_t>{512, 64}, {11, 4}, {130, 6}}) {
    const Fp8Row L = fp8_row(latent, rope);
    for (float spread : {1.0f, 1e-3f, 300.0f}) {
      std::vector<float> x(static_cast<size_t>(latent)), kr(static_cast<size_t>(rope));
      std::normal_distribution<float> nd(0.0f, spread);
      for (float& v : x) v = nd(rng);
      for (float& v : kr) v = nd(rng);
      if (latent > 20) x[17] = 0.0f, x[18] = spread * 1e-6f;  // a zero and a value deep in the subnormals
      std::vector<uint8_t> row(L.bytes, 0xAB);
      for (int64_t b = 0; b < L.blocks; ++b) fp8_store_block(x.data(), L, b, row.data());
      fp8_store_rope(kr.data(), L, row.data());
      for (int64_t b = 0; b < L.blocks; ++b) {
        float amax = 0.0f;
        for (int64_t k = b * 128; k < std::min<int64_t>(latent, (b + 1) * 128); ++k) amax = std::max(amax, std::fabs(x[k]));
        const float scale = amax / 448.0f;
        for (int64_t k = b * 128; k < std::min<int64_t>(latent, (b + 1) * 128); ++k) {
          // Normal codes: 3 mantissa bits, half an ulp is 2^-4 relative; subnormals: half of 2^-9.
          const double bound = std::max(std::fabs(double(x[k])) / 16.0, double(scale) / 1024.0) * (1 + 1e-6);
          INFO("latent " << latent << " spread " << spread << " k " << k);
          CHECK(std::fabs(double(fp8_load(row.data(), L, k)) - double(x[k])) <= bound);
        }
      }
      for (int64_t j = 0; j < rope; ++j)  // the key is BF16, rounded once
        CHECK(fp8_load(row.data(), L, latent + j) == bf16_to_f32(f32_to_bf16(kr[j])));
    }
  }
  // An all-zero block reads back as zeros (scale 1, not a division by zero).
  const Fp8Row L = fp8_row(11, 4);
  std::vector<float> zeros(11, 0.0f), kr(4, 0.5f);
  std::vector<uint8_t> row(L.bytes);
  fp8_store_block(zeros.data(), L, 0, row.data());
  fp8_store_rope(kr.data(), L, row.data());
  for (int64_t k = 0; k < 11; ++k) CHECK(fp8_load(row.data(), L, k) == 0.0f);
}
