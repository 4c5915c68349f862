// The GGUF block GEMV (cpu_kernels/ggml_gemv.h) at every ISA level this CPU has, on random
// blocks of every decodable K-quant and Q8_0 (fp16 scales kept finite), odd row counts, several
// block counts, a matrix big enough to split over threads, a sentinel past the output:
//   Fp32 path: the reference decoder's rows dotted in double, normalised error < 1e-5;
//   Int8 path: (1) each SIMD level against the scalar model of the integer path
//     (int_gemv_model: the same activation quantisation, exact integer sums) to fp32 rounding of
//     the scaled block sums; (2) activations on the 8-bit grid (x = 2^e q, so quantising them
//     loses nothing): every level and the model equal the reference decoder's product to fp32
//     rounding; (3) random activations: |y - ref| within the quantisation bound
//     Σ_k |W[r,k]| d(k) / 2 (d(k) the scale of x[k]'s activation block), and above 0 (the path
//     does quantise); (4) a few tokens at once equal each token alone;
//   the SIMD quantiser equals the scalar one bit for bit.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "cpu_kernels/expert_ffn_internal.h"
#include "cpu_kernels/ggml_dequant.h"
#include "cpu_kernels/ggml_gemv.h"
#include "runtime/core/dtype.h"
#include "runtime/core/ggml_types.h"
#include "tests/unit/ggml_test_data.h"

using namespace mt;
using mt::test::random_blocks;
using mt::test::random_x;
using cpu::GgmlGemvPath;
namespace gd = cpu::ggml_gemv_detail;

namespace {

constexpr GgmlType kTypes[] = {GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q3_K,
                               GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K};

// Activations on the 8-bit grid of every activation block of `ab` values: x = 2^e q with q in
// -127..127 and ±127 in each block, so quantising them is exact (d = 2^e, codes = q).
std::vector<float> grid_x(int64_t cols, int64_t ab, std::mt19937& rng) {
  std::vector<float> x(static_cast<size_t>(cols));
  std::uniform_int_distribution<int> code(-127, 127), e(-9, -3);
  for (int64_t b = 0; b < cols / ab; ++b) {
    const float s = std::ldexp(1.0f, e(rng));
    for (int64_t k = 0; k < ab; ++k) x[size_t(b * ab + k)] = s * float(code(rng));
    x[size_t(b * ab + (b * 7) % ab)] = s * (b % 2 ? 127.0f : -127.0f);
  }
  return x;
}

struct Case {
  int64_t rows, blocks;  // blocks of 256 values (8 Q8_0 blocks each)
};
constexpr Case kCases[] = {{7, 1}, {37, 3}, {301, 5}, {1001, 8}};  // the last splits over threads

// The reference decoder's rows, and their products with x in double.
struct Dense {
  std::vector<float> w;
  std::vector<double> ref;
};
Dense dense_product(GgmlType t, const std::vector<uint8_t>& wq, int64_t rows, int64_t cols, const std::vector<float>& x) {
  Dense d;
  d.w.resize(size_t(rows * cols));
  cpu::ggml_dequantize(uint32_t(t), wq.data(), rows * cols, d.w.data());
  d.ref.assign(size_t(rows), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) d.ref[size_t(r)] += double(d.w[size_t(r * cols + k)]) * x[size_t(k)];
  return d;
}

}  // namespace

TEST_CASE("GGUF block GEMV, Fp32 path: equals the reference decoder's product at every ISA level", "[kernels][gguf]") {
  std::mt19937 rng(3);
  const int top = cpu::expert_detail::cpu_isa_level();
  for (GgmlType t : kTypes) {
    const GgmlTypeInfo* ti = ggml_type_info(uint32_t(t));
    for (auto [rows, blocks] : kCases) {
      const int64_t cols = blocks * 256;
      const auto w = random_blocks(t, rows, cols, rng);
      const auto x = random_x(cols, rng);
      const Dense dn = dense_product(t, w, rows, cols, x);
      double scale = 0;
      for (double v : dn.ref) scale = std::max(scale, std::fabs(v));
      for (int level = 0; level <= top; ++level) {
        std::vector<float> y(size_t(rows) + 1, -7.0f);  // one sentinel past the end
        cpu::ggml_gemv(uint32_t(t), w.data(), rows, cols, x.data(), y.data(), level, GgmlGemvPath::Fp32);
        double err = 0;
        for (int64_t r = 0; r < rows; ++r) err = std::max(err, std::fabs(double(y[size_t(r)]) - dn.ref[size_t(r)]));
        INFO(ti->name << " rows " << rows << " cols " << cols << " level " << level);
        CHECK(err / scale < 1e-5);
        CHECK(y[size_t(rows)] == -7.0f);
      }
    }
  }
  for (GgmlType t : kTypes)
    for (int level = 1; level <= top; ++level) CHECK(cpu::ggml_gemv_has_kernel(uint32_t(t), level, GgmlGemvPath::Fp32));
}

