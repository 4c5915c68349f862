// Weight decoding and matmul for F32 / BF16 / F16 / block-scaled F8_E4M3 against double references.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <omp.h>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cpu_kernels/ops.h"
#include "cpu_kernels/dense_gemv.h"
#include "cpu_kernels/expert_ffn_internal.h"
#include "cpu_kernels/packed_matmul.h"

// Cheap in hot loops: Catch's machinery (and the context message) only runs on failure.
#define REQUIRE_Q(cond, ctx)   \
  do {                         \
    if (!(cond)) {             \
      INFO(ctx);               \
      REQUIRE(cond);           \
    }                          \
  } while (0)

using namespace mt;
using namespace mt::cpu;

namespace {

// Independent decoders (sign / exponent / mantissa formulas, double).
double bf16_ref(uint16_t h) {
  const int s = h >> 15, E = (h >> 7) & 0xff, M = h & 0x7f;
  if (E == 0xff) return M ? std::numeric_limits<double>::quiet_NaN() : (s ? -1 : 1) * HUGE_VAL;
  const double mag = E == 0 ? std::ldexp(M / 128.0, -126) : std::ldexp(1.0 + M / 128.0, E - 127);
  return s ? -mag : mag;
}
double f16_ref(uint16_t h) {
  const int s = h >> 15, E = (h >> 10) & 31, M = h & 1023;
  if (E == 31) return M ? std::numeric_limits<double>::quiet_NaN() : (s ? -1 : 1) * HUGE_VAL;
  const double mag = E == 0 ? std::ldexp(M / 1024.0, -14) : std::ldexp(1.0 + M / 1024.0, E - 15);
  return s ? -mag : mag;
}
double fp8_ref(uint8_t c) {
  const int s = c >> 7, E = (c >> 3) & 15, M = c & 7;
  if (E == 15 && M == 7) return std::numeric_limits<double>::quiet_NaN();
  const double mag = E == 0 ? std::ldexp(M / 8.0, -6) : std::ldexp(1.0 + M / 8.0, E - 7);
  return s ? -mag : mag;
}

// A test weight: encoded bytes (stored at an odd offset so every access is unaligned), scales,
// and the exact dequantized values computed independently (what the kernel must produce, in fp32).
struct TestWeight {
  std::vector<uint8_t> storage;
  std::vector<float> scale;
  std::vector<double> value;  // [rows, cols]
  WeightView view;
};

TestWeight make_weight(DType dt, int64_t rows, int64_t cols, int64_t block, uint64_t seed) {
  TestWeight t;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const size_t esz = dtype_size(dt);
  t.storage.assign(1 + rows * cols * esz, 0);
  uint8_t* p = t.storage.data() + 1;
  t.value.resize(rows * cols);
  if (dt == DType::F8_E4M3) {
    const int64_t sr = (rows + block - 1) / block, sc = (cols + block - 1) / block;
    std::uniform_real_distribution<double> ex(-10.0, 2.0);
    t.scale.resize(sr * sc);
    for (auto& s : t.scale) s = static_cast<float>(std::exp2(ex(rng))) * (rng() % 2 ? 1.0f : 1.37f);
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < cols; ++j) {
        uint8_t c;
        do c = static_cast<uint8_t>(rng()); while ((c & 0x7f) == 0x7f);  // any finite code
        p[i * cols + j] = c;
        const float s = t.scale[(i / block) * sc + (j / block)];
        // fp8 value (<= 4 significant bits) times an fp32 scale: one fp32 rounding.
        t.value[i * cols + j] = static_cast<float>(fp8_ref(c) * s);
      }
    }
  } else {
    for (int64_t k = 0; k < rows * cols; ++k) {
      const float f = nd(rng);
      if (dt == DType::F32) {
        std::memcpy(p + 4 * k, &f, 4);
        t.value[k] = f;
      } else if (dt == DType::BF16) {
        const uint16_t h = f32_to_bf16(f);
        std::memcpy(p + 2 * k, &h, 2);
        t.value[k] = bf16_ref(h);
      } else {
        const uint16_t h = f32_to_f16(f);
        std::memcpy(p + 2 * k, &h, 2);
        t.value[k] = f16_ref(h);
      }
    }
  }
  t.view.dtype = dt;
  t.view.data = p;
  t.view.rows = rows;
  t.view.cols = cols;
  t.view.scale = t.scale.empty() ? nullptr : t.scale.data();
  t.view.block = block;
  return t;
}

