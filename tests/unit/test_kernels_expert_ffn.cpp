// Routed-expert kernels on the packed layout: pack/unpack, every ISA path on this CPU against an
// independent double-precision reference built from the unpacked weights, the quantisation error
// against the original fp32 weights, ISA paths against each other, experts_ffn against single
// expert_ffn calls, and the oneDNN prefill path against the decode path.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cpu_kernels/expert_ffn.h"
#include "cpu_kernels/expert_ffn_internal.h"
#include "cpu_kernels/ops.h"
#include "runtime/core/dtype.h"

using namespace mt;
using namespace mt::cpu;

namespace {

// 4096-aligned blob, as the expert cache hands them out.
struct Blob {
  uint8_t* p = nullptr;
  size_t n = 0;
  explicit Blob(size_t bytes)
      : p(static_cast<uint8_t*>(std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096))), n(bytes) {}
  ~Blob() { std::free(p); }
  Blob(const Blob&) = delete;
  Blob& operator=(const Blob&) = delete;
};

struct Weights {
  std::vector<float> gate, up, down;
};

Weights random_weights(int64_t H, int64_t I, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  Weights w;
  w.gate.resize(static_cast<size_t>(I * H));
  w.up.resize(static_cast<size_t>(I * H));
  w.down.resize(static_cast<size_t>(H * I));
  const float sg = 1.0f / std::sqrt(static_cast<float>(H)), sd = 1.0f / std::sqrt(static_cast<float>(I));
  for (auto& v : w.gate) v = nd(rng) * sg * 2.0f;
  for (auto& v : w.up) v = nd(rng) * sg;
  for (auto& v : w.down) v = nd(rng) * sd;
  return w;
}

// Cheap uniform weights for the full-size shape (44M values).
Weights fast_weights(int64_t H, int64_t I, uint32_t seed) {
  Weights w;
  w.gate.resize(static_cast<size_t>(I * H));
  w.up.resize(static_cast<size_t>(I * H));
  w.down.resize(static_cast<size_t>(H * I));
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  auto next = [&] {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<float>(static_cast<int32_t>(s >> 32)) * (1.0f / 2147483648.0f);  // [-1, 1)
  };
  const float sg = 3.0f / std::sqrt(static_cast<float>(H)), sd = 1.7f / std::sqrt(static_cast<float>(I));
  for (auto& v : w.gate) v = next() * sg;
  for (auto& v : w.up) v = next() * sg;
  for (auto& v : w.down) v = next() * sd;
  return w;
}

std::vector<float> random_vec(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, scale);
  std::vector<float> v(n);
  for (auto& e : v) e = nd(rng);
  return v;
}

// ---- independent reference (double) ----

double silu_d(double g) { return g / (1.0 + std::exp(-g)); }

// Documented activation quantisation (docs/kernels.md): per group of `group` values
// d = max|x| / 127, q = round-half-even(x * (127 / max|x|)) in [-127, 127]; the kernels see q * d.
std::vector<double> act_quant(const std::vector<double>& x, int64_t group) {
  std::vector<double> out(x.size());
  for (size_t g0 = 0; g0 < x.size(); g0 += static_cast<size_t>(group)) {
    float am = 0.0f;
    for (size_t k = g0; k < g0 + group; ++k) am = std::max(am, std::fabs(static_cast<float>(x[k])));
    const float d = am / 127.0f, inv = am > 0.0f ? 127.0f / am : 0.0f;
    for (size_t k = g0; k < g0 + group; ++k) {
      const float q = std::clamp(std::nearbyint(static_cast<float>(x[k]) * inv), -127.0f, 127.0f);
      out[k] = static_cast<double>(q) * static_cast<double>(d);
    }
  }
  return out;
}
std::vector<double> act_bf16(const std::vector<double>& x) {
  std::vector<double> out(x.size());
  for (size_t k = 0; k < x.size(); ++k) out[k] = bf16_to_f32(f32_to_bf16(static_cast<float>(x[k])));
  return out;
}

enum class ActMode { Exact, AsKernel };

