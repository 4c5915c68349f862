#include "cpu_kernels/ggml_gemv_tiles.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include <omp.h>

#include "cpu_kernels/expert_ffn_internal.h"  // cpu_isa_level
#include "cpu_kernels/ggml_gemv.h"
#include "runtime/core/ggml_tiles.h"
#include "runtime/core/ggml_types.h"

namespace mt::cpu {

bool ggml_gemv_tiles_native(uint32_t type, int isa_level) {
  const int level = std::min(isa_level, expert_detail::cpu_isa_level());
  if (!ggml_tile_supported(type)) return false;
  if (level >= 2) return true;
  return level == 1 && ggml_gemv_detail::avx2_tile_dot(type, 1) != nullptr;
}

TilePrefetch tile_prefetch_auto(uint32_t type, int isa_level) {
  if (!expert_detail::cpu_is_amd()) return kTilePrefetchClassic;
  switch (GgmlType(type)) {
    case GgmlType::Q2_K: case GgmlType::Q3_K:
      return isa_level >= 2 ? TilePrefetch{8192, 16384} : kTilePrefetchClassic;
    case GgmlType::Q4_K: case GgmlType::Q6_K:
      return isa_level >= 2 ? TilePrefetch{8192, 0} : TilePrefetch{16384, 32768};
    case GgmlType::Q5_K:
      return isa_level >= 2 ? TilePrefetch{8192, 0} : TilePrefetch{12288, 24576};
    case GgmlType::Q8_0: return {0, 0};
    default: return kTilePrefetchClassic;
  }
}

int tile_kernel_level(uint32_t type, int nt, int isa_level) {
  const int level = std::min(isa_level, expert_detail::cpu_isa_level());
  if (level < 2 || !expert_detail::cpu_is_amd()) return level;
  switch (GgmlType(type)) {
    case GgmlType::Q4_K: return nt <= 2 ? 1 : level;
    case GgmlType::Q5_K: case GgmlType::Q6_K: return nt == 1 ? 1 : level;
    default: return level;
  }
}

void ggml_gemv_tiles(uint32_t type, const uint8_t* w, int64_t rows, int64_t cols, int64_t n, const float* x, float* y,
                     int isa_level, bool allow_gfni, std::optional<TilePrefetch> prefetch, bool auto_kernel) {
  const GgmlTypeInfo* ti = ggml_type_info(type);
  if (!ti || !ggml_tile_supported(type) || cols % ti->block != 0 || rows % kTileRows != 0 || n < 0)
    throw std::invalid_argument(std::string("ggml_gemv_tiles: ") + ggml_type_name(type) + " " + std::to_string(rows) +
                                " x " + std::to_string(cols) + ", " + std::to_string(n) + " tokens");
  const int64_t blocks = cols / ti->block, tile_bytes = blocks * ggml_tile_block_bytes(type), tiles = rows / kTileRows;
  const int level = std::min(isa_level, expert_detail::cpu_isa_level());
  if (!ggml_gemv_tiles_native(type, level)) {  // no tile kernel: the GGUF blocks back, through the row kernels
    std::vector<uint8_t> plain(static_cast<size_t>(rows * blocks * ti->bytes));
    ggml_tile_unpack_matrix(type, w, rows, cols, plain.data());
    ggml_gemv_tokens(type, plain.data(), rows, cols, n, x, y, level);
    return;
  }
  using namespace ggml_gemv_detail;
  for (int64_t t0 = 0; t0 < n; t0 += kMaxTokens) {
    const int nt = int(std::min<int64_t>(kMaxTokens, n - t0));
    QuantisedActs qa;
    quantise_acts(type, x + t0 * cols, cols, nt, qa);
    const int kernel = auto_kernel ? tile_kernel_level(type, nt, level) : level;
    const TileDot dot = kernel >= 2 ? avx512_tile_dot(type, nt, allow_gfni && expert_detail::cpu_has_gfni_vbmi())
                                    : avx2_tile_dot(type, nt);
    float* yt = y + t0 * rows;
    // Each thread streams one contiguous run of tiles, prefetching across tile boundaries up to
    // the run's end (a run per thread read faster than tiles handed out one or two at a time).
    const bool par = tiles * tile_bytes > (int64_t{1} << 18);
    const TilePrefetch plan = prefetch.value_or(tile_prefetch_auto(type, kernel));
#pragma omp parallel if (par)
    {
      const int64_t nth = omp_get_num_threads(), me = omp_get_thread_num();
      const int64_t t_begin = tiles * me / nth, t_end = tiles * (me + 1) / nth;
      const uint8_t* start = w + t_begin * tile_bytes;
      const int64_t run = (t_end - t_begin) * tile_bytes;
      // A distance at or past the run's length prefetches nothing (its end at the run's start).
      const auto stop = [&](int64_t d) { return d > 0 && d < run ? start + run - d : start; };
      const TileStream stream{stop(plan.near), stop(plan.far), plan.near, plan.far};
      // The run's first lines, which the kernels' prefetch does not reach: the near distance's
      // to L1, the rest of the far one's to L2.
      for (int64_t o = 0; o < std::min(run, std::max(plan.near, plan.far)); o += 64)
        if (o < plan.near) __builtin_prefetch(start + o, 0, 3);
        else __builtin_prefetch(start + o, 0, 2);
      float out[kMaxTokens * kTileRows];
      for (int64_t t = t_begin; t < t_end; ++t) {
        dot(w + t * tile_bytes, qa.act, blocks, out, stream);
        for (int k = 0; k < nt; ++k)
          for (int64_t r = 0; r < kTileRows; ++r) yt[k * rows + t * kTileRows + r] = out[k * kTileRows + r];
      }
    }
  }
}

}  // namespace mt::cpu
