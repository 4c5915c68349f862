// Private to the routed-expert kernels (expert_*.cpp): the packed-matrix view, the quantised
// activations the GEMV kernels consume, and the per-ISA kernel table. See docs/kernels.md.
//
// Packed matrix [rows, K] (rows padded to Rp = ceil(rows/16)*16 with zero rows):
//   the rows form tiles of 16; tile t is one contiguous run of 64-byte chunks in K order, chunk c
//   holding 16 rows x (8 | 4 | 2) consecutive K values, row r of the tile in bytes [4r, 4r+4):
//   Q4   chunk c covers k = 8c..8c+7: byte 4r+j = code(k=8c+j) | code(k=8c+4+j) << 4,
//        code = q + 8 in 0..15 for q in -8..7; then (64-aligned) the fp16 scales, tile-major:
//        [tile][group][16 rows]
//   Q8   chunk c covers k = 4c..4c+3: byte 4r+j = q + 128 (q in -127..127); then the fp32 scales
//        [tile][group][16 rows]
//   BF16 chunk c covers k = 2c, 2c+1: bf16 element 2r+j = w(k=2c+j)
// So one 32-bit lane of a chunk is one row: vpdpbusd / vdpbf16ps accumulate 16 rows at once
// against 4 (2) activation values broadcast to all lanes, and a thread streams its tiles linearly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "cpu_kernels/expert_ffn.h"
#include "runtime/core/dtype.h"

namespace mt::cpu::expert_detail {

inline constexpr int64_t kRowTile = kExpertRowTile;  // the format's row tile
inline constexpr int64_t kChunkBytes = 64;

inline int64_t padded_rows(int64_t rows) { return (rows + kRowTile - 1) / kRowTile * kRowTile; }
inline size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

// K values covered by one 64-byte chunk of a tile.
inline int64_t chunk_k(ExpertQuant q) { return q == ExpertQuant::Q4 ? 8 : q == ExpertQuant::Q8 ? 4 : 2; }

struct PackedMat {
  ExpertQuant quant = ExpertQuant::Q4;
  const uint8_t* codes = nullptr;   // Rp/16 tiles of (K / chunk_k) chunks
  const uint8_t* scales = nullptr;  // Q4: uint16 fp16, Q8: float; [Rp/16][K/group][16]
  int64_t rows = 0, rows_padded = 0, cols = 0, group = 0;