// y[t] += w[t] * down(silu(gate x) * up x) with the given fp32 weights, in double. AsKernel applies
// the documented activation rounding of the quantisation `q` to x and to the intermediate.
void reference_ffn(const ExpertGeometry& g, const Weights& w, const float* x, int64_t n, const float* wt, double* y,
                   ActMode mode) {
  const int64_t H = g.hidden, I = g.inter;
  auto prep = [&](std::vector<double> v) {
    if (mode == ActMode::Exact) return v;
    return g.quant == ExpertQuant::BF16 ? act_bf16(v) : act_quant(v, g.group);
  };
  for (int64_t t = 0; t < n; ++t) {
    const std::vector<double> xa = prep(std::vector<double>(x + t * H, x + (t + 1) * H));
    std::vector<double> h(static_cast<size_t>(I));
    for (int64_t r = 0; r < I; ++r) {
      double sg = 0, su = 0;
      for (int64_t k = 0; k < H; ++k) {
        sg += static_cast<double>(w.gate[r * H + k]) * xa[k];
        su += static_cast<double>(w.up[r * H + k]) * xa[k];
      }
      h[r] = silu_d(sg) * su;
    }
    const std::vector<double> ha = prep(h);
    for (int64_t r = 0; r < H; ++r) {
      double s = 0;
      for (int64_t k = 0; k < I; ++k) s += static_cast<double>(w.down[r * I + k]) * ha[k];
      y[t * H + r] += static_cast<double>(wt[t]) * s;
    }
  }
}

// fp32 reference through the library's reference operators (ops.h): matmul + silu_mul.
std::vector<float> reference_ops(const ExpertGeometry& g, const Weights& w, const float* x, int64_t n,
                                 const float* wt) {
  const int64_t H = g.hidden, I = g.inter;
  auto view = [](const std::vector<float>& m, int64_t rows, int64_t cols) {
    WeightView v;
    v.dtype = DType::F32;
    v.data = reinterpret_cast<const uint8_t*>(m.data());
    v.rows = rows;
    v.cols = cols;
    return v;
  };
  std::vector<float> gt(static_cast<size_t>(n * I)), ut(gt.size()), ht(gt.size()), o(static_cast<size_t>(n * H));
  matmul(view(w.gate, I, H), x, n, gt.data());
  matmul(view(w.up, I, H), x, n, ut.data());
  silu_mul(gt.data(), ut.data(), ht.data(), n * I);
  matmul(view(w.down, H, I), ht.data(), n, o.data());
  std::vector<float> y(o.size(), 0.0f);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t r = 0; r < H; ++r) y[t * H + r] = wt[t] * o[t * H + r];
  return y;
}

template <typename A, typename B>
double rel_err(const A& y, const B& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = static_cast<double>(y[i]) - static_cast<double>(ref[i]);
    num += d * d;
    den += static_cast<double>(ref[i]) * static_cast<double>(ref[i]);
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// Cheap in hot loops: Catch's machinery (and the context message) only runs on failure.
#define REQUIRE_Q(cond, ctx) \
  do {                       \
    if (!(cond)) {           \
      INFO(ctx);             \
      REQUIRE(cond);         \
    }                        \
  } while (0)

std::vector<int> isa_levels() {
  std::vector<int> v;
  for (int l = 0; l <= expert_detail::cpu_isa_level(); ++l) v.push_back(l);
  return v;
}

const char* isa_name(int l) { return l == 0 ? "scalar" : l == 1 ? "avx2" : "avx512"; }

struct Packed {
  ExpertGeometry g;
  Weights w;  // original fp32
  Weights u;  // unpacked
  Blob blob;
  Packed(const ExpertGeometry& geo, Weights orig)
      : g(geo), w(std::move(orig)), blob(expert_blob_layout(geo).total_bytes) {
    pack_expert(g, w.gate.data(), w.up.data(), w.down.data(), blob.p);
    u.gate.resize(w.gate.size());
    u.up.resize(w.up.size());
    u.down.resize(w.down.size());
    unpack_expert(g, blob.p, u.gate.data(), u.up.data(), u.down.data());
  }
};

// Small shapes: hidden/inter multiples of the group but not of 64/128 (and for group 8 not even of
// the 16-row tile, so padded rows are exercised).
struct Shape {
  int64_t group, hidden, inter;
};
const Shape kShapes[] = {{32, 96, 160}, {64, 192, 320}, {128, 384, 640}, {8, 40, 24}};

}  // namespace

TEST_CASE("expert quant names and geometry checks", "[kernels][expert]") {
  ExpertQuant q{};
  for (auto qq : {ExpertQuant::Q4, ExpertQuant::Q8, ExpertQuant::BF16}) {
    REQUIRE(expert_quant_from_name(expert_quant_name(qq), q));
    REQUIRE(q == qq);
  }
  REQUIRE_FALSE(expert_quant_from_name("q5", q));
  std::string why;
  REQUIRE(expert_geometry_valid({ExpertQuant::Q4, 7168, 2048, 32}, &why));
  REQUIRE_FALSE(expert_geometry_valid({ExpertQuant::Q4, 96, 160, 64}, &why));  // 64 does not divide 96
  REQUIRE(why.find("divide") != std::string::npos);
  REQUIRE_FALSE(expert_geometry_valid({ExpertQuant::Q8, 96, 160, 12}, &why));  // not a multiple of 8
  REQUIRE_FALSE(expert_geometry_valid({ExpertQuant::Q4, 0, 160, 32}, &why));
  REQUIRE(expert_geometry_valid({ExpertQuant::BF16, 96, 168, 0}, &why));
  REQUIRE_THROWS(expert_blob_layout({ExpertQuant::Q4, 96, 160, 64}));
}

