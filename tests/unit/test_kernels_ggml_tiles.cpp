// Row-interleaved tiles of GGUF blocks (runtime/core/ggml_tiles.h) and their GEMV
// (cpu_kernels/ggml_gemv_tiles.h), at every ISA level this CPU has:
//   (1) tiles are lossless: random bytes (every bit of the packed scales used) -> tile -> blocks
//       gives the same bytes back; and the tile moves each value (a mutated tile byte changes
//       exactly the values it holds);
//   (2) the AVX-512 tile GEMV against the scalar model of the Int8 path on the same blocks
//       (int_gemv_model: exact integer sums, scaled in double) to fp32 rounding of the scaled
//       block sums, for 1..6 tokens, tile counts that do and do not split over threads; below
//       AVX-512, the blocks' own path at that level, bit for bit;
//   (3) activations on the 8-bit grid (quantising them is exact): against the reference
//       decoder's product in double, to fp32 rounding.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cpu_kernels/expert_ffn_internal.h"
#include "cpu_kernels/cpu_backend.h"
#include "cpu_kernels/ggml_dequant.h"
#include "cpu_kernels/ggml_gemv.h"
#include "cpu_kernels/ggml_gemv_tiles.h"
#include "runtime/core/ggml_tiles.h"
#include "cpu_kernels/ops.h"
#include "runtime/core/ggml_types.h"
#include "runtime/core/weight_view.h"
#include "tests/unit/ggml_test_data.h"

using namespace mt;
namespace gd = cpu::ggml_gemv_detail;

namespace {

constexpr uint32_t kQ4K = uint32_t(GgmlType::Q4_K);

std::vector<uint8_t> tiles_of(const std::vector<uint8_t>& w, int64_t rows, int64_t blocks) {
  const int64_t row_bytes = blocks * 144, tile_bytes = blocks * ggml_tile_block_bytes(kQ4K);
  std::vector<uint8_t> t(size_t(rows / kTileRows * tile_bytes), 0xEE);
  for (int64_t i = 0; i < rows / kTileRows; ++i)
    ggml_tile_pack(kQ4K, w.data() + i * kTileRows * row_bytes, row_bytes, blocks, t.data() + i * tile_bytes);
  return t;
}

}  // namespace

TEST_CASE("tiles: Q4_K blocks -> tile -> blocks is the identity on every bit") {
  REQUIRE(ggml_tile_supported(kQ4K));
  REQUIRE(ggml_tile_block_bytes(kQ4K) == 2368);
  std::mt19937 rng(11);
  for (int64_t blocks : {1, 3, 28}) {
    const int64_t row_bytes = blocks * 144 + 16;  // rows apart by more than their blocks
    std::vector<uint8_t> rows(size_t(kTileRows * row_bytes));
    for (auto& b : rows) b = uint8_t(rng());
    std::vector<uint8_t> tile(size_t(blocks * 2368));
    ggml_tile_pack(kQ4K, rows.data(), row_bytes, blocks, tile.data());
    std::vector<uint8_t> back(rows.size(), 0);
    ggml_tile_unpack(kQ4K, tile.data(), blocks, back.data(), row_bytes);
    for (int64_t r = 0; r < kTileRows; ++r)
      REQUIRE(std::memcmp(back.data() + r * row_bytes, rows.data() + r * row_bytes, size_t(blocks * 144)) == 0);
    // One code byte of the tile holds two values of one row: flipping it changes exactly those.
    std::vector<uint8_t> mutated = tile;
    const int64_t at = 320 + (4 * 5 + 2) * 64 + 7 * 4 + 3;  // sub-block 5, quarter 2, row 7, byte 3
    mutated[size_t(at)] ^= 0xFF;
    ggml_tile_unpack(kQ4K, mutated.data(), blocks, back.data(), row_bytes);
    std::vector<float> a(256), b(256);
    cpu::ggml_dequantize(kQ4K, rows.data() + 7 * row_bytes, 256, a.data());
    cpu::ggml_dequantize(kQ4K, back.data() + 7 * row_bytes, 256, b.data());
    for (int v = 0; v < 256; ++v) {
      const bool held = v == 32 * 5 + 8 * 2 + 3 || v == 32 * 5 + 8 * 2 + 4 + 3;
      if (std::isfinite(a[size_t(v)])) CHECK((a[size_t(v)] != b[size_t(v)]) == held);
    }
  }
}

