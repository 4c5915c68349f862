// Row-interleaved tiles of GGUF blocks (runtime/core/ggml_tiles.h) and their GEMV
// (cpu_kernels/ggml_gemv_tiles.h), for every tiled type (Q2_K..Q6_K, Q8_0), at every ISA level this CPU
// has:
//   (1) tiles are lossless: random bytes (every bit of the packed scales used) -> tile -> blocks
//       gives the same bytes back; and the tile moves each value (a mutated tile byte changes
//       exactly the values it holds);
//   (2) the AVX-512 tile GEMV against the scalar model of the Int8 path on the same blocks
//       (int_gemv_model: exact integer sums, scaled in double) to fp32 rounding of the scaled
//       block sums, for 1..6 tokens, tile counts that do and do not split over threads; below
//       AVX-512, the blocks' own path at that level, bit for bit;
//   (3) activations on the 8-bit grid (quantising them is exact): against the reference
//       decoder's product in double, to fp32 rounding;
//   (4) a tiled WeightView decodes and multiplies as its blocks do.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cpu_kernels/cpu_backend.h"
#include "cpu_kernels/expert_ffn_internal.h"
#include "cpu_kernels/ggml_dequant.h"
#include "cpu_kernels/ggml_gemv.h"
#include "cpu_kernels/ggml_gemv_tiles.h"
#include "cpu_kernels/ops.h"
#include "runtime/core/dtype.h"
#include "runtime/core/ggml_tiles.h"
#include "runtime/core/ggml_types.h"
#include "runtime/core/weight_view.h"
#include "tests/unit/ggml_test_data.h"

using namespace mt;
namespace gd = cpu::ggml_gemv_detail;

namespace {

constexpr GgmlType kTiled[] = {GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K,
                               GgmlType::Q8_0};

struct TypeFacts {
  uint32_t id;
  int64_t block, bytes, tile_block;
};
TypeFacts facts(GgmlType t) {
  const GgmlTypeInfo* ti = ggml_type_info(uint32_t(t));
  return {uint32_t(t), ti->block, ti->bytes, ggml_tile_block_bytes(uint32_t(t))};
}

// rows (a multiple of 16) x cols of random blocks as tiles.
std::vector<uint8_t> tiles_of(const TypeFacts& f, const std::vector<uint8_t>& w, int64_t rows, int64_t cols) {
  const int64_t blocks = cols / f.block, row_bytes = blocks * f.bytes, tile_bytes = blocks * f.tile_block;
  std::vector<uint8_t> t(size_t(rows / kTileRows * tile_bytes), 0xEE);
  for (int64_t i = 0; i < rows / kTileRows; ++i)
    ggml_tile_pack(f.id, w.data() + i * kTileRows * row_bytes, row_bytes, blocks, t.data() + i * tile_bytes);
  return t;
}

}  // namespace