const char* name(DType d) { return dtype_name(d).data(); }

}  // namespace

TEST_CASE("dequantize_rows is exact for every dtype, odd shapes and partial FP8 blocks", "[kernels][matmul]") {
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::F8_E4M3}) {
    for (int64_t block : {128, 16}) {
      if (dt != DType::F8_E4M3 && block != 128) continue;
      for (int64_t rows : {1, 3, 37, 129, 577}) {
        for (int64_t cols : {1, 5, 130, 257}) {
          const auto w = make_weight(dt, rows, cols, block, rows * 1000 + cols + block);
          for (auto [r0, nr] : {std::pair<int64_t, int64_t>{0, rows}, {rows / 2, rows - rows / 2},
                                {rows - 1, 1}}) {
            std::vector<float> out(nr * cols, -12345.0f);
            dequantize_rows(w.view, r0, nr, out.data());
            for (int64_t i = 0; i < nr; ++i)
              for (int64_t j = 0; j < cols; ++j) {
                REQUIRE_Q(static_cast<double>(out[i * cols + j]) == w.value[(r0 + i) * cols + j],
                          name(dt) << " block=" << block << " rows=" << rows << " cols=" << cols
                              << " r=" << r0 + i << " c=" << j);
              }
          }
        }
      }
    }
  }
}

TEST_CASE("FP8 scale tile indexing, including the 576-row kv_a shape", "[kernels][matmul]") {
  // Every element is fp8 1.0 (0x38), so the dequantized value is exactly the tile's scale.
  for (auto [rows, cols, block] : {std::tuple<int64_t, int64_t, int64_t>{576, 300, 128},
                                   {45, 70, 16}, {128, 128, 128}, {1, 1, 128}}) {
    const int64_t sr = (rows + block - 1) / block, sc = (cols + block - 1) / block;
    std::vector<uint8_t> data(rows * cols, 0x38);
    std::vector<float> scale(sr * sc);
    for (int64_t k = 0; k < sr * sc; ++k) scale[k] = static_cast<float>(k + 2);
    WeightView v{DType::F8_E4M3, data.data(), rows, cols, scale.data(), block};
    REQUIRE(v.scale_cols() == sc);
    std::vector<float> out(rows * cols);
    dequantize_rows(v, 0, rows, out.data());
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j)
        REQUIRE(out[i * cols + j] == static_cast<float>((i / block) * sc + (j / block) + 2));
    if (rows == 576) {  // rows 512..575 use the fifth (partial) row of scales
      CHECK(out[575 * cols + 299] == static_cast<float>(4 * sc + 2 + 2));
      CHECK(out[511 * cols + 0] == static_cast<float>(3 * sc + 2));
    }
  }
}

TEST_CASE("F16 and BF16 decode of all 65536 codes", "[kernels][matmul]") {
  std::vector<uint8_t> data(1 + 65536 * 2);
  for (uint32_t c = 0; c < 65536; ++c) {
    const uint16_t h = static_cast<uint16_t>(c);
    std::memcpy(data.data() + 1 + 2 * c, &h, 2);
  }
  for (DType dt : {DType::F16, DType::BF16}) {
    WeightView v{dt, data.data() + 1, 256, 256, nullptr, 128};
    std::vector<float> out(65536);
    dequantize_rows(v, 0, 256, out.data());
    for (uint32_t c = 0; c < 65536; ++c) {
      const double ref = dt == DType::F16 ? f16_ref(static_cast<uint16_t>(c)) : bf16_ref(static_cast<uint16_t>(c));
      if (std::isnan(ref)) {
        REQUIRE_Q(std::isnan(out[c]), name(dt) << " code " << c);
      } else {
        REQUIRE_Q(static_cast<double>(out[c]) == ref, name(dt) << " code " << c);
        REQUIRE_Q(std::signbit(out[c]) == (c >= 0x8000), name(dt) << " code " << c);
      }
    }
  }
}