TEST_CASE("tiles: Q4_K tile GEMV equals the Int8 path's model at every ISA level") {
  std::mt19937 rng(12);
  const int top = cpu::expert_detail::cpu_isa_level();
  struct Case { int64_t rows, blocks; };
  for (Case c : {Case{16, 1}, Case{48, 3}, Case{1008, 9}}) {  // the last splits over threads
    const int64_t cols = c.blocks * 256;
    const std::vector<uint8_t> w = mt::test::random_blocks(GgmlType::Q4_K, c.rows, cols, rng);
    const std::vector<uint8_t> tiles = tiles_of(w, c.rows, c.blocks);
    for (int64_t n : {1, 3, 6}) {
      std::vector<float> x;
      for (int64_t t = 0; t < n; ++t) {
        const std::vector<float> xt = mt::test::random_x(cols, rng);
        x.insert(x.end(), xt.begin(), xt.end());
      }
      std::vector<double> model(size_t(n * c.rows)), mag(size_t(n * c.rows));
      for (int64_t t = 0; t < n; ++t)
        gd::int_gemv_model(kQ4K, w.data(), c.rows, cols, x.data() + t * cols, model.data() + t * c.rows,
                           mag.data() + t * c.rows);
      for (int level = 0; level <= top; ++level) {
        INFO("rows " << c.rows << " blocks " << c.blocks << " tokens " << n << " level " << level);
        std::vector<float> y(size_t(n * c.rows + 1), 0.0f);
        y.back() = 12345.0f;  // sentinel
        cpu::ggml_gemv_tiles(kQ4K, tiles.data(), c.rows, cols, n, x.data(), y.data(), level);
        REQUIRE(y.back() == 12345.0f);
        if (level >= 2) {
          for (size_t i = 0; i < model.size(); ++i) REQUIRE(std::fabs(y[i] - model[i]) <= 1e-5 * mag[i] + 1e-30);
        } else {  // no tile kernel: the blocks' own path at that level, bit for bit
          std::vector<float> plain(size_t(n * c.rows));
          cpu::ggml_gemv_tokens(kQ4K, w.data(), c.rows, cols, n, x.data(), plain.data(), level);
          for (size_t i = 0; i < plain.size(); ++i) REQUIRE(y[i] == plain[i]);
        }
      }
    }
  }
}

TEST_CASE("tiles: activations on the 8-bit grid give the reference decoder's product") {
  std::mt19937 rng(13);
  const int64_t rows = 32, blocks = 4, cols = blocks * 256;
  const std::vector<uint8_t> w = mt::test::random_blocks(GgmlType::Q4_K, rows, cols, rng);
  const std::vector<uint8_t> tiles = tiles_of(w, rows, blocks);
  std::vector<float> x(static_cast<size_t>(cols));
  std::uniform_int_distribution<int> code(-127, 127);
  for (int64_t b = 0; b < blocks; ++b) {
    const float s = std::ldexp(1.0f, -5 - int(b));
    for (int64_t k = 0; k < 256; ++k) x[size_t(b * 256 + k)] = s * float(code(rng));
    x[size_t(b * 256 + 17)] = s * 127.0f;
  }
  std::vector<float> dense(static_cast<size_t>(rows * cols));
  cpu::ggml_dequantize(kQ4K, w.data(), rows * cols, dense.data());
  std::vector<float> y(static_cast<size_t>(rows));
  cpu::ggml_gemv_tiles(kQ4K, tiles.data(), rows, cols, 1, x.data(), y.data(), cpu::expert_detail::cpu_isa_level());
  for (int64_t r = 0; r < rows; ++r) {
    double ref = 0, mag = 0;
    for (int64_t k = 0; k < cols; ++k) {
      ref += double(dense[size_t(r * cols + k)]) * x[size_t(k)];
      mag += std::fabs(double(dense[size_t(r * cols + k)]) * x[size_t(k)]);
    }
    REQUIRE(std::fabs(y[size_t(r)] - ref) <= 1e-5 * mag);
  }
}