TEST_CASE("tiles: blocks -> tile -> blocks is the identity on every bit") {
  REQUIRE(ggml_tile_block_bytes(uint32_t(GgmlType::Q4_K)) == 2368);
  REQUIRE(ggml_tile_block_bytes(uint32_t(GgmlType::Q8_0)) == 16 * 34);
  REQUIRE(ggml_tile_block_bytes(uint32_t(GgmlType::Q2_K)) == 16 * 84);
  REQUIRE(ggml_tile_block_bytes(uint32_t(GgmlType::Q6_K)) == 16 * 210);
  REQUIRE(ggml_tile_block_bytes(uint32_t(GgmlType::Q5_K)) == 2880);
  REQUIRE(ggml_tile_block_bytes(uint32_t(GgmlType::Q3_K)) == 16 * 110);
  REQUIRE_FALSE(ggml_tile_supported(uint32_t(GgmlType::Q4_0)));
  std::mt19937 rng(11);
  for (GgmlType type : kTiled) {
    const TypeFacts f = facts(type);
    REQUIRE(ggml_tile_supported(f.id));
    for (int64_t blocks : {1, 3, 28}) {
      INFO(ggml_type_name(f.id) << " blocks " << blocks);
      const int64_t row_bytes = blocks * f.bytes + 16;  // rows apart by more than their blocks
      std::vector<uint8_t> rows(size_t(kTileRows * row_bytes));
      for (auto& b : rows) b = uint8_t(rng());
      std::vector<uint8_t> tile(size_t(blocks * f.tile_block));
      ggml_tile_pack(f.id, rows.data(), row_bytes, blocks, tile.data());
      std::vector<uint8_t> back(rows.size(), 0);
      ggml_tile_unpack(f.id, tile.data(), blocks, back.data(), row_bytes);
      for (int64_t r = 0; r < kTileRows; ++r)
        REQUIRE(std::memcmp(back.data() + r * row_bytes, rows.data() + r * row_bytes, size_t(blocks * f.bytes)) == 0);
      // Flipping one code byte of row 7 in the tile changes exactly the values that byte holds:
      // Q4_K sub-block 5, quarter 2, byte 3 (values 32*5 + 8*2 + 3 and + 4); Q8_0 quarter 5, byte
      // 3; Q2_K group 5, byte 3 (values 16*5 + 3, + 4, + 8, + 12); Q6_K group 5, line 1, byte 3
      // (values 16*5 + 4 + 3 and, by its top bit pair, 16*5 + 12 + 3); Q5_K sub-block 5, line 1,
      // byte 3 (values 32*5 + 4 + 3 and, by bits 5-7, 32*5 + 20 + 3 and 32*5 + 24 + 3); Q3_K pair 5,
      // line 1, byte 3 (values 32*5 + 4 + 3, + 16, and by bits 3 and 7, 32*5 + 12 + 3 and + 28 + 3).
      const bool q4k = type == GgmlType::Q4_K, q2k = type == GgmlType::Q2_K, q6k = type == GgmlType::Q6_K,
                 q5k = type == GgmlType::Q5_K, q3k = type == GgmlType::Q3_K;
      const int64_t at = q4k   ? 320 + (4 * 5 + 2) * 64 + 7 * 4 + 3
                         : q3k ? 224 + ((3 * 5 + 1) * 16 + 7) * 4 + 3
                         : q5k ? 320 + ((5 * 5 + 1) * 16 + 7) * 4 + 3
                         : q2k ? 320 + (5 * 16 + 7) * 4 + 3
                         : q6k ? 288 + ((3 * 5 + 1) * 16 + 7) * 4 + 3
                               : 32 + (5 * 16 + 7) * 4 + 3;
      std::vector<uint8_t> mutated = tile;
      mutated[size_t(at)] ^= 0xFF;
      ggml_tile_unpack(f.id, mutated.data(), blocks, back.data(), row_bytes);
      std::vector<float> a(size_t(f.block)), b(size_t(f.block));
      cpu::ggml_dequantize(f.id, rows.data() + 7 * row_bytes, f.block, a.data());
      cpu::ggml_dequantize(f.id, back.data() + 7 * row_bytes, f.block, b.data());
      for (int64_t v = 0; v < f.block; ++v) {
        const bool held = q4k   ? (v == 32 * 5 + 8 * 2 + 3 || v == 32 * 5 + 8 * 2 + 4 + 3)
                          : q2k ? (v >= 80 && v < 96 && v % 4 == 3)
                          : q6k ? (v == 80 + 4 + 3 || v == 80 + 12 + 3)
                          : q5k ? (v == 160 + 4 + 3 || v == 160 + 20 + 3 || v == 160 + 24 + 3)
                          : q3k ? (v == 160 + 4 + 3 || v == 160 + 20 + 3 || v == 160 + 12 + 3 || v == 160 + 28 + 3)
                                : v == 4 * 5 + 3;
        if (std::isfinite(a[size_t(v)]) && a[size_t(v)] != 0.0f) CHECK((a[size_t(v)] != b[size_t(v)]) == held);
      }
    }
  }
}