TEST_CASE("expert blob layout covers the blob and is padded to 4096", "[kernels][expert]") {
  for (auto q : {ExpertQuant::Q4, ExpertQuant::Q8, ExpertQuant::BF16})
    for (const Shape& s : kShapes) {
      const ExpertGeometry g{q, s.hidden, s.inter, s.group};
      const ExpertBlobLayout L = expert_blob_layout(g);
      INFO(expert_quant_name(q) << " g" << s.group << " " << s.hidden << "x" << s.inter);
      REQUIRE(L.total_bytes % 4096 == 0);
      REQUIRE(L.gate_offset == 0);
      REQUIRE(L.up_offset == L.gate_offset + L.gate_bytes);
      REQUIRE(L.down_offset == L.up_offset + L.up_bytes);
      REQUIRE(L.down_offset + L.down_bytes <= L.total_bytes);
      REQUIRE(L.total_bytes - (L.down_offset + L.down_bytes) < 4096);
      REQUIRE(L.up_offset % 64 == 0);
      REQUIRE(L.down_offset % 64 == 0);
      // Sizes as the header states them (rows padded to the 16-row tile, 64-byte aligned parts).
      const auto rp = [](int64_t r) { return static_cast<size_t>((r + 15) / 16 * 16); };
      const auto r64 = [](size_t v) { return (v + 63) / 64 * 64; };
      const size_t I = static_cast<size_t>(s.inter), H = static_cast<size_t>(s.hidden);
      const size_t G = static_cast<size_t>(s.group);
      if (q == ExpertQuant::Q4) {
        REQUIRE(L.gate_bytes == r64(rp(s.inter) * H / 2) + r64(rp(s.inter) * H / G * 2));
        REQUIRE(L.down_bytes == r64(rp(s.hidden) * I / 2) + r64(rp(s.hidden) * I / G * 2));
      } else if (q == ExpertQuant::Q8) {
        REQUIRE(L.gate_bytes == r64(rp(s.inter) * H) + r64(rp(s.inter) * H / G * 4));
      } else {
        REQUIRE(L.gate_bytes == r64(rp(s.inter) * H * 2));
      }
    }
  // The real shape: q4-g32 blob = 3 * 7168 * 2048 * (1/2 + 2/32) bytes, rounded to 4096.
  const ExpertBlobLayout L = expert_blob_layout({ExpertQuant::Q4, 7168, 2048, 32});
  REQUIRE(L.total_bytes == (size_t{3} * 7168 * 2048 * 9 / 16 + 4095) / 4096 * 4096);
}

TEST_CASE("expert pack -> unpack: exact for bf16 values, within half a step for q8/q4", "[kernels][expert]") {
  for (const Shape& s : kShapes) {
    const int64_t H = s.hidden, I = s.inter;
    // BF16: inputs already bf16-representable come back bit-exact.
    {
      Weights w = random_weights(H, I, 11);
      for (auto* m : {&w.gate, &w.up, &w.down})
        for (auto& v : *m) v = bf16_to_f32(f32_to_bf16(v));
      Packed p({ExpertQuant::BF16, H, I, s.group}, w);
      REQUIRE(std::memcmp(p.u.gate.data(), w.gate.data(), w.gate.size() * 4) == 0);
      REQUIRE(std::memcmp(p.u.up.data(), w.up.data(), w.up.size() * 4) == 0);
      REQUIRE(std::memcmp(p.u.down.data(), w.down.data(), w.down.size() * 4) == 0);
      // Padding past the matrices is zero.
      const ExpertBlobLayout L = expert_blob_layout(p.g);
      for (size_t i = L.down_offset + L.down_bytes; i < L.total_bytes; ++i) REQUIRE(p.blob.p[i] == 0);
    }
    for (auto q : {ExpertQuant::Q8, ExpertQuant::Q4}) {
      Weights w = random_weights(H, I, 12);
      Packed p({q, H, I, s.group}, w);
      INFO(expert_quant_name(q) << " g" << s.group);
      auto check = [&](const std::vector<float>& orig, const std::vector<float>& un, int64_t rows, int64_t cols) {
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t g0 = 0; g0 < cols; g0 += s.group) {
            float am = 0, m = 0;
            for (int64_t k = g0; k < g0 + s.group; ++k)
              if (std::fabs(orig[r * cols + k]) > am) {
                am = std::fabs(orig[r * cols + k]);
                m = orig[r * cols + k];
              }
            // Q8: d = max|w| / 127, codes -127..127. Q4: d = fp16(m / -8) for the value m of largest
            // magnitude, codes -8..7, so the values of m's sign reach code -8 and the others are
            // clamped at code 7 beyond 7.5 |d|.
            const double d = q == ExpertQuant::Q8 ? am / 127.0 : f16_to_f32(f32_to_f16(m / -8.0f));
            for (int64_t k = g0; k < g0 + s.group; ++k) {
              const double wv = orig[r * cols + k], uv = un[r * cols + k];
              const double code = d != 0 ? uv / d : 0;
              REQUIRE_Q(std::fabs(code - std::nearbyint(code)) < 1e-3, "unpacked value is code * d");
              const double lim = q == ExpertQuant::Q8 ? 127.5 : 8.5;
              const bool in_range = code >= -lim && code <= (q == ExpertQuant::Q8 ? 127.5 : 7.5);
              REQUIRE_Q(in_range, "code range");
              const double e = std::fabs(wv - uv);
              const bool clamped = q == ExpertQuant::Q4 && d != 0 && wv / d > 7.5;
              const double bound =
                  (clamped ? std::fabs(wv) - 7.0 * std::fabs(d) : 0.5 * std::fabs(d)) * (1 + 1e-5) + 1e-12;
              REQUIRE_Q(e <= bound, "row " << r << " k " << k << " w " << wv << " err " << e << " bound " << bound);
            }
          }
      };
      check(w.gate, p.u.gate, I, H);
      check(w.up, p.u.up, I, H);
      check(w.down, p.u.down, H, I);
    }
  }
}