namespace {

// x: nt tokens of w's cols; a standard normal per value, from seed.
std::vector<float> random_tokens(int64_t nt, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(nt * cols);
  for (auto& v : x) v = nd(rng);
  return x;
}

// y [nt][rows] against the double-precision product of w's exact values with x, to fp32 rounding
// of the sum of |terms|; `what` names the case.
void require_reference_product(const TestWeight& w, const std::vector<float>& x, int64_t nt, const std::vector<float>& y,
                               const std::string& what) {
  const int64_t rows = w.view.rows, cols = w.view.cols;
  for (int64_t t = 0; t < nt; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      double ref = 0, mag = 0;
      for (int64_t c = 0; c < cols; ++c) {
        ref += w.value[r * cols + c] * x[t * cols + c];
        mag += std::abs(w.value[r * cols + c] * x[t * cols + c]);
      }
      REQUIRE_Q(std::abs(y[t * rows + r] - ref) <= 1e-5 * mag + 1e-30, what << " t=" << t << " r=" << r);
    }
}

}  // namespace

TEST_CASE("matmul matches a double reference for every dtype and odd shapes", "[kernels][matmul]") {
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::F8_E4M3}) {
    for (int64_t block : {128, 16}) {
      if (dt != DType::F8_E4M3 && block != 128) continue;
      for (int64_t rows : {1, 3, 37, 129, 577}) {
        for (int64_t cols : {1, 5, 130, 257}) {
          const auto w = make_weight(dt, rows, cols, block, 7 + rows * 31 + cols);
          for (int64_t nt : {1, 2, 7}) {
            const std::vector<float> x = random_tokens(nt, cols, rows + cols + nt);
            std::vector<float> y(nt * rows, -1.0f);
            matmul(w.view, x.data(), nt, y.data());
            std::ostringstream what;
            what << name(dt) << " block=" << block << " rows=" << rows << " cols=" << cols << " nt=" << nt;
            require_reference_product(w, x, nt, y, what.str());
          }
        }
      }
    }
  }
}

TEST_CASE("matmul at model-like sizes (threaded path, long rows)", "[kernels][matmul]") {
  for (DType dt : {DType::BF16, DType::F8_E4M3}) {
    const int64_t rows = 576, cols = 2048 + 64, nt = 3;  // 5 row tiles (last partial), 17 col tiles
    const auto w = make_weight(dt, rows, cols, 128, 99);
    const std::vector<float> x = random_tokens(nt, cols, 5);
    std::vector<float> y(nt * rows);
    matmul(w.view, x.data(), nt, y.data());
    require_reference_product(w, x, nt, y, name(dt));
    // Each token's result equals a single-token call (no cross-token interference).
    std::vector<float> y1(rows);
    matmul(w.view, x.data() + 2 * cols, 1, y1.data());
    for (int64_t r = 0; r < rows; ++r) REQUIRE(y1[r] == y[2 * rows + r]);
  }
}

TEST_CASE("matmul / dequantize_rows argument checks and empty shapes", "[kernels][matmul]") {
  std::vector<uint8_t> data(64);
  WeightView v{DType::I32, data.data(), 4, 4, nullptr, 128};
  std::vector<float> x(8, 1.0f), y(8);
  CHECK_THROWS(matmul(v, x.data(), 1, y.data()));
  v.dtype = DType::F8_E4M3;  // no scale
  CHECK_THROWS(matmul(v, x.data(), 1, y.data()));
  v.dtype = DType::F32;
  CHECK_THROWS(dequantize_rows(v, 3, 2, y.data()));
  CHECK_NOTHROW(matmul(v, x.data(), 0, y.data()));
  WeightView e{DType::F32, data.data(), 2, 0, nullptr, 128};
  std::vector<float> ye(6, 5.0f);
  matmul(e, x.data(), 3, ye.data());
  for (float f : ye) CHECK(f == 0.0f);
}