TEST_CASE("tiles: the tile GEMV equals the Int8 path's model at every ISA level") {
  std::mt19937 rng(12);
  const int top = cpu::expert_detail::cpu_isa_level();
  struct Case { int64_t rows, blocks; };
  for (GgmlType type : kTiled) {
    const TypeFacts f = facts(type);
    for (Case c : {Case{16, 1}, Case{48, 3}, Case{1008, 9}}) {  // blocks of 256 values; the last splits over threads
      const int64_t cols = c.blocks * 256;
      const std::vector<uint8_t> w = mt::test::random_blocks(type, c.rows, cols, rng);
      const std::vector<uint8_t> tiles = tiles_of(f, w, c.rows, cols);
      for (int64_t n : {1, 3, 6}) {
        std::vector<float> x;
        for (int64_t t = 0; t < n; ++t) {
          const std::vector<float> xt = mt::test::random_x(cols, rng);
          x.insert(x.end(), xt.begin(), xt.end());
        }
        std::vector<double> model(size_t(n * c.rows)), mag(size_t(n * c.rows));
        for (int64_t t = 0; t < n; ++t)
          gd::int_gemv_model(f.id, w.data(), c.rows, cols, x.data() + t * cols, model.data() + t * c.rows,
                             mag.data() + t * c.rows);
        for (int level = 0; level <= top; ++level) {
          INFO(ggml_type_name(f.id) << " rows " << c.rows << " blocks " << c.blocks << " tokens " << n << " level "
                                    << level);
          std::vector<float> y(size_t(n * c.rows + 1), 0.0f);
          y.back() = 12345.0f;  // sentinel
          cpu::ggml_gemv_tiles(f.id, tiles.data(), c.rows, cols, n, x.data(), y.data(), level);
          REQUIRE(y.back() == 12345.0f);
          if (level >= 1) {  // the prefetch plan changes timing only: every plan gives the same bits
            // (the classic, none, near or far alone, both, distances of one line and past the run)
            for (const cpu::TilePrefetch pf : {cpu::kTilePrefetchClassic, cpu::TilePrefetch{0, 0}, cpu::TilePrefetch{4096, 0},
                                               cpu::TilePrefetch{0, 16384}, cpu::TilePrefetch{4096, 16384},
                                               cpu::TilePrefetch{64, 128}, cpu::TilePrefetch{1 << 20, 1 << 20}}) {
              std::vector<float> again(size_t(n * c.rows));
              cpu::ggml_gemv_tiles(f.id, tiles.data(), c.rows, cols, n, x.data(), again.data(), level, true, pf);
              for (size_t i = 0; i < again.size(); ++i) REQUIRE(again[i] == y[i]);
            }
          }
          if (level == 1 && cpu::ggml_gemv_tiles_native(f.id, level)) {  // AVX2's own tile kernel
            for (size_t i = 0; i < model.size(); ++i) REQUIRE(std::fabs(y[i] - model[i]) <= 1e-5 * mag[i] + 1e-30);
          } else if (level >= 2) {
            for (size_t i = 0; i < model.size(); ++i) REQUIRE(std::fabs(y[i] - model[i]) <= 1e-5 * mag[i] + 1e-30);
            // The level's own kernels at every token count (tile_kernel_level runs the AVX2 ones for one
            // token of some types on AMD), and those of AVX-512 CPUs without GFNI and VBMI.
            for (bool gfni : {true, false}) {
              INFO("the level's own kernel, gfni " << gfni);
              std::vector<float> own(size_t(n * c.rows));
              cpu::ggml_gemv_tiles(f.id, tiles.data(), c.rows, cols, n, x.data(), own.data(), level, gfni, std::nullopt,
                                   false);
              for (size_t i = 0; i < model.size(); ++i)
                REQUIRE(std::fabs(own[i] - model[i]) <= 1e-5 * mag[i] + 1e-30);
            }
          } else {  // no tile kernel: the blocks' own path at that level, bit for bit
            std::vector<float> plain(size_t(n * c.rows));
            cpu::ggml_gemv_tokens(f.id, w.data(), c.rows, cols, n, x.data(), plain.data(), level);
            for (size_t i = 0; i < plain.size(); ++i) REQUIRE(y[i] == plain[i]);
          }
        }
      }
    }
  }
}

