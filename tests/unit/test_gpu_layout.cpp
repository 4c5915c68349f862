// The host-side packing into the CUDA backend's VRAM layouts (gpu_kernels/gpu_layout.h), on the
// CPU: every expert weight the GPU kernels will read, through the same __host__ __device__
// accessor they use, equals the CPU layout's own reader (unpack_expert) bit for bit; dense
// weights equal an independent decode of the stored bytes, rounded once.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cpu_kernels/expert_ffn.h"
#include "gpu_kernels/gpu_layout.h"
#include "runtime/core/dtype.h"

using namespace mt;

namespace {

std::vector<float> randn(size_t n, std::mt19937& rng, float sd) {
  std::normal_distribution<float> nd(0.0f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = nd(rng);
  return v;
}

uint32_t bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, 4);
  return b;
}

}  // namespace

TEST_CASE("gpu layout: the fp16/bf16 decoders the kernels use equal the CPU's, for every bit pattern", "[gpu]") {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float a = f16_to_f32(static_cast<uint16_t>(h)), b = gpu::gpu_f16_to_f32(static_cast<uint16_t>(h));
    if (std::isnan(a)) {
      CHECK(std::isnan(b));
      continue;
    }
    INFO("fp16 bits " << h);
    REQUIRE(bits(a) == bits(b));
    REQUIRE(bits(bf16_to_f32(static_cast<uint16_t>(h))) == bits(gpu::gpu_bf16_to_f32(static_cast<uint16_t>(h))));
  }
}

TEST_CASE("gpu layout: packed experts decode on the GPU side exactly as the CPU blob does", "[gpu]") {
  std::mt19937 rng(11);
  // Odd sizes: 9 and 5 chunks of 8, rows that leave partial 16-row tiles in the CPU blob.
  for (const ExpertGeometry g : {ExpertGeometry{ExpertQuant::Q4, 72, 40, 8}, ExpertGeometry{ExpertQuant::Q8, 72, 40, 8},
                                 ExpertGeometry{ExpertQuant::BF16, 72, 40, 8}, ExpertGeometry{ExpertQuant::Q4, 256, 96, 32},
                                 ExpertGeometry{ExpertQuant::Q8, 160, 96, 32}}) {
    CAPTURE(expert_quant_name(g.quant), g.hidden, g.inter, g.group);
    const size_t n = static_cast<size_t>(g.hidden * g.inter);
    auto gate = randn(n, rng, 0.3f), up = randn(n, rng, 0.3f), down = randn(n, rng, 0.3f);
    std::vector<uint8_t> blob(expert_blob_layout(g).total_bytes);
    cpu::pack_expert(g, gate.data(), up.data(), down.data(), blob.data());
    std::vector<float> ref[3] = {std::vector<float>(n), std::vector<float>(n), std::vector<float>(n)};
    cpu::unpack_expert(g, blob.data(), ref[0].data(), ref[1].data(), ref[2].data());

    const gpu::GpuExpertLayout L = gpu::gpu_expert_layout(g);
    std::vector<uint8_t> dev(L.total_bytes + 64, 0xAB);  // guard bytes past the end
    gpu::pack_expert_for_gpu(g, blob.data(), dev.data());
    for (size_t i = L.total_bytes; i < dev.size(); ++i) REQUIRE(dev[i] == 0xAB);
    uint64_t prev_end = 0;
    for (int which = 0; which < 3; ++which) {
      const gpu::GpuMatrix& m = L.mat[which];
      CHECK(m.codes % 256 == 0);
      CHECK(m.scales % 256 == 0);
      CHECK(m.codes >= prev_end);
      CHECK(m.scales >= m.codes);
      prev_end = m.scales;
      CHECK(m.rows == (which == 2 ? g.hidden : g.inter));
      int64_t mismatches = 0;
      for (int64_t r = 0; r < m.rows; ++r)
        for (int64_t k0 = 0; k0 < m.cols; k0 += 8) {
          float w[8];
          gpu::gpu_expert_row8(g.quant, dev.data(), m, r, k0, w);
          for (int j = 0; j < 8; ++j)
            mismatches += bits(w[j]) != bits(ref[which][static_cast<size_t>(r * m.cols + k0 + j)]);
        }
      INFO("matrix " << which);
      CHECK(mismatches == 0);
    }
  }
}