TEST_CASE("expert_ffn decode matches the reference from the unpacked weights on every ISA path", "[kernels][expert]") {
  double max_act[3] = {0, 0, 0}, max_kernel = 0;
  for (int level : isa_levels()) {
    const ExpertKernelConfig cfg{level, -1};
    REQUIRE(expert_kernel_isa(cfg) == std::string_view(level == 0 ? "scalar" : level == 1 ? "avx2" : "avx512-vnni"));
    for (auto q : {ExpertQuant::Q4, ExpertQuant::Q8, ExpertQuant::BF16})
      for (const Shape& s : kShapes)
        for (int64_t n : {1, 3, 6}) {
          const ExpertGeometry g{q, s.hidden, s.inter, s.group};
          Packed p(g, random_weights(s.hidden, s.inter, 100 + static_cast<uint32_t>(s.group)));
          const std::vector<float> x = random_vec(static_cast<size_t>(n * s.hidden), 7 + n);
          const std::vector<float> wt = random_vec(static_cast<size_t>(n), 9, 0.5f);
          std::vector<float> y0 = random_vec(x.size(), 3);  // accumulates into existing y
          std::vector<float> y = y0;
          expert_ffn_decode(g, p.blob.p, x.data(), n, wt.data(), y.data(), cfg);
          std::vector<double> ref(y0.begin(), y0.end()), ref_exact(y0.begin(), y0.end());
          reference_ffn(g, p.u, x.data(), n, wt.data(), ref.data(), ActMode::AsKernel);
          reference_ffn(g, p.u, x.data(), n, wt.data(), ref_exact.data(), ActMode::Exact);
          std::vector<double> dy(y.size()), dref(y.size()), dexact(y.size());
          for (size_t i = 0; i < y.size(); ++i) {
            dy[i] = y[i] - y0[i];
            dref[i] = ref[i] - y0[i];
            dexact[i] = ref_exact[i] - y0[i];
          }
          const double e_kernel = rel_err(dy, dref), e_act = rel_err(dy, dexact);
          INFO(isa_name(level) << " " << expert_quant_name(q) << " g" << s.group << " " << s.hidden << "x" << s.inter
                               << " n=" << n << " err vs as-kernel ref " << e_kernel << ", vs exact-activation ref "
                               << e_act);
          // Exact up to fp32 accumulation order, and the odd h element whose re-quantisation flips by one
          // step because the kernel's fp32 h differs from the reference's double h (~2e-4 at most).
          REQUIRE(e_kernel < 1e-3);
          // Rounding the activations (int8 per group, or bf16) against exact activations.
          REQUIRE(e_act < (q == ExpertQuant::BF16 ? 0.01 : 0.05));
          max_act[static_cast<int>(q) - 1] = std::max(max_act[static_cast<int>(q) - 1], e_act);
          max_kernel = std::max(max_kernel, e_kernel);
        }
  }
  std::printf("expert decode vs reference on unpacked weights: max err %.2e (as-kernel activations); "
              "activation rounding: q4 %.4f q8 %.4f bf16 %.4f\n", max_kernel, max_act[0], max_act[1], max_act[2]);
}