  int64_t tiles() const { return rows_padded / kRowTile; }
  int64_t groups() const { return quant == ExpertQuant::BF16 ? 0 : cols / group; }
  size_t tile_code_bytes() const { return static_cast<size_t>(cols / chunk_k(quant)) * kChunkBytes; }
  size_t tile_scale_bytes() const {
    return static_cast<size_t>(groups() * kRowTile) * (quant == ExpertQuant::Q4 ? 2 : 4);
  }
};

// One matrix of a blob (the format: runtime/core/expert_format.h). which: 0 gate, 1 up, 2 down.
PackedMat packed_matrix(const ExpertGeometry& g, const uint8_t* blob, int which);
// w [rows, cols] fp32 -> the packed layout at dst (packed_matrix_bytes; padding bytes untouched).
void pack_matrix(ExpertQuant quant, const float* w, int64_t rows, int64_t cols, int64_t group, uint8_t* dst);

// Activations of n tokens prepared for one matrix (K = cols of that matrix).
//   Q4/Q8: q[t*K + k] int8 in -127..127 with per-group scale d[t*G + g] (x ~= q*d) and
//          off[t*G + g] = offset * sum_k q over the group (offset 8 for Q4, 128 for Q8), so
//          sum_k (code-offset)*q = sum_k code*q - off.
//   BF16:  b[t*K + k] = bf16(x), bf[t*K + k] = that value as fp32.
// The buffers start 64-byte aligned; the kernels need no alignment (broadcast loads only).
// slot: row of token t in q/d/off/b/bf is slot[t] (tokens shared by several experts are
// prepared once), or t where slot is null.
struct Act {
  int64_t n = 0, K = 0, group = 0;
  const int32_t* slot = nullptr;
  int64_t row(int64_t t) const { return slot ? slot[t] : t; }
  const int8_t* q = nullptr;
  const float* d = nullptr;
  const int32_t* off = nullptr;
  const uint16_t* b = nullptr;
  const float* bf = nullptr;  // BF16: the same values as fp32
};

// out[t*ld + (row - 16*t0)] = sum_k W[row, k] * x_t[k] for every row of tiles [t0, t1) (padded
// rows included, they give 0) and every token t < a.n. Q4/Q8 sums are exact int32 per group, scaled
// in fp32; BF16 multiplies bf16 by bf16 and accumulates in fp32.
using GemvFn = void (*)(const PackedMat& m, int64_t t0, int64_t t1, const Act& a, float* out, int64_t ld);

// x[K] -> q[K], d[K/group], off[K/group] as described above (offset 8 or 128). Every ISA's version
// gives bit-identical results: round-half-even of x * (127 / max|x|) in fp32.
using QuantActFn = void (*)(const float* x, int64_t K, int64_t group, int32_t offset, int8_t* q, float* d,
                            int32_t* off);
// h[i] = silu(g[i]) * u[i] = g / (1 + exp(-g)) * u.
using SiluMulFn = void (*)(const float* g, const float* u, float* h, int64_t n);

// Two matrices of the same shape in lockstep, one token each (a1.n == a2.n == 1): two DRAM streams
// instead of one, which one thread streams faster. out1[(row - 16*t0)] from (m1, a1), out2 from
// (m2, a2), rows of tiles [t0, t1); the same arithmetic as GemvFn.
using Gemv2Fn = void (*)(const PackedMat& m1, const PackedMat& m2, int64_t t0, int64_t t1, const Act& a1,
                         const Act& a2, float* out1, float* out2, int64_t ld);

// Rows [16*tile, 16*tile+16) of m, dequantised to out[r*K + k] (fp32, exact).
using DequantTileFn = void (*)(const PackedMat& m, int64_t tile, float* out);

struct KernelSet {
  const char* name;
  GemvFn q4, q8, bf16;
  QuantActFn quant_act;
  SiluMulFn silu_mul;
  DequantTileFn dequant_tile;
  Gemv2Fn q4_pair = nullptr, q8_pair = nullptr, bf16_pair = nullptr;  // null: two GemvFn calls
  GemvFn get(ExpertQuant q) const { return q == ExpertQuant::Q4 ? q4 : q == ExpertQuant::Q8 ? q8 : bf16; }
  Gemv2Fn get_pair(ExpertQuant q) const {
    return q == ExpertQuant::Q4 ? q4_pair : q == ExpertQuant::Q8 ? q8_pair : bf16_pair;
  }
};

// Activations of n rows against a matrix with K columns, in one 64-byte aligned allocation.
struct ActBuf {
  std::vector<uint8_t> store;
  Act act;

