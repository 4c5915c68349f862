// The GGUF block GEMV (cpu_kernels/ggml_gemv.h) at every ISA level this CPU has, against the
// reference decoder's rows dotted in double: random blocks of every decodable K-quant and Q8_0
// (fp16 scales kept finite), odd row counts, a matrix big enough to split over threads.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cpu_kernels/expert_ffn_internal.h"
#include "cpu_kernels/ggml_dequant.h"
#include "cpu_kernels/ggml_gemv.h"
#include "runtime/core/dtype.h"
#include "runtime/core/ggml_types.h"

using namespace mt;

namespace {


std::vector<uint8_t> random_blocks(GgmlType t, int64_t rows, int64_t cols, std::mt19937& rng) {
  const GgmlTypeInfo* ti = ggml_type_info(uint32_t(t));
  const int64_t blocks = rows * cols / ti->block;
  std::vector<uint8_t> w(size_t(blocks * ti->bytes));
  std::uniform_int_distribution<int> byte(0, 255);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  for (auto& b : w) b = static_cast<uint8_t>(byte(rng));
  for (int64_t b = 0; b < blocks; ++b)
    for (int off : ggml_f16_scale_offsets(uint32_t(t))) {
      const uint16_t h = f32_to_f16(nd(rng));
      std::memcpy(&w[size_t(b * ti->bytes + off)], &h, 2);
    }
  return w;
}

}  // namespace

TEST_CASE("GGUF block GEMV equals the reference decoder's product at every ISA level", "[kernels][gguf]") {
  std::mt19937 rng(3);
  const int top = cpu::expert_detail::cpu_isa_level();
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
    const GgmlTypeInfo* ti = ggml_type_info(uint32_t(t));
    for (auto [rows, blocks] : {std::pair<int64_t, int64_t>{7, 3}, {37, 5}, {300, 8}}) {
      const int64_t cols = blocks * ti->block;
      const auto w = random_blocks(t, rows, cols, rng);
      std::vector<float> x(static_cast<size_t>(cols)), dense(static_cast<size_t>(rows * cols));
      std::normal_distribution<float> nd(0.0f, 1.0f);
      for (float& v : x) v = nd(rng);
      cpu::ggml_dequantize(uint32_t(t), w.data(), rows * cols, dense.data());
      std::vector<double> ref(static_cast<size_t>(rows));
      double scale = 0;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t k = 0; k < cols; ++k) ref[size_t(r)] += double(dense[size_t(r * cols + k)]) * x[size_t(k)];
        scale = std::max(scale, std::fabs(ref[size_t(r)]));
      }
      for (int level = 0; level <= top; ++level) {
        std::vector<float> y(size_t(rows) + 1, -7.0f);  // one sentinel past the end
        cpu::ggml_gemv(uint32_t(t), w.data(), rows, cols, x.data(), y.data(), level);
        double err = 0;
        for (int64_t r = 0; r < rows; ++r) err = std::max(err, std::fabs(double(y[size_t(r)]) - ref[size_t(r)]));
        INFO(ti->name << " rows " << rows << " cols " << cols << " level " << level << " simd "
                      << cpu::ggml_gemv_has_kernel(uint32_t(t), level));
        CHECK(err / scale < 1e-5);
        CHECK(y[size_t(rows)] == -7.0f);
      }
    }
  }
  // The SIMD levels cover every quantised type the decoder takes.
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K})
    for (int level = 1; level <= top; ++level) CHECK(cpu::ggml_gemv_has_kernel(uint32_t(t), level));
}

TEST_CASE("GGUF block GEMV refuses what it cannot decode", "[kernels][gguf]") {
  std::vector<uint8_t> w(1024);
  std::vector<float> x(256), y(4);
  CHECK_THROWS(cpu::ggml_gemv(uint32_t(GgmlType::IQ2_XXS), w.data(), 1, 256, x.data(), y.data(), 2));
  CHECK_THROWS(cpu::ggml_gemv(uint32_t(GgmlType::Q4_K), w.data(), 1, 100, x.data(), y.data(), 2));
  CHECK_FALSE(cpu::ggml_gemv_has_kernel(uint32_t(GgmlType::IQ2_XXS), 0));
}