TEST_CASE("tiles: which types have a tile kernel at which ISA level") {
  const int top = cpu::expert_detail::cpu_isa_level();
  for (GgmlType type : kTiled) {
    INFO(ggml_type_name(uint32_t(type)));
    CHECK_FALSE(cpu::ggml_gemv_tiles_native(uint32_t(type), 0));
    // Every tiled type has an AVX2 and an AVX-512 kernel; a level above the CPU's is clamped to it.
    CHECK(cpu::ggml_gemv_tiles_native(uint32_t(type), 1) == (top >= 1));
    CHECK(cpu::ggml_gemv_tiles_native(uint32_t(type), 2) == (top >= 1));
  }
  CHECK_FALSE(cpu::ggml_gemv_tiles_native(uint32_t(GgmlType::Q4_0), 2));
}

// Every code, scale and min at its largest or smallest (bytes of 0x00 and 0xFF), against
// activations all at +-127 on the 8-bit grid: the kernels' integer sums at their widest (Q2_K's
// group sums go through vpdpwssd as int16).
TEST_CASE("tiles: extreme codes and activations") {
  std::mt19937 rng(17);
  const int top = cpu::expert_detail::cpu_isa_level();
  if (top < 1) return;  // no tile kernel below AVX2
  for (GgmlType type : kTiled) {
    const TypeFacts f = facts(type);
    const int64_t rows = 32, cols = 3 * 256;
    const GgmlTypeInfo* ti = ggml_type_info(f.id);
    std::vector<uint8_t> w(size_t(rows * cols / ti->block * ti->bytes));
    std::bernoulli_distribution coin(0.5);
    for (uint8_t& v : w) v = coin(rng) ? 0xFF : 0x00;
    const uint16_t one = f32_to_f16(1.0f);
    for (size_t b = 0; b < w.size() / size_t(ti->bytes); ++b)
      for (int off : ggml_f16_scale_offsets(f.id)) std::memcpy(&w[b * size_t(ti->bytes) + size_t(off)], &one, 2);
    const std::vector<uint8_t> tiles = tiles_of(f, w, rows, cols);
    for (float sign : {1.0f, -1.0f}) {
      std::vector<float> x(size_t(cols), sign);
      for (int64_t k = 0; k < cols; k += 97) x[size_t(k)] = -sign;  // not every block uniform
      std::vector<double> model(static_cast<size_t>(rows)), mag(static_cast<size_t>(rows));
      gd::int_gemv_model(f.id, w.data(), rows, cols, x.data(), model.data(), mag.data());
      for (int level : {1, top})
        for (bool gfni : {true, false})
          for (bool auto_kernel : {true, false}) {
            if (!cpu::ggml_gemv_tiles_native(f.id, level)) continue;  // the blocks' path: tested above
            INFO(ggml_type_name(f.id) << " sign " << sign << " level " << level << " gfni " << gfni << " auto kernel "
                                      << auto_kernel);
            std::vector<float> y(static_cast<size_t>(rows));
            cpu::ggml_gemv_tiles(f.id, tiles.data(), rows, cols, 1, x.data(), y.data(), level, gfni, std::nullopt,
                                 auto_kernel);
            for (size_t i = 0; i < model.size(); ++i) REQUIRE(std::fabs(y[i] - model[i]) <= 1e-5 * mag[i] + 1e-30);
          }
    }
  }
}

