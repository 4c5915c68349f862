// The op harness (after ggml's test-backend-ops): every op of every registered backend against
// the reference backend on random data of odd sizes, for every weight format the backend says
// it supports, with a normalised error bound per weight dtype and sentinels around every
// output. A backend added later is tested by adding it to backends_under_test().
//
// The harness is itself tested: for each op, a backend that is the reference with that one op
// broken must be caught, and named.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "cpu_kernels/cpu_backend.h"
#include "cpu_kernels/expert_ffn.h"
#include "cpu_kernels/expert_ffn_internal.h"
#include "cpu_kernels/reference_backend.h"
#include "cpu_kernels/packed_matmul.h"
#include "gpu_kernels/cuda_backend.h"
#include "gpu_kernels/gpu_probe.h"
#include "runtime/core/dtype.h"
#include "runtime/core/ggml_tiles.h"
#include "runtime/core/ggml_types.h"
#include "tests/unit/guarded_backend.h"

using namespace mt;
using namespace mt::backend;

namespace {

struct Registered {
  const char* name;
  std::function<std::unique_ptr<Backend>()> make;
};

// Every backend of this build. The reference against itself checks the harness's plumbing
// (determinism, sentinels); faster backends register here.
std::vector<Registered> backends_under_test() {
  std::vector<Registered> v = {{"reference", cpu::make_reference_backend}};
  // The fast CPU backend behind the guard that faults any touch of its activations outside
  // its ops: the harness itself keeps to the seam's memory contract.
  v.push_back({"guarded cpu", [] { return std::make_unique<test::GuardedBackend>(cpu::make_cpu_backend({})); }});
  // The fast CPU backend at every ISA level this CPU has (level 0: its scalar fallbacks).
  for (int level = 0; level <= cpu::expert_detail::cpu_isa_level(); ++level)
    v.push_back({level == 0 ? "cpu-scalar" : level == 1 ? "cpu-avx2" : "cpu-avx512",
                 [level] { return cpu::make_cpu_backend(cpu::ExpertKernelConfig{level, -1}); }});
  // The CUDA backend where there is a GPU, with each latent-cache precision.
  if (gpu::probe_gpu().available)
    for (DType cache : {DType::BF16, DType::F32, DType::F8_E4M3})
      v.push_back({cache == DType::BF16 ? "cuda (bf16 cache)" : cache == DType::F32 ? "cuda (f32 cache)" : "cuda (fp8 cache)", [cache] {
                     auto be = gpu::make_cuda_backend(cpu::make_cpu_backend({}), gpu::CudaOptions{0, cache});
                     if (!be.ok()) FAIL(be.error());
                     return std::move(*be);
                   }});
  return v;
}

constexpr float kSentinel = -7777.25f;
constexpr int64_t kGuard = 16;

// An output buffer with guard cells on both sides.
struct Guarded {
  std::vector<float> v;
  explicit Guarded(int64_t n) : v(static_cast<size_t>(n + 2 * kGuard), kSentinel) {}
  float* data() { return v.data() + kGuard; }
  int64_t size() const { return static_cast<int64_t>(v.size()) - 2 * kGuard; }
  bool guards_intact() const {
    for (int64_t i = 0; i < kGuard; ++i)
      if (v[static_cast<size_t>(i)] != kSentinel || v[v.size() - 1 - static_cast<size_t>(i)] != kSentinel) return false;
    return true;
  }
  const float* begin() const { return v.data() + kGuard; }
};

// Activation memory of a backend (VRAM for a GPU backend), with guard cells on both sides, as
// the graph would hold it: filled by upload, read back by download.
struct Act {
  Backend& be;
  int64_t n;
  std::unique_ptr<ActivationBuffer> buf;
  Act(Backend& b, int64_t count, const float* init = nullptr) : be(b), n(count), buf(b.alloc_activations(count + 2 * kGuard)) {
    Guarded g(n);
    if (init) std::copy(init, init + n, g.data());
    be.upload(g.v.data(), buf->data(), n + 2 * kGuard);
  }
  Act(Backend& b, const std::vector<float>& init) : Act(b, static_cast<int64_t>(init.size()), init.data()) {}
  float* data() const { return buf->data() + kGuard; }
  Guarded read() const {
    Guarded g(n);
    be.download(buf->data(), g.v.data(), n + 2 * kGuard);
    return g;
  }
};

double tolerance(DType weights) {
  switch (weights) {
    case DType::F32: return 1e-5;
    case DType::BF16:
    case DType::F16: return 4e-3;   // a backend may round activations to the weights' precision
    case DType::F8_E4M3: return 3e-2;
    case DType::Q4_PACKED:
    case DType::Q8_PACKED: return 1e-2;  // a backend may quantise activations to int8 per group (seen: 6.6e-3)
    default: return 1e-5;
  }
}

// max |a - b| / max |a| (1 when a is all zero and b is not).
double normalised_error(const float* a, const float* b, int64_t n) {
  double diff = 0, scale = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(b[i])) return INFINITY;
    diff = std::max(diff, std::fabs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::fabs(double(a[i])));
  }
  return scale > 0 ? diff / scale : (diff > 0 ? 1.0 : 0.0);
}

