// Prefill path of the routed experts: the packed expert is dequantised slab by slab (256 rows at a
// time, so the slab stays in L3) to bf16 where oneDNN has a bf16 matmul on this CPU (AVX-512
// cores), else to fp32, and the three GEMMs run through oneDNN matmul with primitives cached per
// shape. Numerics: exact dequantisation in fp32 mode (activations stay fp32, more accurate than
// the decode path); in bf16 mode weights, x and h are rounded to bf16.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu_kernels/expert_ffn_internal.h"
#include "cpu_kernels/onednn_gemm.h"
#include "runtime/core/dtype.h"

namespace mt::cpu::expert_detail {

namespace {

constexpr int64_t kSlabRows = 256;  // multiple of the 16-row tile

inline void store(float* p, float v) { *p = v; }
inline void store(uint16_t* p, float v) { *p = f32_to_bf16(v); }

// Rows [r0, r0 + nr) (whole tiles) of m into out[(r - r0) * K + k].
template <typename T>
void dequant_rows(const KernelSet& ks, const PackedMat& m, int64_t r0, int64_t nr, T* out) {
  const DequantTileFn dq = ks.dequant_tile;
  const int64_t tile0 = r0 / kRowTile, ntiles = nr / kRowTile, K = m.cols;
#pragma omp parallel
  {
    std::vector<float> tmp;  // per thread and call: a slab is far larger than this tile
    if constexpr (sizeof(T) == 2) tmp.resize(static_cast<size_t>(kRowTile * K));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < ntiles; ++i) {
      if constexpr (sizeof(T) == 4) {
        dq(m, tile0 + i, out + i * kRowTile * K);
      } else {
        dq(m, tile0 + i, tmp.data());
        T* o = out + i * kRowTile * K;
        for (int64_t j = 0; j < kRowTile * K; ++j) o[j] = f32_to_bf16(tmp[static_cast<size_t>(j)]);
      }
    }
  }
}

template <typename T>
void prefill_typed(const KernelSet& ks, const ExpertGeometry& g, const ExpertTask& task, const float* x, float* y,
                   bool bf16) {
  const int64_t n = task.n, H = g.hidden, I = g.inter, Hp = padded_rows(H), Ip = padded_rows(I);
  const PackedMat gate = packed_matrix(g, task.blob, 0), up = packed_matrix(g, task.blob, 1),
                  down = packed_matrix(g, task.blob, 2);
  std::vector<T> xa(static_cast<size_t>(n * H)), ha(static_cast<size_t>(n * I));
  std::vector<float> gbuf(static_cast<size_t>(n * Ip)), ubuf(static_cast<size_t>(n * Ip)),
      obuf(static_cast<size_t>(n * Hp));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t k = 0; k < H; ++k) store(&xa[t * H + k], x[static_cast<int64_t>(task.tokens[t]) * H + k]);
  std::vector<T> w1(static_cast<size_t>(kSlabRows * std::max(H, I))), w2(static_cast<size_t>(kSlabRows * H));
  for (int64_t r0 = 0; r0 < Ip; r0 += kSlabRows) {
    const int64_t nr = std::min(kSlabRows, Ip - r0);
    dequant_rows(ks, gate, r0, nr, w1.data());
    dequant_rows(ks, up, r0, nr, w2.data());
    onednn_gemm({n, H, nr, Ip, bf16}, xa.data(), w1.data(), gbuf.data() + r0);
    onednn_gemm({n, H, nr, Ip, bf16}, xa.data(), w2.data(), ubuf.data() + r0);
  }
  const SiluMulFn silu_mul = ks.silu_mul;
  std::vector<float> hrow(static_cast<size_t>(I));
  for (int64_t t = 0; t < n; ++t) {
    silu_mul(gbuf.data() + t * Ip, ubuf.data() + t * Ip, hrow.data(), I);
    for (int64_t r = 0; r < I; ++r) store(&ha[t * I + r], hrow[static_cast<size_t>(r)]);
  }
  for (int64_t r0 = 0; r0 < Hp; r0 += kSlabRows) {
    const int64_t nr = std::min(kSlabRows, Hp - r0);
    dequant_rows(ks, down, r0, nr, w1.data());
    onednn_gemm({n, I, nr, Hp, bf16}, ha.data(), w1.data(), obuf.data() + r0);
  }
  for (int64_t t = 0; t < n; ++t) {
    const float w = task.weight ? task.weight[t] : 1.0f;
    float* yr = y + static_cast<int64_t>(task.tokens[t]) * H;
    const float* o = obuf.data() + t * Hp;
    for (int64_t r = 0; r < H; ++r) yr[r] += w * o[r];
  }
}

}  // namespace

void prefill_task(const ExpertGeometry& g, const ExpertTask& task, const float* x, float* y,
                  const ExpertKernelConfig& cfg) {
  if (task.n <= 0) return;
  const KernelSet& ks = kernels_for(cfg);
  if (onednn_bf16_supported()) prefill_typed<uint16_t>(ks, g, task, x, y, true);
  else prefill_typed<float>(ks, g, task, x, y, false);
}

}  // namespace mt::cpu::expert_detail
