// Routed-expert FFN: ISA dispatch, activation quantisation, and the fused decode driver that
// spreads the GEMV tiles of all experts of a call over the OpenMP threads. The per-ISA GEMV
// kernels live in expert_ffn_{scalar,avx2,avx512}.cpp, packing in expert_pack.cpp, the oneDNN
// prefill path in expert_prefill_onednn.cpp. See docs/kernels.md.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_kernels/expert_ffn_internal.h"
#include "runtime/core/dtype.h"

namespace mt::cpu {

using namespace expert_detail;

namespace expert_detail {

namespace {

int detect_isa_level() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bf16") &&
      __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
    return 2;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")) return 1;
  return 0;
}

const KernelSet& kernels_for(int level) {
  if (level >= 2) return kernels_avx512();
  if (level == 1) return kernels_avx2();
  return kernels_scalar();
}

}  // namespace

int cpu_isa_level() {
  static const int level = detect_isa_level();
  return level;
}

bool cpu_has_gfni_vbmi() {
  static const bool has =
      (__builtin_cpu_init(), __builtin_cpu_supports("gfni") != 0 && __builtin_cpu_supports("avx512vbmi") != 0);
  return has;
}

bool cpu_is_amd() {
  static const bool amd = (__builtin_cpu_init(), __builtin_cpu_is("amd") != 0);
  return amd;
}

const KernelSet& kernels_for(const ExpertKernelConfig& cfg) {
  const int cpu = cpu_isa_level();
  return kernels_for(cfg.isa_level < 0 ? cpu : std::min(cfg.isa_level, cpu));
}

int64_t prefill_min_tokens(ExpertQuant q, const ExpertKernelConfig& cfg) {
  if (cfg.prefill_min >= 0) return cfg.prefill_min;
  const KernelSet& ks = kernels_for(cfg);
  if (&ks == &kernels_scalar()) return 2;
  // AVX2 measured here; AVX-512 not measured (no such host), same policy until it is.
  return q == ExpertQuant::BF16 ? 16 : 0;
}


}  // namespace expert_detail

struct ExpertWorkspace::Impl {
  expert_detail::ActBuf xa;                  // the tasks' distinct tokens, quantised
  std::vector<float> h;                      // intermediate rows [n_rows][Ip]
  std::vector<std::vector<float>> local;     // per thread: gate and up tile outputs
  std::vector<expert_detail::ActBuf> ha;     // per thread: h quantised for the down matrices
};

ExpertWorkspace::ExpertWorkspace() : impl_(std::make_unique<Impl>()) {}
ExpertWorkspace::~ExpertWorkspace() = default;
ExpertWorkspace::ExpertWorkspace(ExpertWorkspace&&) noexcept = default;
ExpertWorkspace& ExpertWorkspace::operator=(ExpertWorkspace&&) noexcept = default;

size_t ExpertWorkspace::bytes() const {
  size_t b = impl_->xa.store.capacity() + impl_->h.capacity() * sizeof(float);
  for (const auto& v : impl_->local) b += v.capacity() * sizeof(float);
  for (const auto& a : impl_->ha) b += a.store.capacity();
  return b;
}