// A weight matrix stored as `dt`, from random values.
struct StoredWeight {
  std::vector<uint8_t> data;
  std::vector<float> scale;
  WeightView view;
  StoredWeight(DType dt, int64_t rows, int64_t cols, std::mt19937& rng) {
    std::normal_distribution<float> nd(0.0f, 1.0f);
    const int64_t block = 16;
    const size_t n = static_cast<size_t>(rows * cols);
    if (is_packed(dt)) {  // the packed layout, group 32, from random fp32 values
      std::vector<float> w(n);
      for (float& v : w) v = nd(rng);
      data.resize(cpu::packed_weight_bytes(dt, rows, cols, 32));
      cpu::pack_weight(dt, w.data(), rows, cols, 32, data.data());
      view = WeightView{dt, data.data(), rows, cols, nullptr, 32};
      return;
    }
    data.resize(n * static_cast<size_t>(dtype_size(dt)));
    for (size_t i = 0; i < n; ++i) {
      const float x = nd(rng);
      switch (dt) {
        case DType::F32: std::memcpy(&data[i * 4], &x, 4); break;
        case DType::BF16: { const uint16_t b = f32_to_bf16(x); std::memcpy(&data[i * 2], &b, 2); break; }
        case DType::F16: { const uint16_t h = f32_to_f16(x); std::memcpy(&data[i * 2], &h, 2); break; }
        case DType::F8_E4M3: data[i] = f32_to_fp8e4m3(x * 100.0f); break;
        default: break;
      }
    }
    if (dt == DType::F8_E4M3) {
      scale.resize(static_cast<size_t>(((rows + block - 1) / block) * ((cols + block - 1) / block)));
      for (float& s : scale) s = 0.01f * (0.5f + std::uniform_real_distribution<float>(0.0f, 1.0f)(rng));
    }
    view = WeightView{dt, data.data(), rows, cols, scale.empty() ? nullptr : scale.data(), block};
  }
};

std::vector<float> randn(int64_t n, std::mt19937& rng, float sd = 1.0f) {
  std::normal_distribution<float> nd(0.0f, sd);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = nd(rng);
  return v;
}

struct Failures {
  std::vector<std::string> list;
  void check(const std::string& what, const Act& ref_act, const Act& got_act, int64_t n, double tol) {
    const Guarded r = ref_act.read();
    Guarded got = got_act.read();
    check(what, r.begin(), got, n, tol);
  }
  void check(const std::string& what, const float* ref, Guarded& got, int64_t n, double tol) {
    if (!got.guards_intact()) list.push_back(what + ": wrote outside its output");
    const double err = normalised_error(ref, got.begin(), n);
    if (!(err <= tol)) list.push_back(what + ": normalised error " + std::to_string(err) + " > " + std::to_string(tol));
  }
  bool names(const std::string& op) const {
    return std::any_of(list.begin(), list.end(), [&](const std::string& s) { return s.find(op) != std::string::npos; });
  }
};

// Three packed experts of an odd-ish shape over T tokens (5: decode-sized tasks; more: tasks
// large enough for a backend's prefill path), one with no tokens, one with all.
struct ExpertProblem {
  ExpertGeometry g;
  int64_t T = 5;
  std::vector<std::vector<uint8_t>> blobs;
  std::vector<std::vector<int32_t>> tokens;
  std::vector<std::vector<float>> weights;
  std::vector<ExpertTask> tasks;
  std::vector<float> x;
  ExpertProblem(ExpertQuant q, std::mt19937& rng, int64_t n_tokens = 5) : g{q, 72, 40, 8}, T(n_tokens) {
    const size_t bytes = expert_blob_layout(g).total_bytes;
    tokens = {{0, 2, 3}, {}, {}};
    if (T > 5) {
      tokens[0].clear();
      for (int32_t t = 1; t < T; t += 2) tokens[0].push_back(t);
    }
    for (int32_t t = 0; t < T; ++t) tokens[2].push_back(t);
    for (size_t e = 0; e < tokens.size(); ++e) {
      auto gate = randn(g.inter * g.hidden, rng, 0.1f), up = randn(g.inter * g.hidden, rng, 0.1f),
           down = randn(g.hidden * g.inter, rng, 0.1f);
      blobs.emplace_back(bytes);
      cpu::pack_expert(g, gate.data(), up.data(), down.data(), blobs.back().data());
      std::vector<float> w;
      for (size_t i = 0; i < tokens[e].size(); ++i) w.push_back(0.25f + 0.5f * float(i));
      weights.push_back(w);
    }
    for (size_t e = 0; e < tokens.size(); ++e)
      tasks.push_back({blobs[e].data(), tokens[e].data(), weights[e].data(), static_cast<int64_t>(tokens[e].size())});
    x = randn(T * g.hidden, rng);
  }
};

constexpr DType kWeightTypes[] = {DType::F32, DType::BF16, DType::F16, DType::F8_E4M3, DType::Q4_PACKED,
                                  DType::Q8_PACKED};

// Packed weights need cols to be a multiple of their group (32): the next one up.
int64_t cols_for(DType dt, int64_t cols) { return is_packed(dt) ? (cols + 31) / 32 * 32 : cols; }