TEST_CASE("expert_ffn at the real shape 7168 x 2048 (q4, group 32)", "[kernels][expert]") {
  const ExpertGeometry g{ExpertQuant::Q4, 7168, 2048, 32};
  Packed p(g, fast_weights(g.hidden, g.inter, 5));
  const int64_t n = 2;
  const std::vector<float> x = random_vec(static_cast<size_t>(n * g.hidden), 21);
  const float wt[2] = {0.7f, -0.3f};
  std::vector<double> ref(x.size(), 0.0);
  reference_ffn(g, p.u, x.data(), n, wt, ref.data(), ActMode::AsKernel);
  std::vector<float> yq;
  for (int level : isa_levels()) {
    const ExpertKernelConfig cfg{level, -1};
    std::vector<float> y(x.size(), 0.0f);
    expert_ffn_decode(g, p.blob.p, x.data(), n, wt, y.data(), cfg);
    const double e = rel_err(y, ref);
    INFO(isa_name(level) << " err " << e);
    REQUIRE(e < 1e-3);
    if (yq.empty()) yq = y;
    else REQUIRE(rel_err(y, yq) < 5e-4);
  }
  // Quantisation error of the packed expert against the fp32 weights, at the real shape.
  const std::vector<float> yo = reference_ops(g, p.w, x.data(), n, wt);
  const double eq = rel_err(yq, yo);
  std::printf("expert q4-g32 7168x2048: rel err vs fp32 weights %.4f\n", eq);
  REQUIRE(eq < 0.15);
}

TEST_CASE("expert quantisation error against the original fp32 weights", "[kernels][expert]") {
  // ||y - y_ref|| / ||y_ref||, y_ref from the fp32 weights and fp32 activations through ops.h;
  // bounds are the measured values (docs/kernels.md) with margin.
  const int64_t H = 512, I = 256, n = 4;
  const Weights w = random_weights(H, I, 77);
  const std::vector<float> x = random_vec(static_cast<size_t>(n * H), 78);
  const std::vector<float> wt = {1.0f, 0.5f, -0.25f, 2.0f};
  struct Case {
    ExpertQuant q;
    int64_t group;
    double bound;
  };
  for (const Case& c : {Case{ExpertQuant::BF16, 32, 0.01}, Case{ExpertQuant::Q8, 32, 0.025},
                        Case{ExpertQuant::Q8, 64, 0.028}, Case{ExpertQuant::Q8, 128, 0.032},
                        Case{ExpertQuant::Q4, 32, 0.16}, Case{ExpertQuant::Q4, 64, 0.19},
                        Case{ExpertQuant::Q4, 128, 0.22}}) {
    const ExpertGeometry g{c.q, H, I, c.group};
    Packed p(g, w);
    const std::vector<float> yref = reference_ops(g, w, x.data(), n, wt.data());
    std::vector<float> y(yref.size(), 0.0f);
    expert_ffn_decode(g, p.blob.p, x.data(), n, wt.data(), y.data());
    const double e = rel_err(y, yref);
    std::printf("expert %s-g%lld %lldx%lld: rel err vs fp32 weights %.4f (bound %.3f)\n",
                std::string(expert_quant_name(c.q)).c_str(), static_cast<long long>(c.group),
                static_cast<long long>(H), static_cast<long long>(I), e, c.bound);
    INFO(expert_quant_name(c.q) << " g" << c.group << " err " << e);
    REQUIRE(e < c.bound);
    REQUIRE(e > 0.0);  // the reference is independent: some quantisation error must show
  }
}

TEST_CASE("expert ISA paths agree with the scalar path", "[kernels][expert]") {
  if (expert_detail::cpu_isa_level() == 0) SUCCEED("no SIMD path on this CPU");
  for (auto q : {ExpertQuant::Q4, ExpertQuant::Q8, ExpertQuant::BF16})
    for (const Shape& s : kShapes) {
      const ExpertGeometry g{q, s.hidden, s.inter, s.group};
      Packed p(g, random_weights(s.hidden, s.inter, 31));
      const int64_t n = 5;
      const std::vector<float> x = random_vec(static_cast<size_t>(n * s.hidden), 32);
      const std::vector<float> wt(n, 1.0f);
      std::vector<std::vector<float>> ys;
      for (int level : isa_levels()) {
        const ExpertKernelConfig cfg{level, -1};
        std::vector<float> y(x.size(), 0.0f);
        expert_ffn_decode(g, p.blob.p, x.data(), n, wt.data(), y.data(), cfg);
        ys.push_back(y);
      }
      for (size_t l = 1; l < ys.size(); ++l) {
        INFO(expert_quant_name(q) << " g" << s.group << " " << isa_name(static_cast<int>(l)) << " vs scalar");
        REQUIRE(rel_err(ys[l], ys[0]) < 1e-3);
      }
    }
}