TEST_CASE("GGUF block GEMV, Int8 path: the SIMD quantiser equals the scalar one bit for bit", "[kernels][gguf]") {
  if (cpu::expert_detail::cpu_isa_level() < 1) return;  // no AVX2: no SIMD quantiser to compare
  std::mt19937 rng(11);
  for (int64_t ab : {32, 256}) {
    const int64_t blocks = 9, n = ab * blocks;
    auto x = random_x(n, rng);
    std::fill(x.begin() + ab, x.begin() + 2 * ab, 0.0f);           // an all-zero block
    std::fill(x.begin() + 2 * ab, x.begin() + 3 * ab, 0.0f);
    x[size_t(2 * ab + 5)] = -3.0e-30f;                               // one tiny value
    for (int64_t k = 0; k < ab; ++k) x[size_t(3 * ab + k)] = 0.5f * float(k % 9) - 2.0f;  // ties of x * id
    const auto un = static_cast<size_t>(n), ub = static_cast<size_t>(blocks);
    std::vector<int8_t> q0(un), q1(un);
    std::vector<float> d0(ub), d1(ub);
    std::vector<int16_t> s0(un / 16), s1(un / 16);
    gd::quantize_act_scalar(x.data(), blocks, ab, q0.data(), d0.data(), s0.data());
    gd::quantize_act_avx2(x.data(), blocks, ab, q1.data(), d1.data(), s1.data());
    CHECK(q0 == q1);
    CHECK(std::memcmp(d0.data(), d1.data(), d0.size() * 4) == 0);
    CHECK(s0 == s1);
    CHECK(d0[1] == 0.0f);
    CHECK(q0[size_t(2 * ab + 5)] == -127);
    for (int64_t k = 0; k < n; ++k) CHECK(std::abs(int(q0[size_t(k)])) <= 127);
    for (int64_t g = 0; g < n / 16; ++g) {
      int s = 0;
      for (int64_t k = 16 * g; k < 16 * g + 16; ++k) s += q0[size_t(k)];
      CHECK(s0[size_t(g)] == s);
    }
  }
}