// Runs every op the candidate supports on both backends; returns what differed.
Failures compare(Backend& ref, Backend& cand, uint32_t seed) {
  Failures f;
  std::mt19937 rng(seed);
  const std::string who = std::string(cand.name()) + " ";

  for (DType dt : kWeightTypes) {
    const std::string tag = std::string(" [") + std::string(dtype_name(dt)) + "]";
    if (cand.supports(Op::Matmul, dt)) {
      // Decode sizes (1..4 tokens: a backend's GEMV) and a prefill size; 131 columns leave a
      // partial SIMD chunk and a partial scale block, 133 rows a partial row group; 157 rows
      // (9 full 16-row tiles) an odd number of tiles for kernels that split a matrix in two.
      for (const int64_t rows : {int64_t{133}, int64_t{157}}) {
        const int64_t cols = cols_for(dt, 131);
        StoredWeight w(dt, rows, cols, rng);
        // A model weight (a GPU backend copies it), and one that is not (it stays where it is).
        if (rows == 157) cand.prepare_weight(w.view);
        for (int64_t n : {1, 2, 3, 4, 5}) {
          auto x = randn(n * cols, rng);
          Act xa(ref, x), xb(cand, x), a(ref, n * rows), b(cand, n * rows);
          ref.matmul(w.view, xa.data(), n, a.data());
          cand.matmul(w.view, xb.data(), n, b.data());
          f.check(who + "matmul" + tag + " rows=" + std::to_string(rows) + " n=" + std::to_string(n), a, b, n * rows,
                  tolerance(dt));
        }
      }
    }
    if (cand.supports(Op::Matmul, dt)) {
      // A prefill-sized product (a backend's GEMM): 300 rows leave a partial 256-row slab.
      const int64_t rows = 300, cols = cols_for(dt, 520), n = 9;
      StoredWeight w(dt, rows, cols, rng);
      cand.prepare_weight(w.view);
      auto x = randn(n * cols, rng);
      Act xa(ref, x), xb(cand, x), a(ref, n * rows), b(cand, n * rows);
      ref.matmul(w.view, xa.data(), n, a.data());
      cand.matmul(w.view, xb.data(), n, b.data());
      f.check(who + "matmul" + tag + " n=9 (prefill)", a, b, n * rows, tolerance(dt));
    }
    if (cand.supports(Op::Embed, dt)) {
      const int64_t V = 29, D = cols_for(dt, 45);
      StoredWeight w(dt, V, D, rng);
      const std::vector<int32_t> ids = {3, 28, 0, 3, 17};
      const auto n = static_cast<int64_t>(ids.size());
      Act a(ref, n * D), b(cand, n * D);
      ref.embed(w.view, ids.data(), n, a.data());
      cand.embed(w.view, ids.data(), n, b.data());
      f.check(who + "embed" + tag, a, b, n * D, tolerance(dt));
    }
  }

  // GGUF block formats (DType::GGUF): decode sizes (a backend may quantise activations to 8 bits
  // per block, as the CPU backend's block GEMV does) and a prefill size; odd row counts.
  for (GgmlType gt : {GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
    if (!cand.supports(Op::Matmul, DType::GGUF)) break;
    const GgmlTypeInfo* ti = ggml_type_info(uint32_t(gt));
    const std::string tag = " [GGUF " + std::string(ti->name) + "]";
    for (const int64_t n : {1, 3, 4, 9}) {
      const int64_t rows = n == 9 ? 261 : 37, cols = ti->block * (gt == GgmlType::Q8_0 ? 9 : 3);
      std::vector<uint8_t> blocks(size_t(rows * cols / ti->block * ti->bytes));
      ggml_fill_random_blocks(uint32_t(gt), blocks.data(), rows * cols / ti->block, rng());
      WeightView w{DType::GGUF, blocks.data(), rows, cols, nullptr, 0, uint32_t(gt)};
      auto x = randn(n * cols, rng);
      Act xa(ref, x), xb(cand, x), a(ref, n * rows), b(cand, n * rows);
      ref.matmul(w, xa.data(), n, a.data());
      cand.matmul(w, xb.data(), n, b.data());
      // Random K-quant mins make rows whose terms cancel, so 8-bit activations (an error of up to
      // sum |w| d/2 per row, held exactly by test_kernels_ggml_gemv) reach ~1.6% of max |y| (seen).
      f.check(who + "matmul" + tag + " n=" + std::to_string(n), a, b, n * rows, 3e-2);
      if (n == 1 && cand.supports(Op::Embed, DType::GGUF)) {
        const std::vector<int32_t> ids = {3, 36, 0, 3};
        Act ea(ref, 4 * cols), eb(cand, 4 * cols);
        ref.embed(w, ids.data(), 4, ea.data());
        cand.embed(w, ids.data(), 4, eb.data());
        f.check(who + "embed" + tag, ea, eb, 4 * cols, 1e-6);
      }
    }
  }

  const double tol = tolerance(DType::F32);
  {
    const int64_t n = 3, dim = 67;
    auto x = randn(n * dim, rng), w = randn(dim, rng), bias = randn(dim, rng);
    Act xa(ref, x), xb(cand, x);
    // A prepared norm weight, and one used as it is (both are host vectors).
    if (seed % 2) cand.prepare_vector(w.data(), dim);
    if (cand.supports(Op::RmsNorm, DType::F32)) {
      Act a(ref, n * dim), b(cand, n * dim);
      ref.rmsnorm(xa.data(), w.data(), a.data(), n, dim, 1e-6f);
      cand.rmsnorm(xb.data(), w.data(), b.data(), n, dim, 1e-6f);
      f.check(who + "rmsnorm", a, b, n * dim, tol);
      // In place, over a row range, as the graph normalises one row of a batch.
      ref.rmsnorm(xa.data() + dim, w.data(), xa.data() + dim, 1, dim, 1e-6f);
      cand.rmsnorm(xb.data() + dim, w.data(), xb.data() + dim, 1, dim, 1e-6f);
      f.check(who + "rmsnorm in place", xa, xb, n * dim, tol);
    }
    if (cand.supports(Op::LayerNorm, DType::F32)) {
      Act a(ref, n * dim), b(cand, n * dim);
      ref.layernorm(xa.data(), w.data(), bias.data(), a.data(), n, dim, 1e-6f);
      cand.layernorm(xb.data(), w.data(), bias.data(), b.data(), n, dim, 1e-6f);
      f.check(who + "layernorm", a, b, n * dim, tol);
    }
  }
  if (cand.supports(Op::Rope, DType::F32)) {
    const int64_t n = 3, heads = 5, stride = 13, rope = 8, pos0 = 7;
    std::vector<float> inv_freq(rope / 2);
    for (int64_t i = 0; i < rope / 2; ++i) inv_freq[static_cast<size_t>(i)] = std::pow(10000.0f, -2.0f * float(i) / float(rope));
    for (RopeLayout layout : {RopeLayout::Interleaved, RopeLayout::HalfSplit}) {
      auto x = randn(n * heads * stride, rng);
      Act a(ref, x), b(cand, x);
      // Rotate dims [2, 2 + rope) of each head: the rest must stay as it was.
      ref.rope(layout, a.data() + 2, n, heads, stride, rope, pos0, inv_freq.data());
      cand.rope(layout, b.data() + 2, n, heads, stride, rope, pos0, inv_freq.data());
      f.check(who + (layout == RopeLayout::Interleaved ? "rope interleaved" : "rope half-split"), a, b,
              n * heads * stride, tol);
    }
  }
  {
    const int64_t n = 101;
    auto g = randn(n, rng, 3.0f), u = randn(n, rng);
    Act ga(ref, g), gb(cand, g), ua(ref, u), ub(cand, u);
    if (cand.supports(Op::SiluMul, DType::F32)) {
      Act a(ref, n), b(cand, n);
      ref.silu_mul(ga.data(), ua.data(), a.data(), n);
      cand.silu_mul(gb.data(), ub.data(), b.data(), n);
      f.check(who + "silu_mul", a, b, n, tol);
    }
    if (cand.supports(Op::Add, DType::F32)) {
      Act a(ref, g), b(cand, g);
      ref.add(a.data(), ua.data(), n);
      cand.add(b.data(), ub.data(), n);
      f.check(who + "add", a, b, n, tol);
    }
  }
  {
    // The graph's data movement: strided rows, zeroing.
    const int64_t rows = 5, ld_src = 23, ld_dst = 11, cols = 9;
    auto src = randn(rows * ld_src, rng), dst = randn(rows * ld_dst, rng);
    Act sa(ref, src), sb(cand, src), a(ref, dst), b(cand, dst);
    ref.copy_rows(sa.data() + 4, ld_src, a.data() + 1, ld_dst, rows, cols);
    cand.copy_rows(sb.data() + 4, ld_src, b.data() + 1, ld_dst, rows, cols);
    f.check(who + "copy_rows", a, b, rows * ld_dst, 0.0);
    ref.zero(a.data() + 3, 17);
    cand.zero(b.data() + 3, 17);
    f.check(who + "zero", a, b, rows * ld_dst, 0.0);
  }
  if (cand.supports(Op::Route, DType::F32)) {
    const RouterParams p{16, 4, 2, 4, 2.5f, true};
    const int64_t n = 7;
    auto logits = randn(n * p.n_experts, rng), bias = randn(p.n_experts, rng, 0.3f);
    std::vector<int32_t> ea(static_cast<size_t>(n * p.top_k)), eb(ea.size());
    Guarded wa(n * p.top_k), wb(n * p.top_k);  // host outputs
    Act la(ref, logits), lb(cand, logits);
    ref.route(la.data(), bias.data(), p, n, ea.data(), wa.data());
    cand.route(lb.data(), bias.data(), p, n, eb.data(), wb.data());
    if (ea != eb) f.list.push_back(who + "route: different experts");
    f.check(who + "route weights", wa.begin(), wb, n * p.top_k, tol);
  }
  if (cand.supports(Op::CacheStore, DType::F32) && cand.supports(Op::MlaAttention, DType::F32)) {
    const int64_t H = 3, layers = 2, layer = 1, pos0 = 6, n = 3;
    const MlaHeadDims d{5, 4, 7, 11};
    const CacheShape shape{layers, d.latent, d.rope, 0};
    for (DType dt : {DType::F32, DType::BF16, DType::F8_E4M3}) {
      StoredWeight kvb(dt, H * (d.nope + d.v), d.latent, rng);
      ref.load_attention_weights(layer, kvb.view, d);
      cand.load_attention_weights(layer, kvb.view, d);
      auto ca = ref.make_cache(shape, 16), cb = cand.make_cache(shape, 16);
      auto latent = randn((pos0 + n) * d.latent, rng), k_rope = randn((pos0 + n) * d.rope, rng);
      // Written in two pieces, as prefill then decode would.
      for (auto [be, c] : {std::pair{&ref, ca.get()}, std::pair{&cand, cb.get()}}) {
        Act lat(*be, latent), kr(*be, k_rope);
        be->cache_store(*c, layer, 0, pos0, lat.data(), kr.data());
        be->cache_store(*c, layer, pos0, n, lat.data() + pos0 * d.latent, kr.data() + pos0 * d.rope);
      }
      auto q = randn(n * H * (d.nope + d.rope), rng);
      Act qa(ref, q), qb(cand, q);
      const std::vector<std::vector<int32_t>> sel = {{0, 2, 6}, {1, 7}, {0, 1, 2, 3, 4, 5, 6, 7, 8}};
      for (bool sparse : {false, true}) {
        Act a(ref, n * H * d.v), b(cand, n * H * d.v);
        MlaArgs args;
        args.layer = layer;
        args.n = n;
        args.pos0 = pos0;
        args.heads = H;
        args.dims = d;
        args.scale = 0.3f;
        args.q = qa.data();
        args.selected = sparse ? &sel : nullptr;
        args.out = a.data();
        ref.mla_attention(*ca, args);
        args.q = qb.data();
        args.out = b.data();
        cand.mla_attention(*cb, args);
        // A bf16 cache rounds latents, queries and probabilities to bf16 as well; an fp8 cache
        // keeps latents to 3 mantissa bits.
        const DType cd = cand.cache_dtype();
        const double tol = std::max(tolerance(dt), cd == DType::BF16 ? 1e-2 : cd == DType::F8_E4M3 ? 8e-2 : 0.0);
        f.check(who + "cache_store+mla_attention" + (sparse ? " sparse" : " causal") + " [kv_b " + std::string(dtype_name(dt)) + "]",
                a, b, n * H * d.v, tol);
      }
    }
  }
  if (cand.supports(Op::CacheStore, DType::F32) && cand.supports(Op::IndexerTopk, DType::F32)) {
    const int64_t heads = 3, dim = 9, pos0 = 10, n = 4, top_k = 5, layer = 0;
    const CacheShape shape{1, 3, 2, dim};
    auto ca = ref.make_cache(shape, 32), cb = cand.make_cache(shape, 32);
    auto keys = randn((pos0 + n) * dim, rng);
    Act ka(ref, keys), kb(cand, keys);
    ref.cache_store_index_key(*ca, layer, 0, pos0 + n, ka.data());
    cand.cache_store_index_key(*cb, layer, 0, pos0, kb.data());
    cand.cache_store_index_key(*cb, layer, pos0, n, kb.data() + pos0 * dim);
    auto q = randn(n * heads * dim, rng), hw = randn(n * heads, rng);
    Act qa(ref, q), qb(cand, q), ha(ref, hw), hb(cand, hw);
    IndexerArgs args;
    args.layer = layer;
    args.n = n;
    args.pos0 = pos0;
    args.heads = heads;
    args.dim = dim;
    args.top_k = top_k;
    args.scale = 0.2f;
    IndexerArgs args_b = args;
    args.q = qa.data();
    args.head_weight = ha.data();
    args_b.q = qb.data();
    args_b.head_weight = hb.data();
    std::vector<std::vector<int32_t>> sa, sb;
    ref.indexer_topk(*ca, args, sa);
    cand.indexer_topk(*cb, args_b, sb);
    if (sa != sb) f.list.push_back(who + "cache_store_index_key+indexer_topk: different selections");
    // Few visible positions: every one is selected.
    args.pos0 = args_b.pos0 = 0;
    args.n = args_b.n = 2;
    ref.indexer_topk(*ca, args, sa);
    cand.indexer_topk(*cb, args_b, sb);
    if (sa != sb || sb.size() != 2 || sb[1].size() != 2) f.list.push_back(who + "indexer_topk: short contexts differ");
  }
  for (ExpertQuant q : {ExpertQuant::Q4, ExpertQuant::Q8, ExpertQuant::BF16}) {
    if (!cand.supports_experts(q)) continue;
    for (int64_t T : {5, 37}) {
      ExpertProblem p(q, rng, T);
      const std::vector<float> quarter(static_cast<size_t>(p.T * p.g.hidden), 0.25f);
      Act a(ref, quarter), b(cand, quarter), xa(ref, p.x), xb(cand, p.x);
      ref.expert_ffn(p.g, p.tasks.data(), static_cast<int64_t>(p.tasks.size()), xa.data(), a.data());
      cand.expert_ffn(p.g, p.tasks.data(), static_cast<int64_t>(p.tasks.size()), xb.data(), b.data());
      // Packed-expert kernels round activations (int8 for q4/q8, bf16 for bf16).
      f.check(who + "expert_ffn [" + std::string(expert_quant_name(q)) + "] " + std::to_string(T) + " tokens",
              a, b, p.T * p.g.hidden, q == ExpertQuant::BF16 ? 1e-2 : 3e-2);
    }
  }
  return f;
}

// The reference with one op broken, to show the harness catches it.
class Broken final : public Backend {
 public:
  Broken(std::unique_ptr<Backend> ref, Op broken) : r_(std::move(ref)), op_(broken) {}
  const char* name() const override { return "broken"; }
  bool supports(Op op, DType dt) const override { return r_->supports(op, dt); }
  void load_attention_weights(int64_t l, const WeightView& w, const MlaHeadDims& d) override { r_->load_attention_weights(l, w, d); }
  uint64_t weight_bytes() const override { return r_->weight_bytes(); }
  std::unique_ptr<AttentionCache> make_cache(const CacheShape& s, int64_t m) override { return r_->make_cache(s, m); }
  void embed(const WeightView& t, const int32_t* ids, int64_t n, float* out) override {
    r_->embed(t, ids, n, out);
    if (op_ == Op::Embed) out[n * t.cols - 1] += 0.5f;
  }
  void matmul(const WeightView& w, const float* x, int64_t n, float* y) override {
    r_->matmul(w, x, n, y);
    if (op_ == Op::Matmul) y[0] *= 1.1f;
  }
  void rmsnorm(const float* x, const float* w, float* y, int64_t n, int64_t d, float eps) override {
    r_->rmsnorm(x, w, y, n, d, op_ == Op::RmsNorm ? eps * 1e5f + 0.1f : eps);
  }
  void layernorm(const float* x, const float* w, const float* b, float* y, int64_t n, int64_t d, float eps) override {
    r_->layernorm(x, w, b, y, n, op_ == Op::LayerNorm ? d - 1 : d, eps);  // skips the last column
    if (op_ == Op::LayerNorm) y[n * d - 1] = 0.0f;
  }
  void rope(RopeLayout l, float* x, int64_t n, int64_t h, int64_t s, int64_t rd, int64_t p, const float* f) override {
    r_->rope(l, x, n, h, s, rd, op_ == Op::Rope ? p + 1 : p, f);  // off by one position
  }
  void silu_mul(const float* g, const float* u, float* out, int64_t n) override {
    r_->silu_mul(g, u, out, n);
    if (op_ == Op::SiluMul) out[n] = 1.0f;  // one past the end
  }
  void add(float* acc, const float* x, int64_t n) override { r_->add(acc, x, op_ == Op::Add ? n - 1 : n); }
  void route(const float* l, const float* b, const RouterParams& p, int64_t n, int32_t* e, float* w) override {
    r_->route(l, op_ == Op::Route ? nullptr : b, p, n, e, w);  // ignores the correction bias
  }
  void cache_store(AttentionCache& c, int64_t l, int64_t p0, int64_t n, const float* lat, const float* kr) override {
    if (op_ != Op::CacheStore) return r_->cache_store(c, l, p0, n, lat, kr);
    std::vector<float> shifted(lat, lat + n * 11);
    for (float& v : shifted) v += 0.25f;
    r_->cache_store(c, l, p0, n, shifted.data(), kr);
  }
  void cache_store_index_key(AttentionCache& c, int64_t l, int64_t p0, int64_t n, const float* k) override {
    r_->cache_store_index_key(c, l, p0, n, k);
  }
  void mla_attention(AttentionCache& c, const MlaArgs& a) override {
    MlaArgs b = a;
    if (op_ == Op::MlaAttention) b.scale *= 1.5f;
    r_->mla_attention(c, b);
  }
  void indexer_topk(AttentionCache& c, const IndexerArgs& a, std::vector<std::vector<int32_t>>& s) override {
    IndexerArgs b = a;
    if (op_ == Op::IndexerTopk) b.top_k -= 1;
    r_->indexer_topk(c, b, s);
  }
  bool supports_experts(ExpertQuant q) const override { return r_->supports_experts(q); }
  void expert_ffn(const ExpertGeometry& g, const ExpertTask* t, int64_t n, const float* x, float* y) override {
    r_->expert_ffn(g, t, op_ == Op::ExpertFfn ? n - 1 : n, x, y);  // drops the last task
  }

 private:
  std::unique_ptr<Backend> r_;
  Op op_;
};

}  // namespace