TEST_CASE("experts_ffn equals the sum of single expert_ffn calls", "[kernels][expert]") {
  // Expert 0 takes all T tokens: at or above the bf16 prefill threshold, so both paths mix.
  const int64_t T = 20, n_exp = 5;
  for (auto q : {ExpertQuant::Q4, ExpertQuant::Q8, ExpertQuant::BF16}) {
    const ExpertGeometry g{q, 96, 160, 32};
    std::vector<std::unique_ptr<Packed>> ex;
    for (int e = 0; e < n_exp; ++e) ex.push_back(std::make_unique<Packed>(g, random_weights(96, 160, 200 + e)));
    const std::vector<float> x = random_vec(static_cast<size_t>(T * g.hidden), 41);
    std::mt19937 rng(42);
    std::vector<std::vector<int32_t>> toks(n_exp);
    std::vector<std::vector<float>> wts(n_exp);
    for (int e = 0; e < n_exp; ++e) {
      for (int32_t t = 0; t < T; ++t)
        if (rng() % 2 || e == 0) toks[e].push_back(t);
      if (e == 3) toks[e].clear();  // an expert with no tokens
      for (size_t i = 0; i < toks[e].size(); ++i) wts[e].push_back(0.1f + 0.1f * static_cast<float>(rng() % 9));
    }
    std::vector<ExpertTask> tasks;
    for (int e = 0; e < n_exp; ++e)
      tasks.push_back({ex[e]->blob.p, toks[e].data(), wts[e].data(), static_cast<int64_t>(toks[e].size())});
    for (int level : isa_levels()) {
      const ExpertKernelConfig cfg{level, -1};
      std::vector<float> y(x.size(), 0.5f), ys(x.size(), 0.5f);
      experts_ffn(g, tasks.data(), n_exp, x.data(), y.data(), cfg);
      for (int e = 0; e < n_exp; ++e) {
        const int64_t n = static_cast<int64_t>(toks[e].size());
        std::vector<float> xe(static_cast<size_t>(n * g.hidden)), ye(xe.size(), 0.0f);
        for (int64_t i = 0; i < n; ++i)
          std::copy_n(x.data() + toks[e][i] * g.hidden, g.hidden, xe.data() + i * g.hidden);
        expert_ffn(g, ex[e]->blob.p, xe.data(), n, wts[e].data(), ye.data(), cfg);
        for (int64_t i = 0; i < n; ++i)
          for (int64_t r = 0; r < g.hidden; ++r) ys[toks[e][i] * g.hidden + r] += ye[i * g.hidden + r];
      }
      INFO(expert_quant_name(q) << " " << isa_name(level));
      double maxd = 0, maxv = 0;
      for (size_t i = 0; i < y.size(); ++i) {
        maxd = std::max(maxd, static_cast<double>(std::fabs(y[i] - ys[i])));
        maxv = std::max(maxv, static_cast<double>(std::fabs(ys[i] - 0.5f)));
      }
      REQUIRE(maxv > 0.01);
      REQUIRE(maxd <= 1e-5 * maxv + 1e-6);
    }
  }
}

TEST_CASE("experts_ffn with one token per expert (decode: experts paired in lockstep)", "[kernels][expert]") {
  // 5 experts, one token each (tokens 0, 2, 2, 1, 0): phase 1 pairs gate with up, phase 2 pairs
  // experts (0,1), (2,3) and runs expert 4 alone.
  for (auto q : {ExpertQuant::Q4, ExpertQuant::Q8, ExpertQuant::BF16})
    for (const Shape& sh : {kShapes[0], kShapes[3]}) {
      const ExpertGeometry g{q, sh.hidden, sh.inter, sh.group};
      const int64_t T = 3;
      std::vector<std::unique_ptr<Packed>> ex;
      for (int e = 0; e < 5; ++e)
        ex.push_back(std::make_unique<Packed>(g, random_weights(sh.hidden, sh.inter, 300 + e)));
      const std::vector<float> x = random_vec(static_cast<size_t>(T * g.hidden), 71);
      const int32_t toks[5] = {0, 2, 2, 1, 0};
      const float wts[5] = {0.5f, 0.25f, 1.0f, -0.5f, 0.125f};
      std::vector<ExpertTask> tasks;
      for (int e = 0; e < 5; ++e) tasks.push_back({ex[e]->blob.p, &toks[e], &wts[e], 1});
      for (int level : isa_levels()) {
        const ExpertKernelConfig cfg{level, -1};
        std::vector<float> y(x.size(), 0.0f);
        experts_ffn(g, tasks.data(), 5, x.data(), y.data(), cfg);
        std::vector<double> ref(x.size(), 0.0);
        for (int e = 0; e < 5; ++e) {
          std::vector<double> r1(static_cast<size_t>(g.hidden), 0.0);
          reference_ffn(g, ex[e]->u, x.data() + toks[e] * g.hidden, 1, &wts[e], r1.data(), ActMode::AsKernel);
          for (int64_t r = 0; r < g.hidden; ++r) ref[toks[e] * g.hidden + r] += r1[r];
        }
        INFO(isa_name(level) << " " << expert_quant_name(q) << " g" << sh.group);
        REQUIRE(rel_err(y, ref) < 1e-3);
      }
    }
}