TEST_CASE("matmul result does not depend on the thread count", "[kernels][matmul]") {
  const auto w = make_weight(DType::F8_E4M3, 301, 517, 128, 4242);
  std::mt19937_64 rng(1);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(5 * 517);
  for (auto& v : x) v = nd(rng);
  std::vector<float> y1(5 * 301), y4(5 * 301);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  matmul(w.view, x.data(), 5, y1.data());
  omp_set_num_threads(4);
  matmul(w.view, x.data(), 5, y4.data());
  omp_set_num_threads(saved);
  CHECK(y1 == y4);
}

// The packed dense layout (convert --dense q4|q8): the reference decoder must give back every
// weight to within its group's quantisation step, on an odd row count (a partial row tile).
TEST_CASE("dequantize_rows decodes packed Q4/Q8 weights to within the quantisation step", "[kernels][matmul]") {
  const int64_t rows = 37, cols = 96, group = 32;
  std::mt19937_64 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto& v : w) v = nd(rng);
  for (DType dt : {DType::Q4_PACKED, DType::Q8_PACKED}) {
    std::vector<uint8_t> packed(packed_weight_bytes(dt, rows, cols, group));
    pack_weight(dt, w.data(), rows, cols, group, packed.data());
    const WeightView v{dt, packed.data(), rows, cols, nullptr, group};
    std::vector<float> out(w.size());
    dequantize_rows(v, 0, rows, out.data());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t g = 0; g < cols / group; ++g) {
        double amax = 0;
        for (int64_t k = 0; k < group; ++k) amax = std::max(amax, std::fabs(double(w[r * cols + g * group + k])));
        // Q8: half of the step amax/127. Q4 maps the extreme value to -8 exactly, so a value of
        // the other sign and the same size clamps at +7: up to one step amax/8 (fp16-rounded scale).
        const double tol = (dt == DType::Q8_PACKED ? amax / 127 * 0.51 : amax / 8 * 1.01) + 1e-6;
        for (int64_t k = 0; k < group; ++k) {
          const int64_t i = r * cols + g * group + k;
          REQUIRE_Q(std::fabs(double(out[i]) - double(w[i])) <= tol, "row " << r << " col " << g * group + k);
        }
      }
    // A single row decodes the same as within the whole matrix.
    std::vector<float> one(static_cast<size_t>(cols));
    dequantize_rows(v, 33, 1, one.data());
    for (int64_t k = 0; k < cols; ++k) REQUIRE(one[k] == out[33 * cols + k]);
  }
  // Packed a slab of 16 rows at a time (convert's way for large matrices): the same bytes.
  for (DType dt : {DType::Q4_PACKED, DType::Q8_PACKED}) {
    std::vector<uint8_t> whole(packed_weight_bytes(dt, rows, cols, group)), slabs(whole.size(), 0);
    pack_weight(dt, w.data(), rows, cols, group, whole.data());
    for (int64_t r0 = 0; r0 < rows; r0 += 16) {
      const int64_t n = std::min<int64_t>(16, rows - r0);
      pack_weight_rows(dt, w.data() + r0 * cols, r0, n, rows, cols, group, slabs.data());
    }
    CHECK(slabs == whole);
    CHECK_THROWS(pack_weight_rows(dt, w.data(), 8, 16, rows, cols, group, slabs.data()));  // not a tile boundary
  }
  std::vector<uint8_t> packed(packed_weight_bytes(DType::Q8_PACKED, rows, cols, group));
  const WeightView bad{DType::Q8_PACKED, packed.data(), rows, cols, nullptr, 30};  // 30 neither divides 96 nor is a multiple of 4
  std::vector<float> out(static_cast<size_t>(cols));
  CHECK_THROWS(dequantize_rows(bad, 0, 1, out.data()));
}