TEST_CASE("op harness: every registered backend matches the reference on every op it supports", "[backend]") {
  for (const Registered& r : backends_under_test()) {
    auto ref = cpu::make_reference_backend();
    auto cand = r.make();
    CAPTURE(r.name);
    for (uint32_t seed : {1u, 2u, 3u}) {
      const Failures f = compare(*ref, *cand, seed);
      for (const std::string& s : f.list) UNSCOPED_INFO(s);
      CHECK(f.list.empty());
      if (const auto* g = dynamic_cast<const test::GuardedBackend*>(cand.get())) {
        for (const std::string& s : g->violations()) UNSCOPED_INFO(s);
        CHECK(g->violations().empty());
      }
    }
  }
}

TEST_CASE("op harness: a backend with any one op broken is caught, and the op named", "[backend]") {
  for (Op op : kAllOps) {
    if (op == Op::CacheStore) continue;  // covered below: its breakage shows through attention
    CAPTURE(op_name(op));
    Broken broken(cpu::make_reference_backend(), op);
    auto ref = cpu::make_reference_backend();
    const Failures f = compare(*ref, broken, 7);
    CHECK_FALSE(f.list.empty());
    CHECK(f.names(op_name(op)));
  }
  Broken broken(cpu::make_reference_backend(), Op::CacheStore);
  auto ref = cpu::make_reference_backend();
  CHECK(compare(*ref, broken, 7).names("cache_store+mla_attention"));
}