TEST_CASE("gpu layout: every geometry the store accepts, the GPU takes; others are refused", "[gpu]") {
  int64_t valid = 0;
  for (ExpertQuant q : {ExpertQuant::Q4, ExpertQuant::Q8, ExpertQuant::BF16})
    for (int64_t hidden = 4; hidden <= 132; hidden += 4)
      for (int64_t inter = 4; inter <= 68; inter += 4)
        for (int64_t group : {4, 8, 12, 16, 32}) {
          const ExpertGeometry g{q, hidden, inter, group};
          std::string why;
          const bool cpu_ok = expert_geometry_valid(g, &why);
          CAPTURE(expert_quant_name(q), hidden, inter, group);
          REQUIRE(gpu::gpu_expert_geometry_ok(g, &why) == cpu_ok);
          if (cpu_ok) ++valid;
          else CHECK_THROWS(gpu::gpu_expert_layout(g));
        }
  CHECK(valid > 100);
}

TEST_CASE("gpu layout: dense weights keep bf16/f32 bits and decode fp8 and fp16 exactly", "[gpu]") {
  std::mt19937 rng(3);
  const int64_t rows = 37, cols = 45, block = 16;
  auto vals = randn(static_cast<size_t>(rows * cols), rng, 1.0f);
  std::vector<uint8_t> out;

  std::vector<uint16_t> b16(vals.size());
  for (size_t i = 0; i < vals.size(); ++i) b16[i] = f32_to_bf16(vals[i]);
  gpu::pack_dense_for_gpu(WeightView{DType::BF16, reinterpret_cast<const uint8_t*>(b16.data()), rows, cols}, out);
  CHECK(gpu::gpu_dense_dtype(DType::BF16) == DType::BF16);
  REQUIRE(out.size() == b16.size() * 2);
  CHECK(std::memcmp(out.data(), b16.data(), out.size()) == 0);

  gpu::pack_dense_for_gpu(WeightView{DType::F32, reinterpret_cast<const uint8_t*>(vals.data()), rows, cols}, out);
  REQUIRE(out.size() == vals.size() * 4);
  CHECK(std::memcmp(out.data(), vals.data(), out.size()) == 0);

  // F16 widens to F32 exactly.
  std::vector<uint16_t> h16(vals.size());
  for (size_t i = 0; i < vals.size(); ++i) h16[i] = f32_to_f16(vals[i]);
  gpu::pack_dense_for_gpu(WeightView{DType::F16, reinterpret_cast<const uint8_t*>(h16.data()), rows, cols}, out);
  CHECK(gpu::gpu_dense_dtype(DType::F16) == DType::F32);
  REQUIRE(out.size() == vals.size() * 4);
  for (size_t i = 0; i < vals.size(); ++i) {
    float f;
    std::memcpy(&f, &out[i * 4], 4);
    REQUIRE(bits(f) == bits(f16_to_f32(h16[i])));
  }

  // FP8 with its block scales: the value times its tile's scale, rounded to bf16 once.
  std::vector<uint8_t> f8(vals.size());
  for (size_t i = 0; i < vals.size(); ++i) f8[i] = f32_to_fp8e4m3(vals[i] * 50.0f);
  const int64_t sr = (rows + block - 1) / block, sc = (cols + block - 1) / block;
  std::vector<float> scale(static_cast<size_t>(sr * sc));
  for (size_t i = 0; i < scale.size(); ++i) scale[i] = 0.01f * float(i + 1);
  gpu::pack_dense_for_gpu(WeightView{DType::F8_E4M3, f8.data(), rows, cols, scale.data(), block}, out);
  REQUIRE(out.size() == vals.size() * 2);
  int64_t mismatches = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const size_t i = static_cast<size_t>(r * cols + c);
      const float want = fp8e4m3_to_f32(f8[i]) * scale[static_cast<size_t>((r / block) * sc + c / block)];
      uint16_t got;
      std::memcpy(&got, &out[i * 2], 2);
      mismatches += got != f32_to_bf16(want);
    }
  CHECK(mismatches == 0);
}