// The SIMD row decoder the fast backend's attention uses: every value exactly as the
// independent decoders above give it, every ISA this CPU has, odd shapes, unaligned data.
TEST_CASE("dense_decode_rows is exact for every dtype and ISA", "[kernels][matmul]") {
  const int max_isa = cpu::expert_detail::cpu_isa_level();
  for (int isa = 1; isa <= max_isa; ++isa)
    for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::F8_E4M3})
      for (int64_t block : {16, 128})
        for (auto [rows, cols] : {std::pair<int64_t, int64_t>{37, 133}, {5, 512}, {129, 7}}) {
          const auto w = make_weight(dt, rows, cols, block, rows * 7 + cols + block);
          for (auto [r0, n] : {std::pair<int64_t, int64_t>{0, rows}, {rows / 2, rows - rows / 2}, {rows - 1, 1}}) {
            std::vector<float> out(static_cast<size_t>(n * cols), -1.0f);
            REQUIRE(dense_decode_rows(w.view, r0, n, out.data(), isa));
            for (int64_t i = 0; i < n * cols; ++i)
              REQUIRE_Q(out[i] == static_cast<float>(w.value[(r0 * cols) + i]),
                        "isa " << isa << " " << dtype_name(dt) << " block " << block << " " << rows << "x" << cols
                               << " element " << i);
          }
        }
  // No kernel: level 0, out-of-range rows, packed weights.
  const auto w = make_weight(DType::BF16, 4, 8, 16, 1);
  std::vector<float> out(64);
  CHECK_FALSE(dense_decode_rows(w.view, 0, 4, out.data(), 0));
  CHECK_FALSE(dense_decode_rows(w.view, 2, 3, out.data(), 1));
}

// A prefetch distance along a row's stream, which runs on into the row its slot reads in the next
// group of R: checked against the stream position by division.
template <int R>
void check_row_stream_ahead() {
  for (int64_t row_bytes : {64, 1000, 14336, 32768, 40000})
    for (int64_t distance : {1024, 32768}) {
      const typename cpu::gemv_detail::RowPrefetch<R>::Ahead ahead(row_bytes, distance);
      for (int64_t at = 0; at < row_bytes; at += 8) {
        const int64_t q = (at + distance) / row_bytes, col = (at + distance) % row_bytes;
        REQUIRE_Q(ahead.offset(at) == q * R * row_bytes + col - at,
                  "R " << R << " row " << row_bytes << " distance " << distance << " at " << at);
      }
    }
}

TEST_CASE("dense GEMV prefetches follow each row's stream into the next group", "[kernels][matmul]") {
  check_row_stream_ahead<1>();
  check_row_stream_ahead<2>();
  check_row_stream_ahead<4>();
  check_row_stream_ahead<8>();
}

TEST_CASE("dense decode GEMV matches a double reference at every ISA level, whole and partial chunks", "[kernels][matmul]") {
  const int top = cpu::expert_detail::cpu_isa_level();
  for (DType dt : {DType::F32, DType::BF16, DType::F16, DType::F8_E4M3}) {
    for (int64_t cols : {16, 40, 64, 131, 137, 263, 1024}) {  // multiples of the 16- and 8-wide chunks, and tails
      for (int64_t rows : {4, 37}) {  // whole 2-, 4- and 8-row groups, and a remainder
        const int64_t block = dt == DType::F8_E4M3 ? 16 : 128;
        const auto w = make_weight(dt, rows, cols, block, 11 + rows * 7 + cols);
        for (int64_t nt = 1; nt <= cpu::kGemvMaxTokens; ++nt) {
          const std::vector<float> x = random_tokens(nt, cols, rows * 3 + cols + nt);
          for (int level = 1; level <= top; ++level) {
            std::vector<float> y(nt * rows, -1.0f);
            REQUIRE(cpu::dense_gemv(w.view, x.data(), nt, y.data(), level));
            std::ostringstream what;
            what << name(dt) << " level " << level << " rows=" << rows << " cols=" << cols << " nt=" << nt;
            require_reference_product(w, x, nt, y, what.str());
          }
        }
      }
    }
  }
}