  void prepare(ExpertQuant quant, int64_t n, int64_t K, int64_t group) {
    const size_t nk = static_cast<size_t>(n * K);
    const size_t ng = quant == ExpertQuant::BF16 ? 0 : static_cast<size_t>(n * (K / group));
    const size_t bytes = quant == ExpertQuant::BF16 ? round_up(nk * 2, 64) + round_up(nk * 4, 64)
                                                    : round_up(nk, 64) + 2 * round_up(ng * 4, 64);
    if (store.size() < bytes + 64) store.resize(bytes + 64);
    uint8_t* p = reinterpret_cast<uint8_t*>(round_up(reinterpret_cast<uintptr_t>(store.data()), 64));
    act = Act{};
    act.n = n;
    act.K = K;
    act.group = quant == ExpertQuant::BF16 ? K : group;
    if (quant == ExpertQuant::BF16) {
      act.b = reinterpret_cast<uint16_t*>(p);
      act.bf = reinterpret_cast<float*>(p + round_up(nk * 2, 64));
    } else {
      act.q = reinterpret_cast<int8_t*>(p);
      act.d = reinterpret_cast<float*>(p + round_up(nk, 64));
      act.off = reinterpret_cast<int32_t*>(p + round_up(nk, 64) + round_up(ng * 4, 64));
    }
  }
  void fill_row(const KernelSet& ks, ExpertQuant quant, int64_t r, const float* x) {
    const int64_t K = act.K;
    if (quant == ExpertQuant::BF16) {
      auto* b = const_cast<uint16_t*>(act.b) + r * K;
      auto* bf = const_cast<float*>(act.bf) + r * K;
      for (int64_t k = 0; k < K; ++k) {
        b[k] = f32_to_bf16(x[k]);
        bf[k] = bf16_to_f32(b[k]);
      }
    } else {
      const int64_t G = K / act.group;
      ks.quant_act(x, K, act.group, quant == ExpertQuant::Q4 ? 8 : 128, const_cast<int8_t*>(act.q) + r * K,
                   const_cast<float*>(act.d) + r * G, const_cast<int32_t*>(act.off) + r * G);
    }
  }
};

const KernelSet& kernels_scalar();
const KernelSet& kernels_avx2();    // only where the CPU has avx2+fma+f16c
const KernelSet& kernels_avx512();  // only where the CPU has avx512f/bw/vl/vnni/bf16

// The kernel set `cfg` selects on this CPU.
const KernelSet& kernels_for(const ExpertKernelConfig& cfg);
// Highest ISA this CPU supports: 0 scalar, 1 avx2, 2 avx512.
int cpu_isa_level();
// Whether this CPU has GFNI (vgf2p8affineqb) and AVX-512 VBMI (vpermb), which some AVX-512 kernels
// use where they may (of the CPUs at level 2: Sapphire Rapids and Zen 4 on; not Cooper Lake).
bool cpu_has_gfni_vbmi();
// Whether this CPU is AMD's: its hardware prefetchers keep up with the faster decode kernels
// alone, where software prefetch costs them (the q4/q8 kernels here, ggml_gemv_tiles.h).
bool cpu_is_amd();

// Experts whose blobs hold GGUF blocks (ExpertQuant::GGUF): expert_ffn_gguf.cpp.
void experts_ffn_gguf(const ExpertGeometry& g, const ExpertTask* tasks, int64_t n_tasks, const float* x, float* y,
                      int isa_level);

// Decode path (GEMV kernels) and prefill path (oneDNN) for a set of tasks; expert_ffn and
// experts_ffn choose between them by token count.
void decode_tasks(const ExpertGeometry& g, const ExpertTask* tasks, int64_t n_tasks, const float* x, float* y,
                  const ExpertKernelConfig& cfg, ExpertWorkspace& ws);
void prefill_task(const ExpertGeometry& g, const ExpertTask& task, const float* x, float* y,
                  const ExpertKernelConfig& cfg);
// Token count from which a task goes to the prefill path, for the active ISA and quantisation;
// 0: never. Measured with the `[.bench]` crossover test (docs/kernels.md): on AVX2 the int8 GEMV
// kernels beat dequantise + oneDNN fp32 GEMM at every batch size for q4/q8 (0.5-0.7x its time at
// 512 tokens), bf16 crosses at 16 tokens; the scalar kernels lose from 2 tokens on.
// cfg.prefill_min overrides (0: never).
int64_t prefill_min_tokens(ExpertQuant q, const ExpertKernelConfig& cfg);

}  // namespace mt::cpu::expert_detail

namespace mt::cpu {
// Extra entry points for tests and benchmarks (declared here, not in the public header).
void expert_ffn_decode(const ExpertGeometry& g, const uint8_t* blob, const float* x, int64_t n_tokens,
                       const float* weight, float* y, const ExpertKernelConfig& cfg = {}, ExpertWorkspace* ws = nullptr);
void expert_ffn_prefill(const ExpertGeometry& g, const uint8_t* blob, const float* x, int64_t n_tokens,
                        const float* weight, float* y, const ExpertKernelConfig& cfg = {});
}  // namespace mt::cpu