TEST_CASE("reference backend: supports and counts what it derives", "[backend]") {
  auto be = cpu::make_reference_backend();
  CHECK(std::string(be->name()) == "reference");
  for (DType dt : kWeightTypes) CHECK(be->supports(Op::Matmul, dt));
  CHECK_FALSE(be->supports(Op::Matmul, DType::I32));
  std::mt19937 rng(3);
  StoredWeight kvb(DType::BF16, 3 * 12, 11, rng);
  be->load_attention_weights(0, kvb.view, MlaHeadDims{5, 4, 7, 11});
  be->load_attention_weights(2, kvb.view, MlaHeadDims{5, 4, 7, 11});
  CHECK(be->weight_bytes() == 2u * 36u * 11u * sizeof(float));
  auto cache = be->make_cache(CacheShape{4, 11, 4, 6}, 10);
  CHECK(cache->bytes() == 4u * 10u * (11u + 4u + 6u) * sizeof(float));
  CHECK(cache->max_tokens() == 10);
  CHECK(cache->size() == 0);
}

TEST_CASE("the packed-expert kernels, on every ISA, match the reference backend's expert_ffn", "[backend]") {
  auto ref = cpu::make_reference_backend();
  std::mt19937 rng(11);
  for (ExpertQuant q : {ExpertQuant::Q4, ExpertQuant::Q8, ExpertQuant::BF16}) {
    ExpertProblem p(q, rng);
    std::vector<float> a(static_cast<size_t>(p.T * p.g.hidden), 0.0f);
    ref->expert_ffn(p.g, p.tasks.data(), static_cast<int64_t>(p.tasks.size()), p.x.data(), a.data());
    for (const char* isa : {"scalar", "avx2", "avx512"}) {
      cpu::ExpertKernelConfig cfg;
      REQUIRE(cpu::isa_level_from_name(isa, cfg.isa_level));
      for (int64_t prefill_min : {int64_t{0}, int64_t{2}}) {  // the GEMV path, then oneDNN for 2+ tokens
        cfg.prefill_min = prefill_min;
        Guarded b(p.T * p.g.hidden);
        std::fill(b.data(), b.data() + b.size(), 0.0f);
        cpu::experts_ffn(p.g, p.tasks.data(), static_cast<int64_t>(p.tasks.size()), p.x.data(), b.data(), cfg);
        INFO(expert_quant_name(q) << " " << cpu::expert_kernel_isa(cfg) << " prefill_min " << prefill_min);
        CHECK(b.guards_intact());
        // The kernels round activations (int8 for q4/q8, bf16 for bf16): a normalised bound.
        const double err = normalised_error(a.data(), b.begin(), p.T * p.g.hidden);
        CHECK(err < (q == ExpertQuant::BF16 ? 1e-2 : 3e-2));
      }
    }
  }
}