TEST_CASE("expert prefill path (oneDNN) equals the decode path", "[kernels][expert]") {
  for (auto q : {ExpertQuant::Q4, ExpertQuant::Q8, ExpertQuant::BF16})
    for (const Shape& s : {kShapes[0], kShapes[3]}) {
      const ExpertGeometry g{q, s.hidden, s.inter, s.group};
      Packed p(g, random_weights(s.hidden, s.inter, 51));
      const int64_t n = 40;
      const std::vector<float> x = random_vec(static_cast<size_t>(n * s.hidden), 52);
      const std::vector<float> wt = random_vec(static_cast<size_t>(n), 53);
      std::vector<float> yd(x.size(), 0.0f), yp(x.size(), 0.0f);
      expert_ffn_decode(g, p.blob.p, x.data(), n, wt.data(), yd.data());
      expert_ffn_prefill(g, p.blob.p, x.data(), n, wt.data(), yp.data());
      std::vector<double> ref(x.size(), 0.0);
      reference_ffn(g, p.u, x.data(), n, wt.data(), ref.data(), ActMode::Exact);
      const double e_pd = rel_err(yp, yd), e_pref = rel_err(yp, ref);
      INFO(expert_quant_name(q) << " g" << s.group << " prefill vs decode " << e_pd << ", prefill vs exact " << e_pref);
      // The two differ by the decode path's activation rounding (and bf16 rounding where oneDNN runs bf16).
      REQUIRE(e_pd < 0.02);
      REQUIRE(e_pref < 0.02);
      // The dispatching entry point takes the prefill path from the threshold on.
      if (expert_detail::prefill_min_tokens(q, {}) > 0) {
        const int64_t nt = expert_detail::prefill_min_tokens(q, {});
        const std::vector<float> xb = random_vec(static_cast<size_t>(nt * s.hidden), 54);
        const std::vector<float> wb(static_cast<size_t>(nt), 1.0f);
        std::vector<float> y1(xb.size(), 0.0f), y2(xb.size(), 0.0f);
        expert_ffn(g, p.blob.p, xb.data(), nt, wb.data(), y1.data());
        expert_ffn_prefill(g, p.blob.p, xb.data(), nt, wb.data(), y2.data());
        REQUIRE(rel_err(y1, y2) == 0.0);
      }
    }
}