namespace expert_detail {

namespace {

struct TaskState {
  PackedMat gate, up, down;
  const int32_t* tokens = nullptr;
  const float* weight = nullptr;
  int64_t n = 0;
  std::vector<int32_t> slot;  // row of each token in the shared x activations
  int64_t h0 = 0;             // first row of this task in the intermediate h
};

// Tiles per work item. Gate/up items stream kUpTiles tiles of gate, then of up (2 x 57 KB a tile
// at hidden 7168, q4); down items stream kDownTiles tiles (16 KB each at inter 2048, q4) from
// every expert of the call. Long contiguous runs keep the DRAM streams efficient, enough items
// keep two threads balanced on a noisy host (docs/kernels.md).
constexpr int64_t kUpTiles = 4;
constexpr int64_t kDownTiles = 8;

}  // namespace

void decode_tasks(const ExpertGeometry& g, const ExpertTask* tasks, int64_t n_tasks, const float* x, float* y,
                  const ExpertKernelConfig& cfg, ExpertWorkspace& workspace) {
  const ExpertQuant quant = g.quant;
  const int64_t H = g.hidden, I = g.inter, Ip = padded_rows(I), Hp = padded_rows(H);
  const KernelSet& ks = kernels_for(cfg);
  const GemvFn gemv = ks.get(quant);
  const Gemv2Fn pair = ks.get_pair(quant);  // lockstep pairs for one-token work (see KernelSet)

  // Tasks, and the distinct tokens among them: x is prepared once per token.
  std::vector<TaskState> ts;
  ts.reserve(static_cast<size_t>(std::max<int64_t>(n_tasks, 0)));
  std::vector<int32_t> uniq;  // distinct token ids in first-seen order
  int64_t n_max = 0, n_rows = 0;
  for (int64_t i = 0; i < n_tasks; ++i) {
    if (tasks[i].n <= 0) continue;
    TaskState s;
    s.gate = packed_matrix(g, tasks[i].blob, 0);
    s.up = packed_matrix(g, tasks[i].blob, 1);
    s.down = packed_matrix(g, tasks[i].blob, 2);
    s.tokens = tasks[i].tokens;
    s.weight = tasks[i].weight;
    s.n = tasks[i].n;
    s.h0 = n_rows;
    s.slot.resize(static_cast<size_t>(s.n));
    for (int64_t t = 0; t < s.n; ++t) {
      const int32_t tok = s.tokens[t];
      auto it = std::find(uniq.begin(), uniq.end(), tok);
      if (it == uniq.end()) {
        s.slot[t] = static_cast<int32_t>(uniq.size());
        uniq.push_back(tok);
      } else {
        s.slot[t] = static_cast<int32_t>(it - uniq.begin());
      }
    }
    n_max = std::max(n_max, s.n);
    n_rows += s.n;
    ts.push_back(std::move(s));
  }
  if (ts.empty()) return;

  ExpertWorkspace::Impl& ws = workspace.impl();
  ActBuf& xa_store = ws.xa;
  xa_store.prepare(quant, static_cast<int64_t>(uniq.size()), H, g.group);
  for (size_t u = 0; u < uniq.size(); ++u)
    xa_store.fill_row(ks, quant, static_cast<int64_t>(u), x + static_cast<int64_t>(uniq[u]) * H);
  const Act xact = xa_store.act;

  // Intermediate h of every (task, token) row: [n_rows][Ip].
  std::vector<float>& h_store = ws.h;
  if (h_store.size() < static_cast<size_t>(n_rows * Ip)) h_store.resize(static_cast<size_t>(n_rows * Ip));
  float* h = h_store.data();

  const int64_t up_tiles = Ip / kRowTile, down_tiles = Hp / kRowTile;
  const int64_t up_items_per_task = (up_tiles + kUpTiles - 1) / kUpTiles;
  const int64_t n_up_items = up_items_per_task * static_cast<int64_t>(ts.size());
  const int64_t n_down_items = (down_tiles + kDownTiles - 1) / kDownTiles;

  // Tiny calls (tests) stay on the calling thread.
  const size_t wbytes = ts.size() * expert_blob_layout(g).total_bytes;
  const bool par = wbytes * static_cast<size_t>(n_max) > (size_t{1} << 18);

  const auto max_threads = static_cast<size_t>(std::max(1, omp_get_max_threads()));
  if (ws.local.size() < max_threads) ws.local.resize(max_threads);
  if (ws.ha.size() < max_threads) ws.ha.resize(max_threads);
#pragma omp parallel if (par)
  {
    const size_t tile_rows = static_cast<size_t>(std::max(kUpTiles, kDownTiles) * kRowTile);
    const auto tid = static_cast<size_t>(omp_get_thread_num());
    std::vector<float>& local_store = ws.local[tid];
    if (local_store.size() < 2 * tile_rows * static_cast<size_t>(n_max)) local_store.resize(2 * tile_rows * n_max);
    float* ga = local_store.data();
    float* ua = ga + tile_rows * n_max;

    // Phase 1: gate and up tiles of every expert, h = silu(gate x) * up x.
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < n_up_items; ++it) {
      const TaskState& s = ts[static_cast<size_t>(it / up_items_per_task)];
      const int64_t t0 = (it % up_items_per_task) * kUpTiles, t1 = std::min(t0 + kUpTiles, up_tiles);
      const int64_t ld = (t1 - t0) * kRowTile;
      Act a = xact;
      a.n = s.n;
      a.slot = s.slot.data();
      if (s.n == 1 && pair) {
        pair(s.gate, s.up, t0, t1, a, a, ga, ua, ld);
      } else {
        gemv(s.gate, t0, t1, a, ga, ld);
        gemv(s.up, t0, t1, a, ua, ld);
      }
      for (int64_t t = 0; t < s.n; ++t) ks.silu_mul(ga + t * ld, ua + t * ld, h + (s.h0 + t) * Ip + t0 * kRowTile, ld);
    }
    // (implicit barrier) Every thread prepares all of h for itself: a few microseconds, and no
    // second barrier.
    ActBuf& ha = ws.ha[tid];
    ha.prepare(quant, n_rows, I, g.group);
    for (int64_t r = 0; r < n_rows; ++r) ha.fill_row(ks, quant, r, h + r * Ip);

    // Phase 2: down tiles; one item owns its output rows for all experts, so y needs no atomics.
#pragma omp for schedule(dynamic, 1)
    for (int64_t it = 0; it < n_down_items; ++it) {
      const int64_t t0 = it * kDownTiles, t1 = std::min(t0 + kDownTiles, down_tiles);
      const int64_t ld = (t1 - t0) * kRowTile;
      const int64_t r0 = t0 * kRowTile, r1 = std::min(t1 * kRowTile, H);
      auto h_act = [&](const TaskState& s) {
        Act a = ha.act;
        a.n = s.n;
        a.q = a.q ? a.q + s.h0 * I : nullptr;
        a.d = a.d ? a.d + s.h0 * (I / a.group) : nullptr;
        a.off = a.off ? a.off + s.h0 * (I / a.group) : nullptr;
        a.b = a.b ? a.b + s.h0 * I : nullptr;
        a.bf = a.bf ? a.bf + s.h0 * I : nullptr;
        return a;
      };
      auto accumulate = [&](const TaskState& s, const float* o0) {
        for (int64_t t = 0; t < s.n; ++t) {
          const float w = s.weight ? s.weight[t] : 1.0f;
          float* yr = y + static_cast<int64_t>(s.tokens[t]) * H;
          const float* o = o0 + t * ld - r0;
          for (int64_t r = r0; r < r1; ++r) yr[r] += w * o[r];
        }
      };
      for (size_t i = 0; i < ts.size();) {
        const TaskState& s = ts[i];
        if (pair && s.n == 1 && i + 1 < ts.size() && ts[i + 1].n == 1) {  // two experts in lockstep
          const TaskState& s2 = ts[i + 1];
          pair(s.down, s2.down, t0, t1, h_act(s), h_act(s2), ga, ua, ld);
          accumulate(s, ga);
          accumulate(s2, ua);
          i += 2;
        } else {
          gemv(s.down, t0, t1, h_act(s), ga, ld);
          accumulate(s, ga);
          i += 1;
        }
      }
    }
  }
}

}  // namespace expert_detail