TEST_CASE("tiles: a shape that is not whole tiles is refused") {
  std::vector<uint8_t> w(2368 * 2);
  std::vector<float> x(256), y(32);
  CHECK_THROWS(cpu::ggml_gemv_tiles(kQ4K, w.data(), 15, 256, 1, x.data(), y.data(), 2));
  CHECK_THROWS(cpu::ggml_gemv_tiles(kQ4K, w.data(), 16, 200, 1, x.data(), y.data(), 2));
  CHECK_THROWS(cpu::ggml_gemv_tiles(uint32_t(GgmlType::Q6_K), w.data(), 16, 256, 1, x.data(), y.data(), 2));
}

TEST_CASE("tiles: a tiled WeightView decodes and multiplies as its blocks do") {
  std::mt19937 rng(14);
  const int64_t rows = 48, blocks = 3, cols = blocks * 256;
  const std::vector<uint8_t> w = mt::test::random_blocks(GgmlType::Q4_K, rows, cols, rng);
  const std::vector<uint8_t> tiles = tiles_of(w, rows, blocks);
  const WeightView plain{DType::GGUF, w.data(), rows, cols, nullptr, 0, kQ4K, false};
  const WeightView tiled{DType::GGUF, tiles.data(), rows, cols, nullptr, 0, kQ4K, true};
  REQUIRE(tiled.stored_bytes() == tiles.size());
  // Rows decoded (the reference backend's and the prefill slabs' path): bit for bit.
  std::vector<float> a(size_t(rows * cols)), b(size_t(rows * cols));
  cpu::dequantize_rows(plain, 0, rows, a.data());
  cpu::dequantize_rows(tiled, 0, rows, b.data());
  REQUIRE(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  cpu::dequantize_rows(tiled, 17, 5, b.data());
  REQUIRE(std::memcmp(a.data() + 17 * cols, b.data(), 5 * cols * sizeof(float)) == 0);
  // The CPU backend: a prompt past the GEMV's 32 tokens goes through the decoded rows (bit for
  // bit); a decode-sized one through the tile GEMV (the block GEMV's result to fp32 rounding).
  auto be = cpu::make_cpu_backend();
  for (int64_t n : {40, 3}) {
    std::vector<float> x(static_cast<size_t>(n * cols)), y1(static_cast<size_t>(n * rows)), y2(y1.size());
    for (int64_t t = 0; t < n; ++t) {
      const std::vector<float> xt = mt::test::random_x(cols, rng);
      std::copy(xt.begin(), xt.end(), x.begin() + t * cols);
    }
    be->matmul(plain, x.data(), n, y1.data());
    be->matmul(tiled, x.data(), n, y2.data());
    INFO("tokens " << n);
    if (n > 32) REQUIRE(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)) == 0);
    for (size_t i = 0; i < y1.size(); ++i) REQUIRE(std::fabs(y1[i] - y2[i]) <= 1e-4f * (1.0f + std::fabs(y1[i])));
  }
  // A view that cannot be tiles is refused by name.
  const WeightView odd{DType::GGUF, tiles.data(), 40, cols, nullptr, 0, kQ4K, true};
  std::vector<float> row(static_cast<size_t>(cols));
  CHECK_THROWS_WITH(cpu::dequantize_rows(odd, 0, 1, row.data()), Catch::Contains("cannot be row tiles"));
}