TEST_CASE("tiles: the kernel generate runs is a level this CPU has a tile kernel at, and runs as that level does") {
  std::mt19937 rng(14);
  const int top = cpu::expert_detail::cpu_isa_level();
  for (GgmlType type : kTiled) {
    const TypeFacts f = facts(type);
    for (int level = 0; level <= top; ++level)
      for (int nt = 1; nt <= gd::kMaxTokens; ++nt) {
        INFO(ggml_type_name(f.id) << " level " << level << " tokens " << nt);
        const int k = cpu::tile_kernel_level(f.id, nt, level);
        REQUIRE(k <= level);
        if (level >= 1) REQUIRE(k >= 1);
        if (level >= 1 && cpu::ggml_gemv_tiles_native(f.id, level)) REQUIRE(cpu::ggml_gemv_tiles_native(f.id, k));
        if (level < 2 || nt > 2) REQUIRE(k == level);  // only passes of 1-2 tokens may run a narrower kernel
      }
    // Where a pass runs a narrower kernel, the call at the level gives that kernel's bits.
    for (int nt = 1; nt <= 2; ++nt) {
      const int k = cpu::tile_kernel_level(f.id, nt, top);
      if (top < 2 || k == top) continue;
      INFO(ggml_type_name(f.id) << " tokens " << nt << " on the level " << k << " kernel");
      const int64_t rows = 48, cols = 2 * 256;
      const std::vector<uint8_t> w = mt::test::random_blocks(type, rows, cols, rng);
      const std::vector<uint8_t> tiles = tiles_of(f, w, rows, cols);
      std::vector<float> x;
      for (int t = 0; t < nt; ++t) {
        const std::vector<float> xt = mt::test::random_x(cols, rng);
        x.insert(x.end(), xt.begin(), xt.end());
      }
      std::vector<float> at_top(static_cast<size_t>(rows * nt)), at_k(static_cast<size_t>(rows * nt));
      cpu::ggml_gemv_tiles(f.id, tiles.data(), rows, cols, nt, x.data(), at_top.data(), top);
      cpu::ggml_gemv_tiles(f.id, tiles.data(), rows, cols, nt, x.data(), at_k.data(), k);
      for (size_t i = 0; i < at_top.size(); ++i) REQUIRE(at_top[i] == at_k[i]);
    }
  }
}

TEST_CASE("tiles: activations on the 8-bit grid give the reference decoder's product") {
  std::mt19937 rng(13);
  for (GgmlType type : kTiled) {
    const TypeFacts f = facts(type);
    const int64_t rows = 32, cols = 4 * 256, ab = gd::act_block(f.id);
    const std::vector<uint8_t> w = mt::test::random_blocks(type, rows, cols, rng);
    const std::vector<uint8_t> tiles = tiles_of(f, w, rows, cols);
    std::vector<float> x(static_cast<size_t>(cols));
    std::uniform_int_distribution<int> code(-127, 127);
    for (int64_t b = 0; b < cols / ab; ++b) {  // each activation block: 2^e q, with ±127 in it
      const float s = std::ldexp(1.0f, -5 - int(b % 4));
      for (int64_t k = 0; k < ab; ++k) x[size_t(b * ab + k)] = s * float(code(rng));
      x[size_t(b * ab + 17)] = s * 127.0f;
    }
    std::vector<float> dense(static_cast<size_t>(rows * cols));
    cpu::ggml_dequantize(f.id, w.data(), rows * cols, dense.data());
    std::vector<float> y(static_cast<size_t>(rows));
    cpu::ggml_gemv_tiles(f.id, tiles.data(), rows, cols, 1, x.data(), y.data(), cpu::expert_detail::cpu_isa_level());
    for (int64_t r = 0; r < rows; ++r) {
      double ref = 0, mag = 0;
      for (int64_t k = 0; k < cols; ++k) {
        ref += double(dense[size_t(r * cols + k)]) * x[size_t(k)];
        mag += std::fabs(double(dense[size_t(r * cols + k)]) * x[size_t(k)]);
      }
      INFO(ggml_type_name(f.id) << " row " << r);
      REQUIRE(std::fabs(y[size_t(r)] - ref) <= 1e-5 * mag);
    }
  }
}

TEST_CASE("tiles: a shape that is not whole tiles is refused") {
  std::vector<uint8_t> w(2368 * 2);
  std::vector<float> x(256), y(32);
  const uint32_t q4k = uint32_t(GgmlType::Q4_K);
  CHECK_THROWS(cpu::ggml_gemv_tiles(q4k, w.data(), 15, 256, 1, x.data(), y.data(), 2));
  CHECK_THROWS(cpu::ggml_gemv_tiles(q4k, w.data(), 16, 200, 1, x.data(), y.data(), 2));
  CHECK_THROWS(cpu::ggml_gemv_tiles(uint32_t(GgmlType::Q4_0), w.data(), 16, 256, 1, x.data(), y.data(), 2));
}