namespace {

void check_geometry(const ExpertGeometry& g, const char* who) {
  std::string why;
  if (!expert_geometry_valid(g, &why)) throw std::invalid_argument(std::string(who) + ": " + why);
}

std::vector<int32_t> iota_tokens(int64_t n) {
  std::vector<int32_t> v(static_cast<size_t>(n));
  std::iota(v.begin(), v.end(), 0);
  return v;
}

}  // namespace

void expert_ffn_decode(const ExpertGeometry& g, const uint8_t* blob, const float* x, int64_t n_tokens,
                       const float* weight, float* y, const ExpertKernelConfig& cfg, ExpertWorkspace* ws) {
  check_geometry(g, "expert_ffn");
  if (n_tokens <= 0) return;
  const std::vector<int32_t> tok = iota_tokens(n_tokens);
  ExpertTask task{blob, tok.data(), weight, n_tokens};
  ExpertWorkspace temporary;
  decode_tasks(g, &task, 1, x, y, cfg, ws ? *ws : temporary);
}

void expert_ffn_prefill(const ExpertGeometry& g, const uint8_t* blob, const float* x, int64_t n_tokens,
                        const float* weight, float* y, const ExpertKernelConfig& cfg) {
  check_geometry(g, "expert_ffn");
  if (n_tokens <= 0) return;
  const std::vector<int32_t> tok = iota_tokens(n_tokens);
  ExpertTask task{blob, tok.data(), weight, n_tokens};
  prefill_task(g, task, x, y, cfg);
}

void expert_ffn(const ExpertGeometry& g, const uint8_t* blob, const float* x, int64_t n_tokens,
                const float* weight, float* y, const ExpertKernelConfig& cfg, ExpertWorkspace* ws) {
  const int64_t pmin = prefill_min_tokens(g.quant, cfg);
  if (pmin > 0 && n_tokens >= pmin) expert_ffn_prefill(g, blob, x, n_tokens, weight, y, cfg);
  else expert_ffn_decode(g, blob, x, n_tokens, weight, y, cfg, ws);
}

void experts_ffn(const ExpertGeometry& g, const ExpertTask* tasks, int64_t n_tasks, const float* x, float* y,
                 const ExpertKernelConfig& cfg, ExpertWorkspace* ws) {
  check_geometry(g, "experts_ffn");
  if (g.quant == ExpertQuant::GGUF) {
    const int top = cpu_isa_level();
    return experts_ffn_gguf(g, tasks, n_tasks, x, y, cfg.isa_level < 0 ? top : std::min(cfg.isa_level, top));
  }
  const int64_t pmin = prefill_min_tokens(g.quant, cfg);
  std::vector<ExpertTask> small;
  small.reserve(static_cast<size_t>(std::max<int64_t>(n_tasks, 0)));
  for (int64_t i = 0; i < n_tasks; ++i) {
    if (tasks[i].n <= 0) continue;
    if (pmin > 0 && tasks[i].n >= pmin) prefill_task(g, tasks[i], x, y, cfg);
    else small.push_back(tasks[i]);
  }
  if (small.empty()) return;
  if (ws) {
    decode_tasks(g, small.data(), static_cast<int64_t>(small.size()), x, y, cfg, *ws);
  } else {
    ExpertWorkspace temporary;
    decode_tasks(g, small.data(), static_cast<int64_t>(small.size()), x, y, cfg, temporary);
  }
}

std::string_view expert_kernel_isa(const ExpertKernelConfig& cfg) { return kernels_for(cfg).name; }

bool isa_level_from_name(std::string_view name, int& level) {
  if (name == "scalar") level = 0;
  else if (name == "avx2") level = 1;
  else if (name == "avx512" || name == "avx512-vnni") level = 2;
  else return false;
  return true;
}

}  // namespace mt::cpu