TEST_CASE("expert helper kernels agree across ISA paths: dequantisation, activation quantisation, SiLU",
          "[kernels][expert]") {
  using namespace expert_detail;
  for (auto q : {ExpertQuant::Q4, ExpertQuant::Q8, ExpertQuant::BF16})
    for (const Shape& s : kShapes) {
      const ExpertGeometry g{q, s.hidden, s.inter, s.group};
      Packed p(g, random_weights(s.hidden, s.inter, 61));
      for (int which = 0; which < 3; ++which) {
        const PackedMat m = packed_matrix(g, p.blob.p, which);
        const std::vector<float>& ref = which == 0 ? p.u.gate : which == 1 ? p.u.up : p.u.down;
        std::vector<float> out(static_cast<size_t>(kRowTile * m.cols));
        for (int level : isa_levels()) {
          const KernelSet& ks = level == 0 ? kernels_scalar() : level == 1 ? kernels_avx2() : kernels_avx512();
          for (int64_t t = 0; t < m.tiles(); ++t) {
            ks.dequant_tile(m, t, out.data());
            for (int64_t r = 0; r < kRowTile && t * kRowTile + r < m.rows; ++r)
              REQUIRE_Q(std::memcmp(out.data() + r * m.cols, ref.data() + (t * kRowTile + r) * m.cols, m.cols * 4) == 0,
                        isa_name(level) << " " << expert_quant_name(q) << " matrix " << which << " row "
                                        << t * kRowTile + r);
          }
        }
      }
    }
  // Activation quantisation: bit-identical on every path, and as documented.
  for (int64_t group : {8, 32, 128}) {
    const int64_t K = 384;
    std::vector<float> x = random_vec(static_cast<size_t>(K), 62);
    x[5] = 0.0f;
    for (int64_t k = 0; k < group; ++k) x[static_cast<size_t>(group + k)] = 0.0f;  // an all-zero group
    x[static_cast<size_t>(2 * group)] = 127.0f;                                    // exact halves: 0.5, 1.5, 2.5
    x[static_cast<size_t>(2 * group + 1)] = 0.5f;
    x[static_cast<size_t>(2 * group + 2)] = 1.5f;
    x[static_cast<size_t>(2 * group + 3)] = -2.5f;
    const int64_t G = K / group;
    std::vector<int8_t> q0(K), q1(K);
    std::vector<float> d0(G), d1(G);
    std::vector<int32_t> o0(G), o1(G);
    kernels_scalar().quant_act(x.data(), K, group, 8, q0.data(), d0.data(), o0.data());
    REQUIRE(q0[static_cast<size_t>(2 * group + 1)] == 0);   // 0.5 -> 0 (half to even)
    REQUIRE(q0[static_cast<size_t>(2 * group + 2)] == 2);   // 1.5 -> 2
    REQUIRE(q0[static_cast<size_t>(2 * group + 3)] == -2);  // -2.5 -> -2
    REQUIRE(d0[1] == 0.0f);
    for (int64_t gi = 0; gi < G; ++gi) {
      int32_t sum = 0;
      float am = 0;
      for (int64_t k = gi * group; k < (gi + 1) * group; ++k) {
        sum += q0[static_cast<size_t>(k)];
        am = std::max(am, std::fabs(x[static_cast<size_t>(k)]));
      }
      REQUIRE(o0[static_cast<size_t>(gi)] == 8 * sum);
      REQUIRE(d0[static_cast<size_t>(gi)] == am / 127.0f);
    }
    for (int level : isa_levels()) {
      if (level == 0) continue;
      const KernelSet& ks = level == 1 ? kernels_avx2() : kernels_avx512();
      ks.quant_act(x.data(), K, group, 8, q1.data(), d1.data(), o1.data());
      REQUIRE(q1 == q0);
      REQUIRE(d1 == d0);
      REQUIRE(o1 == o0);
    }
  }
  // SiLU * up against double.
  const std::vector<float> gv = random_vec(1001, 63, 6.0f), uv = random_vec(1001, 64);
  std::vector<float> hv(gv.size());
  for (int level : isa_levels()) {
    const KernelSet& ks = level == 0 ? kernels_scalar() : level == 1 ? kernels_avx2() : kernels_avx512();
    ks.silu_mul(gv.data(), uv.data(), hv.data(), static_cast<int64_t>(gv.size()));
    for (size_t i = 0; i < gv.size(); ++i) {
      const double want = silu_d(gv[i]) * uv[i];
      REQUIRE_Q(std::fabs(hv[i] - want) <= 1e-6 * std::fabs(want) + 1e-30, isa_name(level) << " i=" << i);
    }
  }
}

TEST_CASE("a reused workspace gives the same results as a fresh one, and stops growing once warm", "[kernels][expert]") {
  const ExpertGeometry g{ExpertQuant::Q4, 96, 160, 32};
  std::vector<std::unique_ptr<Packed>> ex;
  for (int e = 0; e < 3; ++e) ex.push_back(std::make_unique<Packed>(g, random_weights(96, 160, 300 + e)));
  for (int level : isa_levels()) {
    const ExpertKernelConfig cfg{level, 0};  // decode path only: the workspace is its scratch
    ExpertWorkspace ws;
    size_t warm = 0;
    // Calls of different sizes through one workspace, each checked against a fresh workspace.
    for (int64_t T : {1, 7, 3, 7, 1, 7}) {
      const std::vector<float> x = random_vec(static_cast<size_t>(T * g.hidden), 50 + static_cast<uint32_t>(T));
      std::vector<int32_t> tok(static_cast<size_t>(T));
      std::iota(tok.begin(), tok.end(), 0);
      std::vector<float> w(static_cast<size_t>(T), 0.7f);
      std::vector<ExpertTask> tasks;
      for (auto& e : ex) tasks.push_back({e->blob.p, tok.data(), w.data(), T});
      std::vector<float> y1(x.size(), 0.0f), y2(x.size(), 0.0f);
      experts_ffn(g, tasks.data(), 3, x.data(), y1.data(), cfg, &ws);
      experts_ffn(g, tasks.data(), 3, x.data(), y2.data(), cfg, nullptr);
      INFO(isa_name(level) << " T=" << T);
      REQUIRE(y1 == y2);
      if (T == 7) {
        if (warm == 0) warm = ws.bytes();
        CHECK(ws.bytes() == warm);  // the largest call seen so far: nothing more allocated
      }
    }
    CHECK(warm > 0);
  }
}