TEST_CASE("tiles: a tiled WeightView decodes and multiplies as its blocks do") {
  std::mt19937 rng(14);
  auto be = cpu::make_cpu_backend();
  for (GgmlType type : kTiled) {
    const TypeFacts f = facts(type);
    const int64_t rows = 48, cols = 3 * 256;
    const std::vector<uint8_t> w = mt::test::random_blocks(type, rows, cols, rng);
    const std::vector<uint8_t> tiles = tiles_of(f, w, rows, cols);
    const WeightView plain{DType::GGUF, w.data(), rows, cols, nullptr, 0, f.id, false};
    const WeightView tiled{DType::GGUF, tiles.data(), rows, cols, nullptr, 0, f.id, true};
    INFO(ggml_type_name(f.id));
    REQUIRE(tiled.stored_bytes() == tiles.size());
    // Rows decoded (the reference backend's and the prefill slabs' path): bit for bit.
    std::vector<float> a(size_t(rows * cols)), b(size_t(rows * cols));
    cpu::dequantize_rows(plain, 0, rows, a.data());
    cpu::dequantize_rows(tiled, 0, rows, b.data());
    REQUIRE(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
    cpu::dequantize_rows(tiled, 17, 5, b.data());
    REQUIRE(std::memcmp(a.data() + 17 * cols, b.data(), 5 * cols * sizeof(float)) == 0);
    // The CPU backend runs tiles through the tile GEMV and blocks through the block GEMV at any
    // token count on a CPU with AVX2: a decode-sized product gives the block GEMV's result to
    // fp32 rounding; a prompt past 32 tokens, both the Int8 path's model per token. (Without
    // AVX2, past 32 tokens both decode rows to fp32: bit for bit.)
    const bool simd = cpu::expert_detail::cpu_isa_level() >= 1;
    for (int64_t n : {40, 3}) {
      std::vector<float> x(static_cast<size_t>(n * cols)), y1(static_cast<size_t>(n * rows)), y2(y1.size());
      for (int64_t t = 0; t < n; ++t) {
        const std::vector<float> xt = mt::test::random_x(cols, rng);
        std::copy(xt.begin(), xt.end(), x.begin() + t * cols);
      }
      be->matmul(plain, x.data(), n, y1.data());
      be->matmul(tiled, x.data(), n, y2.data());
      INFO("tokens " << n);
      if (n > 32 && !simd) {
        REQUIRE(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)) == 0);
        continue;
      }
      if (n > 32) {
        std::vector<double> model(static_cast<size_t>(rows)), mag(static_cast<size_t>(rows));
        for (int64_t t = 0; t < n; ++t) {
          gd::int_gemv_model(f.id, w.data(), rows, cols, x.data() + t * cols, model.data(), mag.data());
          for (int64_t r = 0; r < rows; ++r) {
            const double tol = 1e-5 * mag[size_t(r)] + 1e-30;
            REQUIRE(std::fabs(y1[size_t(t * rows + r)] - model[size_t(r)]) <= tol);
            REQUIRE(std::fabs(y2[size_t(t * rows + r)] - model[size_t(r)]) <= tol);
          }
        }
        // ... which stays within 8-bit activation rounding of the exact product (the rows decoded).
        std::vector<float> rows_f(static_cast<size_t>(rows * cols));
        cpu::dequantize_rows(plain, 0, rows, rows_f.data());
        double err = 0, ref = 0;
        for (int64_t t = 0; t < n; ++t)
          for (int64_t r = 0; r < rows; ++r) {
            double exact = 0;
            for (int64_t k = 0; k < cols; ++k) exact += double(rows_f[size_t(r * cols + k)]) * x[size_t(t * cols + k)];
            err += std::fabs(y2[size_t(t * rows + r)] - exact), ref += std::fabs(exact);
          }
        REQUIRE(err <= 0.02 * ref);
        continue;
      }
      for (size_t i = 0; i < y1.size(); ++i) REQUIRE(std::fabs(y1[i] - y2[i]) <= 1e-4f * (1.0f + std::fabs(y1[i])));
    }
  }
  // A view that cannot be tiles is refused by name.
  std::vector<uint8_t> buf(2368 * 3 * 3);
  const WeightView odd{DType::GGUF, buf.data(), 40, 768, nullptr, 0, uint32_t(GgmlType::Q4_K), true};
  std::vector<float> row(768);
  CHECK_THROWS_WITH(cpu::dequantize_rows(odd, 0, 1, row.data()), Catch::Contains("cannot be row tiles"));
}