TEST_CASE("GGUF block GEMV, Int8 path: every level against the integer model and the reference", "[kernels][gguf]") {
  std::mt19937 rng(5);
  const int top = cpu::expert_detail::cpu_isa_level();
  for (GgmlType t : kTypes) {
    const GgmlTypeInfo* ti = ggml_type_info(uint32_t(t));
    const int64_t ab = gd::act_block(uint32_t(t));
    for (auto [rows, blocks] : kCases) {
      const int64_t cols = blocks * 256;
      const auto w = random_blocks(t, rows, cols, rng);
      for (bool on_grid : {true, false}) {
        const auto x = on_grid ? grid_x(cols, ab, rng) : random_x(cols, rng);
        const Dense dn = dense_product(t, w, rows, cols, x);
        std::vector<double> model(static_cast<size_t>(rows)), mag(static_cast<size_t>(rows));
        gd::int_gemv_model(uint32_t(t), w.data(), rows, cols, x.data(), model.data(), mag.data());
        // The activation scales, as the path quantises x.
        std::vector<int8_t> q(static_cast<size_t>(cols));
        std::vector<float> d(static_cast<size_t>(cols / ab));
        std::vector<int16_t> bs(static_cast<size_t>(cols / 16));
        gd::quantize_act_scalar(x.data(), cols / ab, ab, q.data(), d.data(), bs.data());
        // Per row: the bound on the quantisation's error (|x - d q| <= d/2, plus fp32 rounding of
        // x * 127/max and of d) and the scale of fp32 rounding (Σ|scaled terms| and Σ|W x|).
        std::vector<double> qbound(static_cast<size_t>(rows)), fscale(static_cast<size_t>(rows));
        for (int64_t r = 0; r < rows; ++r) {
          double qb = 0, wx = 0;
          for (int64_t k = 0; k < cols; ++k) {
            const double wk = std::fabs(double(dn.w[size_t(r * cols + k)]));
            qb += wk * (0.5 * double(d[size_t(k / ab)]) * (1 + 1e-4) + 1e-6 * std::fabs(double(x[size_t(k)])));
            wx += wk * std::fabs(double(x[size_t(k)]));
          }
          qbound[size_t(r)] = qb;
          fscale[size_t(r)] = mag[size_t(r)] + wx;
        }
        double worst_ratio = 0, max_err = 0;  // the model against the reference
        for (int64_t r = 0; r < rows; ++r) {
          const double err = std::fabs(model[size_t(r)] - dn.ref[size_t(r)]);
          const double allowed = (on_grid ? 0.0 : qbound[size_t(r)]) + 1e-5 * fscale[size_t(r)];
          worst_ratio = std::max(worst_ratio, err / allowed);
          max_err = std::max(max_err, err / fscale[size_t(r)]);
        }
        INFO(ti->name << " rows " << rows << " cols " << cols << (on_grid ? " on the 8-bit grid" : " random x"));
        CHECK(worst_ratio <= 1.0);
        // Off the grid the path does quantise (an error well above fp32 rounding shows).
        if (!on_grid) CHECK(max_err > 1e-5);
        for (int level = 0; level <= top; ++level) {
          std::vector<float> y(size_t(rows) + 1, -7.0f);  // one sentinel past the end
          cpu::ggml_gemv(uint32_t(t), w.data(), rows, cols, x.data(), y.data(), level);
          double vs_model = 0, vs_ref = 0;
          for (int64_t r = 0; r < rows; ++r) {
            const double yr = y[size_t(r)];
            vs_model = std::max(vs_model, std::fabs(yr - model[size_t(r)]) / (1e-5 * fscale[size_t(r)]));
            const double allowed = (on_grid && level > 0 ? 0.0 : qbound[size_t(r)]) + 1e-5 * fscale[size_t(r)];
            vs_ref = std::max(vs_ref, std::fabs(yr - dn.ref[size_t(r)]) / allowed);
          }
          INFO("level " << level << " simd " << cpu::ggml_gemv_has_kernel(uint32_t(t), level));
          if (level > 0) CHECK(vs_model <= 1.0);  // level 0 is the exact Fp32 path
          CHECK(vs_ref <= 1.0);
          CHECK(y[size_t(rows)] == -7.0f);
        }
      }
    }
  }
  for (GgmlType t : kTypes)
    for (int level = 1; level <= top; ++level) CHECK(cpu::ggml_gemv_has_kernel(uint32_t(t), level));
}

TEST_CASE("GGUF block GEMV, Int8 path: Q8_0 rows of any number of blocks", "[kernels][gguf]") {
  // The AVX-512 kernel takes 8 blocks per step and the rest one by one.
  std::mt19937 rng(13);
  const int top = cpu::expert_detail::cpu_isa_level();
  for (int64_t blocks : {1, 3, 7, 9, 13, 17}) {
    const int64_t rows = 29, cols = 32 * blocks;
    const auto w = random_blocks(GgmlType::Q8_0, rows, cols, rng);
    const auto x = grid_x(cols, 32, rng);
    const Dense dn = dense_product(GgmlType::Q8_0, w, rows, cols, x);
    std::vector<double> model(static_cast<size_t>(rows)), mag(static_cast<size_t>(rows));
    gd::int_gemv_model(uint32_t(GgmlType::Q8_0), w.data(), rows, cols, x.data(), model.data(), mag.data());
    for (int level = 1; level <= top; ++level) {
      for (int64_t n : {1, 3}) {
        std::vector<float> xs, y(static_cast<size_t>(n * rows));
        for (int64_t i = 0; i < n; ++i) xs.insert(xs.end(), x.begin(), x.end());
        cpu::ggml_gemv_tokens(uint32_t(GgmlType::Q8_0), w.data(), rows, cols, n, xs.data(), y.data(), level);
        for (int64_t i = 0; i < n; ++i)
          for (int64_t r = 0; r < rows; ++r) {
            INFO("blocks " << blocks << " level " << level << " tokens " << n << " row " << r);
            const double yr = y[size_t(i * rows + r)], tol = 1e-5 * mag[size_t(r)];
            CHECK(std::fabs(yr - model[size_t(r)]) <= tol);
            CHECK(std::fabs(yr - dn.ref[size_t(r)]) <= tol + 1e-5 * std::fabs(dn.ref[size_t(r)]));
          }
      }
    }
  }
}