namespace {

// A GGUF expert blob of blocks (g.ggml_tiles off): each matrix random blocks of its type, values
// about 0.02 (one rng() seed per matrix, in order).
std::vector<uint8_t> random_gguf_expert_blob(const ExpertGeometry& g, std::mt19937& rng) {
  const ExpertBlobLayout L = expert_blob_layout(g);
  std::vector<uint8_t> blob(L.total_bytes, 0);
  for (int m = 0; m < 3; ++m)
    ggml_fill_random_blocks(g.ggml[m], blob.data() + L.offset(m), g.hidden * g.inter / ggml_type_info(g.ggml[m])->block,
                            rng(), 0.02f);
  return blob;
}

}  // namespace

TEST_CASE("GGUF expert blobs (convert FILE.gguf): the CPU kernels at every ISA match the reference backend", "[backend]") {
  auto ref = cpu::make_reference_backend();
  std::mt19937 rng(12);
  using T = GgmlType;
  const std::vector<std::array<T, 3>> mixes = {{T::Q4_K, T::Q4_K, T::Q6_K}, {T::Q8_0, T::Q5_K, T::Q8_0},
                                                {T::Q2_K, T::Q3_K, T::Q4_K}};
  for (const auto& mix : mixes) {
    ExpertGeometry g{ExpertQuant::GGUF, 512, 256, 0};
    for (int m = 0; m < 3; ++m) g.ggml[m] = uint32_t(mix[size_t(m)]);
    const ExpertBlobLayout L = expert_blob_layout(g);
    CHECK(L.gate_bytes == (ggml_row_bytes(g.ggml[0], 512) * 256 + 63) / 64 * 64);
    CHECK(L.down_offset == L.gate_bytes + L.up_bytes);
    CHECK(L.total_bytes % 4096 == 0);
    const int64_t n_tokens = 40;  // one decode-sized task, an empty one, one past the scalar GEMV's 32 tokens
    std::vector<std::vector<int32_t>> tokens = {{0, 5, 7}, {}, {}};
    for (int32_t t = 0; t < n_tokens; ++t) tokens[2].push_back(t);
    std::vector<std::vector<uint8_t>> blobs;
    std::vector<std::vector<float>> weights;
    std::vector<ExpertTask> tasks;
    for (const auto& tk : tokens) {
      blobs.push_back(random_gguf_expert_blob(g, rng));
      weights.emplace_back();
      for (size_t i = 0; i < tk.size(); ++i) weights.back().push_back(0.3f + 0.2f * float(i));
    }
    for (size_t e = 0; e < tokens.size(); ++e)
      tasks.push_back({blobs[e].data(), tokens[e].data(), weights[e].data(), int64_t(tokens[e].size())});
    const auto x = randn(n_tokens * g.hidden, rng);
    std::vector<float> a(size_t(n_tokens * g.hidden), 0.0f);
    ref->expert_ffn(g, tasks.data(), int64_t(tasks.size()), x.data(), a.data());
    for (const char* isa : {"scalar", "avx2", "avx512"}) {
      cpu::ExpertKernelConfig cfg;
      REQUIRE(cpu::isa_level_from_name(isa, cfg.isa_level));
      Guarded b(n_tokens * g.hidden);
      std::fill(b.data(), b.data() + b.size(), 0.0f);
      cpu::experts_ffn(g, tasks.data(), int64_t(tasks.size()), x.data(), b.data(), cfg);
      INFO(ggml_type_name(g.ggml[0]) << "/" << ggml_type_name(g.ggml[1]) << "/" << ggml_type_name(g.ggml[2]) << " "
                                     << cpu::expert_kernel_isa(cfg));
      CHECK(b.guards_intact());
      // 8-bit activations wherever the block GEMV runs: every task at the SIMD levels, the
      // decode-sized one at the scalar level.
      CHECK(normalised_error(a.data(), b.begin(), n_tokens * g.hidden) < 3e-2);
      // Token 39 is only in the 40-token task. The scalar level runs it as decoded slabs in fp32,
      // so to fp32 rounding; the SIMD levels through the GEMV, so it carries 8-bit rounding too.
      const double e39 = normalised_error(a.data() + 39 * g.hidden, b.begin() + 39 * g.hidden, g.hidden);
      if (cpu::expert_kernel_isa(cfg) == std::string_view("scalar")) CHECK(e39 < 1e-4);
      else CHECK((e39 > 1e-4 && e39 < 3e-2));
    }
  }
  // Not packable from fp32: convert copies a GGUF's blocks.
  ExpertGeometry g{ExpertQuant::GGUF, 512, 256, 0};
  g.ggml[0] = g.ggml[1] = g.ggml[2] = uint32_t(GgmlType::Q8_0);
  std::vector<float> w(size_t(512 * 256));
  std::vector<uint8_t> blob(expert_blob_layout(g).total_bytes);
  CHECK_THROWS_AS(cpu::pack_expert(g, w.data(), w.data(), w.data(), blob.data()), std::invalid_argument);
}

