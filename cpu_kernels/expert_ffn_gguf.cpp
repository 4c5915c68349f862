// Routed experts whose blobs hold a GGUF file's blocks as they are (ExpertQuant::GGUF, written by
// `moetier convert FILE.gguf`; by default its tile-form matrices as row tiles): per task, the
// tokens' rows gathered, gate and up, SiLU·up, down, then y[token] += weight · out. Tiled
// matrices run on the tile GEMV (cpu_kernels/ggml_gemv_tiles.h) at every token count. Blocks
// take the SIMD block GEMV where the type has one at the level, at every token count
// (cpu_kernels/ggml_gemv.h: 8-bit activations, 4 tokens per pass over the weights): on the Zen 4
// VM it ran 1.3-11x the GFLOP/s of decoding the blocks to fp32 slabs for oneDNN from 32 to 512
// tokens (docs/kernels.md). Other types past 32 tokens take the slabs (dense_gemm), as the
// GGUF's other matrices do. The reference backend decodes the whole blob (unpack_expert) instead.
#include <algorithm>
#include <vector>

#include "cpu_kernels/dense_gemm.h"
#include "cpu_kernels/expert_ffn_internal.h"
#include "cpu_kernels/ggml_gemv.h"
#include "cpu_kernels/ggml_gemv_tiles.h"
#include "runtime/core/ggml_tiles.h"
#include "runtime/core/ggml_types.h"
#include "cpu_kernels/ops.h"

namespace mt::cpu::expert_detail {

namespace {

// Tokens from which a type without a SIMD GEMV goes through the GEMM (decoded slabs) instead of
// the scalar GEMV.
constexpr int64_t kGemmTokens = 33;

void block_product(uint32_t type, const uint8_t* w, int64_t rows, int64_t cols, const float* x, int64_t n, float* y,
                   int isa_level) {
  if (n < kGemmTokens || (isa_level >= 1 && ggml_gemv_has_kernel(type, isa_level)))
    return ggml_gemv_tokens(type, w, rows, cols, n, x, y, isa_level);
  WeightView v{DType::GGUF, w, rows, cols, nullptr, 0, type};
  dense_gemm(v, x, n, y);
}

// Matrix `which` of the expert at blob: a tiled one through the tile GEMV where the level has
// its kernel (any token count, as a GGUF's own tiles), else its blocks given back first.
void product(const ExpertGeometry& g, int which, const uint8_t* w, int64_t rows, int64_t cols, const float* x, int64_t n,
             float* y, int isa_level, std::vector<uint8_t>& blocks) {
  const uint32_t type = g.ggml[which];
  if (!expert_matrix_tiled(g, which)) return block_product(type, w, rows, cols, x, n, y, isa_level);
  if (ggml_gemv_tiles_native(type, isa_level)) return ggml_gemv_tiles(type, w, rows, cols, n, x, y, isa_level);
  blocks.resize(size_t(rows) * ggml_row_bytes(type, cols));
  ggml_tile_unpack_matrix(type, w, rows, cols, blocks.data());
  block_product(type, blocks.data(), rows, cols, x, n, y, isa_level);
}

}  // namespace

void experts_ffn_gguf(const ExpertGeometry& g, const ExpertTask* tasks, int64_t n_tasks, const float* x, float* y,
                      int isa_level) {
  const ExpertBlobLayout L = expert_blob_layout(g);
  const int64_t H = g.hidden, I = g.inter;
  std::vector<float> xe, gv, uv, ye;
  std::vector<uint8_t> blocks;  // a tiled matrix's blocks, where the level has no tile kernel
  for (int64_t i = 0; i < n_tasks; ++i) {
    const ExpertTask& t = tasks[i];
    if (t.n <= 0) continue;
    xe.resize(static_cast<size_t>(t.n * H));
    for (int64_t r = 0; r < t.n; ++r) std::copy_n(x + int64_t(t.tokens[r]) * H, H, &xe[size_t(r * H)]);
    gv.resize(static_cast<size_t>(t.n * I));
    uv.resize(gv.size());
    ye.resize(xe.size());
    product(g, 0, t.blob + L.gate_offset, I, H, xe.data(), t.n, gv.data(), isa_level, blocks);
    product(g, 1, t.blob + L.up_offset, I, H, xe.data(), t.n, uv.data(), isa_level, blocks);
    silu_mul(gv.data(), uv.data(), gv.data(), t.n * I);
    product(g, 2, t.blob + L.down_offset, H, I, gv.data(), t.n, ye.data(), isa_level, blocks);
    for (int64_t r = 0; r < t.n; ++r) {
      const float w = t.weight ? t.weight[r] : 1.0f;
      float* yr = y + int64_t(t.tokens[r]) * H;
      const float* er = &ye[size_t(r * H)];
      for (int64_t d = 0; d < H; ++d) yr[d] += w * er[d];
    }
  }
}

}  // namespace mt::cpu::expert_detail