TEST_CASE("GGUF block GEMV, Int8 path: a few tokens at once equal each token alone", "[kernels][gguf]") {
  std::mt19937 rng(9);
  const int top = cpu::expert_detail::cpu_isa_level();
  const int64_t rows = 531, cols = 3 * 256;  // odd rows, enough bytes to split over threads for Q8_0..Q6_K
  for (GgmlType t : kTypes) {
    const auto w = random_blocks(t, rows, cols, rng);
    for (int64_t n : {1, 2, 3, 4, 6}) {
      std::vector<float> x;
      for (int64_t i = 0; i < n; ++i) {
        const auto xi = random_x(cols, rng);
        x.insert(x.end(), xi.begin(), xi.end());
      }
      for (int level = 0; level <= top; ++level) {
        std::vector<float> y(size_t(n * rows) + 1, -7.0f);
        cpu::ggml_gemv_tokens(uint32_t(t), w.data(), rows, cols, n, x.data(), y.data(), level);
        std::vector<float> one(static_cast<size_t>(rows));
        for (int64_t i = 0; i < n; ++i) {
          cpu::ggml_gemv(uint32_t(t), w.data(), rows, cols, x.data() + i * cols, one.data(), level);
          INFO(ggml_type_name(uint32_t(t)) << " n " << n << " token " << i << " level " << level);
          CHECK(std::equal(one.begin(), one.end(), y.begin() + i * rows));
        }
        CHECK(y[size_t(n * rows)] == -7.0f);
      }
    }
  }
}

TEST_CASE("GGUF block GEMV refuses what it cannot decode", "[kernels][gguf]") {
  std::vector<uint8_t> w(1024);
  std::vector<float> x(256), y(4);
  CHECK_THROWS(cpu::ggml_gemv(uint32_t(GgmlType::IQ2_XXS), w.data(), 1, 256, x.data(), y.data(), 2));
  CHECK_THROWS(cpu::ggml_gemv(uint32_t(GgmlType::Q4_K), w.data(), 1, 100, x.data(), y.data(), 2));
  CHECK_THROWS(cpu::ggml_gemv(uint32_t(GgmlType::Q4_K), w.data(), 1, 100, x.data(), y.data(), 2, GgmlGemvPath::Fp32));
  CHECK_FALSE(cpu::ggml_gemv_has_kernel(uint32_t(GgmlType::IQ2_XXS), 0));
  CHECK_FALSE(cpu::ggml_gemv_has_kernel(uint32_t(GgmlType::F32), 1));
}

TEST_CASE("random blocks of the float types are finite N(0, sd) values, the same for a seed", "[kernels][gguf]") {
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16}) {
    const GgmlTypeInfo* ti = ggml_type_info(uint32_t(t));
    const int64_t n = 20000;
    std::vector<uint8_t> a(size_t(n * ti->bytes)), b(a.size());
    ggml_fill_random_blocks(uint32_t(t), a.data(), n, 7, 0.05f);
    ggml_fill_random_blocks(uint32_t(t), b.data(), n, 7, 0.05f);
    REQUIRE(a == b);
    std::vector<float> v(static_cast<size_t>(n));
    cpu::ggml_dequantize(uint32_t(t), a.data(), n, v.data());
    double sum = 0, sq = 0;
    for (float f : v) {
      REQUIRE(std::isfinite(f));
      sum += f, sq += double(f) * f;
    }
    INFO(ti->name);
    CHECK(std::fabs(sum / n) < 0.002);                      // mean 0: 4 standard errors at n = 20000
    CHECK(std::sqrt(sq / n) == Approx(0.05).epsilon(0.03));  // sd 0.05
  }
}

TEST_CASE("the float types map to their DType and back, and nothing else maps", "[kernels][gguf]") {
  // ggml's ids as gguf-py's GGMLQuantizationType spells them: F32 0, F16 1, BF16 30.
  const std::pair<uint32_t, DType> floats[] = {{0, DType::F32}, {1, DType::F16}, {30, DType::BF16}};
  for (const auto& [id, dt] : floats) {
    INFO(id);
    CHECK(ggml_float_dtype(id) == dt);
    CHECK(ggml_float_type(dt) == id);
  }
  for (uint32_t id : {2u, 8u, 10u, 11u, 12u, 13u, 14u, 15u, 28u, 99u}) CHECK_FALSE(ggml_float_dtype(id).has_value());
  for (DType dt : {DType::F8_E4M3, DType::I32, DType::U8, DType::Q4_PACKED, DType::Q8_PACKED, DType::GGUF})
    CHECK_FALSE(ggml_float_type(dt).has_value());
}