TEST_CASE("GGUF expert blobs held as row tiles (convert --gguf-tiles on): the same products as their blocks", "[backend]") {
  auto ref = cpu::make_reference_backend();
  std::mt19937 rng(13);
  using T = GgmlType;
  // Every tiled type, Q4_K and Q5_K's tiles larger than their blocks, and a type without a tile
  // form (Q4_0) beside tiled ones, which stays as blocks.
  const std::vector<std::array<T, 3>> mixes = {{T::Q4_K, T::Q5_K, T::Q6_K}, {T::Q2_K, T::Q3_K, T::Q8_0},
                                                {T::Q4_0, T::Q4_K, T::Q4_0}};
  for (const auto& mix : mixes) {
    ExpertGeometry gb{ExpertQuant::GGUF, 512, 256, 0};
    for (int m = 0; m < 3; ++m) gb.ggml[m] = uint32_t(mix[size_t(m)]);
    ExpertGeometry gt = gb;
    gt.ggml_tiles = true;
    const ExpertBlobLayout Lb = expert_blob_layout(gb), Lt = expert_blob_layout(gt);
    const int64_t rows[3] = {256, 256, 512}, cols[3] = {512, 512, 256};
    const size_t bytesb[3] = {Lb.gate_bytes, Lb.up_bytes, Lb.down_bytes}, bytest[3] = {Lt.gate_bytes, Lt.up_bytes, Lt.down_bytes};
    for (int m = 0; m < 3; ++m) {
      INFO(ggml_type_name(gb.ggml[m]));
      CHECK_FALSE(expert_matrix_tiled(gb, m));
      const bool tiled = mix[size_t(m)] != T::Q4_0;
      CHECK(expert_matrix_tiled(gt, m) == tiled);
      const int64_t block = ggml_type_info(gt.ggml[m])->block;
      const size_t want = tiled ? size_t(rows[m] / 16 * (cols[m] / block) * ggml_tile_block_bytes(gt.ggml[m]))
                                : size_t(rows[m]) * ggml_row_bytes(gt.ggml[m], cols[m]);
      CHECK(bytest[m] == (want + 63) / 64 * 64);
      if (!tiled) CHECK(bytest[m] == bytesb[m]);
    }
    const int64_t n_tokens = 40;
    std::vector<std::vector<int32_t>> tokens = {{0, 5, 7}, {}};
    for (int32_t t = 0; t < n_tokens; ++t) tokens[1].push_back(t);
    std::vector<std::vector<uint8_t>> blocks, tiles;
    std::vector<std::vector<float>> weights;
    std::vector<ExpertTask> tb, tt;
    for (const auto& tk : tokens) {
      blocks.push_back(random_gguf_expert_blob(gb, rng));
      tiles.emplace_back(Lt.total_bytes, 0);
      for (int m = 0; m < 3; ++m) {
        const uint8_t* b = blocks.back().data() + Lb.offset(m);
        uint8_t* t = tiles.back().data() + Lt.offset(m);
        if (expert_matrix_tiled(gt, m)) ggml_tile_pack_matrix(gt.ggml[m], b, rows[m], cols[m], t);
        else std::copy_n(b, bytesb[m], t);
      }
      weights.emplace_back();
      for (size_t i = 0; i < tk.size(); ++i) weights.back().push_back(0.5f - 0.01f * float(i));
    }
    for (size_t e = 0; e < tokens.size(); ++e) {
      tb.push_back({blocks[e].data(), tokens[e].data(), weights[e].data(), int64_t(tokens[e].size())});
      tt.push_back({tiles[e].data(), tokens[e].data(), weights[e].data(), int64_t(tokens[e].size())});
    }
    INFO(ggml_type_name(gb.ggml[0]) << "/" << ggml_type_name(gb.ggml[1]) << "/" << ggml_type_name(gb.ggml[2]));
    // The reference decodes a tiled blob to exactly the weights of its blocks.
    const size_t n_w = size_t(gb.hidden * gb.inter);
    std::vector<float> wb(3 * n_w), wt(3 * n_w);
    cpu::unpack_expert(gb, blocks[0].data(), wb.data(), wb.data() + n_w, wb.data() + 2 * n_w);
    cpu::unpack_expert(gt, tiles[0].data(), wt.data(), wt.data() + n_w, wt.data() + 2 * n_w);
    REQUIRE(wb == wt);
    const auto x = randn(n_tokens * gb.hidden, rng);
    std::vector<float> a(size_t(n_tokens * gb.hidden), 0.0f);
    ref->expert_ffn(gb, tb.data(), int64_t(tb.size()), x.data(), a.data());
    for (const char* isa : {"scalar", "avx2", "avx512"}) {
      cpu::ExpertKernelConfig cfg;
      REQUIRE(cpu::isa_level_from_name(isa, cfg.isa_level));
      INFO(cpu::expert_kernel_isa(cfg));
      std::vector<float> yb(size_t(n_tokens * gb.hidden), 0.0f);
      Guarded yt(n_tokens * gb.hidden);
      std::fill(yt.data(), yt.data() + yt.size(), 0.0f);
      cpu::experts_ffn(gb, tb.data(), int64_t(tb.size()), x.data(), yb.data(), cfg);
      cpu::experts_ffn(gt, tt.data(), int64_t(tt.size()), x.data(), yt.data(), cfg);
      CHECK(yt.guards_intact());
      CHECK(normalised_error(a.data(), yt.begin(), n_tokens * gb.hidden) < 3e-2);
      // The tile kernels compute the block kernels' 8-bit products (to fp32 rounding of the block
      // sums); where the level has no tile kernel the tiles go back to blocks: the same bits.
      if (cpu::expert_kernel_isa(cfg) == std::string_view("scalar")) {
        for (size_t i = 0; i < yb.size(); ++i) REQUIRE(yt.begin()[i] == yb[i]);
      } else {
        CHECK(normalised_error(yb.data(), yt.begin(), n_tokens * gb.hidden) < 2e-6);
      }
    }
  }
}

// Run by scripts/gpu_check.sh on a GPU machine (hidden here): the CUDA backend must be among
// the backends the harness above compared, so a GPU run cannot pass by testing the CPU alone.
TEST_CASE("op harness: on a GPU machine the CUDA backend is under test", "[.gpu]") {
  const gpu::GpuInfo info = gpu::probe_gpu();
  INFO(info.reason);
  REQUIRE(info.available);
  int cuda = 0;
  for (const Registered& r : backends_under_test()) cuda += std::string(r.name).rfind("cuda", 0) == 0;
  CHECK(cuda == 3);
}
